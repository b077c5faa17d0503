"""Looking at the shared broker from a test: rabbitmqctl listings, queue depths, polling.

One copy of what several test modules need (``wait_for`` polls instead of sleeping).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pika

from logrouter import topology

RABBITMQCTL_TIMEOUT = 30


def rabbitmqctl(*args: str) -> list[list[str]]:
    """Rows of a ``rabbitmqctl -q --no-table-headers`` listing, split on tabs."""
    result = subprocess.run(
        ["rabbitmqctl", "-q", *args, "--no-table-headers"],
        capture_output=True,
        text=True,
        timeout=RABBITMQCTL_TIMEOUT,
        check=True,
    )
    return [line.split("\t") for line in result.stdout.splitlines() if line]


def broker_bindings(queue: str) -> set[tuple[str, str]]:
    """(source exchange, routing key) of every binding to ``queue``, default exchange left out."""
    rows = rabbitmqctl("list_bindings", "source_name", "destination_name", "routing_key")
    return {(src, key) for src, dest, key in rows if dest == queue and src}


def broker_queue(queue: str) -> tuple[str, str] | None:
    """(type, arguments as printed) of ``queue``, or None when it does not exist."""
    for name, qtype, args in rabbitmqctl("list_queues", "name", "type", "arguments"):
        if name == queue:
            return qtype, args
    return None


def queue_depth(url: str, queue: str) -> int:
    """Ready messages in ``queue`` (not counting deliveries a consumer holds unacked)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def wait_for(
    predicate: Callable[[], bool], what: str, timeout: float = 30.0, poll: float = 0.05
) -> None:
    """Poll ``predicate`` until it is true; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting ({timeout:g}s) for: {what}")
        time.sleep(poll)


@contextlib.contextmanager
def watch_rejected(url: str) -> Iterator[Callable[[], list[tuple[Any, bytes]]]]:
    """``seen()``: (properties, body) of every copy published to logrouter.rejected since
    the block began (a private queue bound to its fanout exchange; each call drains it
    and returns all so far). Reading logrouter.rejected itself would hide others' copies."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, topology.REJECTED_QUEUE)
    seen: list[tuple[Any, bytes]] = []

    def drain() -> list[tuple[Any, bytes]]:
        while True:
            method, props, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return list(seen)
            seen.append((props, body))

    try:
        yield drain
    finally:
        connection.close()
