"""Sink drain, capture and replay: the fleet's batch messages drained by one sink.

Not one of ``python -m bench``'s benchmarks (it writes no results): a tool to
measure changes to the sinks' commit path quickly and repeatably.

* ``python -m bench._drain capture [N]``: 4 app processes log N records (default
  400,000) with ``RabbitHandler(batch="auto")`` as fast as they can; the batch
  messages (bodies and properties) are saved to ``$LOGROUTER_DRAIN_CAPTURE``
  (default /tmp/logrouter-drain.pkl).
* ``python -m bench._drain drain file,archive [ROUNDS]``: per round and sink, the
  capture is published again to the sink's queue, then drained by the real
  ``Sink`` (``bench.sinks.sink_rate``, batch 2,000 and prefetch 2,000 as the
  fleet); prints records/s (wall) and the process's CPU seconds during the drain,
  and checks every record reached the output.

On a shared box compare CPU seconds, and wall clock only over interleaved runs.
"""

from __future__ import annotations

import gzip
import multiprocessing
import os
import pickle
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pika

from bench._shared import IP, bench_logger
from logrouter import RabbitHandler, topology
from logrouter.config import load_config

URL = os.environ.get("LOGROUTER_URL") or "amqp://guest:guest@127.0.0.1:5672/%2F"
CAPTURE = Path(os.environ.get("LOGROUTER_DRAIN_CAPTURE") or "/tmp/logrouter-drain.pkl")
APPS = 4


def _app(exchange: str, count: int, spool: str, out: Any) -> None:
    handler = RabbitHandler(
        url=URL, exchange=exchange, facility="fleet", batch="auto", spool=spool, flush_timeout=600
    )
    log = bench_logger(handler, "fleet")
    for i in range(count):
        log.info("user %s logged in from %s", i, IP)
    handler.flush()
    out.put(handler.stats)
    handler.close()


def capture(total: int) -> None:
    """Log ``total`` records from APPS processes; save the messages they published."""
    exchange = f"bench.drain.{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    channel.exchange_declare(exchange, "topic", durable=True)
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, exchange, "#")
    context = multiprocessing.get_context("spawn")
    out: Any = context.Queue()
    with tempfile.TemporaryDirectory(prefix="lr-drain-") as tmp:
        apps = [
            context.Process(target=_app, args=(exchange, total // APPS, f"{tmp}/spool{n}", out))
            for n in range(APPS)
        ]
        for app in apps:
            app.start()
        for _ in apps:
            out.get(timeout=600)
        for app in apps:
            app.join(30)
    messages = []
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        messages.append((method.routing_key, properties, body))
    channel.exchange_delete(exchange)
    connection.close()
    CAPTURE.write_bytes(pickle.dumps(messages))
    records = sum(len(body.splitlines()) for _, _, body in messages)
    print(f"captured {len(messages)} messages, {records} records -> {CAPTURE}")


def _config(work: Path, exchange: str) -> Any:
    """The fleet benchmark's sinks (bench/volume.py): the drains compare like for like."""
    from bench.volume import _write_fleet_config

    return load_config(_write_fleet_config(work, exchange), env={"LOGROUTER_URL": URL})


def _written(work: Path, kind: str) -> int:
    if kind == "file":
        return sum(len(path.read_bytes().splitlines()) for path in (work / "out").glob("*.log"))
    return sum(
        len(gzip.decompress(path.read_bytes()).splitlines())
        for path in (work / "archive").rglob("*.jsonl.gz")
    )


def drain(kinds: list[str], rounds: int) -> None:
    """Per round and sink: publish the capture to the sink's queue, drain it, time it."""
    from bench.sinks import sink_rate

    messages = pickle.loads(CAPTURE.read_bytes())  # our own capture
    records = sum(len(body.splitlines()) for _, _, body in messages)
    for round_no in range(rounds):
        for kind in kinds:
            work = Path(tempfile.mkdtemp(prefix="lr-drain-"))
            exchange = f"bench.drain.{uuid.uuid4().hex[:8]}"
            config = _config(work, exchange)
            sink = config.sinks[kind]
            topology.setup(config.broker, [topology.queue_spec(sink)])
            connection = pika.BlockingConnection(pika.URLParameters(URL))
            channel = connection.channel()
            channel.confirm_delivery()
            for routing_key, properties, body in messages:
                channel.basic_publish(exchange, routing_key, body, properties)
            before = os.times()
            rate = sink_rate(sink, config, work / "state", records, counter="written")
            after = os.times()
            cpu = after.user - before.user + after.system - before.system
            written = _written(work, kind)
            print(
                f"round {round_no + 1} {kind}: {rate:,.0f} records/s, cpu {cpu:.2f} s, "
                f"{written}/{records} records written",
                flush=True,
            )
            channel.queue_delete(sink.queue)
            channel.exchange_delete(exchange)
            channel.exchange_delete(f"{exchange}.unrouted")
            connection.close()
            shutil.rmtree(work, ignore_errors=True)
            time.sleep(0.5)


def main(argv: list[str]) -> int:
    if argv[:1] == ["capture"]:
        capture(int(argv[1]) if len(argv) > 1 else 400_000)
        return 0
    if argv[:1] == ["drain"] and len(argv) > 1:
        drain(argv[1].split(","), int(argv[2]) if len(argv) > 2 else 1)
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
