"""Work queues (issue 8): several instances of one sink share its queue.

Two ``logrouter sink NAME CONFIG`` processes of the same sink consume the same
queue as competing consumers. They share one ``LOGROUTER_STATE_DIR`` (on one
host the journal's flock slots give them distinct instance ids, ``host-0`` and
``host-1``; the archive names its files by that id). A file sink run as several
instances puts ``{instance}`` in its path, so every instance writes (and, after a
crash, rolls back) only its own files; a second instance without it refuses to start.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from logrouter import batchwire
from tests.helpers.broker import wait_for as _wait_for
from tests.helpers.growing import archive_count, line_count

#: about 2 minutes of this suite's work: scheduled early (tests/conftest.py)
pytestmark = pytest.mark.slow(minutes=2)

TOTAL = 50_000
DEADLINE = 90.0


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    _wait_for(predicate, what, timeout)


LINE = re.compile(r"^\S+ \S+ \S+\[\S*\] comp\.info \S+: rec-(\d+)$")


class Fleet:
    """Sink processes of one config (an archive sink and a file sink) on a unique exchange."""

    def __init__(self, tmp: Path, url: str, exchange: str) -> None:
        self.tmp = tmp
        self.url = url
        self.exchange = exchange
        self.tag = uuid.uuid4().hex[:6]
        self.archive = f"arch{self.tag}"
        self.files = f"file{self.tag}"
        self.config = tmp / "routing.toml"
        self.state = tmp / "state"
        self.procs: list[subprocess.Popen[bytes]] = []
        #: records written so far, read incrementally (tests/helpers/growing.py)
        self.archived = archive_count(tmp / "out" / "archive")
        self.lines = line_count(tmp / "out", "all-*.log")
        self.config.write_text(
            "\n".join(
                [
                    "[broker]",
                    f'url = "{url}"',
                    f'exchange = "{exchange}"',
                    "",
                    f"[sinks.{self.archive}]",
                    'type = "archive"',
                    'match = "*.*"',
                    'dir = "out/archive"',
                    "",
                    f"[sinks.{self.files}]",
                    'type = "file"',
                    'match = "*.*"',
                    'path = "out/all-{instance}.log"',
                    "",
                ]
            )
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "logrouter", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def start(self, sink: str) -> subprocess.Popen[bytes]:
        """One more instance of ``sink`` (a separate process, shared state dir)."""
        env = dict(os.environ, LOGROUTER_STATE_DIR=str(self.state))
        env.pop("LOGROUTER_URL", None)
        log = self.tmp / f"{sink}-{len(self.procs)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "logrouter", "sink", sink, str(self.config), "--no-watch"],
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
            env=env,
        )
        self.procs.append(proc)
        return proc

    def log_of(self, proc: subprocess.Popen[bytes]) -> Path:
        sink = str(proc.args[4])  # type: ignore[index]
        return self.tmp / f"{sink}-{self.procs.index(proc)}.log"

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def written_by(self, proc: subprocess.Popen[bytes]) -> int:
        """The ``written`` counter in the instance's "sink stopped" log line."""
        for line in self.log_of(proc).read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "sink stopped":
                return int(event.get("written", 0))
        raise AssertionError(f"no 'sink stopped' line in {self.log_of(proc)}")

    def queue(self, sink: str) -> tuple[int, int]:
        """(ready messages, consumers) of the sink's queue."""
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            frame = connection.channel().queue_declare(f"logrouter.{sink}", passive=True)
        finally:
            connection.close()
        return int(frame.method.message_count), int(frame.method.consumer_count)

    def publish(self, count: int) -> None:
        """``count`` records ``rec-N`` on comp.info, each with a unique message_id."""
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        channel = connection.channel()
        for n in range(count):
            channel.basic_publish(
                self.exchange,
                "comp.info",
                f"rec-{n}".encode(),
                pika.BasicProperties(delivery_mode=2, message_id=f"{self.tag}-{n}"),
            )
        connection.close()

    def publish_batches(self, start: int, stop: int, per_message: int = 50) -> None:
        """Records ``rec-start`` .. ``rec-(stop-1)`` on comp.info, ``per_message`` to a
        batch message (logrouter.batchwire), each line with its own id."""
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        channel = connection.channel()
        for first in range(start, stop, per_message):
            numbers = range(first, min(stop, first + per_message))
            lines = [
                batchwire.record_line(
                    json.dumps({"ts": "2026-01-01T10:00:00.000000Z", "msg": f"rec-{n}"}).encode(),
                    f"{self.tag}-{n}",
                )
                for n in numbers
            ]
            channel.basic_publish(
                self.exchange,
                "comp.info",
                batchwire.encode_batch(lines),
                pika.BasicProperties(
                    delivery_mode=2,
                    content_type=batchwire.CONTENT_TYPE,
                    headers=batchwire.headers(len(lines)),
                    message_id=batchwire.batch_message_id(f"{self.tag}-{first}", len(lines)),
                ),
            )
        connection.close()

    def file_lines(self) -> list[str]:
        """Lines of every instance's file."""
        return [
            line
            for path in sorted((self.tmp / "out").glob("all-*.log"))
            for line in path.read_text().splitlines()
        ]

    def archive_files(self) -> list[Path]:
        return sorted((self.tmp / "out" / "archive").rglob("*.jsonl.gz"))

    def archive_numbers(self) -> Counter[int]:
        """How often each record number is in the archive (all instances' files)."""
        seen: Counter[int] = Counter()
        for path in self.archive_files():
            for line in gzip.decompress(path.read_bytes()).splitlines():
                seen[int(json.loads(line)["msg"].split("-")[1])] += 1
        return seen

    def file_numbers(self) -> Counter[int]:
        """How often each record number is in the instances' files; every line intact."""
        seen: Counter[int] = Counter()
        for line in self.file_lines():
            match = LINE.match(line)
            assert match, f"torn or interleaved line: {line!r}"
            seen[int(match.group(1))] += 1
        return seen


