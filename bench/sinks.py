"""Sink throughput and latency, as ratios measured in one run.

1. A 100,000-record durable queue drained by: a plain pika loop (consume, write
   the body, fsync + ``multiple`` ack every 500, prefetch 1000: the reference),
   the file sink (fsync per batch), and the archive sink, each sink also with its
   inbound fast path off (``fast_deliveries=False``: pika decodes every frame).
2. p99 latency ``log.info()`` -> line in the file at 2,000 records/s through
   ``RabbitHandler`` and a running file sink.

Run: ``.venv/bin/python -m bench.sinks`` (broker from $LOGROUTER_URL or localhost).
Writes bench/results/sinks.md and the "Sinks" section of docs/benchmarks.md.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pika

from logrouter import topology, wire
from logrouter.config import SinkConfig, load_config
from logrouter.sinks.consumer import Sink

URL = os.environ.get("LOGROUTER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
RECORDS = int(os.environ.get("BENCH_SINK_RECORDS", "100000"))
ROUNDS = int(os.environ.get("BENCH_SINK_ROUNDS", "3"))
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "sinks.md"
DOCS = ROOT / "docs" / "benchmarks.md"
BATCH = 500
PREFETCH = 1000


def fill(exchange: str, queue: str, count: int) -> None:
    """Publish ``count`` records (handler-shaped JSON) routed to ``queue``; wait till queued."""
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    now = time.time()
    for i in range(count):
        body = {
            "v": 1,
            "ts": wire.format_ts(now),
            "host": "bench",
            "app": "bench",
            "pid": 1,
            "thread": "MainThread",
            "logger": "bench",
            "facility": "bench",
            "severity": "info",
            "level": "INFO",
            "msg": f"user {i} logged in from 10.0.{i % 256}.{i % 199}",
            "src": {"file": "bench.py", "line": 1, "func": "fill"},
            "fields": {},
        }
        channel.basic_publish(
            exchange,
            "bench.info",
            wire.encode(body),
            pika.BasicProperties(
                content_type="application/json", delivery_mode=2, message_id=uuid.uuid4().hex
            ),
        )
    deadline = time.monotonic() + 120
    while channel.queue_declare(queue, passive=True).method.message_count < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"queue {queue} did not reach {count} messages")
        connection.sleep(0.1)
    connection.close()


def plain_loop(queue: str, path: Path, count: int) -> float:
    """The reference: consume, write, fsync + multiple ack every BATCH. Records/s."""
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=PREFETCH)
    handle = open(path, "ab")  # noqa: SIM115
    state = {"n": 0, "pending": 0}

    def on_message(ch: Any, method: Any, _props: Any, body: bytes) -> None:
        handle.write(body + b"\n")
        state["n"] += 1
        state["pending"] += 1
        if state["pending"] >= BATCH or state["n"] == count:
            handle.flush()
            os.fsync(handle.fileno())
            ch.basic_ack(method.delivery_tag, multiple=True)
            state["pending"] = 0

    channel.basic_consume(queue, on_message)
    start = time.perf_counter()
    while state["n"] < count:
        connection.process_data_events(time_limit=0.2)
    elapsed = time.perf_counter() - start
    handle.close()
    connection.close()
    return count / elapsed


def sink_rate(
    sink: SinkConfig,
    config: Any,
    state: Path,
    count: int,
    counter: str = "acked",
    *,
    fast_deliveries: bool = True,
) -> float:
    """Drain with the real Sink (in a thread); records/s from consuming until the sink's
    ``counter`` reaches ``count`` ("acked" counts messages, "written" records).
    ``fast_deliveries=False``: pika's own inbound path (sinks/deliveries.py off)."""
    runner = Sink(sink, config.broker, state_dir=state, fast_deliveries=fast_deliveries)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    if not runner.consuming.wait(30):
        raise RuntimeError(f"sink {sink.name} did not start consuming")
    start = time.perf_counter()
    deadline = time.monotonic() + 600
    while getattr(runner.counters, counter) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"sink {sink.name} stalled at {getattr(runner.counters, counter)}")
        time.sleep(0.002)
    elapsed = time.perf_counter() - start
    runner.stop()
    thread.join(30)
    return count / elapsed


