"""RabbitHandler against a private broker node that goes away, restarts or raises an alarm."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.helpers.handler import collect, declare
from tests.helpers.rabbit_nodes import RabbitNode


def _ids(got: list[Any]) -> set[str]:
    return {mid for mid, _, _ in got}


def test_broker_down_at_start_then_up(
    private_node: RabbitNode, make_logger: Any, unique_name: Callable[[str], str]
) -> None:
    """Broker down when the app starts: the app never waits, nothing is lost once it is up."""
    exchange, queue = unique_name("logs"), unique_name("q")
    declare(private_node.url, exchange, queue, durable=True)
    private_node.stop()
    log, handler = make_logger(url=private_node.url, exchange=exchange, buffer_size=500)
    slowest = 0.0
    for i in range(3000):
        start = time.perf_counter()
        log.info("early %d", i)
        slowest = max(slowest, time.perf_counter() - start)
        if i % 100 == 0:
            time.sleep(0.01)
    assert slowest < 1.0, "a log call waited on the broker"
    private_node.start()
    for i in range(100):
        log.info("late %d", i)
    got = collect(private_node.url, queue, 3100, timeout=60)
    msgs = {b["msg"] for _, _, b in got}
    assert msgs == {f"early {i}" for i in range(3000)} | {f"late {i}" for i in range(100)}
    assert handler.dropped == 0


def test_node_restart_in_the_middle_loses_nothing(
    private_node: RabbitNode, make_logger: Any, unique_name: Callable[[str], str]
) -> None:
    """A broker restart in the middle of 20,000 records: every record arrives (FIELD 6)."""
    exchange, queue = unique_name("logs"), unique_name("q")
    declare(private_node.url, exchange, queue, durable=True)
    log, handler = make_logger(url=private_node.url, exchange=exchange, reconnect_max=1)
    for i in range(10_000):
        log.info("r %d", i)
    private_node.restart()
    for i in range(10_000, 20_000):
        log.info("r %d", i)
    handler.flush()
    got = collect(private_node.url, queue, 20_000, timeout=90)
    assert {b["msg"] for _, _, b in got} == {f"r {i}" for i in range(20_000)}
    assert handler.dropped == 0


def test_memory_alarm_never_blocks_the_app(
    private_node: RabbitNode, make_logger: Any, unique_name: Callable[[str], str]
) -> None:
    """During a memory alarm log calls return at once; records arrive after it clears (FIELD 12)."""
    exchange, queue = unique_name("logs"), unique_name("q")
    declare(private_node.url, exchange, queue, durable=True)
    log, handler = make_logger(url=private_node.url, exchange=exchange, buffer_size=200)
    log.info("before")
    handler.flush()
    private_node.set_memory_alarm(True)
    try:
        start = time.monotonic()
        for i in range(1000):
            log.info("during %d", i)
            if i % 100 == 0:
                time.sleep(0.05)
        handler.flush()  # bounded: returns (spooling) although nothing can be confirmed
        assert time.monotonic() - start < 20, "the app was blocked by the alarm"
    finally:
        private_node.set_memory_alarm(False)
    got = collect(private_node.url, queue, 1001, timeout=60)
    assert {b["msg"] for _, _, b in got} == {"before"} | {f"during {i}" for i in range(1000)}