def exactly_once(seen: Counter[int], total: int) -> tuple[list[int], list[int]]:
    missing = [n for n in range(total) if n not in seen]
    duplicated = [n for n, c in seen.items() if c > 1]
    return missing, duplicated


@pytest.fixture
def fleet(tmp_path: Path, amqp_url: str, unique_name: Callable[[str], str]) -> Iterator[Fleet]:
    f = Fleet(tmp_path, amqp_url, unique_name("compete"))
    setup = f.cli("setup", str(f.config))
    assert setup.returncode == 0, setup.stdout + setup.stderr
    yield f
    for proc in f.procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    for sink in (f.archive, f.files, f"shared{f.tag}"):
        channel.queue_delete(f"logrouter.{sink}")
    channel.queue_delete(f"{f.exchange}.unrouted")
    for name in (f.exchange, f"{f.exchange}.unrouted", f"{f.exchange}.control"):
        channel.exchange_delete(name)
    connection.close()


def start_pairs(fleet: Fleet) -> dict[str, list[subprocess.Popen[bytes]]]:
    """Two instances of each sink, both consuming."""
    procs = {sink: [fleet.start(sink), fleet.start(sink)] for sink in (fleet.archive, fleet.files)}
    for sink in procs:
        wait_for(lambda s=sink: fleet.queue(s)[1] == 2, f"two consumers on {sink}")  # type: ignore[misc]
    return procs


def test_two_instances_of_each_sink_write_every_record_exactly_once(fleet: Fleet) -> None:
    """Two archive and two file instances drain 50,000 records together: each record is
    written exactly once across the instances, both instances of each sink take a share,
    the archive and file outputs are per instance, and no line is torn."""
    fleet.publish(TOTAL)
    procs = start_pairs(fleet)
    wait_for(lambda: fleet.archived.reaches(TOTAL), "50,000 records in the archive")
    wait_for(lambda: fleet.lines.reaches(TOTAL), "50,000 lines in the files")
    for proc in fleet.procs:
        fleet.stop(proc)

    for seen in (fleet.archive_numbers(), fleet.file_numbers()):
        missing, duplicated = exactly_once(seen, TOTAL)
        assert (missing, duplicated) == ([], []), (len(missing), len(duplicated))
    stems = {path.name.split("-")[-2] for path in fleet.archive_files()}
    assert stems == {"0", "1"}, [p.name for p in fleet.archive_files()]  # host-0-HH, host-1-HH
    for sink, pair in procs.items():
        shares = [fleet.written_by(proc) for proc in pair]
        assert all(share > 0 for share in shares) and sum(shares) == TOTAL, (sink, shares)


