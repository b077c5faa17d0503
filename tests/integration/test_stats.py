"""``logrouter stats``: table building (pure) and the command against the real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pika
import pytest

from logrouter import cli, control, log
from logrouter.commands import stats
from tests.helpers.control import Responder

ROOT = Path(__file__).resolve().parents[2]


def reply(sink: str, pid: int, written: int, uptime: float, **extra: Any) -> dict[str, Any]:
    counters = {
        "received": written + 1,
        "written": written,
        "acked": written,
        "rejected": 1,
        "duplicates": 0,
        "reconnects": 0,
        "suppressed": 7,
    }
    return {
        "ok": True,
        "sink": sink,
        "instance": f"h1:{pid}",
        "host": "h1",
        "pid": pid,
        "state": "running",
        "config_version": "abcdef0123456789",
        "counters": counters,
        "uptime": uptime,
        "last_error": None,
        **extra,
    }


# --------------------------------------------------------------------------- pure


def test_rows_per_instance_and_no_answer() -> None:
    """Each answering instance gets a row; silent sink: 'no answer'; missing queue: 'missing'."""
    snapshot = stats.Snapshot(
        sinks=(("archive", "logrouter.archive"), ("errors", "logrouter.errors")),
        depths={
            "logrouter.archive": stats.QueueDepth(12, 2),
            "logrouter.errors": stats.QueueDepth(None, None),
        },
        replies=(reply("archive", 2, 50, 10.0, unacked=3), reply("archive", 1, 20, 10.0)),
        missing=("errors",),
        config_version="abcdef0123456789",
    )
    rows = stats.build_rows(snapshot)
    assert rows[0][:9] == [
        "archive",
        "logrouter.archive",
        "12",
        "3",
        "2",
        "h1:1",
        "running",
        "21",
        "20",
    ]
    assert rows[0][13:16] == ["7", "2.0", "abcdef01"]  # SUPPRESSED, WRITTEN/S, CONFIG
    assert rows[1][:6] == ["", "", "", "", "", "h1:2"]
    assert rows[2][:6] == ["errors", "logrouter.errors", "missing", "-", "-", "no answer"]


def test_rate_from_two_samples_uses_instance_uptime() -> None:
    """With a previous sample the rate is the written delta over the uptime delta."""
    before = reply("errors", 1, 100, 10.0)
    after = reply("errors", 1, 400, 12.0)
    assert stats.written_rate(after, before) == 150.0
    assert stats.written_rate(after) == pytest.approx(400 / 12)
    restarted = reply("errors", 1, 5, 1.0)
    assert stats.written_rate(restarted, after) == 5.0  # counters went back: since start


def test_old_config_version_and_error_reply_are_marked() -> None:
    """An instance on another config version is marked old; an error reply shows its error."""
    snapshot = stats.Snapshot(
        sinks=(("errors", "logrouter.errors"),),
        depths={"logrouter.errors": stats.QueueDepth(0, 2)},
        replies=(
            reply("errors", 1, 1, 1.0, config_version="0000000011111111"),
            {"ok": False, "sink": "errors", "host": "h2", "pid": 9, "error": "boom"},
        ),
        missing=(),
        config_version="abcdef0123456789",
    )
    rows = stats.build_rows(snapshot)
    assert rows[0][15] == "00000000 (old)"
    assert rows[1][6] == "error" and rows[1][16] == "boom"


def test_render_table_aligns_columns() -> None:
    """Every column starts at the same offset on every line."""
    text = stats.render_table([["a", "bbbbbb"], ["cccc", "d"]], header=("H1", "H2"))
    lines = text.splitlines()
    assert [line.index(cell) for line, cell in zip(lines, ("H2", "bbbbbb", "d"), strict=True)] == [
        6,
        6,
        6,
    ]


# --------------------------------------------------------------------------- real broker


@pytest.fixture(autouse=True)
def daemon_logs_to_stderr() -> None:
    """The in-test responders log like a sink daemon: to stderr, never into stdout."""
    log.configure(json=True)


@pytest.fixture
def setup(
    amqp_url: str, tmp_path: Path, unique_name: Callable[[str], str]
) -> Iterator[tuple[Path, str, str, str]]:
    """A config with two sinks on a unique exchange; sink 'a' has a queue with 3 messages."""
    tag = uuid.uuid4().hex[:8]
    exchange = unique_name("logs")
    sink_a, sink_b = f"sa{tag}", f"sb{tag}"
    config = tmp_path / "routing.toml"
    config.write_text(
        f'[broker]\nurl = "amqp://nobody:s3cret@127.0.0.1:1/%2F"\nexchange = "{exchange}"\n\n'
        f'[sinks.{sink_a}]\ntype = "file"\nmatch = "*.err"\npath = "{tmp_path}/x.log"\n\n'
        f'[sinks.{sink_b}]\ntype = "console"\nmatch = "*.=info"\n'
    )
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.queue_declare(f"logrouter.{sink_a}")
    for i in range(3):
        channel.basic_publish("", f"logrouter.{sink_a}", f"m{i}".encode())
    yield config, exchange, sink_a, sink_b
    channel.queue_delete(f"logrouter.{sink_a}")
    channel.exchange_delete(control.control_exchange(exchange))
    connection.close()


def status_of(written: int) -> control.Handler:
    def handle(_: dict[str, Any]) -> Mapping[str, Any]:
        return {
            "state": "running",
            "config_version": "feedbeef" * 8,
            "bindings": ["*.err"],
            "counters": {
                "received": written,
                "written": written,
                "acked": written,
                "rejected": 0,
                "duplicates": 0,
                "reconnects": 0,
            },
            "last_error": "lost amqp://guest:hunter2@elsewhere/ once",
            "uptime": 4.0,
        }

    return handle


def test_stats_shows_depth_counters_and_no_answer(
    amqp_url: str, setup: tuple[Path, str, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """stats lists queue depth, each answering instance's counters, and silent/missing sinks."""
    config, exchange, sink_a, sink_b = setup
    responders = [
        Responder(amqp_url, exchange, sink_a, "i1", {"status": status_of(40)}),
        Responder(amqp_url, exchange, sink_a, "i2", {"status": status_of(8)}),
    ]
    try:
        code = cli.main(["stats", str(config), "--url", amqp_url, "--timeout", "3"])
    finally:
        for responder in responders:
            responder.close()
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split()[:3] == ["SINK", "QUEUE", "READY"]
    [row_a] = [line for line in lines if line.startswith(sink_a)]
    assert row_a.split()[:5] == [sink_a, f"logrouter.{sink_a}", "3", "-", "0"]
    assert sum(" running " in line for line in lines) == 2
    assert any(" 40 " in line for line in lines) and any(" 8 " in line for line in lines)
    assert any(" 10.0 " in line for line in lines)  # 40 written in 4 s
    [row_b] = [line for line in lines if line.startswith(sink_b)]
    assert row_b.split()[:5] == [sink_b, f"logrouter.{sink_b}", "missing", "-", "-"]
    assert "no answer" in row_b
    assert lines[-1] == f"no answer from: {sink_b}"
    assert "hunter2" not in out and "guest:***@elsewhere" in out


