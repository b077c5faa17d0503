"""A long broker outage under load: 60 s down while two apps log 5,000 records/s.

Each handler must keep its app running at full speed with memory bounded by its
buffer (the rest goes to the disk spool), and deliver every record once the broker
is back: the sinks then hold each one exactly once. One app publishes one record
per message (``batch="off"``, the default) at 1,000 records/s, the other
``batch="auto"`` at 4,000, into the same exchange and sinks, as on a host where some
apps batch and some do not: both replay paths run at scale (60,000 single-record
messages, 240,000 records in batches), and the catch-up is not 300,000 single-record
messages (the broker's message rate is what bounds it on a 2-core box).
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

RATE = 5_000  # records/s, both apps together
#: of them, the share of the batch="off" app: its catch-up is one message per record, bound
#: by the broker's message rate, and was most of the test's time at an even split
OFF_SHARE = 0.2
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
    """Broker down 60 s while two apps (batch="off" at 1,000 records/s, batch="auto" at
    4,000) log 5,000 records/s together: neither handler's in-memory buffer ever holds more than
    buffer_size records, no log call hangs, nothing is dropped, and after the broker
    returns every record is in files and archive exactly once."""
    pipeline: Pipeline = pipeline_factory(node.url)
    pipeline.declare()
    pipeline.start()
    apps = [pipeline.handler(buffer_size=BUFFER, batch=mode) for mode in ("off", "auto")]
    pipeline.log_range(apps[0][0], 0, 500)
    pipeline.log_range(apps[1][0], 500, 1_000)
    assert pipeline.wait_files(1_000, 60), "records before the outage were not written"

    node.stop()
    rss_before = _rss_mb()
    peak_buffered = {mode: 0 for mode in ("off", "auto")}
    slowest = 0.0
    seq = 1_000
    began = time.monotonic()
    while (elapsed := time.monotonic() - began) < OUTAGE:
        target = 1_000 + int(elapsed * RATE)
        if seq < target:
            split = seq + round((target - seq) * OFF_SHARE)
            for (log, handler), first, last in zip(
                apps, (seq, split), (split, target), strict=True
            ):
                slowest = max(slowest, pipeline.log_range(log, first, last))
                mode = handler.options.batch
                peak_buffered[mode] = max(peak_buffered[mode], handler.stats["buffered"])
            seq = target
        time.sleep(0.01)
    rss_growth = _rss_mb() - rss_before
    node.start()
    total = seq

    assert pipeline.wait_files(total, 300), "records logged during the outage did not arrive"
    pipeline.drain(timeout=300)
    dropped = {handler.options.batch: handler.dropped for _log, handler in apps}
    counts = pipeline.counts(
        f"broker down {OUTAGE:.0f} s at {RATE:,} records/s (two apps: off, auto)",
        total,
        notes=f"peak buffer {peak_buffered} of {BUFFER:,}; RSS +{rss_growth:.0f} MB during"
        f" the outage; slowest log call {slowest * 1000:.1f} ms; dropped {dropped}",
    )
    assert_exactly_once(counts, pipeline)
    assert max(peak_buffered.values()) <= BUFFER, peak_buffered
    assert slowest < NEVER_BLOCKS
    assert dropped == {"off": 0, "auto": 0}
