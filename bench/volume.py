"""Volume: adaptive batching and flood protection, as ratios measured in one run.

1. Throughput: N (default 1,000,000) ``log.info`` calls with ``batch="auto"``,
   from the first call until every record is confirmed, against the same loop
   with a ``NullHandler`` (the most any handler can reach in one thread) and
   ``batch="off"`` (N_OFF records, default N / 5: it runs at the broker's
   per-message rate).
2. Caller cost: µs per call (wall clock of a 100,000-call loop) of
   ``batch="auto"`` against stdlib ``QueueHandler`` (no listener).
3. Latency: ``log.info()`` -> line in the file through a running file sink at
   2,000 records/s, ``auto`` against ``off`` (p50/p99).
4. Fleet: 4 processes x 50,000 records/s (paced, batch="auto") for
   FLEET_SECONDS into an archive and a file sink: records/s each sink drains
   from its queue afterwards, and AMQP messages per record at the broker (one
   record per message would be one message per record).
5. Flood: one loop logging the same error as fast as it can for FLOOD_SECONDS
   with ``rate_limit``; another logger at 100 records/s meanwhile. Records that
   reach the broker (at most limit x seconds + burst + summaries), the other
   logger's records all delivered, caller cost of a suppressed call against a
   sent one.
6. Records per message at paced rates (PACED_RATES records/s from one process
   for PACED_SECONDS each, ``batch="auto"``): ``b`` of docs/scaling.md for apps
   that are busy but not flat out.

Run: ``.venv/bin/python -m bench volume`` (broker from $LOGROUTER_URL or
localhost); ``LOGROUTER_BENCH_N=20000`` is a smoke run that writes nothing.
Writes bench/results/volume.md and the "Volume" section of docs/benchmarks.md.
"""

from __future__ import annotations

import collections
import json
import logging
import logging.handlers
import multiprocessing
import os
import queue as queue_mod
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika

from bench._shared import IP, SMOKE, bench_logger, publish, workload
from logrouter import RabbitHandler, batchwire, topology
from logrouter.config import load_config

