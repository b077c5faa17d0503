"""Capacity on a 3-node quorum cluster: records/s into one quorum queue, batch off vs auto.

Starts three private RabbitMQ nodes (tests/helpers/rabbit_nodes.py; never the shared
broker), joins them, declares a topic exchange and one quorum queue bound to
``#``, and measures one app process (RabbitHandler given the three URLs) from
its first call until every record is confirmed, with ``batch="off"`` and
``batch="auto"``. The figures feed docs/scaling.md (``Mq``).

Run: ``.venv/bin/python -m bench capacity``; ``LOGROUTER_BENCH_N=5000`` is a
smoke run that writes nothing. Writes bench/results/capacity.md and the
"Capacity" section of docs/benchmarks.md.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika

from bench._shared import bench_logger, publish, workload
from logrouter import RabbitHandler

N = int(os.environ.get("LOGROUTER_BENCH_N") or 200_000)


def measure(urls: list[str], tmp: Path, mode: str) -> dict[str, float]:
    """records/s until all confirmed into a fresh quorum queue, and records per message."""
    tag = uuid.uuid4().hex[:8]
    exchange, queue = f"bench.cap.{tag}", f"bench.cap.q.{tag}"
    conn = pika.BlockingConnection(pika.URLParameters(urls[0]))
    ch = conn.channel()
    ch.exchange_declare(exchange, "topic", durable=True)
    ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    ch.queue_bind(queue, exchange, "#")
    handler = RabbitHandler(
        url=" ".join(urls),
        exchange=exchange,
        spool=str(tmp / f"spool-{tag}.sqlite"),
        app="bench",
        flush_timeout=900,
        batch=mode,
    )
    log = bench_logger(handler)
    log.info("warm-up")
    handler.flush()
    base = handler.stats
    start = time.perf_counter()
    workload(log, N)
    handler.flush()
    elapsed = time.perf_counter() - start
    stats = handler.stats
    handler.close()
    ch.queue_delete(queue)
    ch.exchange_delete(exchange)
    conn.close()
    confirmed = stats["confirmed"] - base["confirmed"]
    messages = stats.get("messages", stats["published"]) - base.get("messages", base["published"])
    result = {
        "rate": confirmed / elapsed if confirmed >= N else 0.0,
        "message_rate": messages / elapsed,
        "records_per_message": confirmed / messages if messages else 0.0,
    }
    print(f"  quorum cluster, batch={mode}: {result}", flush=True)
    return result


def report(results: dict[str, dict[str, float]]) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"`python -m bench capacity` ({when}); 3 private nodes on one machine, one quorum"
        f" queue, one app process, {N:,} records, first call until all confirmed:",
        "",
        "| mode | records/s | messages/s | records per message |",
        "|---|---|---|---|",
    ]
    for mode, r in results.items():
        lines.append(
            f"| batch={mode} | {r['rate']:,.0f} | {r['message_rate']:,.0f}"
            f" | {r['records_per_message']:.1f} |"
        )
    off, auto = results.get("off", {}), results.get("auto", {})
    if off.get("rate") and auto.get("rate"):
        lines += ["", f"batch=auto / batch=off: {auto['rate'] / off['rate']:.1f}x."]
    lines += [
        "",
        "All three nodes share the machine's cores with the app, so these are the figures of"
        " one box, not of three servers: use them as ratios (docs/scaling.md).",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    from tests.helpers.rabbit_nodes import started_cluster

    logging.getLogger("pika").setLevel(logging.CRITICAL)
    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="lr-capacity-") as tmp_name,
        started_cluster("lrbench") as nodes,
    ):
        urls = [node.url for node in nodes]
        for mode in ("off", "auto"):
            results[mode] = measure(urls, Path(tmp_name), mode)
    return publish("capacity", "Capacity (3-node quorum cluster)", report(results))


if __name__ == "__main__":
    sys.exit(main())
