"""`logrouter query` over an archive written by real sink daemons (real broker).

One archive is built per module: two sink processes (two instances, so two
sets of files) archive records whose ``ts`` span an hour and a day boundary
(2026-11-29 22:00Z .. 2026-11-30 02:30Z); even records go through the first
instance, odd ones (published newest first) through the second.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pika
import pytest

from logrouter import cli, wire
from logrouter.archive_reader import read_archive
from logrouter.record_filter import RecordFilter
from logrouter.render import render_console
from tests.helpers import ROOT
from tests.helpers.broker import wait_for
from tests.helpers.sinks import declare, publish, sink_env, start, stop, write_config

BASE = datetime(2026, 11, 29, 22, 0, tzinfo=UTC)
COUNT = 40
STEP = timedelta(minutes=7)
SEVERITIES = ("err", "info", "warning", "debug", "crit")
FACILITIES = ("auth", "mail", "billing")


def ts_of(n: int) -> str:
    return wire.format_ts((BASE + n * STEP).timestamp())


def body_of(n: int, ts: str | None = None, msg: str | None = None) -> dict[str, Any]:
    """Record ``n`` of the plan, as the handler would publish it."""
    return {
        "v": 1,
        "ts": ts or ts_of(n),
        "host": "testhost",
        "app": "billing" if n % 2 else "shop",
        "pid": 1,
        "logger": "t",
        "facility": FACILITIES[n % len(FACILITIES)],
        "severity": SEVERITIES[n % len(SEVERITIES)],
        "level": "INFO",
        "msg": msg or f"rec-{n} order {n}",
        "fields": {"order": n, "user": f"u{n % 4}"},
    }


def message_of(body: dict[str, Any], message_id: str | None = None) -> tuple[str, bytes, Any]:
    props = pika.BasicProperties(
        content_type="application/json",
        delivery_mode=2,
        message_id=message_id or uuid.uuid4().hex,
        timestamp=int(time.time()),
        app_id=body["app"],
    )
    return f"{body['facility']}.{body['severity']}", wire.encode(body), props


def archived(directory: Path) -> list[dict[str, Any]]:
    """Every record of the archive (tolerates a sink writing meanwhile)."""
    return [e.record for e in read_archive(directory, RecordFilter())]


@dataclass
class Archive:
    url: str
    exchange: str
    config: Path
    dir: Path
    sink: str
    env: dict[str, str]
    tmp: Path


def start_sink(archive: Archive, log: str) -> subprocess.Popen[bytes]:
    return start(["sink", archive.sink, str(archive.config)], archive.env, archive.tmp / log)


def make_archive(url: str, tmp: Path, tag: str, **sink_options: Any) -> Archive:
    """A config with one archive sink (small batches), its topology declared."""
    sink = f"arch_{tag}"
    options: dict[str, Any] = {"type": "archive", "match": "*.*", "dir": str(tmp / "archive")}
    options.update({"batch_interval": 0.2, "batch_size": 7, "prefetch": 20})
    options.update(sink_options)
    exchange = f"test.logs.{tag}"
    config = write_config(tmp / "routing.toml", url, exchange, {sink: options})
    declare(config)
    return Archive(url, exchange, config, tmp / "archive", sink, sink_env(tmp / "state"), tmp)


def drop_archive(archive: Archive, *queues: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(archive.url))
    try:
        channel = connection.channel()
        for queue in (f"logrouter.{archive.sink}", f"{archive.exchange}.unrouted", *queues):
            channel.queue_delete(queue)
        for exchange in (archive.exchange, f"{archive.exchange}.unrouted"):
            channel.exchange_delete(exchange)
    finally:
        connection.close()


@pytest.fixture(scope="module")
def archive(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    """The module's archive: records 0..39 by two sink instances."""
    tmp = tmp_path_factory.mktemp("query")
    built = make_archive(amqp_url, tmp, uuid.uuid4().hex[:8])
    try:
        first = start_sink(built, "sink1.log")
        publish(amqp_url, built.exchange, [message_of(body_of(n)) for n in range(0, COUNT, 2)])
        wait_for(lambda: len(archived(built.dir)) == COUNT // 2, "first instance archived")
        second = start_sink(built, "sink2.log")
        log = built.tmp / "sink2.log"
        wait_for(lambda: log.exists() and '"consuming"' in log.read_text(), "second instance up")
        assert stop(first) == 0
        odd = [message_of(body_of(n)) for n in reversed(range(1, COUNT, 2))]
        publish(amqp_url, built.exchange, odd)
        wait_for(lambda: len(archived(built.dir)) == COUNT, "second instance archived")
        assert stop(second) == 0
        yield built
    finally:
        drop_archive(built)


def query(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    """Run `logrouter query ARGS` in-process: exit code, stdout lines, stderr."""
    capsys.readouterr()  # what the test's own set-up printed
    code = cli.main(["query", *args])
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err


def numbers(lines: list[str]) -> list[int]:
    return [int(word[4:]) for line in lines for word in line.split() if word.startswith("rec-")]


# --------------------------------------------------------------------------- tests


def test_two_instances_files_merge_in_time_order(
    archive: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both instances wrote files; the query prints all 40 records in ts order, each once."""
    instances = {p.name.rsplit("-", 1)[0] for p in archive.dir.rglob("*.jsonl.gz")}
    assert len(instances) == 2, instances
    code, lines, err = query(capsys, "--dir", str(archive.dir), "-o", "cat")
    assert (code, err) == (0, "")
    assert numbers(lines) == list(range(COUNT))


def test_time_range_across_the_day_boundary(
    archive: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    """--since 23:50 on the 29th --until 00:30 on the 30th: just the records inside (half open)."""
    since, until = "2026-11-29T23:50:00Z", "2026-11-30 00:30"
    code, lines, _ = query(
        capsys, "--config", str(archive.config), "--since", since, "--until", until, "-o", "cat"
    )
    expected = [
        n
        for n in range(COUNT)
        if datetime(2026, 11, 29, 23, 50, tzinfo=UTC)
        <= BASE + n * STEP
        < datetime(2026, 11, 30, 0, 30, tzinfo=UTC)
    ]
    assert code == 0
    assert numbers(lines) == expected and expected


def test_selector_fields_and_grep(archive: Archive, capsys: pytest.CaptureFixture[str]) -> None:
    """'*.err' + --field app=billing keeps odd err/crit records; --field fields.order; --grep."""
    code, lines, _ = query(
        capsys, "*.err", "--dir", str(archive.dir), "--field", "app=billing", "-o", "cat"
    )
    assert code == 0
    assert numbers(lines) == [
        n for n in range(COUNT) if n % 2 and SEVERITIES[n % 5] in ("err", "crit")
    ]
    code, lines, _ = query(
        capsys, "--dir", str(archive.dir), "--field", "fields.order=17", "-o", "cat"
    )
    assert numbers(lines) == [17]
    code, lines, _ = query(
        capsys, "auth.*", "--dir", str(archive.dir), "--grep", r"order 1\d$", "-o", "cat"
    )
    assert numbers(lines) == [n for n in range(10, 20) if n % 3 == 0]


def test_every_output_format(archive: Archive, capsys: pytest.CaptureFixture[str]) -> None:
    """short (console columns), long (file line), json (as archived), jsonl, cat; -n and -r."""
    d = str(archive.dir)
    _, short, _ = query(capsys, "--dir", d, "-n", "1")
    last = list(read_archive(archive.dir, RecordFilter()))[-1].record
    assert short == [render_console(last, color=False)]  # the one renderer, as tail uses it
    assert short[0].startswith("02:33:00.000 crit") and short[0].endswith("rec-39 order 39")
    _, long, _ = query(capsys, "--dir", d, "-n", "1", "-o", "long")
    assert long == ["2026-11-30T02:33:00.000000Z testhost billing[1] auth.crit t: rec-39 order 39"]
    _, as_json, _ = query(capsys, "--dir", d, "-n", "2", "-r", "-o", "json")
    raw = [line for e in read_archive(archive.dir, RecordFilter()) for line in [e.line.decode()]]
    assert as_json == [raw[-1], raw[-2]]
    _, jsonl, _ = query(capsys, "--dir", d, "-n", "1", "-o", "jsonl")
    assert json.loads(jsonl[0]) == json.loads(raw[-1])
    _, cat, _ = query(capsys, "--dir", d, "-n", "1", "-o", "cat")
    assert cat == ["rec-39 order 39"]


def test_colour_only_on_a_terminal_and_not_with_no_color(archive: Archive) -> None:
    """On a pty the severity is coloured; NO_COLOR=1 turns that off."""
    import pty

    def run_on_pty(extra_env: dict[str, str]) -> bytes:
        leader, follower = pty.openpty()
        env = {**os.environ, "PYTHONPATH": str(ROOT), **extra_env}
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "logrouter",
                "query",
                "*.err",
                "--dir",
                str(archive.dir),
                "-n",
                "1",
            ],
            stdout=follower,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        os.close(follower)
        out = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        process.wait(30)
        os.close(leader)
        return out

    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    assert b"\x1b[" in run_on_pty({k: env[k] for k in env if k == "PATH"})
    assert b"\x1b[" not in run_on_pty({"NO_COLOR": "1"})


def test_no_match_is_exit_1_and_bad_tokens_are_named(
    archive: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing matched: exit 1, no output. A bad selector/time/field: exit 2 naming it."""
    d = str(archive.dir)
    assert query(capsys, "--dir", d, "--since", "2030-01-01")[:2] == (1, [])
    assert query(capsys, "--dir", d, "--since", "-1h", "--until", "-30m")[:2] == (1, [])
    code, _, err = query(capsys, "*.eror", "--dir", d)
    assert code == 2 and "'eror'" in err
    code, _, err = query(capsys, "--dir", d, "--since", "last tuesday")
    assert code == 2 and "'last tuesday'" in err
    code, _, err = query(capsys, "--dir", d, "--field", "nokey")
    assert code == 2 and "'nokey'" in err


def test_count_prints_the_number_of_matches(
    archive: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    """-c prints how many records the same query prints (grep -c): selectors, a time range
    cutting through partitions, fields; 0 and exit 1 when none; not with -f or -n."""
    d = str(archive.dir)
    for args in (
        [],
        ["*.err"],
        ["auth.!=err"],
        ["*.err", "--since", "2026-11-29T23:50:00Z", "--until", "2026-11-30 00:30"],
        ["--field", "app=billing"],
    ):
        code, lines, _ = query(capsys, *args, "--dir", d, "-o", "cat")
        assert code == 0 and lines
        assert query(capsys, *args, "--dir", d, "--count") == (0, [str(len(lines))], "")
    assert query(capsys, "--dir", d, "--since", "2030-01-01", "-c")[:2] == (1, ["0"])
    code, _, err = query(capsys, "--dir", d, "-c", "-n", "3")
    assert code == 2 and "--count" in err


def test_querying_while_the_sink_appends(archive: Archive, tmp_path: Path) -> None:
    """Queries run while a sink appends members to the same file: never an error, each
    print is an in-order prefix-consistent view, and the last one sees every record."""
    extra = make_archive(
        archive.url, tmp_path, uuid.uuid4().hex[:8], batch_size=3, batch_interval=0.05
    )
    process = start_sink(extra, "sink.log")
    done = threading.Event()
    ts = datetime(2026, 11, 30, 12, tzinfo=UTC)

    def feed() -> None:
        for start_at in range(0, 300, 30):
            batch = [
                message_of(body_of(n, ts=wire.format_ts((ts + timedelta(seconds=n)).timestamp())))
                for n in range(start_at, start_at + 30)
            ]
            publish(extra.url, extra.exchange, batch)
        done.set()

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        cmd = [sys.executable, "-m", "logrouter", "query", "--dir", str(extra.dir), "-o", "cat"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        wait_for(extra.dir.exists, "the sink created the archive")
        while True:
            finished = done.is_set() and len(archived(extra.dir)) == 300
            result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
            assert result.stderr == ""
            got = numbers(result.stdout.splitlines())
            assert got == sorted(got) and len(set(got)) == len(got)
            if finished:
                assert got == list(range(300))
                break
    finally:
        feeder.join(60)
        stop(process)
        drop_archive(extra)


def test_follow_prints_the_tail_then_live_records_without_gap_or_duplicate(
    archive: Archive, tmp_path: Path
) -> None:
    """query -f: the archived tail, then records published while it runs (also archived by the
    running sink meanwhile), each exactly once, none missing."""
    extra = make_archive(archive.url, tmp_path, uuid.uuid4().hex[:8])
    now = datetime.now(UTC)
    sink = start_sink(extra, "sink.log")
    follower: subprocess.Popen[bytes] | None = None
    try:
        old = [
            message_of(body_of(n, ts=wire.format_ts((now + timedelta(seconds=n - 60)).timestamp())))
            for n in range(5)
        ]
        publish(extra.url, extra.exchange, old)
        wait_for(lambda: len(archived(extra.dir)) == 5, "old records archived")
        follower = follow(extra.config, "-n", "3", "-o", "cat")
        lines: list[str] = []
        read_until(follower, lines, lambda: numbers(lines) == [2, 3, 4])
        live = [message_of(body_of(n, ts=wire.format_ts(time.time()))) for n in range(5, 25)]
        publish(extra.url, extra.exchange, live[:10])
        time.sleep(0.3)  # some live records archived while the follower still re-reads
        publish(extra.url, extra.exchange, live[10:])
        read_until(follower, lines, lambda: len(numbers(lines)) >= 23)
        time.sleep(4)  # past the settle period: anything duplicated would show up by now
        follower.send_signal(signal.SIGINT)
        out, err = follower.communicate(timeout=20)
        lines += out.decode().splitlines()
        assert follower.returncode == 0, err
        assert sorted(numbers(lines)) == list(range(2, 25))
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
        stop(sink)
        drop_archive(extra)


def test_follow_ended_by_ctrl_c_exits_0_even_with_nothing_printed(archive: Archive) -> None:
    """query -f whose selector matched nothing yet: Ctrl-C ends it with exit 0 (as
    docs/query.md says), not 1 as a query that found nothing."""
    follower = follow(archive.config, "nomatch.*")
    try:
        time.sleep(3)  # bound and reading the archive's tail by now
        follower.send_signal(signal.SIGINT)
        out, err = follower.communicate(timeout=20)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, err
    assert out == b""


def follow(config: Path, *args: str) -> subprocess.Popen[bytes]:
    """``logrouter query --config CONFIG -f ARGS`` started, its output in pipes."""
    return subprocess.Popen(
        [sys.executable, "-m", "logrouter", "query", "--config", str(config), "-f", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def read_until(
    process: subprocess.Popen[bytes], lines: list[str], done: Callable[[], bool]
) -> None:
    """Append the process's stdout lines to ``lines`` until ``done()`` (bounded, unbuffered)."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + 30
    partial = _partial.setdefault(fd, bytearray())
    while not done():
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"gave up waiting; got {lines}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, f"query exited early: {process.stderr.read() if process.stderr else ''!r}"
            partial += chunk
            *complete, rest = partial.split(b"\n")
            lines += [line.decode() for line in complete]
            partial[:] = rest


_partial: dict[int, bytearray] = {}
