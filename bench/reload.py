"""Time from saving the routing config to the new bindings being live.

Run: ``python -m bench reload`` (part of ``make bench``). A real ``logrouter run``
process watches its config; each round saves a new `match` (editor-style rename),
then probes are published every 5 ms on the newly selected key, each carrying its
publish time. The first probe written to the sink's file dates the moment the new
routing was live. Writes bench/results/reload.md and the section in docs/benchmarks.md.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pika

from bench._shared import write_section

URL = os.environ.get("LOGROUTER_TEST_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
ROUNDS = 30
PROBE_EVERY = 0.005
RESULTS = Path(__file__).parent / "results" / "reload.md"
DOCS = Path(__file__).parent.parent / "docs" / "benchmarks.md"


def write_config(path: Path, exchange: str, sink: str, match: str) -> None:
    text = (
        f'[broker]\nurl = "{URL}"\nexchange = "{exchange}"\n\n'
        f'[sinks.{sink}]\ntype = "file"\nmatch = "{match}"\npath = "out/lat.log"\n'
        "batch_interval = 0.01\n"
    )
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}")
    tmp.write_text(text)
    os.replace(tmp, path)


def first_probe(out: Path, key: str) -> float | None:
    if not out.exists():
        return None
    stamps = [
        float(line.rsplit("probe ", 1)[1].split()[1])
        for line in out.read_text().splitlines()
        if f"probe {key} " in line
    ]
    return min(stamps) if stamps else None


def measure() -> list[float]:
    tag = uuid.uuid4().hex[:6]
    exchange, sink = f"bench.reload.{tag}", f"benchreload-{tag}"
    latencies: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "routing.toml"
        out = Path(tmp) / "out" / "lat.log"
        write_config(config, exchange, sink, "k0.*")
        env = dict(os.environ, LOGROUTER_STATE_DIR=str(Path(tmp) / "state"))
        daemon = subprocess.Popen(
            [sys.executable, "-m", "logrouter", "run", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        connection = pika.BlockingConnection(pika.URLParameters(URL))
        channel = connection.channel()
        try:
            deadline = time.monotonic() + 30
            while first_probe(out, "k0") is None and time.monotonic() < deadline:
                try:
                    channel.exchange_declare(exchange, passive=True)
                    channel.basic_publish(exchange, "k0.info", f"probe k0 {time.time()}".encode())
                except pika.exceptions.ChannelClosedByBroker:  # not declared by the sink yet
                    channel = connection.channel()
                connection.sleep(0.1)
            for round_ in range(1, ROUNDS + 1):
                key = f"k{round_}"
                saved = time.time()
                write_config(config, exchange, sink, f"{key}.*")
                landed = None
                while landed is None and time.time() - saved < 10:
                    for _ in range(10):
                        channel.basic_publish(
                            exchange, f"{key}.info", f"probe {key} {time.time()}".encode()
                        )
                        connection.sleep(PROBE_EVERY)
                    landed = first_probe(out, key)
                if landed is not None:
                    latencies.append(max(0.0, landed - saved))
                connection.sleep(0.2)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(20)
            channel = connection.channel()
            channel.queue_delete(f"logrouter.{sink}")
            channel.queue_delete(f"{exchange}.unrouted")
            for name in (exchange, f"{exchange}.unrouted", f"{exchange}.control"):
                channel.exchange_delete(name)
            connection.close()
    return latencies


def report(latencies: list[float]) -> str:
    ms = sorted(x * 1000 for x in latencies)
    p90 = ms[int(len(ms) * 0.9) - 1] if ms else float("nan")
    return "\n".join(
        [
            f"Config save -> new bindings live ({len(ms)} of {ROUNDS} rounds,"
            f" `python -m bench reload`, {time.strftime('%Y-%m-%d')}):",
            "",
            "| p50 | p90 | max | target |",
            "|---|---|---|---|",
            f"| {statistics.median(ms):.0f} ms | {p90:.0f} ms | {ms[-1]:.0f} ms | p50 <= 1000 ms |",
            "",
        ]
    )


def write_docs(text: str) -> None:
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text)
    write_section("bench:reload", "Live reload", text, DOCS)


def main() -> int:
    latencies = measure()
    if not latencies:
        print("no round completed")
        return 1
    text = report(latencies)
    print(text)
    write_docs(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