def test_killed_archive_instance_hands_its_records_to_the_other(fleet: Fleet) -> None:
    """kill -9 one archive instance mid-stream: its unacked records go to the other
    instance; once it is restarted (its journal rolls its own files back to the last
    commit) the archive holds every record exactly once."""
    fleet.publish(TOTAL)
    first, second = fleet.start(fleet.archive), fleet.start(fleet.archive)
    wait_for(lambda: fleet.queue(fleet.archive)[1] == 2, "two consumers")
    wait_for(lambda: fleet.queue(fleet.archive)[0] < TOTAL * 0.7, "the drain to be under way")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    # The survivor still holds its slot, so the restart takes the dead one's: rollback.
    restarted = fleet.start(fleet.archive)
    wait_for(lambda: fleet.queue(fleet.archive) == (0, 2), "the two to drain the queue")
    fleet.stop(second)
    fleet.stop(restarted)

    missing, duplicated = exactly_once(fleet.archive_numbers(), TOTAL)
    assert (missing, duplicated) == ([], []), (len(missing), len(duplicated))


def test_killed_file_instance_hands_its_records_to_the_other(fleet: Fleet) -> None:
    """kill -9 one file instance mid-stream: the survivor writes what it left unacked,
    and once the dead one is restarted (its journal rolls its own file back to the last
    commit) every record is in the files exactly once."""
    fleet.publish(TOTAL)
    first, second = fleet.start(fleet.files), fleet.start(fleet.files)
    wait_for(lambda: fleet.queue(fleet.files)[1] == 2, "two consumers")
    wait_for(lambda: fleet.queue(fleet.files)[0] < TOTAL * 0.7, "the drain to be under way")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    restarted = fleet.start(fleet.files)
    wait_for(lambda: fleet.queue(fleet.files) == (0, 2), "the two to drain the queue")
    fleet.stop(second)
    fleet.stop(restarted)

    missing, duplicated = exactly_once(fleet.file_numbers(), TOTAL)
    assert (missing, duplicated) == ([], []), (len(missing), len(duplicated))


