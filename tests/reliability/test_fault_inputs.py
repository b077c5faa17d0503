"""1,000 bad inputs on the sinks' queues while numbered records stream: the daemon stays up,
each input is written or dead-lettered to logrouter.rejected with a reason, and the numbered
records arrive exactly once. Runs on the session's private node, so the rejected queue holds
nothing but this test's messages (and the shared broker never gets 10 MiB bodies)."""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any

import pika

from logrouter import topology
from logrouter.sinks.rejects import REASON_HEADER
from tests.helpers.rabbit_nodes import RabbitNode
from tests.helpers.sinks import archive_records
from tests.reliability.harness import assert_exactly_once

TOTAL = 2000
BAD = 1000
BIG = 10 << 20


def bad_inputs(rng: random.Random) -> list[tuple[str, str, bytes, pika.BasicProperties]]:
    """BAD (marker, routing key, body, properties): every marker is ``bad-<n>``; it is the
    message_id when the input has properties, and inside the body when it has none."""
    out = []
    json_wrong = [
        {"msg": 5, "severity": 7, "facility": ["x"]},
        {"msg": None, "severity": "info", "facility": {"a": 1}},
        {"ts": 12, "severity": "bogus", "facility": 3.5, "fields": "notadict"},
        {"severity": ["err"], "msg": {"nested": True}, "src": 1},
        [1, 2, 3],
        "just a json string",
        {},
    ]
    kinds = ["random", "utf8", "json", "noprops", "key", "big"]
    for n in range(BAD):
        marker = f"bad-{n}"
        kind = kinds[n % len(kinds)]
        props = pika.BasicProperties(message_id=marker, delivery_mode=2)
        key = "app.info"
        if kind == "big":
            if n // len(kinds) % 50:  # only a few 10 MiB bodies (n = 5, 305, 605, 905)
                kind = "random"
            else:
                out.append((marker, key, marker.encode() + b" " + b"x" * BIG, props))
                continue
        if kind == "random":
            body = rng.randbytes(rng.randint(0, 2000))
        elif kind == "utf8":
            body = b"\xff\xfe\xc3(" + marker.encode() + b" \xed\xa0\x80 \x80\x80"
            key = rng.choice(["app.info", "auth.err"])
        elif kind == "json":
            body = json.dumps(json_wrong[n % len(json_wrong)]).encode()
            key = rng.choice(["app.info", "nodots", "a.b.c", "app.bogus"])
        elif kind == "noprops":
            body = f"{marker} foreign text without properties".encode()
            props = pika.BasicProperties()
            key = rng.choice(["app.info", "mail.warning", "nokey"])
        else:  # unknown routing words, non-JSON body
            body = f"{marker} unknown words".encode()
            key = rng.choice(["app.bogus", "nodots", "a.b.c", "", "x.y.z.w", "APP.INFO!"])
        out.append((marker, key, body, props))
    return out


def test_thousand_bad_inputs(node: RabbitNode, pipeline_factory: Any) -> None:
    """1,000 bad inputs (random bytes, invalid UTF-8, JSON with wrong types, 10 MiB bodies,
    missing properties, unknown routing words) published to the sinks' queues: the daemon stays
    up; each input is in the archive or in logrouter.rejected with a reason header, and the file
    sink rejects exactly what the archive sink rejects; numbered records arrive exactly once."""
    pipeline = pipeline_factory(node.url)
    pipeline.declare()
    inputs = bad_inputs(random.Random(1000))
    connection = pika.BlockingConnection(pika.URLParameters(node.url))
    try:
        channel = connection.channel()
        watch = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(watch, topology.REJECTED_QUEUE)
        pipeline.start()
        log, _ = pipeline.handler()
        stream = threading.Thread(
            target=pipeline.log_range,
            args=(log, 0, TOTAL),
            kwargs={"pace_every": 100, "pace": 0.02},
        )
        stream.start()
        channel.confirm_delivery()
        for _, key, body, props in inputs:  # both sinks bind "#": every key reaches both queues
            channel.basic_publish(pipeline.exchange, key, body, props)
        stream.join(60)
        assert pipeline.wait_files(TOTAL), "numbered records stopped flowing"
        assert pipeline.alive(), "the daemon died on bad input"
        pipeline.drain()
        rejected: dict[str, dict[str, str]] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            method, props, body = channel.basic_get(watch, auto_ack=True)
            if method is None:
                break
            headers = props.headers or {}
            marker = props.message_id or body.split(b" ", 1)[0].decode("utf-8", "replace")
            sink = str(headers.get("x-logrouter-sink"))
            rejected.setdefault(sink, {})[marker] = str(headers.get(REASON_HEADER) or "")
    finally:
        connection.close()
    archived = set()
    for record in archive_records(pipeline.archive):
        if str(record.get("id", "")).startswith("bad-"):
            archived.add(record["id"])
        elif str(record.get("msg", "")).startswith("bad-"):
            archived.add(str(record["msg"]).split(" ", 1)[0])
    markers = [marker for marker, _, _, _ in inputs]
    by_archive = rejected.get(pipeline.archive_sink, {})
    by_files = rejected.get(pipeline.file_sink, {})
    unaccounted = [m for m in markers if m not in archived and m not in by_archive]
    without_reason = [m for m, reason in {**by_archive, **by_files}.items() if not reason]
    counts = pipeline.counts(
        "1,000 bad inputs on the sinks' queues",
        TOTAL,
        notes=f"bad inputs: {len(archived)} written, {len(by_archive)} rejected with a reason, "
        f"{len(unaccounted)} unaccounted",
        bad_written=len(archived),
        bad_rejected=len(by_archive),
        bad_unaccounted=len(unaccounted),
    )
    assert not unaccounted, (
        f"{len(unaccounted)} inputs neither written nor rejected: {unaccounted[:10]}"
    )
    assert not without_reason, f"rejected without a reason: {without_reason[:10]}"
    assert set(by_files) == set(by_archive), "the two sinks rejected different inputs"
    assert not archived & set(by_archive), "inputs both written and rejected"
    assert_exactly_once(counts, pipeline)
