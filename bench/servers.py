"""Handler inside 4 gunicorn workers: per-request cost and records/s delivered, as ratios.

Each contender is a fresh ``gunicorn -w 4`` (sync workers, no --preload) of
bench/apps/bench_wsgi.py, whose requests each log one record through one handler:
logrouter's RabbitHandler, NullHandler (the floor), stdlib FileHandler, stdlib
QueueHandler + QueueListener (to a file). A client in this process sends N requests,
8 at a time, after a warm-up. Reported: the logging call timed inside the worker (what
one record adds to a request; p50, p99), requests/s, ratios to NullHandler; for
RabbitHandler also records/s delivered (first request until the broker holds all N on
the queue bound to the exchange).

Run: ``.venv/bin/python -m bench servers`` (broker from $LOGROUTER_URL or localhost);
``BENCH_SERVERS_N=200`` for a smoke run. Writes bench/results/servers.md and the
"Under gunicorn" section of docs/benchmarks.md.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pika

from bench._shared import write_section
from bench.handler import URL, Route

N = int(os.environ.get("BENCH_SERVERS_N", "2000"))
WARMUP = 100
CONCURRENCY = 8
REPS = 2
CONTENDERS = ("null", "rabbit", "file", "queue")
NAMES = {
    "null": "NullHandler (floor)",
    "rabbit": "logrouter RabbitHandler",
    "file": "stdlib FileHandler",
    "queue": "stdlib QueueHandler + QueueListener (file)",
}
ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "bench" / "apps"
RESULTS = ROOT / "bench" / "results" / "servers.md"
DOCS = ROOT / "docs" / "benchmarks.md"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, n: int) -> int:
    """One request; the ns its logging call took in the worker."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", f"/?n={n}")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"request {n}: HTTP {response.status}")
        return int(body)
    finally:
        conn.close()


@dataclass
class Run:
    """One contender's run: wall seconds for N requests, ns of each logging call, delivery."""

    seconds: float
    calls_ns: list[int]
    delivered_per_s: float | None = None

    def call_us(self, q: float) -> float:
        """Quantile ``q`` of the logging call, µs."""
        ordered = sorted(self.calls_ns)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


def _load(port: int, numbers: range) -> Run:
    """Send every request, CONCURRENCY at a time."""
    start = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        calls = list(pool.map(lambda n: _get(port, n), numbers))
    return Run(time.perf_counter() - start, calls)


def _wait_port(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited ({proc.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), 1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not answer on {port}")


def _held_at(queue: str, count: int, stall: float = 10.0) -> tuple[int, float]:
    """(messages on ``queue``, time.time()) once it holds ``count``, or after ``stall``
    seconds without growth. Polls the depth (passive declare): no consumer competing with
    the workers for the 2 cores."""
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    try:
        ch = conn.channel()
        held, changed = -1, time.monotonic()
        while True:
            depth = int(ch.queue_declare(queue, passive=True).method.message_count)
            if depth >= count or time.monotonic() - changed > stall:
                return depth, time.time()
            if depth != held:
                held, changed = depth, time.monotonic()
            time.sleep(0.005)
    finally:
        conn.close()


def run_one(kind: str, tmp: Path) -> Run:
    """N requests to a fresh gunicorn whose workers log through ``kind``."""
    route = Route() if kind == "rabbit" else None
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(APPS),
        "LR_BENCH_HANDLER": kind,
        "LR_BENCH_URL": URL,
        "LR_BENCH_EXCHANGE": route.exchange if route else "",
        "LR_BENCH_FILE": str(tmp / f"{kind}.log"),
        "XDG_CACHE_HOME": str(tmp / "cache"),
    }
    gunicorn = Path(sys.executable).parent / "gunicorn"
    argv = [str(gunicorn), "-b", f"127.0.0.1:{port}", "-w", "4", "--no-control-socket"]
    proc = subprocess.Popen(
        [*argv, "bench_wsgi:app"],
        env=env,
        cwd=APPS,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_port(proc, port)
        _load(port, range(WARMUP))
        start = time.time()
        run = _load(port, range(WARMUP, WARMUP + N))
        if route:
            held, last = _held_at(route.queue, N + WARMUP)
            if held < N + WARMUP:
                raise RuntimeError(f"{kind}: {held} of {N + WARMUP} records delivered")
            run.delivered_per_s = N / (last - start)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        return run
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if route:
            route.close()


def measure(tmp: Path) -> dict[str, Run]:
    """Best (fastest) of REPS per contender, interleaved so drift hits all alike."""
    best: dict[str, Run] = {}
    for _ in range(REPS):
        for kind in CONTENDERS:
            run = run_one(kind, tmp)
            print(
                f"  {NAMES[kind]}: {N / run.seconds:,.0f} requests/s,"
                f" logging call p50 {run.call_us(0.5):.1f} µs",
                flush=True,
            )
            if kind not in best or run.seconds < best[kind].seconds:
                best[kind] = run
    return best


def report(best: dict[str, Run]) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    floor = best["null"]
    lines = [
        f"`python -m bench servers` ({when}); `gunicorn -w 4` (sync), {N:,} requests"
        f" ({CONCURRENCY} at a time, after {WARMUP} of warm-up), each logging one record"
        ' (`log.info("request %s from %s", ...)`), best of'
        f" {REPS}, one machine (2 cores: client, workers and broker).",
        "",
        "| handler in the workers | logging call in the worker, p50 / p99 µs"
        " | p50 ratio to NullHandler | requests/s | ratio to NullHandler | records/s delivered |",
        "|---|---|---|---|---|---|",
    ]
    for kind in CONTENDERS:
        run = best[kind]
        delivered = f"{run.delivered_per_s:,.0f} (all confirmed)" if run.delivered_per_s else "—"
        lines.append(
            f"| {NAMES[kind]} | {run.call_us(0.5):.1f} / {run.call_us(0.99):.1f}"
            f" | {run.call_us(0.5) / floor.call_us(0.5):.2f} | {N / run.seconds:,.0f}"
            f" | {floor.seconds / run.seconds:.2f} | {delivered} |"
        )
    lines += [
        "",
        "Reading the figures: the logging call is timed inside the worker, around"
        " `log.info` (what one record adds to a request); requests/s is the whole loop,"
        " with the HTTP client on the same 2 cores, so it moves with everything else on the"
        " box and only large differences mean something. Records/s delivered (first request"
        " until the broker held all N) is bounded by the request rate"
        " (one record per request); `bench handler` gives the handler's own rate.",
    ]
    return "\n".join(lines) + "\n"


def write_docs(text: str) -> None:
    write_section("servers", "Under gunicorn (4 workers)", text, DOCS)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp_name:
        best = measure(Path(tmp_name))
    text = report(best)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("# Handler under gunicorn benchmark\n\n" + text)
    write_docs(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
