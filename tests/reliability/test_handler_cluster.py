"""RabbitHandler failing over inside a cluster, and the broker nacking publishes.

Regression for the failover stall: the handler was connected to the node leading a
quorum queue; that node was killed -9; the handler reconnected to the next node at
once, and its new channel's first publish reached the broker before the queue's new
leader was recorded. RabbitMQ (3.10) then nacks *every* publish on that channel (its
queue client keeps asking the dead node), and the handler re-published the nacked
records on the same channel in a tight loop: no confirm ever came. The handler now
reopens the channel after a nack (with a pause), which looks the leader up again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pika
import pytest

from tests.helpers.handler import collect, delete
from tests.helpers.rabbit_nodes import RabbitNode

DEADLINE = 60.0


@pytest.fixture
def cluster(rabbit_cluster: list[RabbitNode]) -> list[RabbitNode]:
    """The session's three-node cluster, every node running at the start and end of each
    test (its test kills one)."""
    return rabbit_cluster


def declare_quorum(url: str, exchange: str, queue: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.exchange_declare(exchange, "topic", durable=True)
        ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        ch.queue_bind(queue, exchange, "#")
    finally:
        conn.close()


def leader_of(node: RabbitNode, queue: str) -> str:
    for line in node.rabbitmqctl("list_queues", "name", "leader", "-q").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == queue:
            return parts[1]
    raise AssertionError(f"queue {queue} not listed")


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting ({timeout:g}s) for: {what}")
        time.sleep(0.05)


def test_kill_node_leading_the_quorum_queue_handler_fails_over_and_delivers(
    cluster: list[RabbitNode], make_logger: Any, unique_name: Callable[[str], str]
) -> None:
    """The node the handler is connected to, which also leads the sink's quorum queue, is
    killed -9 while records stream: the handler fails over to another node and every
    record logged before, during and after the kill reaches the queue."""
    exchange, queue = unique_name("logs"), unique_name("q")
    declare_quorum(cluster[0].url, exchange, queue)
    leader = next(n for n in cluster if n.name == leader_of(cluster[0], queue))
    others = [n for n in cluster if n is not leader]
    # The leader first: the handler connects there, and loses queue leader and node at once.
    url = " ".join(n.url for n in [leader, *others])
    log, handler = make_logger(url=url, exchange=exchange, reconnect_max=1)
    logged = 0
    stop = threading.Event()

    def stream() -> None:
        nonlocal logged
        while not stop.is_set():
            for _ in range(10):
                log.info("rec %d", logged)
                logged += 1
            time.sleep(0.01)

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    try:
        wait_for(lambda: handler.stats["confirmed"] >= 500, "the first confirms")
        leader.kill()
        before = handler.stats["confirmed"]
        wait_for(lambda: handler.stats["confirmed"] > before + 1000, "confirms after the kill")
    finally:
        stop.set()
        streamer.join(5)
    wait_for(lambda: handler.stats["confirmed"] >= logged, "every record confirmed")
    got = collect(others[0].url, queue, logged, timeout=DEADLINE)
    assert {b["msg"] for _, _, b in got} == {f"rec {i}" for i in range(logged)}
    assert handler.dropped == 0
    delete(others[0].url, exchange, queue)


def test_records_nacked_by_a_full_queue_arrive_once_there_is_room(
    amqp_url: str, make_logger: Any, unique_name: Callable[[str], str]
) -> None:
    """A queue that rejects publishes when full (x-overflow = reject-publish) nacks records:
    the handler keeps them and publishes them again, and all arrive once a consumer makes
    room; none is dropped."""
    exchange, queue = unique_name("logs"), unique_name("q")
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        ch.exchange_declare(exchange, "topic")
        ch.queue_declare(queue, arguments={"x-max-length": 100, "x-overflow": "reject-publish"})
        ch.queue_bind(queue, exchange, "#")
    finally:
        conn.close()
    try:
        log, handler = make_logger(url=amqp_url, exchange=exchange, reconnect_max=1)
        for i in range(300):
            log.info("full %d", i)
        assert handler._publisher is not None
        publisher = handler._publisher
        wait_for(lambda: publisher.nacked > 0, "the broker's first nack")
        got = collect(amqp_url, queue, 300, timeout=DEADLINE)
        assert {b["msg"] for _, _, b in got} == {f"full {i}" for i in range(300)}
        assert handler.dropped == 0
    finally:
        delete(amqp_url, exchange, queue)
