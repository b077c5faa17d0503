"""A hostile publisher (a second broker user made by the test) attacks the sinks while a
legitimate RabbitHandler stream runs (issue 13 items 1, 2, 3, 9).

The attacks: the handler's next message ids pre-published as junk (with the attacker's
own user_id, and without one against a publisher that stamps its user_id), the same id
from two apps, a planted symlink and a directory where a file sink's file goes, 1,500
distinct facilities, over-size records and bogus timestamps. What must hold, per sink:
the legitimate records are written exactly once; every hostile record is either written
(inside the sink's directory) or rejected to ``logrouter.rejected`` with a reason; lost = 0.
The counts are printed (``-s``) for docs/security.md.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import pytest

from logrouter import topology
from logrouter.sinks.file import OVERFLOW_NAME
from tests.adversarial.attackers import Attacker, publish_as, rabbitmqctl
from tests.helpers.broker import queue_depth
from tests.helpers.sinks import archive_records, declare, name, write_config

LEGIT = 200
FAN_OUT = 1_500
HOSTILE = re.compile(r"hostile-(\d+)")
LEGIT_TOKEN = re.compile(r"\blegit-(\d+)\b")
DEADLINE = 120.0


def hostile_body(n: int, facility: str, **fields: Any) -> bytes:
    record = {"facility": facility, "severity": "err", "msg": f"hostile-{n}", **fields}
    return json.dumps(record).encode()


class Attack:
    """The hostile messages, numbered: ``publish`` sends one group as the attacker."""

    def __init__(self, attacker: Attacker, exchange: str) -> None:
        self.attacker = attacker
        self.exchange = exchange
        self.sent = 0

    def publish(self, key: str, bodies: list[bytes], **properties: Any) -> None:
        publish_as(self.attacker.url, self.exchange, key, bodies, **properties)

    def bodies(self, count: int, facility: str, **fields: Any) -> list[bytes]:
        first, self.sent = self.sent, self.sent + count
        return [hostile_body(n, facility, **fields) for n in range(first, first + count)]


def rejected_by(channel: Any, watch: str) -> dict[str, list[tuple[bytes, str]]]:
    """Drain the watch queue bound to logrouter.rejected: per sink, (body, reason)."""
    found: dict[str, list[tuple[bytes, str]]] = {}
    while True:
        method, props, body = channel.basic_get(watch, auto_ack=True)
        if method is None:
            return found
        headers = props.headers or {}
        sink = headers.get("x-logrouter-sink")
        reason = headers.get("x-logrouter-reason")
        if isinstance(sink, str):
            found.setdefault(sink, []).append((body, str(reason or "")))


def in_queue(queue: str) -> int:
    """Messages in ``queue``, ready and delivered but not yet acked (rabbitmqctl)."""
    rows = rabbitmqctl("list_queues", "name", "messages", "--no-table-headers").splitlines()
    return sum(int(row.split("\t")[1]) for row in rows if row.split("\t")[0] == queue)


def file_lines(out: Path) -> list[str]:
    """Every line the file sink wrote under ``out`` (regular files only, overflow included)."""
    lines: list[str] = []
    for path in sorted(out.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        lines += path.read_text().splitlines()
    return lines


@pytest.fixture
def watch_rejected(amqp_url: str) -> Iterator[Callable[[], tuple[Any, str]]]:
    """``watch()``: a private queue bound to the logrouter.rejected fanout exchange (call
    it once the topology is declared): (channel, queue)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))

    def watch() -> tuple[Any, str]:
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, topology.REJECTED_QUEUE)
        return channel, queue

    try:
        yield watch
    finally:
        connection.close()


