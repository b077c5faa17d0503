"""Reading the archive back: partition pruning, full-scan throughput, replay rate.

    .venv/bin/python -m bench.query [--days 30] [--total 10000000] [--scan 1000000]
                                    [--replay 20000] [--level 6]

1. Pruning: ``query '*.err' --since -1h`` (the reader the command uses, in
   process) on a ``--days``-day hourly archive of ``--total`` records, against
   the same query on an archive holding only that last hour. Ratio of times
   (target <= 2).
2. Full scan: counting ``*.err`` over ``--scan`` archived records (what
   ``query '*.err' --count`` runs: ``count_archive``), against
   ``zcat FILES | grep -c '"severity":"err"'`` on the same files (only ``err``
   and milder severities are written, so both count the same). Throughput
   ratio (target >= 0.5). Also shown: the same count through the ordered read
   every printing query uses (``read_archive``: decoded, time-ordered).
3. Replay: ``logrouter replay --to-sink`` of ``--replay`` records into a queue
   (the whole process, start-up included), with batch messages (its default
   there) and with ``--batch off``, against ``RabbitHandler`` logging the same
   number until all are confirmed, with ``batch="off"`` (its default) and
   ``batch="auto"``. Rate ratios (target >= 0.8).

Archives are written with the archive writer itself. Writes
bench/results/query.md and the "Query and replay" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pika

from bench._shared import write_section
from logrouter.archive_reader import count_archive, read_archive
from logrouter.config import ArchiveOptions
from logrouter.record_filter import RecordFilter
from logrouter.selector import compile_selector
from logrouter.sinks.archive import ArchiveWriter
from logrouter.timespec import parse_time
from logrouter.wire import format_ts

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "query.md"
DOCS = ROOT / "docs" / "benchmarks.md"
URL = os.environ.get("LOGROUTER_URL", "amqp://guest:guest@localhost:5672/%2F")
SEVERITIES = ("info", "info", "info", "warning", "notice", "debug", "info", "err")
BATCH = 500


def record(i: int, ts: float) -> dict[str, Any]:
    return {
        "v": 1,
        "ts": format_ts(ts),
        "host": "web1",
        "app": "billing",
        "pid": 4242,
        "logger": "billing.api",
        "facility": ("auth", "mail", "billing", "kern")[i % 4],
        "severity": SEVERITIES[i % len(SEVERITIES)],
        "level": "INFO",
        "msg": f"user {i} logged in from 10.0.{i % 256}.{i * 7 % 256}",
        "fields": {"request_id": f"r-{i}"},
        "id": f"{i:016x}",
    }


def write_archive(directory: Path, start: float, seconds: float, count: int, level: int) -> None:
    """``count`` records evenly over ``[start, start + seconds)``, batches of 500."""
    options = ArchiveOptions(
        dir=directory,
        compression="gzip",
        compresslevel=level,
        rotate_bytes=0,
        rotate_interval="hour",
    )
    writer = ArchiveWriter(options, instance="bench-0")
    step = seconds / max(count, 1)
    for first in range(0, count, BATCH):
        writer.write([record(i, start + i * step) for i in range(first, min(first + BATCH, count))])
        writer.checkpoint()
    writer.close()


def count_query(directory: Path, query: RecordFilter) -> int:
    return sum(1 for _ in read_archive(directory, query))


def best_of(rounds: int, work: Any) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(rounds):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    return best, result


def pruning(tmp: Path, days: int, total: int, level: int) -> dict[str, Any]:
    now = datetime.now(UTC).replace(minute=59, second=59, microsecond=0)
    end = now.timestamp()
    big, small = tmp / "big", tmp / "small"
    print(f"  writing {total:,} records over {days} days ...", flush=True)
    write_archive(big, end - days * 86400, days * 86400, total, level)
    per_hour = total // (days * 24)
    write_archive(small, end - 3600, 3600, per_hour, level)
    query = RecordFilter(selector=compile_selector("*.err"), since=parse_time("-1h", now))
    t_big, n_big = best_of(3, lambda: count_query(big, query))
    t_small, n_small = best_of(3, lambda: count_query(small, query))
    return {
        "big_s": t_big,
        "small_s": t_small,
        "big_n": n_big,
        "small_n": n_small,
        "ratio": t_big / t_small,
    }


def full_scan(tmp: Path, count: int, level: int) -> dict[str, Any]:
    directory = tmp / "scan"
    start = (datetime.now(UTC) - timedelta(days=2)).replace(hour=0, minute=0).timestamp()
    print(f"  writing {count:,} records for the full scan ...", flush=True)
    write_archive(directory, start, 6 * 3600, count, level)
    files = sorted(str(p) for p in directory.rglob("*.jsonl.gz"))
    query = RecordFilter(selector=compile_selector("*.err"))
    t_ours, n_ours = best_of(3, lambda: count_archive(directory, query))
    t_ordered, n_ordered = best_of(3, lambda: count_query(directory, query))
    shell = f'zcat {" ".join(files)} | grep -c \'"severity":"err"\''
    t_zcat, out = best_of(
        3, lambda: subprocess.run(shell, shell=True, capture_output=True, text=True).stdout
    )
    return {
        "records": count,
        "ours_s": t_ours,
        "zcat_s": t_zcat,
        "ours_n": n_ours,
        "zcat_n": int(out.strip() or 0),
        "ratio": t_zcat / t_ours,
        "ordered_s": t_ordered,
        "ordered_n": n_ordered,
        "ordered_ratio": t_zcat / t_ordered,
    }


def replay_rate(tmp: Path, count: int, level: int) -> dict[str, Any]:
    """Rates (records/s, best of 3 rounds, each round running all four) of ``replay
    --to-sink`` with batches (the default there) and with ``--batch off``, and of the
    handler with ``batch="off"`` (its default) and ``batch="auto"``."""
    directory = tmp / "replay"
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    write_archive(directory, start, 600, count, level)
    tag = uuid.uuid4().hex[:8]
    sink, exchange = f"benchreplay_{tag}", f"bench.replay.{tag}"
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    channel.queue_declare(f"logrouter.{sink}", durable=True)
    channel.exchange_declare(exchange, "topic", durable=True)
    channel.queue_declare(f"bench.handler.{tag}", durable=True)
    channel.queue_bind(f"bench.handler.{tag}", exchange, "#")
    # The command as installed: bytecode cached (PYTHONDONTWRITEBYTECODE would compile
    # every module at each start); the cache lives in tmp, the first round fills it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(ROOT), PYTHONPYCACHEPREFIX=str(tmp / "pycache"))
    rates: dict[str, float] = {}

    def best(name: str, seconds: float) -> None:
        rates[name] = max(rates.get(name, 0.0), count / seconds)

    try:
        for _ in range(3):
            for batch in ("auto", "off"):
                channel.queue_purge(f"logrouter.{sink}")
                best(f"replay_{batch}", replay_once(directory, sink, batch, tmp, env))
            for batch in ("off", "auto"):
                channel.queue_purge(f"bench.handler.{tag}")
                best(f"handler_{batch}", handler_once(exchange, batch, count, tag))
    finally:
        for queue in (f"logrouter.{sink}", f"bench.handler.{tag}"):
            channel.queue_delete(queue)
        channel.exchange_delete(exchange)
        connection.close()
    return {"records": count, **rates}


def replay_once(directory: Path, sink: str, batch: str, tmp: Path, env: dict[str, str]) -> float:
    """Seconds of one ``python -m logrouter replay --to-sink`` run, start-up included."""
    cmd = [sys.executable, "-m", "logrouter", "replay", "--dir", str(directory), "--url", URL]
    cmd += ["--since", "2025-12-31", "--to-sink", sink, "--batch", batch]
    cmd += ["--config", str(tmp / "none.toml")]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return elapsed


def handler_once(exchange: str, batch: str, count: int, tag: str) -> float:
    """Seconds for ``RabbitHandler`` to log ``count`` records until all are confirmed."""
    from logrouter import RabbitHandler

    handler = RabbitHandler(
        url=URL, exchange=exchange, facility="bench", flush_timeout=120, batch=batch
    )
    log = logging.getLogger(f"bench.query.{tag}.{batch}")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    started = time.perf_counter()
    for i in range(count):
        log.info("user %s logged in from %s", i, "10.0.0.1")
    handler.flush()
    elapsed = time.perf_counter() - started
    log.removeHandler(handler)
    handler.close()
    return elapsed


def report(
    args: argparse.Namespace, prune: dict[str, Any], scan: dict[str, Any], replay: dict[str, Any]
) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            f"`python -m bench.query --days {args.days} --total {args.total} --scan {args.scan} "
            f"--replay {args.replay}` ({stamp}); best of 3, one machine.",
            "",
            "| measurement | ours | reference | ratio | target |",
            "|---|---|---|---|---|",
            f"| `query '*.err' --since -1h`, {args.days}-day archive vs one-hour archive "
            f"({prune['big_n']:,} / {prune['small_n']:,} matches) | {prune['big_s'] * 1000:.1f} ms "
            f"| {prune['small_s'] * 1000:.1f} ms | {prune['ratio']:.2f}x time | <= 2 |",
            f"| full scan of {scan['records']:,} records, `query '*.err' --count` "
            f"({scan['ours_n']:,} / "
            f"{scan['zcat_n']:,}) | {scan['records'] / scan['ours_s']:,.0f} records/s "
            f"| {scan['records'] / scan['zcat_s']:,.0f} records/s (zcat \\| grep -c) "
            f"| {scan['ratio']:.2f}x throughput | >= 0.5 |",
            f"| the same through the ordered read (`read_archive`, what a printing query uses; "
            f"{scan['ordered_n']:,}) | {scan['records'] / scan['ordered_s']:,.0f} records/s "
            f"| {scan['records'] / scan['zcat_s']:,.0f} records/s (zcat \\| grep -c) "
            f"| {scan['ordered_ratio']:.2f}x throughput | - |",
            *replay_rows(replay),
            "",
        ]
    )


def replay_rows(replay: dict[str, Any]) -> list[str]:
    """Replay against the handler's confirmed rate, each mode against each (same run)."""
    rows = []
    for ours, reference, target in (
        ("auto", "off", ">= 0.8"),
        ("auto", "auto", "-"),
        ("off", "off", "-"),
    ):
        mine, theirs = replay[f"replay_{ours}"], replay[f"handler_{reference}"]
        flag = " (default)" if ours == "auto" else ""
        rows.append(
            f"| replay --to-sink --batch {ours}{flag} of {replay['records']:,} records "
            f'(process start included) vs RabbitHandler batch="{reference}" confirmed '
            f"| {mine:,.0f} records/s | {theirs:,.0f} records/s | {mine / theirs:.2f}x rate "
            f"| {target} |"
        )
    return rows


def write_docs(text: str) -> None:
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text)
    write_section("query", "Query and replay", text, DOCS)


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench.query")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--total", type=int, default=10_000_000)
    parser.add_argument("--scan", type=int, default=1_000_000)
    parser.add_argument("--replay", type=int, default=20_000)
    parser.add_argument("--level", type=int, default=6, help="gzip level of the archives")
    parser.add_argument("--no-docs", action="store_true", help="print only (smoke runs)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-query-"))
    try:
        prune = pruning(tmp, args.days, args.total, args.level)
        print(f"  pruning: {prune}", flush=True)
        scan = full_scan(tmp, args.scan, args.level)
        print(f"  full scan: {scan}", flush=True)
        replay = replay_rate(tmp, args.replay, args.level)
        print(f"  replay: {replay}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = report(args, prune, scan, replay)
    print(text)
    if not args.no_docs:
        write_docs(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
