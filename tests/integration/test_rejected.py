"""`logrouter rejected list/show/replay/purge` on real queues (real broker, real sink)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from logrouter import batchwire, cli, topology
from logrouter.connection import login
from logrouter.sinks.rejects import (
    BATCH_HEADER,
    EXCHANGE_HEADER,
    REASON_HEADER,
    RECORD_ID_HEADER,
)
from tests.helpers import ROOT
from tests.helpers.broker import queue_depth, wait_for, watch_rejected
from tests.helpers.sinks import archive_records, publish, run_burst, stop
from tests.integration.test_query import Archive, drop_archive, make_archive, start_sink


@pytest.fixture
def env(amqp_url: str, tmp_path: Path) -> Iterator[Archive]:
    """A unique exchange (with its unrouted queue) and an archive sink taking kern.* only."""
    built = make_archive(amqp_url, tmp_path, uuid.uuid4().hex[:8], match="kern.*")
    yield built
    drop_archive(built, f"logrouter.late_{built.sink}")


def unrouted(archive: Archive, count: int, tag: str) -> list[str]:
    """Publish ``count`` messages no binding matches; their message ids."""
    ids = [f"{tag}-{n}" for n in range(count)]
    messages = [
        (
            f"nosuch{tag}.err",
            f'{{"msg":"rec-{n} \x1b[31mred\\u2028","facility":"nosuch","severity":"err"}}'.encode(),
            pika.BasicProperties(message_id=ids[n], timestamp=int(time.time()), app_id="t"),
        )
        for n in range(count)
    ]
    publish(archive.url, archive.exchange, messages)
    return ids


def rejected(
    capsys: pytest.CaptureFixture[str], archive: Archive, *args: str
) -> tuple[int, str, str]:
    capsys.readouterr()  # what the test's own set-up printed
    code = cli.main(["rejected", *args, "--config", str(archive.config)])
    out = capsys.readouterr()
    return code, out.out, out.err


def queue_ids(url: str, queue: str) -> list[str]:
    """Message ids in ``queue`` (fetched and put back)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        ids = []
        while True:
            method, props, _ = channel.basic_get(queue, auto_ack=False)
            if method is None:
                return ids
            ids.append(props.message_id)
    finally:
        connection.close()


