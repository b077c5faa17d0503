"""A long broker outage under load: 60 s down while the app logs 5,000 records/s.

The handler must keep the app running at full speed with memory bounded by its
buffer (the rest goes to the disk spool), and deliver every record once the broker
is back: the sinks then hold each one exactly once.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.helpers.rabbit_nodes import RabbitNode
from tests.reliability.harness import Pipeline, assert_exactly_once

#: minutes-long scenarios: scheduled first (tests/conftest.py), beside the rest
# 60 s of outage, then ~300,000 records through spool, broker and two sinks: beyond the
# suite's 300 s per-test timeout on a busy box, while every wait inside is bounded
pytestmark = [pytest.mark.slow(minutes=3), pytest.mark.timeout(600)]

RATE = 5_000
OUTAGE = 60.0
BUFFER = 10_000
NEVER_BLOCKS = 5.0  # generous bound for one log call: "did not hang", not a timing claim


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_sixty_second_outage_at_5000_records_per_second(
    node: RabbitNode, pipeline_factory: Any
) -> None:
    """Broker down 60 s at 5,000 records/s: the handler's in-memory buffer never holds more
    than buffer_size records, no log call hangs, and after the broker returns every record
    is in files and archive exactly once."""
    pipeline: Pipeline = pipeline_factory(node.url)
    pipeline.declare()
    pipeline.start()
    log, handler = pipeline.handler(buffer_size=BUFFER)
    pipeline.log_range(log, 0, 1_000)
    assert pipeline.wait_files(1_000, 60), "records before the outage were not written"

    node.stop()
    rss_before = _rss_mb()
    peak_buffered = 0
    slowest = 0.0
    seq = 1_000
    began = time.monotonic()
    while (elapsed := time.monotonic() - began) < OUTAGE:
        target = 1_000 + int(elapsed * RATE)
        if seq < target:
            slowest = max(slowest, pipeline.log_range(log, seq, target))
            seq = target
            peak_buffered = max(peak_buffered, handler.stats["buffered"])
        time.sleep(0.01)
    rss_growth = _rss_mb() - rss_before
    node.start()
    total = seq

    assert pipeline.wait_files(total, 300), "records logged during the outage did not arrive"
    pipeline.drain(timeout=300)
    counts = pipeline.counts(
        f"broker down {OUTAGE:.0f} s at {RATE:,} records/s",
        total,
        notes=f"peak buffer {peak_buffered:,} of {BUFFER:,}; RSS +{rss_growth:.0f} MB during"
        f" the outage; slowest log call {slowest * 1000:.1f} ms; dropped {handler.dropped}",
    )
    assert_exactly_once(counts, pipeline)
    assert peak_buffered <= BUFFER
    assert slowest < NEVER_BLOCKS
    assert handler.dropped == 0