def test_stats_broker_down_exits_1_without_password(
    setup: tuple[Path, str, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """With no broker at the config's URL, stats exits 1 and hides the password."""
    config, *_ = setup
    env_url = os.environ.pop("LOGROUTER_URL", None)
    try:
        code = cli.main(["stats", str(config), "--timeout", "1"])
    finally:
        if env_url is not None:
            os.environ["LOGROUTER_URL"] = env_url
    _, err = capsys.readouterr()
    assert code == 1
    assert "cannot reach the broker" in err
    assert "s3cret" not in err and "nobody:***@" in err


def test_stats_bad_config_exits_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config that does not validate exits 78 with the file, line and key."""
    config = tmp_path / "routing.toml"
    config.write_text('[sinks.errors]\ntype = "file"\nmatch = "*.eror"\npath = "/tmp/x"\n')
    assert cli.main(["stats", str(config)]) == 78
    _, err = capsys.readouterr()
    assert "routing.toml:3" in err and "match" in err and "eror" in err


def test_stats_watch_refreshes_until_ctrl_c(
    amqp_url: str, setup: tuple[Path, str, str, str]
) -> None:
    """--watch prints a table per refresh and exits 0 on Ctrl-C (SIGINT)."""
    config, *_ = setup
    env = {**os.environ, "LOGROUTER_URL": amqp_url}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "logrouter",
            "stats",
            str(config),
            "--watch",
            "0.2",
            "--timeout",
            "1",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    tables = threading.Semaphore(0)
    seen: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("SINK"):
                tables.release()

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert tables.acquire(timeout=20) and tables.acquire(timeout=20), "".join(seen)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