def test_hostile_publisher_changes_nothing_of_the_legitimate_stream(
    sinkenv: dict[str, Any],
    attacker: Attacker,
    amqp_url: str,
    watch_rejected: Callable[[], tuple[Any, str]],
) -> None:
    """Forged ids, colliding ids, a planted symlink, a directory in the way, 1,500
    facilities, over-size records and bogus times from a second broker user: the
    legitimate handler and stamped streams are exactly once in the files and the archive;
    each hostile record is written (confined) or rejected with its reason; nothing lost."""
    from logrouter import RabbitHandler

    tmp = sinkenv["tmp"]
    out, archive = tmp / "out", tmp / "archive"
    files, arch = name(sinkenv, "hfiles"), name(sinkenv, "harch")
    config = write_config(
        tmp / "routing.toml",
        sinkenv["url"],
        sinkenv["exchange"],
        {
            files: {"type": "file", "match": "*.*", "path": f"{out}/{{facility}}.log"},
            arch: {"type": "archive", "match": "*.*", "dir": str(archive)},
        },
    )
    declare(config)
    watch = watch_rejected()
    out.mkdir()
    secret = tmp / "secret.txt"
    secret.write_text("not the sink's\n")
    (out / "victim.log").symlink_to(secret)  # planted
    (out / "dirfac.log").mkdir()  # a directory where a file goes
    sink_log = tmp / "sink.log"
    with open(sink_log, "ab") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "logrouter", "run", str(config)],
            env=sinkenv["env"],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    attack = Attack(attacker, sinkenv["exchange"])
    handler = RabbitHandler(
        url=sinkenv["url"],
        exchange=sinkenv["exchange"],
        facility="billing",
        app="billing-api",
        flush_timeout=60,
    )
    logger = logging.getLogger(f"legit.{sinkenv['tag']}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        # 1. the handler's next ids (learnt from `tail`), pre-published as junk by the
        # attacker: same app_id, the attacker's own (broker-validated) user_id.
        prefix = handler._outbox.encoder.id_prefix  # what `tail` shows an attacker
        forged = attack.bodies(LEGIT + 10, "billing")
        attack.publish(
            "billing.err",
            forged,
            message_id=lambda i: f"{prefix}{i:x}",
            app_id="billing-api",
            user_id=attacker.user,
        )
        # 2. without user_id, against a publisher that stamps it (as `logrouter send` does)
        attack.publish(
            "billing.err",
            attack.bodies(20, "billing"),
            message_id=lambda i: f"stamped-{i}",
            app_id="billing-cron",
        )
        # 3. the same message_id from two apps of one legitimate login: both are records
        for first, app in ((LEGIT, "billing-cron"), (LEGIT + 20, "billing-batch")):
            publish_as(
                amqp_url,
                sinkenv["exchange"],
                "billing.err",
                [json.dumps({"msg": f"legit-{first + i}"}).encode() for i in range(20)],
                message_id=lambda i: f"stamped-{i}",
                app_id=app,
                user_id="guest",
            )
        # the legitimate handler stream, while the rest of the attack runs
        logger.addHandler(handler)
        for i in range(LEGIT // 2):
            logger.error("legit-%d payment failed", i)
        # 4. a planted symlink and 5. a directory where the file sink's file goes
        attack.publish("victim.err", attack.bodies(5, "victim"))
        attack.publish("dirfac.err", attack.bodies(5, "dirfac"))
        # 6. fan-out: 1,500 distinct facilities
        first = attack.sent
        fan = attack.bodies(FAN_OUT, "fan")
        for n, body in enumerate(fan):
            record = json.loads(body)
            record["facility"] = f"fan{first + n}"
            fan[n] = json.dumps(record).encode()
        attack.publish("fan.err", fan)
        for i in range(LEGIT // 2, LEGIT):
            logger.error("legit-%d payment failed", i)
        # 7. over-size records (2 MiB, past the default max_record_bytes of 1 MiB)
        attack.publish("big.err", attack.bodies(3, "big", pad="x" * (2 << 20)))
        # 8. bogus timestamps
        bogus = ["9999-99-99T99:99:99Z", "\u0662\u0660\u0662\u0664-01-01T00:00:00Z"]
        bogus.append(f"{datetime.now(UTC).year + 3}-01-01T00:00:00Z")
        for ts in bogus:
            attack.publish("when.err", attack.bodies(1, "when", ts=ts))
        logger.removeHandler(handler)
    finally:
        handler.close()
    try:
        deadline = time.monotonic() + DEADLINE
        while any(in_queue(f"logrouter.{s}") for s in (files, arch)):
            assert time.monotonic() < deadline, sink_log.read_text()[-3000:]
            time.sleep(0.3)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, sink_log.read_text()[-3000:]
    assert queue_depth(sinkenv["url"], f"logrouter.{files}") == 0
    assert queue_depth(sinkenv["url"], f"logrouter.{arch}") == 0
    time.sleep(0.5)  # confirmed publishes to the watch queue are routed by now
    rejected = rejected_by(*watch)
    legit_total = LEGIT + 40
    sent = attack.sent

    # the legitimate records: exactly once in the files and in the archive
    lines = file_lines(out)
    assert Counter(int(m) for line in lines for m in LEGIT_TOKEN.findall(line)) == Counter(
        dict.fromkeys(range(legit_total), 1)
    )
    records = archive_records(archive)
    legit_archived = Counter(
        int(m) for r in records for m in LEGIT_TOKEN.findall(str(r.get("msg")))
    )
    assert legit_archived == Counter(dict.fromkeys(range(legit_total), 1))
    # the forgery did aim at them: every handler record's id was pre-published as junk
    handler_ids = {r["id"] for r in records if LEGIT_TOKEN.match(str(r.get("msg")))}
    handler_ids -= {f"stamped-{i}" for i in range(20)}
    assert len(handler_ids) == LEGIT
    assert handler_ids <= {f"{prefix}{i:x}" for i in range(LEGIT + 10)}

    # every hostile record: written or rejected with a reason, per sink; lost = 0
    counts = {}
    for sink, written in (
        (files, [int(m) for line in lines for m in HOSTILE.findall(line)]),
        (arch, [int(m) for r in records for m in HOSTILE.findall(str(r.get("msg")))]),
    ):
        refused = rejected.get(sink, [])
        assert all(reason for _, reason in refused)
        refused_ids = [
            int(HOSTILE.search(body.decode("utf-8", "replace")).group(1)) for body, _ in refused
        ]  # type: ignore[union-attr]
        assert Counter(written) + Counter(refused_ids) == Counter(dict.fromkeys(range(sent), 1))
        counts[sink] = (sent, len(written), len(refused_ids))
        reasons = Counter(re.sub(r"\d+", "N", r.split(":")[-1]).strip() for _, r in refused)
        print(
            f"{sink}: sent {sent}, written {len(written)}, rejected {len(refused_ids)}, "
            f"lost 0; reasons {dict(reasons)}"
        )

    # confinement: nothing through the symlink, nothing outside, fan-out capped
    assert secret.read_text() == "not the sink's\n"
    assert (out / "dirfac.log").is_dir()
    made = [p for p in out.iterdir() if p.is_file() and not p.is_symlink()]
    assert len(made) <= 1000 + 1
    print(f"file sink: {len(made)} files made (overflow included)")
    assert (out / OVERFLOW_NAME).exists()
    overflow = [json.loads(line) for line in (out / OVERFLOW_NAME).read_text().splitlines()]
    assert overflow and all(r["facility"].startswith(("fan", "when")) for r in overflow)
    # the archive partitions come from believable times only
    days = {p.relative_to(archive).parts[0] for p in archive.rglob("*.jsonl.gz")}
    assert days <= {str(datetime.now(UTC).year), str(datetime.now(UTC).year - 1)}


def test_unstamped_forgery_does_not_suppress_the_handler_stream(
    sinkenv: dict[str, Any], attacker: Attacker
) -> None:
    """The attacker pre-publishes the handler's next ids with its app_id and no user_id:
    every handler record still reaches the archive once (the handler stamps its login as
    user_id, which such a forgery cannot carry)."""
    from logrouter import RabbitHandler

    tmp = sinkenv["tmp"]
    arch = name(sinkenv, "uarch")
    config = write_config(
        tmp / "routing.toml",
        sinkenv["url"],
        sinkenv["exchange"],
        {arch: {"type": "archive", "match": "*.*", "dir": str(tmp / "archive")}},
    )
    declare(config)
    handler = RabbitHandler(
        url=sinkenv["url"],
        exchange=sinkenv["exchange"],
        facility="billing",
        app="billing-api",
        flush_timeout=60,
    )
    logger = logging.getLogger(f"unstamped.{sinkenv['tag']}")
    logger.propagate = False
    prefix = handler._outbox.encoder.id_prefix  # what `tail` shows an attacker
    attack = Attack(attacker, sinkenv["exchange"])
    attack.publish(
        "billing.err",
        attack.bodies(60, "billing"),
        message_id=lambda i: f"{prefix}{i:x}",
        app_id="billing-api",
    )
    logger.addHandler(handler)
    try:
        for i in range(50):
            logger.error("legit-%d payment failed", i)
    finally:
        logger.removeHandler(handler)
        handler.close()
    result = subprocess.run(
        [sys.executable, "-m", "logrouter", "sink", arch, str(config), "--burst"],
        env=sinkenv["env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = archive_records(tmp / "archive")
    legit = Counter(int(m) for r in records for m in LEGIT_TOKEN.findall(str(r.get("msg"))))
    assert legit == Counter(dict.fromkeys(range(50), 1))