def test_second_instance_without_instance_placeholder_refuses(fleet: Fleet) -> None:
    """Two instances of a file sink whose path has no {instance} would truncate each
    other's lines on recovery: the second one refuses to start and says why."""
    shared = f"shared{fleet.tag}"
    with fleet.config.open("a") as config:
        config.write(f'\n[sinks.{shared}]\ntype = "file"\nmatch = "*.*"\npath = "out/one.log"\n')
    first = fleet.start(shared)

    def consuming() -> bool:
        try:
            return fleet.queue(shared)[1] == 1
        except pika.exceptions.ChannelClosedByBroker:  # not declared yet
            return False

    wait_for(consuming, "the first instance")
    env = dict(os.environ, LOGROUTER_STATE_DIR=str(fleet.state))
    second = subprocess.run(
        [sys.executable, "-m", "logrouter", "sink", shared, str(fleet.config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    fleet.stop(first)
    assert second.returncode == 1
    assert "{instance}" in second.stderr and "out/one.log" in second.stderr


def test_restarting_one_file_instance_keeps_the_other_instances_lines(fleet: Fleet) -> None:
    """After two file instances ran, restarting one of them (journal recovery) leaves
    every acked record of both instances in the files."""
    fleet.publish(TOTAL // 5)
    pair = [fleet.start(fleet.files), fleet.start(fleet.files)]
    wait_for(lambda: fleet.queue(fleet.files)[1] == 2, "two consumers")
    wait_for(lambda: fleet.lines.reaches(TOTAL // 5), "every record in the file")
    for proc in pair:
        fleet.stop(proc)
    assert all(fleet.written_by(proc) > 0 for proc in pair)
    restarted = fleet.start(fleet.files)  # a clean restart: rollback to its checkpoint
    wait_for(lambda: fleet.queue(fleet.files)[1] == 1, "the restarted instance")
    fleet.stop(restarted)

    missing, _ = exactly_once(fleet.file_numbers(), TOTAL // 5)
    assert missing == [], f"{len(missing)} acked records cut from the files"


# ---- batch messages (issue 16): exactly once per record inside a batch ----------------


def test_two_instances_write_batched_and_single_records_exactly_once(fleet: Fleet) -> None:
    """Half the records come one per message, half in batch messages of 20 (as from
    handlers with batch="off" and "auto"): two instances of each sink write every record
    exactly once, and the batches are shared between the instances."""
    total = TOTAL // 5
    procs = start_pairs(fleet)  # both consuming first: 10,000 records queued before
    fleet.publish(total // 2)  # were all drained by the first instance up, at times
    fleet.publish_batches(total // 2, total, per_message=20)
    wait_for(lambda: fleet.archived.reaches(total), "every record in the archive")
    wait_for(lambda: fleet.lines.reaches(total), "every record in the files")
    for proc in fleet.procs:
        fleet.stop(proc)

    for seen in (fleet.archive_numbers(), fleet.file_numbers()):
        missing, duplicated = exactly_once(seen, total)
        assert (missing, duplicated) == ([], []), (len(missing), len(duplicated))
    for sink, pair in procs.items():
        shares = [fleet.written_by(proc) for proc in pair]
        assert all(share > 0 for share in shares) and sum(shares) == total, (sink, shares)


@pytest.mark.parametrize("which", ["archive", "files"])
def test_sink_killed_mid_batch_writes_each_record_once_after_restart(
    fleet: Fleet, which: str
) -> None:
    """kill -9 of the only instance while it drains batch messages, then a restart: its
    journal rolls its output back to the last commit and the redelivered batches are
    deduplicated per record, so every record is written exactly once."""
    total = TOTAL
    sink = getattr(fleet, which)
    fleet.publish_batches(0, total, per_message=25)
    first = fleet.start(sink)
    written = fleet.archived if which == "archive" else fleet.lines
    wait_for(lambda: written() >= total // 20, "the drain to be under way")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    restarted = fleet.start(sink)
    wait_for(lambda: written.reaches(total), "every record written")
    fleet.stop(restarted)

    seen = fleet.archive_numbers() if which == "archive" else fleet.file_numbers()
    missing, duplicated = exactly_once(seen, total)
    assert (missing, duplicated) == ([], []), (len(missing), len(duplicated))


def test_batch_with_one_undecodable_line_rejects_that_record_only(fleet: Fleet) -> None:
    """A batch whose second line is not JSON: the file gets the other records, and
    logrouter.rejected gets that line alone, as a single-record message with the reason."""
    connection = pika.BlockingConnection(pika.URLParameters(fleet.url))
    channel = connection.channel()
    watch = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(watch, "logrouter.rejected")
    lines = [
        batchwire.record_line(json.dumps({"msg": "rec-0"}).encode(), f"{fleet.tag}-0"),
        b"\x00 not a record",
        batchwire.record_line(json.dumps({"msg": "rec-2"}).encode(), f"{fleet.tag}-2"),
    ]
    channel.basic_publish(
        fleet.exchange,
        "comp.info",
        batchwire.encode_batch(lines),
        pika.BasicProperties(
            content_type=batchwire.CONTENT_TYPE,
            headers=batchwire.headers(3),
            message_id="batch-7",
        ),
    )
    proc = fleet.start(fleet.files)
    wait_for(lambda: len(fleet.file_lines()) >= 2, "two records in the file")
    rejected: list[tuple[Any, bytes]] = []

    def got_reject() -> bool:
        method, props, body = channel.basic_get(watch, auto_ack=True)
        if method is not None:
            rejected.append((props, body))
        return bool(rejected)

    wait_for(got_reject, "the rejected line")
    fleet.stop(proc)
    connection.close()
    assert sorted(fleet.file_numbers()) == [0, 2]
    ((props, body),) = rejected
    assert body == b"\x00 not a record"
    assert props.content_type == "application/json" and props.message_id == "batch-7/1"
    assert props.headers["x-logrouter-reason"] == "line 2: not a JSON object"
    assert props.headers["x-logrouter-batch"] == "batch-7"
    assert batchwire.RECORDS_HEADER not in props.headers