def test_list_and_show_are_escaped_and_put_everything_back(
    env: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    """list: one escaped line per message (key, size, id, preview); show: headers and body;
    the queue holds the same messages afterwards."""
    ids = unrouted(env, 3, "ls")
    queue = f"{env.exchange}.unrouted"
    code, out, _ = rejected(capsys, env, "list", "--queue", "unrouted")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    assert all("nosuchls.err" in line and "\x1b" not in line for line in lines)
    assert "\\x1b[31mred" in lines[0] and ids[0] in lines[0]
    code, out, _ = rejected(capsys, env, "show", ids[1], "--queue", "unrouted")
    assert code == 0
    assert f"message_id: {ids[1]}" in out and "rec-1 \\x1b[31mred" in out and "\x1b" not in out
    assert sorted(queue_ids(env.url, queue)) == sorted(ids)
    assert rejected(capsys, env, "show", "nope", "--queue", "unrouted")[0] == 1


def test_purge_needs_yes_and_takes_only_what_is_selected(
    env: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --yes nothing is deleted (exit 2); --since in the future selects nothing
    (exit 1, as list and replay say nothing matched); with --yes the queue is emptied."""
    unrouted(env, 4, "pg")
    queue = f"{env.exchange}.unrouted"
    assert rejected(capsys, env, "purge", "--queue", "unrouted")[0] == 2
    assert queue_depth(env.url, queue) == 4
    assert rejected(capsys, env, "purge", "--queue", "unrouted", "--yes", "--since", "+1h")[0] == 1
    assert queue_depth(env.url, queue) == 4
    assert rejected(capsys, env, "purge", "--queue", "unrouted", "--yes")[0] == 0
    assert queue_depth(env.url, queue) == 0


def test_rejected_by_a_sink_are_listed_with_reason_and_replayed(
    env: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sink rejects a message it cannot decode (reason header); list --reason finds it
    with the sink's config, and not with another exchange's (logrouter.rejected is one
    queue for all); once a sink binds the key, replay delivers it (user_id: the
    replayer's login) and removes it from logrouter.rejected."""
    tag = uuid.uuid4().hex[:8]
    key = f"odd{tag}"
    sink = start_sink(everything := make_archive(env.url, mkdir(env.tmp / "all"), tag), "sink.log")
    try:
        publish(
            env.url,
            everything.exchange,
            [(key, b"plain", pika.BasicProperties(message_id=f"r-{tag}"))],
        )
        wait_for(lambda: f"r-{tag}" in queue_ids(env.url, topology.REJECTED_QUEUE), "rejection")
    finally:
        stop(sink)
    late = f"logrouter.late_{everything.sink}"
    try:
        code, out, _ = rejected(capsys, env, "list", "--reason", key)
        assert code == 1 and out == ""  # another exchange's reject
        assert rejected(capsys, env, "replay", "--reason", key)[0] == 1
        code, out, _ = rejected(capsys, everything, "list", "--reason", key)
        assert code == 0 and len(out.splitlines()) == 1
        assert f"r-{tag}" in out and key in out and "plain" in out
        # a queue that takes the key, then replay
        connection = pika.BlockingConnection(pika.URLParameters(env.url))
        try:
            channel = connection.channel()
            channel.queue_declare(late, durable=True)
            channel.queue_bind(late, everything.exchange, routing_key=key)
        finally:
            connection.close()
        code, _, err = rejected(capsys, everything, "replay", "--reason", key)
        assert code == 0 and "replayed 1" in err
        assert queue_ids(env.url, late) == [f"r-{tag}"]
        assert f"r-{tag}" not in queue_ids(env.url, topology.REJECTED_QUEUE)
        connection = pika.BlockingConnection(pika.URLParameters(env.url))
        try:
            _method, props, _body = connection.channel().basic_get(late, auto_ack=False)
        finally:
            connection.close()
        assert props.user_id == login(env.url)  # the replayer's: sinks key dedup by it
    finally:
        drop_archive(everything, late)


def test_replay_killed_midway_loses_nothing(
    env: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    """kill -9 of a replay of 1,500 unrouted messages: every message is still in unrouted or
    in the sink's queue; a second replay finishes the job."""
    ids = unrouted(env, 1500, "k9")
    queue = f"{env.exchange}.unrouted"
    connection = pika.BlockingConnection(pika.URLParameters(env.url))
    target = f"logrouter.late_{env.sink}"
    try:
        channel = connection.channel()
        channel.queue_declare(target, durable=True)
        channel.queue_bind(target, env.exchange, routing_key="nosuchk9.err")
    finally:
        connection.close()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "logrouter",
            "rejected",
            "replay",
            "--queue",
            "unrouted",
            "--config",
            str(env.config),
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: queue_depth(env.url, target) >= 100, "replay under way")
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    left, delivered = queue_ids(env.url, queue), queue_ids(env.url, target)
    assert set(left) | set(delivered) == set(ids)
    assert rejected(capsys, env, "replay", "--queue", "unrouted")[0] in (0, 1)
    assert set(queue_ids(env.url, target)) == set(ids)
    assert queue_depth(env.url, queue) == 0


def mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def test_stats_and_metrics_show_the_aside_depths(
    env: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stats` prints the depths of logrouter.rejected and <exchange>.unrouted; the metrics
    endpoint's probe exports the unrouted depth as logrouter_queue_messages."""
    from logrouter.config import load_config
    from logrouter.metrics import render
    from logrouter.queue_probe import QueueProbe

    unrouted(env, 3, "st")
    code = cli.main(["stats", str(env.config), "--timeout", "0.5"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"unrouted {env.exchange}.unrouted: 3" in out
    assert f"rejected {topology.REJECTED_QUEUE}: " in out
    probe = QueueProbe(load_config(env.config).broker, [f"{env.exchange}.unrouted", "nosuch.q"])
    text = render({}, probe())
    assert f'logrouter_queue_messages{{queue="{env.exchange}.unrouted"}} 3.0' in text
    assert "nosuch.q" not in text


@pytest.fixture
def copies(amqp_url: str) -> Iterator[Callable[[str], list[tuple[Any, bytes]]]]:
    """``copies(exchange)``: the sinks' copies of that exchange's messages published to
    logrouter.rejected since the test started, so far (``watch_rejected``)."""
    with watch_rejected(amqp_url) as seen:
        yield lambda exchange: [
            (p, b) for p, b in seen() if (p.headers or {}).get(EXCHANGE_HEADER) == exchange
        ]


def batch_message(
    tag: str, key: str, lines: list[bytes]
) -> list[tuple[str, bytes, pika.BasicProperties]]:
    """One batch message of ``lines`` (message_id ``batch-<tag>``)."""
    props = pika.BasicProperties(
        content_type=batchwire.CONTENT_TYPE,
        headers=batchwire.headers(len(lines)),
        message_id=f"batch-{tag}",
        timestamp=int(time.time()),
        app_id="t",
    )
    return [(key, batchwire.encode_batch(lines), props)]


def good_line(tag: str, name: str, msg: str = "fine") -> bytes:
    return batchwire.record_line(json.dumps({"msg": msg}).encode(), f"{tag}-{name}")


def rejected_logged(log: Path) -> list[dict[str, Any]]:
    """The sink's "message rejected" warnings."""
    return [
        json.loads(line)
        for line in log.read_text().splitlines()
        if line.startswith("{") and "message rejected" in line
    ]


def sink_stopped(log: Path) -> dict[str, Any]:
    """The counters the sink logged as it stopped."""
    (line,) = [line for line in log.read_text().splitlines() if '"sink stopped"' in line]
    return dict(json.loads(line))


def test_a_batch_of_junk_lines_is_one_rejected_copy_and_one_warning(
    env: Archive,
    capsys: pytest.CaptureFixture[str],
    copies: Callable[[str], list[tuple[Any, bytes]]],
) -> None:
    """One batch of 20,000 junk lines around 3 records (as any broker user can send):
    the records are archived, logrouter.rejected gets one copy holding the 20,000 lines
    (a batch: x-logrouter-records 20000, the reason counting them), the sink logs one
    warning for it and counts 20,000 records rejected (it was one confirmed publish and
    one warning per line: ~2 ms each, 40 s in which the sink wrote nothing else)."""
    tag = uuid.uuid4().hex[:8]
    junk = [b"junk %d \x00" % n for n in range(10_000)]
    lines = [good_line(tag, "0"), *junk, good_line(tag, "1"), *junk, good_line(tag, "2")]
    everything = make_archive(env.url, mkdir(env.tmp / "all"), tag)
    log = everything.tmp / "sink.log"
    sink = start_sink(everything, "sink.log")
    try:
        wait_for(lambda: log.exists() and '"consuming"' in log.read_text(), "the sink up")
        publish(env.url, everything.exchange, batch_message(tag, "kern.err", lines))
        wait_for(
            lambda: len(archive_records(everything.dir)) == 3 and copies(everything.exchange),
            "records archived and the copy published",
        )
    finally:
        stop(sink)
    try:
        assert sorted(r["id"] for r in archive_records(everything.dir)) == [
            f"{tag}-{n}" for n in range(3)
        ]
        ((props, body),) = copies(everything.exchange)
        assert body == batchwire.encode_batch(junk + junk)
        assert props.content_type == batchwire.CONTENT_TYPE
        assert props.message_id == f"batch-{tag}"
        assert props.headers[batchwire.RECORDS_HEADER] == 20_000
        assert props.headers[REASON_HEADER] == (
            "20000 records rejected: line 1: not a JSON object (+19999 more lines)"
        )
        (warning,) = rejected_logged(log)
        assert (warning["records"], warning["message_id"]) == (20_000, f"batch-{tag}")
        assert warning["reason"] == "line 1: not a JSON object"
        assert sink_stopped(log)["rejected"] == 20_000
    finally:
        rejected(capsys, everything, "purge", "--yes")
        drop_archive(everything)


def test_a_copy_of_two_bad_lines_replays_as_a_batch_taken_line_by_line(
    env: Archive,
    capsys: pytest.CaptureFixture[str],
    copies: Callable[[str], list[tuple[Any, bytes]]],
) -> None:
    """A batch of 1 record, 1 junk line and 1 record over max_record_bytes: the record
    is archived, one copy holds the 2 bad lines with both reasons; list shows it with
    its 2 records, show its lines. The operator lifts the cap and replays it: it goes
    back as a batch of 2, the sink archives the big record and rejects the junk line
    alone (a single-record copy naming the batch)."""
    tag = uuid.uuid4().hex[:8]
    big = good_line(tag, "big", "x" * 2000)
    lines = [good_line(tag, "ok"), b"junk \x1b[31m", big]
    folder = mkdir(env.tmp / "all")
    capped = make_archive(env.url, folder, tag, max_record_bytes="1KiB")
    sink = start_sink(capped, "sink.log")
    try:
        publish(env.url, capped.exchange, batch_message(tag, "kern.err", lines))
        wait_for(lambda: bool(copies(capped.exchange)), "the copy of the bad lines")
    finally:
        stop(sink)
    try:
        assert [r["id"] for r in archive_records(capped.dir)] == [f"{tag}-ok"]
        ((props, body),) = copies(capped.exchange)
        assert body == b"junk \x1b[31m\n" + big + b"\n"
        assert props.headers[REASON_HEADER] == (
            "2 records rejected: line 1: not a JSON object; "
            f"line 2: record of {len(big)} bytes exceeds max_record_bytes"
        )
        code, out, _ = rejected(capsys, capped, "list", "--reason", "max_record_bytes")
        (listed,) = [line for line in out.splitlines() if f"batch-{tag}" in line]
        assert code == 0 and f"{len(body)}B/2 records" in listed
        code, out, _ = rejected(capsys, capped, "show", f"batch-{tag}")
        assert code == 0 and "line 1: junk \\x1b[31m\nline 2: {" in out

        lifted = make_archive(env.url, folder, tag)  # the same sink, without the cap
        log = lifted.tmp / "sink2.log"
        sink = start_sink(lifted, "sink2.log")
        try:
            code, _, err = rejected(capsys, lifted, "replay", "--reason", "max_record_bytes")
            assert code == 0 and "replayed 1" in err
            wait_for(lambda: len(archive_records(lifted.dir)) == 2, "the big record archived")
            wait_for(lambda: bool(copies(lifted.exchange)[1:]), "the junk line rejected again")
        finally:
            stop(sink)
        assert sorted(r["id"] for r in archive_records(lifted.dir)) == [f"{tag}-big", f"{tag}-ok"]
        (again, again_body) = copies(lifted.exchange)[1]
        assert again_body == b"junk \x1b[31m"
        assert again.content_type == "application/json"
        assert (again.message_id, again.headers[BATCH_HEADER]) == (f"batch-{tag}/0", f"batch-{tag}")
        assert again.headers[REASON_HEADER] == "line 1: not a JSON object"
        assert "record count differs" not in log.read_text()
        assert f"batch-{tag}" not in queue_ids(env.url, topology.REJECTED_QUEUE)
    finally:
        rejected(capsys, capped, "purge", "--yes")
        drop_archive(capped)


def test_a_flood_of_junk_messages_is_rejected_copy_by_copy_without_a_wait_each(
    env: Archive,
    capsys: pytest.CaptureFixture[str],
    copies: Callable[[str], list[tuple[Any, bytes]]],
) -> None:
    """3,000 single messages over max_record_bytes among 3 good records (the sink's
    batches of 500 each reject hundreds): each junk message has exactly one copy on
    logrouter.rejected, the good records are archived once, and the sink stops counting
    3,000 rejected. The copies of a commit are published in one write and their confirms
    awaited together (one round trip each made the sink ~5x slower on such a flood)."""
    tag = uuid.uuid4().hex[:8]
    flood = make_archive(
        env.url, mkdir(env.tmp / "flood"), tag, max_record_bytes=1024, batch_size=500
    )
    props = pika.BasicProperties(app_id="t", message_id=None)
    junk = [
        ("app.err", b"x" * 2000, pika.BasicProperties(message_id=f"junk-{n}")) for n in range(3_000)
    ]
    good = [("app.err", good_line(tag, str(n)).rstrip(b"\n"), props) for n in range(3)]
    messages = [good[0], *junk[:1500], good[1], *junk[1500:], good[2]]
    publish(env.url, flood.exchange, messages, confirm=False)  # a confirm each: ~10 s
    queue = f"logrouter.{flood.sink}"
    wait_for(lambda: queue_depth(env.url, queue) == len(messages), "the flood queued")
    log = flood.tmp / "sink.log"
    result = run_burst(["sink", flood.sink, str(flood.config)], flood.env, timeout=120)
    log.write_text(result.stderr)
    try:
        assert result.returncode == 0, result.stderr[-2000:]
        assert len(archive_records(flood.dir)) == 3
        ids = sorted(p.message_id for p, _body in copies(flood.exchange))
        assert ids == sorted(f"junk-{n}" for n in range(3_000))
        assert sink_stopped(log)["rejected"] == 3_000
    finally:
        rejected(capsys, flood, "purge", "--yes")
        drop_archive(flood)


def test_a_bad_line_of_a_batch_with_a_longest_id_is_rejected_not_wedging_the_sink(
    env: Archive,
    capsys: pytest.CaptureFixture[str],
    copies: Callable[[str], list[tuple[Any, bytes]]],
) -> None:
    """A batch whose message_id is 255 bytes (the most AMQP allows) with one junk line:
    the line's id (the batch's plus "/1") cannot be a message_id, so the copy keeps the
    batch's and names the line's in x-logrouter-record-id; the good record is archived
    and the burst run ends (pika refused the copy: the batch came back forever)."""
    tag = uuid.uuid4().hex[:8]
    long = make_archive(env.url, mkdir(env.tmp / "long"), tag)
    props = pika.BasicProperties(
        content_type=batchwire.CONTENT_TYPE,
        headers=batchwire.headers(2),
        message_id="M" * 255,
        app_id="t",
    )
    body = batchwire.encode_batch([good_line(tag, "0").rstrip(b"\n"), b"junk"])
    publish(env.url, long.exchange, [("app.err", body, props)])
    result = run_burst(["sink", long.sink, str(long.config)], long.env, timeout=60)
    try:
        assert result.returncode == 0, result.stderr[-2000:]
        assert [r["id"] for r in archive_records(long.dir)] == [f"{tag}-0"]
        ((copy, copy_body),) = copies(long.exchange)
        assert copy_body == b"junk"
        assert copy.message_id == "M" * 255
        assert copy.headers[RECORD_ID_HEADER] == "M" * 255 + "/1"
    finally:
        rejected(capsys, long, "purge", "--yes")
        drop_archive(long)
