"""Broker faults on a private node: restart, kill -9, memory and disk alarms, mid-stream."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.helpers.rabbit_nodes import RabbitNode
from tests.reliability.harness import Pipeline, assert_exactly_once, wait_until

#: about 1 minute of this suite's work: scheduled early (tests/conftest.py)
pytestmark = pytest.mark.slow(minutes=1)

TOTAL = 4000
NEVER_BLOCKS = 30.0  # generous "did not hang" bound for TOTAL log calls during an alarm


def _stream_around(pipeline: Pipeline, fault: Any) -> None:
    """Start the sinks, log the first half, run ``fault()`` mid-stream, log the rest."""
    pipeline.declare()
    pipeline.start()
    log, _ = pipeline.handler()
    pipeline.log_range(log, 0, TOTAL // 2, pace_every=200, pace=0.02)
    assert wait_until(lambda: pipeline.written() > 0, 30), "sink wrote nothing"
    fault()
    pipeline.log_range(log, TOTAL // 2, TOTAL, pace_every=200, pace=0.02)


def test_broker_restart_mid_stream(node: RabbitNode, pipeline_factory: Any) -> None:
    """A graceful broker restart mid-stream: handler and sink daemon reconnect by themselves,
    and files and archive hold every record exactly once."""
    pipeline = pipeline_factory(node.url)
    _stream_around(pipeline, node.restart)
    assert pipeline.wait_files(TOTAL), "the live sink did not catch up after the restart"
    pipeline.drain()
    assert_exactly_once(pipeline.counts("broker restarted mid-stream", TOTAL), pipeline)


def test_broker_kill9_mid_stream(node: RabbitNode, pipeline_factory: Any) -> None:
    """The broker is killed -9 mid-stream, stays down for 2 s of logging, then starts again:
    confirmed records survived on disk, the rest was spooled and replayed; exactly once."""
    pipeline = pipeline_factory(node.url)
    log_during: list[float] = []

    def crash() -> None:
        node.kill()
        log, _ = pipeline.handlers[0]
        began = time.monotonic()
        pipeline.log_range(log, TOTAL, TOTAL + 500)  # logged while the broker is gone
        log_during.append(time.monotonic() - began)
        time.sleep(2)
        node.start()

    _stream_around(pipeline, crash)
    total = TOTAL + 500
    assert pipeline.wait_files(total), "the live sink did not catch up after the crash"
    pipeline.drain()
    counts = pipeline.counts("broker killed -9 mid-stream, started again", total)
    assert_exactly_once(counts, pipeline)
    assert log_during[0] < NEVER_BLOCKS, "log calls hung while the broker was down"


def _alarm_scenario(node: RabbitNode, pipeline: Pipeline, raise_alarm: Any, name: str) -> None:
    pipeline.declare()
    pipeline.start()
    log, handler = pipeline.handler(buffer_size=500)
    pipeline.log_range(log, 0, 100)
    assert pipeline.wait_files(100, 30), "records before the alarm were not written"
    raise_alarm(True)
    try:
        began = time.monotonic()
        slowest = pipeline.log_range(log, 100, TOTAL, pace_every=500, pace=0.05)
        handler.flush()  # bounded by flush_timeout: spools what cannot be confirmed
        took = time.monotonic() - began
        assert took < NEVER_BLOCKS, f"{TOTAL} log calls took {took:.1f}s during the alarm"
        written_during = pipeline.written()
    finally:
        raise_alarm(False)
    assert pipeline.wait_files(TOTAL), "records did not arrive after the alarm cleared"
    pipeline.drain()
    counts = pipeline.counts(
        name,
        TOTAL,
        notes=f"{TOTAL - 100} log calls during the alarm took {took:.2f}s "
        f"(slowest call {slowest * 1000:.1f} ms)",
        written_during_alarm=written_during,
        dropped=handler.dropped,
    )
    assert_exactly_once(counts, pipeline)


def test_memory_alarm_app_never_blocks(node: RabbitNode, pipeline_factory: Any) -> None:
    """During a broker memory alarm the app's log calls all return (bounded), and every
    record reaches files and archive exactly once after the alarm clears."""
    _alarm_scenario(node, pipeline_factory(node.url), node.set_memory_alarm, "memory alarm")


def test_disk_alarm_app_never_blocks(node: RabbitNode, pipeline_factory: Any) -> None:
    """During a broker disk alarm the app's log calls all return (bounded), and every record
    reaches files and archive exactly once after the alarm clears."""
    _alarm_scenario(node, pipeline_factory(node.url), node.set_disk_alarm, "disk alarm")