URL = os.environ.get("LOGROUTER_URL") or "amqp://guest:guest@127.0.0.1:5672/%2F"
N = int(os.environ.get("LOGROUTER_BENCH_N") or 1_000_000)
N_OFF = max(1000, N // 5)
COST_N = min(N, 100_000)
COST_ROUNDS = 1 if SMOKE else int(os.environ.get("LOGROUTER_BENCH_COST_ROUNDS") or 5)
FLEET_PROCESSES = 4
FLEET_RATE = 5_000 if SMOKE else 50_000
FLEET_SECONDS = 2.0 if SMOKE else 10.0
FLOOD_SECONDS = 2.0 if SMOKE else 10.0
PACED_RATES = (500, 2_000, 10_000, 50_000)
PACED_SECONDS = 1.0 if SMOKE else 5.0
FLOOD_LIMIT, FLOOD_BURST, OTHER_RATE = 100, 200, 100
LATENCY_SECONDS = 2.0 if SMOKE else 5.0


class Route:
    """A fresh exchange + a queue bound to ``#`` holding at most ``max_length`` messages."""

    def __init__(self, max_length: int | None = None) -> None:
        tag = uuid.uuid4().hex[:8]
        self.exchange, self.queue = f"bench.vol.{tag}", f"bench.vol.q.{tag}"
        args = {"x-max-length": max_length} if max_length else None
        with _channel() as ch:
            ch.exchange_declare(self.exchange, "topic")
            ch.queue_declare(self.queue, arguments=args)
            ch.queue_bind(self.queue, self.exchange, "#")

    def records(self) -> tuple[int, int, list[dict[str, Any]]]:
        """Drain the queue: (messages, records, the records), batches split."""
        messages, records = 0, []
        with _channel() as ch:
            while True:
                method, props, body = ch.basic_get(self.queue, auto_ack=True)
                if method is None:
                    break
                messages += 1
                if batchwire.is_batch(props.content_type):
                    records += [
                        r.record
                        for r in batchwire.split_batch(body, method.routing_key)
                        if r.record
                    ]
                else:
                    records.append(json.loads(body))
        return messages, len(records), records

    def close(self) -> None:
        with _channel() as ch:
            ch.queue_delete(self.queue)
            ch.exchange_delete(self.exchange)


class _channel:
    def __enter__(self) -> Any:
        self.conn = pika.BlockingConnection(pika.URLParameters(URL))
        return self.conn.channel()

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def _ours(exchange: str, tmp: Path, **options: Any) -> RabbitHandler:
    return RabbitHandler(
        url=URL,
        exchange=exchange,
        spool=str(tmp / f"spool-{uuid.uuid4().hex[:6]}.sqlite"),
        app="bench",
        flush_timeout=600,
        **options,
    )


# ---- 1. throughput and 2. caller cost ----------------------------------------------------


def confirmed_rate(tmp: Path, count: int, **options: Any) -> dict[str, float]:
    """records/s from the first call until all ``count`` are confirmed; messages per record."""
    route = Route(max_length=100_000)  # the broker stores and drops: memory stays bounded
    handler = _ours(route.exchange, tmp, **options)
    log = bench_logger(handler)
    log.info("warm-up")
    handler.flush()
    base = handler.stats
    start = time.perf_counter()
    loop = workload(log, count)
    handler.flush()
    elapsed = time.perf_counter() - start
    stats = handler.stats
    handler.close()
    route.close()
    confirmed = stats["confirmed"] - base["confirmed"]
    messages = stats.get("messages", stats["published"]) - base.get("messages", base["published"])
    return {
        "rate": confirmed / elapsed if confirmed >= count else 0.0,
        "confirmed": float(confirmed),
        "loop_us": loop / count * 1e6,
        "records_per_message": confirmed / messages if messages else 0.0,
    }


def null_rate(count: int) -> float:
    """calls/s of the workload with a NullHandler."""
    return count / workload(bench_logger(logging.NullHandler()), count)


class FormatAndKeep(logging.Handler):
    """The ceiling of a handler that formats in the caller's thread (as QueueHandler's
    ``prepare`` does, as ours must: the arguments may change after the call): the
    message formatted and the fields a body needs kept in a deque. No encoding, no I/O."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: collections.deque[tuple[Any, ...]] = collections.deque()

    def handle(self, record: logging.LogRecord) -> bool:
        self.kept.append(
            (
                record.getMessage(),
                record.created,
                record.name,
                record.levelno,
                record.levelname,
                record.threadName,
                record.process,
                record.pathname,
                record.lineno,
                record.funcName,
            )
        )
        return True


def format_and_keep_rate(count: int) -> float:
    """calls/s of the workload with ``FormatAndKeep`` (what it kept is then dropped)."""
    handler = FormatAndKeep()
    rate = count / workload(bench_logger(handler), count)
    handler.kept.clear()
    return rate


def caller_costs(tmp: Path) -> dict[str, float]:
    """µs per call (wall clock of a COST_N-call loop) for NullHandler, QueueHandler,
    format-and-keep and ours (auto, off): COST_ROUNDS rounds, every contender once per
    round in an order rotated between rounds, the median per contender (one loop of
    each moved by ±30% with the machine's state)."""
    contenders: dict[str, Callable[[], tuple[logging.Handler, Callable[[], None]]]] = {
        "NullHandler": lambda: (logging.NullHandler(), _nothing),
        "QueueHandler (no listener)": lambda: (
            logging.handlers.QueueHandler(queue_mod.SimpleQueue()),
            _nothing,
        ),
        "format-and-keep (no encoding, no I/O)": lambda: (FormatAndKeep(), _nothing),
        "RabbitHandler batch=auto": lambda: _ours_for_cost(tmp, "auto"),
        "RabbitHandler batch=off": lambda: _ours_for_cost(tmp, "off"),
    }
    names = list(contenders)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_no in range(COST_ROUNDS):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            handler, done = contenders[name]()
            log = bench_logger(handler)
            workload(log, 1000)  # warm: the I/O thread started, the code paths hot
            samples[name].append(workload(log, COST_N) / COST_N * 1e6)
            done()
    return {name: statistics.median(values) for name, values in samples.items()}


def _nothing() -> None:
    return None


def _ours_for_cost(tmp: Path, mode: str) -> tuple[logging.Handler, Callable[[], None]]:
    """Our handler into a fresh route (at most 100,000 messages kept) and its cleanup."""
    route = Route(max_length=100_000)
    handler = _ours(route.exchange, tmp, batch=mode)

    def done() -> None:
        handler.close()
        route.close()

    return handler, done


# ---- 3. latency -------------------------------------------------------------------------


def latencies(tmp: Path) -> dict[str, dict[str, float]]:
    """p50/p99 log.info() -> line in the file at 2,000 records/s, auto and off."""
    from bench import sinks as sink_bench

    out: dict[str, dict[str, float]] = {}
    for mode in ("off", "auto"):
        tag = uuid.uuid4().hex[:8]
        exchange = f"bench.lat.{tag}"
        work = tmp / f"lat-{mode}"
        work.mkdir()
        config = load_config(
            sink_bench.write_config(work, exchange, tag), env={"LOGROUTER_URL": URL}
        )
        sink = config.sinks[f"lat_{tag}"]
        try:
            out[mode] = sink_bench.latency(
                config,
                sink,
                work / "state",
                work / "lat",
                2000,
                LATENCY_SECONDS,
                handler_options={"batch": mode},
            )
        finally:
            with _channel() as ch:
                for name in config.sinks.values():
                    ch.queue_delete(name.queue)
                ch.exchange_delete(exchange)
                ch.exchange_delete(f"{exchange}.unrouted")
        print(f"  latency {mode}: {out[mode]}", flush=True)
    return out


# ---- 4. fleet ---------------------------------------------------------------------------


def _fleet_app(exchange: str, mode: str, rate: int, seconds: float, spool: str, out: Any) -> None:
    """One app process: ``rate`` records/s for ``seconds``, then flush; reports its stats."""
    handler = RabbitHandler(
        url=URL, exchange=exchange, facility="fleet", batch=mode, spool=spool, flush_timeout=600
    )
    log = bench_logger(handler, "fleet")
    total = int(rate * seconds)
    start = time.perf_counter()
    step = 500  # records per pacing step: a busy app logs in bursts
    for i in range(0, total, step):
        ahead = start + i / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
        for j in range(i, min(total, i + step)):
            log.info("user %s logged in from %s", j, IP)
    handler.flush()
    stats = handler.stats
    handler.close()
    out.put(stats)


def _write_fleet_config(tmp: Path, exchange: str) -> Path:
    path = tmp / "routing.toml"
    path.write_text(
        f"""[broker]
url = {json.dumps(URL)}
exchange = {json.dumps(exchange)}

[sinks.file]
type = "file"
match = "*.*"
path = "{tmp}/out/{{facility}}.log"
batch_size = 2000
prefetch = 2000

[sinks.archive]
type = "archive"
match = "*.*"
dir = "{tmp}/archive"
batch_size = 2000
prefetch = 2000
"""
    )
    return path


def fleet(tmp: Path, mode: str) -> dict[str, float]:
    """4 app processes into a file and an archive sink: drain rates and messages/record."""
    exchange = f"bench.fleet.{uuid.uuid4().hex[:8]}"
    work = tmp / f"fleet-{mode}"
    work.mkdir()
    config = load_config(_write_fleet_config(work, exchange), env={"LOGROUTER_URL": URL})
    topology.setup(config.broker, [topology.queue_spec(s) for s in config.sinks.values()])
    ctx = multiprocessing.get_context("spawn")
    out: Any = ctx.Queue()
    apps = [
        ctx.Process(
            target=_fleet_app,
            args=(exchange, mode, FLEET_RATE, FLEET_SECONDS, str(work / f"spool{n}"), out),
        )
        for n in range(FLEET_PROCESSES)
    ]
    start = time.perf_counter()
    for app in apps:
        app.start()
    stats = [out.get(timeout=600) for _ in apps]
    for app in apps:
        app.join(30)
    published = time.perf_counter() - start
    records = sum(s["confirmed"] for s in stats)
    messages = sum(s.get("messages", s["published"]) for s in stats)
    # The queues now hold everything: each sink drains its own, timed (as bench.sinks does).
    from bench.sinks import sink_rate

    rates = {
        name: sink_rate(sink, config, work / f"state-{name}", records, counter="written")
        for name, sink in config.sinks.items()
    }
    with _channel() as ch:
        for sink in config.sinks.values():
            ch.queue_delete(sink.queue)
        ch.exchange_delete(exchange)
        ch.exchange_delete(f"{exchange}.unrouted")
    result = {
        "records": float(records),
        "messages": float(messages),
        "publish_rate": records / published,
        "message_rate": messages / published,
        "file": rates["file"],
        "archive": rates["archive"],
    }
    print(f"  fleet {mode}: {result}", flush=True)
    return result


# ---- 5. flood ---------------------------------------------------------------------------


def flood(tmp: Path) -> dict[str, float]:
    """The same error as fast as possible with rate_limit on; another logger meanwhile."""
    route = Route()
    handler = _ours(
        route.exchange,
        tmp,
        batch="auto",
        rate_limit=FLOOD_LIMIT,
        burst=FLOOD_BURST,
        rate_limit_key="site",
    )
    flood_log = bench_logger(handler, "billing.worker")
    other_log = bench_logger(handler, "billing.web")
    other_sent = 0
    calls = 0
    start = time.perf_counter()
    deadline = start + FLOOD_SECONDS
    next_other = start
    while True:
        now = time.perf_counter()
        if now >= deadline:
            break
        if now >= next_other:
            other_log.info("request %d served", other_sent)
            other_sent += 1
            next_other += 1 / OTHER_RATE
        for _ in range(100):
            flood_log.error("payment gateway timeout")
        calls += 100
    flood_seconds = time.perf_counter() - start
    handler.flush()
    suppressed = handler.stats.get("suppressed", 0)
    handler.close()
    messages, _count, records = route.records()
    route.close()
    floods = [r for r in records if r.get("logger") == "billing.worker"]
    summaries = [r for r in floods if "suppressed" in r.get("fields", {})]
    others = {r["msg"] for r in records if r.get("logger") == "billing.web"}
    # caller cost of a suppressed call against a sent one (same handler options, no
    # limit; and batch="off", the default) and a NullHandler's: medians of COST_ROUNDS
    # rounds, the order rotated
    contenders: list[Callable[[], float]] = [
        lambda: _flood_cost(tmp, limited=True),
        lambda: _flood_cost(tmp, limited=False),
        lambda: _flood_cost(tmp, limited=False, batch="off"),
        _null_flood_cost,
    ]
    samples: list[list[float]] = [[] for _ in contenders]
    for round_no in range(COST_ROUNDS):
        for index in [(round_no + k) % len(contenders) for k in range(len(contenders))]:
            samples[index].append(contenders[index]())
    cost_suppressed, cost_sent, cost_sent_off, cost_null = map(statistics.median, samples)
    result = {
        "calls": float(calls),
        "seconds": flood_seconds,
        "flood_records": float(len(floods) - len(summaries)),
        "summaries": float(len(summaries)),
        "allowed": FLOOD_LIMIT * flood_seconds + FLOOD_BURST,
        "suppressed": float(suppressed),
        "other_sent": float(other_sent),
        "other_delivered": float(len(others)),
        "messages": float(messages),
        "cost_suppressed_us": cost_suppressed,
        "cost_sent_us": cost_sent,
        "cost_sent_off_us": cost_sent_off,
        "cost_null_us": cost_null,
    }
    print(f"  flood: {result}", flush=True)
    return result


def _null_flood_cost() -> float:
    null_log = bench_logger(logging.NullHandler(), "billing.null")
    start = time.perf_counter()
    for _ in range(COST_N):
        null_log.error("payment gateway timeout")
    return (time.perf_counter() - start) / COST_N * 1e6


def _flood_cost(tmp: Path, *, limited: bool, batch: str = "auto") -> float:
    route = Route(max_length=100_000)
    options: dict[str, Any] = {"batch": batch}
    if limited:
        options.update(rate_limit=1, burst=1)
    handler = _ours(route.exchange, tmp, **options)
    log = bench_logger(handler, "billing.worker")
    for _ in range(1000):
        log.error("payment gateway timeout")
    start = time.perf_counter()
    for _ in range(COST_N):
        log.error("payment gateway timeout")
    cost = (time.perf_counter() - start) / COST_N * 1e6
    handler.close()
    route.close()
    return cost


# ---- 6. records per message at paced rates ------------------------------------------------


def paced(tmp: Path) -> dict[int, dict[str, float]]:
    """Records and AMQP messages of one ``batch="auto"`` process at each paced rate."""
    out: dict[int, dict[str, float]] = {}
    for rate in PACED_RATES:
        route = Route(max_length=100_000)
        handler = _ours(route.exchange, tmp, batch="auto")
        log = bench_logger(handler)
        log.info("warm-up")
        handler.flush()
        base = handler.stats
        start = time.perf_counter()
        sent = 0
        while (now := time.perf_counter()) - start < PACED_SECONDS:
            for _ in range(int((now - start) * rate) - sent):
                log.info("user %s logged in from %s", sent, IP)
                sent += 1
            time.sleep(0.0005)
        handler.flush()
        stats = handler.stats
        handler.close()
        route.close()
        records = stats["published"] - base["published"]
        messages = stats["messages"] - base["messages"]
        out[rate] = {"records": float(records), "messages": float(messages)}
        print(f"  paced {rate}/s: {records} records in {messages} messages", flush=True)
    return out


# ---- report ------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    auto, off, null = results["auto"], results["off"], results["null"]
    keep = results["format_and_keep"]
    costs, lat, flood_r = results["costs"], results["latency"], results["flood"]
    qh = costs["QueueHandler (no listener)"]
    lines = [
        f"`python -m bench volume` ({when}); one run, one machine.",
        "",
        'Throughput, `log.info("user %s logged in from %s", i, ip)`, first call until all'
        " confirmed:",
        "",
        "| contender | records/s | ratio to NullHandler loop | records per message | target |",
        "|---|---|---|---|---|",
        f"| NullHandler loop ({N:,} calls) | {null:,.0f} | 1.00 | | |",
        f"| format-and-keep handler, no encoding, no I/O ({N:,} calls) | {keep:,.0f}"
        f" | {keep / null:.2f} | | |",
        f"| batch=auto ({N:,} records) | {auto['rate']:,.0f} | {auto['rate'] / null:.2f}"
        f" | {auto['records_per_message']:.1f} | >= 0.7 |",
        f"| batch=off ({N_OFF:,} records) | {off['rate']:,.0f} | {off['rate'] / null:.2f}"
        f" | {off['records_per_message']:.1f} | |",
        "",
        "The format-and-keep row is the ceiling of any handler that formats the message in"
        " the caller's thread and keeps what a body needs (QueueHandler does more): it encodes"
        " nothing and sends nothing. batch=auto reaches"
        f" {auto['rate'] / keep:.2f}x of it while encoding, packing, publishing and waiting"
        " for every confirm in the same process.",
        "",
        f"batch=auto / batch=off: {auto['rate'] / off['rate']:.1f}x (target >= 6x)."
        if off["rate"]
        else "batch=off did not confirm every record.",
        "",
        f"Caller cost (wall clock of a {COST_N:,}-call loop; median of {COST_ROUNDS} rounds,"
        " every contender once per round, the order rotated):",
        "",
        "| contender | µs/call | ratio to QueueHandler | target |",
        "|---|---|---|---|",
    ]
    for name, value in costs.items():
        target = "<= 1.0" if name == "RabbitHandler batch=auto" else ""
        lines.append(f"| {name} | {value:.2f} | {value / qh:.2f} | {target} |")
    lines += [
        "",
        "Latency `log.info()` -> line in the file at 2,000 records/s:",
        "",
        "| mode | p50 ms | p99 ms | max ms | missing |",
        "|---|---|---|---|---|",
    ]
    for mode, values in lat.items():
        lines.append(
            f"| batch={mode} | {values['p50']:.1f} | {values['p99']:.1f} | {values['max']:.1f}"
            f" | {values['lost']:.0f} |"
        )
    if "off" in lat and "auto" in lat:
        lines.append("")
        lines.append(
            f"p99 auto / off: {lat['auto']['p99'] / lat['off']['p99']:.2f}"
            " (target <= 1.2, p99 <= 100 ms)."
        )
    lines += [
        "",
        f"Fleet: {FLEET_PROCESSES} processes x {FLEET_RATE:,} records/s for {FLEET_SECONDS:.0f} s,"
        " then each sink drains its queue:",
        "",
        "| mode | records | AMQP messages | records/s published | messages/s"
        " | file sink records/s | archive sink records/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, f in results["fleet"].items():
        lines.append(
            f"| batch={mode} | {f['records']:,.0f} | {f['messages']:,.0f}"
            f" | {f['publish_rate']:,.0f} | {f['message_rate']:,.0f}"
            f" | {f['file']:,.0f} | {f['archive']:,.0f} |"
        )
    auto_fleet = results["fleet"].get("auto")
    if auto_fleet and auto_fleet["messages"]:
        per_message = auto_fleet["records"] / auto_fleet["messages"]
        lines += [
            "",
            f"Broker message rate against one record per message: {per_message:.1f}x"
            " lower (target >= 10x); targets for the drains: archive >= 150,000, file >= 80,000"
            " records/s.",
        ]
    lines += [
        "",
        f"Flood: one call site logging the same error for {flood_r['seconds']:.1f} s"
        f" ({flood_r['calls']:,.0f} calls), rate_limit={FLOOD_LIMIT}, burst={FLOOD_BURST};"
        f" another logger at {OTHER_RATE} records/s:",
        "",
        f"- flood records at the broker: {flood_r['flood_records']:,.0f}"
        f" (allowed at most {flood_r['allowed']:,.0f}) + {flood_r['summaries']:.0f} summaries;"
        f" {flood_r['suppressed']:,.0f} suppressed;",
        f"- the other logger: {flood_r['other_delivered']:,.0f} of {flood_r['other_sent']:,.0f}"
        " delivered;",
        f"- caller cost ({COST_N:,}-call loops, medians of {COST_ROUNDS} rounds): suppressed"
        f" {flood_r['cost_suppressed_us']:.2f} µs/call, sent"
        f" {flood_r['cost_sent_us']:.2f} µs/call with batch=auto"
        f" (ratio {flood_r['cost_suppressed_us'] / flood_r['cost_sent_us']:.2f}, target <= 0.5),"
        f" {flood_r['cost_sent_off_us']:.2f} µs/call with batch=off, the default (ratio"
        f" {flood_r['cost_suppressed_us'] / flood_r['cost_sent_off_us']:.2f});"
        f" the same call with a NullHandler {flood_r['cost_null_us']:.2f} µs/call (the floor:"
        " logging builds the LogRecord before any handler sees it, so no handler's ratio can be"
        f" below {flood_r['cost_null_us'] / flood_r['cost_sent_us']:.2f} here).",
        "",
        f'Records per message of one `batch="auto"` process logging at a steady rate for'
        f" {PACED_SECONDS:.0f} s (a backlog waits only while the broker owes a confirm,"
        " linger_ms at most):",
        "",
        "| records/s | records | AMQP messages | records per message |",
        "|---|---|---|---|",
    ]
    for rate, got in results["paced"].items():
        lines.append(
            f"| {rate:,} | {got['records']:,.0f} | {got['messages']:,.0f}"
            f" | {got['records'] / max(1.0, got['messages']):.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lr-volume-") as tmp_name:
        tmp = Path(tmp_name)
        results["null"] = null_rate(N)
        print(f"  NullHandler loop: {results['null']:,.0f} calls/s", flush=True)
        results["format_and_keep"] = format_and_keep_rate(N)
        print(f"  format-and-keep: {results['format_and_keep']:,.0f} calls/s", flush=True)
        results["auto"] = confirmed_rate(tmp, N, batch="auto")
        print(f"  batch=auto: {results['auto']}", flush=True)
        results["off"] = confirmed_rate(tmp, N_OFF, batch="off")
        print(f"  batch=off: {results['off']}", flush=True)
        results["costs"] = caller_costs(tmp)
        print(f"  caller costs: {results['costs']}", flush=True)
        results["latency"] = latencies(tmp)
        results["fleet"] = {"auto": fleet(tmp, "auto")}
        results["flood"] = flood(tmp)
        results["paced"] = paced(tmp)
    return publish("volume", "Volume (batching, flood protection)", report(results))


if __name__ == "__main__":
    sys.exit(main())
