"""Batches (batch="auto") through the whole pipeline on a private node: exactly once per
record with a mixed fleet, when the broker restarts mid-batch, and when the sink daemon is
killed -9 mid-batch."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers.rabbit_nodes import RabbitNode
from tests.reliability.harness import Pipeline, assert_exactly_once, wait_until

#: minutes-long scenarios: scheduled first (tests/conftest.py), beside the rest
pytestmark = pytest.mark.slow

TOTAL = 20_000


def _burst(pipeline: Pipeline, log: Any, first: int, last: int) -> None:
    """Log as fast as possible in bursts of 2,000 (a backlog: the handler packs batches)."""
    pipeline.log_range(log, first, last, pace_every=2000, pace=0.01)


def test_auto_and_off_handlers_into_the_same_sinks_exactly_once(
    node: RabbitNode, pipeline_factory: Any
) -> None:
    """One app with batch="auto" and one with batch="off" log into the same exchange: the
    file and archive sinks hold every record exactly once, and the auto app needed fewer
    AMQP messages than records."""
    pipeline = pipeline_factory(node.url)
    pipeline.declare()
    pipeline.start()
    auto_log, auto = pipeline.handler(batch="auto")
    off_log, off = pipeline.handler(batch="off")
    _burst(pipeline, auto_log, 0, TOTAL // 2)
    _burst(pipeline, off_log, TOTAL // 2, TOTAL)
    auto.flush()
    off.flush()
    auto_stats, off_stats = auto.stats, off.stats
    assert pipeline.wait_files(TOTAL), "the sink did not catch up"
    pipeline.drain()
    counts = pipeline.counts(
        "batch=auto and batch=off apps into the same sinks",
        TOTAL,
        auto_messages=auto_stats["messages"],
        off_messages=off_stats["messages"],
    )
    assert_exactly_once(counts, pipeline)
    assert auto_stats["confirmed"] == off_stats["confirmed"] == TOTAL // 2
    assert off_stats["messages"] == TOTAL // 2
    assert auto_stats["messages"] < TOTAL // 2


def test_broker_restart_mid_batch(node: RabbitNode, pipeline_factory: Any) -> None:
    """A broker restart while an auto handler publishes batches: unconfirmed batches are
    published again (their records re-packed), sinks drop the duplicates per record, and
    files and archive hold every record exactly once."""
    pipeline = pipeline_factory(node.url)
    pipeline.declare()
    pipeline.start()
    log, handler = pipeline.handler(batch="auto")
    _burst(pipeline, log, 0, TOTAL // 2)
    assert wait_until(lambda: pipeline.written() > 0, 30), "sink wrote nothing"
    node.restart()
    _burst(pipeline, log, TOTAL // 2, TOTAL)
    assert pipeline.wait_files(TOTAL), "the live sink did not catch up after the restart"
    stats = handler.stats
    pipeline.drain()
    counts = pipeline.counts(
        "broker restarted while batches were in flight", TOTAL, messages=stats["messages"]
    )
    assert_exactly_once(counts, pipeline)


def test_sink_daemon_killed_mid_batch(node: RabbitNode, pipeline_factory: Any) -> None:
    """kill -9 of the sink daemon while it writes records of batch messages, then a
    restart: its journals roll the files back, redelivered batches are deduplicated per
    record, and every record is in files and archive exactly once."""
    pipeline = pipeline_factory(node.url)
    pipeline.declare()
    pipeline.start()
    log, _ = pipeline.handler(batch="auto")
    _burst(pipeline, log, 0, TOTAL)
    assert wait_until(lambda: pipeline.written() > TOTAL // 10, 60), "no progress"
    pipeline.kill()
    pipeline.start()
    assert pipeline.wait_files(TOTAL), "the restarted sink did not catch up"
    pipeline.drain()
    counts = pipeline.counts("sink daemon killed -9 while writing batches", TOTAL)
    assert_exactly_once(counts, pipeline)