def latency(
    config: Any,
    sink: SinkConfig,
    state: Path,
    out: Path,
    rate: int,
    seconds: float,
    handler_options: dict[str, Any] | None = None,
) -> dict[str, float]:
    """p50/p99/max ms from log.info() to the line in the file, at ``rate`` records/s.

    As in production, the sink daemon is a process of its own (`logrouter sink`); the
    app (logging loop + RabbitHandler) and the file reader run here.
    """
    from logrouter import RabbitHandler

    daemon = subprocess.Popen(
        [sys.executable, "-m", "logrouter", "sink", sink.name, str(config.path)],
        env=dict(os.environ, LOGROUTER_STATE_DIR=str(state), LOGROUTER_URL=URL),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    probe = pika.BlockingConnection(pika.URLParameters(URL))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            frame = probe.channel().queue_declare(sink.queue, passive=True)
            if frame.method.consumer_count:
                break
        except pika.exceptions.ChannelClosedByBroker:
            pass
        time.sleep(0.05)
    probe.close()
    handler = RabbitHandler(
        url=URL, exchange=config.broker.exchange, facility="lat", **(handler_options or {})
    )
    logger = logging.getLogger("bench.latency")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    sent: dict[int, float] = {}
    seen: dict[int, float] = {}
    total = int(rate * seconds)
    stop = threading.Event()

    def tail() -> None:
        path = out / "lat.log"
        while not path.exists() and not stop.is_set():
            time.sleep(0.001)
        with open(path, "rb") as handle:
            buffer = b""
            while not stop.is_set():
                chunk = handle.read()
                if not chunk:
                    time.sleep(0.001)
                    continue
                now = time.perf_counter()
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    marker = line.rfind(b"lat-")
                    if marker >= 0:
                        seen[int(line[marker + 4 :].split()[0])] = now

    reader = threading.Thread(target=tail, daemon=True)
    reader.start()
    start = time.perf_counter()
    for i in range(total):
        target = start + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent[i] = time.perf_counter()
        logger.info("lat-%d tick", i)
    deadline = time.monotonic() + 30
    while len(seen) < total and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    reader.join(5)
    logger.removeHandler(handler)
    handler.close()
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(30)
    delays = sorted((seen[i] - sent[i]) * 1000 for i in sent if i in seen)
    if not delays:
        raise RuntimeError("no record reached the file")

    def pct(p: float) -> float:
        return delays[min(len(delays) - 1, int(len(delays) * p))]

    return {
        "count": len(delays),
        "lost": total - len(delays),
        "p50": pct(0.5),
        "p99": pct(0.99),
        "max": delays[-1],
    }


def write_config(tmp: Path, exchange: str, tag: str) -> Path:
    path = tmp / "routing.toml"
    path.write_text(
        f"""[broker]
url = {json.dumps(URL)}
exchange = {json.dumps(exchange)}

[sinks.file_{tag}]
type = "file"
match = "*.*"
path = "{tmp}/out/{{facility}}.log"
batch_size = {BATCH}
prefetch = {PREFETCH}

[sinks.archive_{tag}]
type = "archive"
match = "*.*"
dir = "{tmp}/archive"
batch_size = {BATCH}
prefetch = {PREFETCH}

[sinks.lat_{tag}]
type = "file"
match = "lat.*"
path = "{tmp}/lat/{{facility}}.log"
"""
    )
    return path


def main() -> int:
    tag = uuid.uuid4().hex[:8]
    exchange = f"bench.logs.{tag}"
    with tempfile.TemporaryDirectory(prefix="lr-bench-") as tmp_name:
        tmp = Path(tmp_name)
        config = load_config(write_config(tmp, exchange, tag), env={"LOGROUTER_URL": URL})
        file_sink = config.sinks[f"file_{tag}"]
        archive_sink = config.sinks[f"archive_{tag}"]
        lat_sink = config.sinks[f"lat_{tag}"]
        connection = pika.BlockingConnection(pika.URLParameters(URL))
        channel = connection.channel()
        topology.declare_exchange(channel, exchange)
        plain_queue = f"bench.plain.{tag}"
        results: dict[str, Any] = {}
        rates: dict[str, list[float]] = {
            "plain": [],
            "file": [],
            "file-slow": [],
            "archive": [],
            "archive-slow": [],
        }
        order = list(rates)
        try:
            # Rounds, each contender once per round, the order rotated between rounds
            # (the broker is still busy after a fill or a delete): medians per contender.
            for round_no in range(ROUNDS):
                shift = round_no % len(order)
                for key in order[shift:] + order[:shift]:
                    print(f"round {round_no + 1}: {key}, filling {RECORDS} ...", file=sys.stderr)
                    if key == "plain":
                        channel.queue_declare(plain_queue, durable=True)
                        channel.queue_bind(plain_queue, exchange, "bench.*")
                        fill(exchange, plain_queue, RECORDS)
                        rate = plain_loop(plain_queue, tmp / "plain.log", RECORDS)
                        channel.queue_delete(plain_queue)
                    else:
                        sink = file_sink if key.startswith("file") else archive_sink
                        spec = topology.queue_spec(sink)
                        topology.declare_queue(channel, exchange, spec)
                        # topology keeps a record of applied bindings that a plain
                        # queue_delete does not update: bind explicitly (idempotent)
                        for key_pattern in spec.bindings:
                            channel.queue_bind(sink.queue, exchange, key_pattern)
                        fill(exchange, sink.queue, RECORDS)
                        state = tmp / f"state-{key}-{round_no}"
                        fast = not key.endswith("-slow")
                        rate = sink_rate(sink, config, state, RECORDS, fast_deliveries=fast)
                        channel.queue_delete(sink.queue)
                    rates[key].append(rate)
                    print(f"  {key}: {rate:,.0f} records/s", file=sys.stderr)
            for key, values in rates.items():
                results[key] = statistics.median(values)
            results["rounds"] = rates
            results["latency"] = latency(config, lat_sink, tmp / "state", tmp / "lat", 2000, 5.0)
        finally:
            for queue in (plain_queue, file_sink.queue, archive_sink.queue, lat_sink.queue):
                channel.queue_delete(queue)
            channel.queue_delete(f"{exchange}.unrouted")
            channel.exchange_delete(exchange)
            channel.exchange_delete(f"{exchange}.unrouted")
            connection.close()
    report(results)
    return 0


def report(results: dict[str, Any]) -> None:
    plain, lat = results["plain"], results["latency"]
    rounds = results.get("rounds", {})

    def each(key: str) -> str:
        return " / ".join(f"{v:,.0f}" for v in rounds.get(key, []))

    table = "\n".join(
        [
            f"Drain of a {RECORDS:,}-record durable queue, batch {BATCH}, prefetch {PREFETCH}, "
            f"fsync per batch; one run, one machine, {ROUNDS} rounds (contender order rotated "
            "each round), median records/s per contender:",
            "",
            "| contender | records/s (median) | ratio to plain loop | target | rounds |",
            "|---|---|---|---|---|",
            f"| plain pika consume+write+fsync+multiple ack | {plain:,.0f} | 1.00 | | "
            f"{each('plain')} |",
            f"| file sink | {results['file']:,.0f} | {results['file'] / plain:.2f} | >= 0.8 | "
            f"{each('file')} |",
            f"| archive sink (gzip level 6) | {results['archive']:,.0f} | "
            f"{results['archive'] / plain:.2f} | >= 0.6 | {each('archive')} |",
            f"| file sink, fast path off | {results['file-slow']:,.0f} | "
            f"{results['file-slow'] / plain:.2f} | | {each('file-slow')} |",
            f"| archive sink, fast path off | {results['archive-slow']:,.0f} | "
            f"{results['archive-slow'] / plain:.2f} | | {each('archive-slow')} |",
            "",
            f"Latency log.info() -> line in file at 2,000 records/s ({lat['count']:,} records, "
            f"{lat['lost']} missing): p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, "
            f"max {lat['max']:.1f} ms (target p99 <= 100 ms).",
        ]
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    RESULTS.write_text(f"# Sink benchmark ({stamp})\n\n{table}\n")
    section = (
        f"<!-- sinks:begin -->\n## Sinks\n\n`python -m bench.sinks` ({stamp}).\n\n"
        f"{table}\n<!-- sinks:end -->"
    )
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    if "<!-- sinks:begin -->" in text:
        head, _, rest = text.partition("<!-- sinks:begin -->")
        text = head + section + rest.partition("<!-- sinks:end -->")[2]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOCS.write_text(text)
    print(table)


if __name__ == "__main__":
    raise SystemExit(main())
