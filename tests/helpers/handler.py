"""Helpers for tests of the logging handler: a routed queue, a logger on it, collecting records."""

from __future__ import annotations

import json
import logging
import logging.config
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from logrouter import RabbitHandler
from logrouter.connection import BrokerSettings

Received = tuple[str, str, dict[str, Any]]  # (message_id, routing_key, body)


def declare(url: str, exchange: str, queue: str, *, durable: bool = False) -> None:
    """Declare a topic exchange and a queue bound to every key."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.exchange_declare(exchange, "topic", durable=durable)
        ch.queue_declare(queue, durable=durable)
        ch.queue_bind(queue, exchange, "#")
    finally:
        conn.close()


def delete(url: str, exchange: str, queue: str) -> None:
    try:
        conn = pika.BlockingConnection(pika.URLParameters(url))
    except pika.exceptions.AMQPError:
        return
    try:
        ch = conn.channel()
        ch.queue_delete(queue)
        ch.exchange_delete(exchange)
    finally:
        conn.close()


def collect(url: str, queue: str, count: int, timeout: float = 30.0) -> list[Received]:
    """Consume until ``count`` distinct message_ids arrived or ``timeout`` passed (bounded).

    Redelivered duplicates (same message_id, at-least-once) are kept in the list.
    """
    deadline = time.monotonic() + timeout
    out: list[Received] = []
    seen: set[str] = set()
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=1000)
        for method, props, body in ch.consume(queue, auto_ack=True, inactivity_timeout=0.2):
            if method is not None:
                out.append((props.message_id, method.routing_key, json.loads(body)))
                seen.add(props.message_id)
            if len(seen) >= count or time.monotonic() > deadline:
                break
        ch.cancel()
    finally:
        conn.close()
    return out


@pytest.fixture
def route(
    amqp_url: str, broker_settings: BrokerSettings, unique_name: Callable[[str], str]
) -> Iterator[tuple[str, str, str]]:
    """(url, exchange, queue): a fresh exchange with one queue bound to ``#``."""
    queue = unique_name("q")
    declare(amqp_url, broker_settings.exchange, queue)
    yield amqp_url, broker_settings.exchange, queue
    delete(amqp_url, broker_settings.exchange, queue)


@pytest.fixture
def make_logger(
    tmp_path: Path, unique_name: Callable[[str], str]
) -> Iterator[Callable[..., tuple[logging.Logger, RabbitHandler]]]:
    """Factory: a fresh app logger with a RabbitHandler; handlers closed afterwards."""
    made: list[tuple[logging.Logger, RabbitHandler]] = []

    def make(**options: Any) -> tuple[logging.Logger, RabbitHandler]:
        options.setdefault("spool", str(tmp_path / "spool.sqlite"))
        options.setdefault("app", "testapp")
        handler = RabbitHandler(**options)
        logger = logging.getLogger(unique_name("app"))
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(handler)
        made.append((logger, handler))
        return logger, handler

    yield make
    for logger, handler in made:
        logger.removeHandler(handler)
        handler.close()
