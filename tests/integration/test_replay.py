"""`logrouter replay`: archived records back onto the broker (real broker, real sinks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from logrouter import cli
from logrouter.connection import login
from tests.helpers import ROOT
from tests.helpers.broker import queue_depth, wait_for
from tests.helpers.sinks import (
    declare,
    lines_of,
    publish,
    run_burst,
    sink_env,
    stop,
    tokens,
    write_config,
)
from tests.integration.test_query import (
    Archive,
    archived,
    body_of,
    drop_archive,
    message_of,
    start_sink,
)

#: about 1 minute of this suite's work: scheduled early (tests/conftest.py)
pytestmark = pytest.mark.slow(minutes=1)

SINCE = "2026-11-29T00:00:00Z"


@pytest.fixture
def env(amqp_url: str, tmp_path: Path) -> Iterator[Archive]:
    """An archive sink (everything) and a file sink 'rebuilt' (*.err) on one unique exchange;
    only the archive's queue exists until ``fill`` is done, so 'rebuilt' gets replays only."""
    tag = uuid.uuid4().hex[:8]
    sink, rebuilt = f"arch_{tag}", f"rebuilt_{tag}"
    exchange = f"test.logs.{tag}"
    config = write_config(
        tmp_path / "routing.toml",
        amqp_url,
        exchange,
        {
            sink: {
                "type": "archive",
                "match": "*.*",
                "dir": str(tmp_path / "archive"),
                "batch_interval": 0.2,
            },
            rebuilt: {"type": "file", "match": "*.err", "path": str(tmp_path / "out" / "all.log")},
        },
    )
    arch_only = write_config(
        tmp_path / "archive.toml",
        amqp_url,
        exchange,
        {sink: {"type": "archive", "match": "*.*", "dir": str(tmp_path)}},
    )
    declare(arch_only)
    built = Archive(
        amqp_url,
        exchange,
        config,
        tmp_path / "archive",
        sink,
        sink_env(tmp_path / "state"),
        tmp_path,
    )
    yield built
    drop_archive(built, f"logrouter.{rebuilt}")


def fill(archive: Archive, count: int) -> None:
    """``count`` records archived by the running archive sink; then the other queues."""
    process = start_sink(archive, "archive.log")
    try:
        publish(archive.url, archive.exchange, [message_of(body_of(n)) for n in range(count)])
        wait_for(lambda: len(archived(archive.dir)) == count, "records archived", timeout=60)
    finally:
        stop(process)
    declare(archive.config)


def rebuilt(archive: Archive) -> str:
    return archive.sink.replace("arch_", "rebuilt_")


@pytest.mark.parametrize("batch", ["off", "auto"])
def test_to_sink_reaches_only_that_sink_with_id_and_replay_header(
    env: Archive, capsys: pytest.CaptureFixture[str], batch: str
) -> None:
    """--to-sink puts the selected records into that sink's queue only (the archive's queue
    stays empty), with the original ids, the replay header and the replayer's login as
    user_id, and says how many: one
    message per record with --batch off, batch messages (each line a record with its id)
    with auto, the default; the file sink then writes each once."""
    fill(env, 40)
    capsys.readouterr()
    target = f"logrouter.{rebuilt(env)}"
    args = ["--config", str(env.config), "--sink", env.sink, "--since", SINCE]
    code = cli.main(["replay", "*.err", *args, "--to-sink", rebuilt(env), "--batch", batch])
    err = capsys.readouterr().err
    assert code == 0, err
    expected = [n for n in range(40) if n % 5 in (0, 4)]  # err, crit
    assert f"replayed {len(expected)} record(s)" in err
    archived_err = [r for r in archived(env.dir) if r["severity"] in ("err", "crit")]
    depth = queue_depth(env.url, target)
    assert queue_depth(env.url, f"logrouter.{env.sink}") == 0
    connection = pika.BlockingConnection(pika.URLParameters(env.url))
    try:
        _method, props, body = connection.channel().basic_get(target, auto_ack=False)
        assert props.headers["x-logrouter-replay"]
        # the replayer's login: sinks key dedup by it, and "" would be anyone's
        assert props.user_id == login(env.url)
        if batch == "off":
            assert depth == len(expected)
            assert props.message_id == archived_err[0]["id"]
            assert json.loads(body) == archived_err[0]  # the archived record, as archived
        else:
            assert depth < len(expected)  # err and crit: two batch messages
            assert props.content_type == "application/vnd.logrouter.batch+jsonl"
            lines = [json.loads(line) for line in body.splitlines()]
            assert props.headers["x-logrouter-records"] == len(lines) > 1
            assert props.message_id == f"{lines[0]['id']}+{len(lines)}"
            assert lines[0] == archived_err[0]
    finally:
        connection.close()
    result = run_burst(["sink", rebuilt(env), str(env.config)], env.env)
    assert result.returncode == 0, result.stderr
    assert tokens(lines_of(env.tmp / "out" / "all.log")) == Counter(dict.fromkeys(expected, 1))


def test_to_the_exchange_every_bound_sink_gets_it_again(
    env: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --to-sink, records go to the exchange with their facility.severity key: every
    sink whose binding matches gets them (archive: all, 'rebuilt': err and crit), with the
    original message_id and app_id."""
    fill(env, 20)
    capsys.readouterr()
    code = cli.main(["replay", "--config", str(env.config), "--sink", env.sink, "--since", SINCE])
    assert code == 0, capsys.readouterr().err
    assert queue_depth(env.url, f"logrouter.{env.sink}") == 20
    assert queue_depth(env.url, f"logrouter.{rebuilt(env)}") == len(
        [n for n in range(20) if n % 5 in (0, 4)]
    )
    connection = pika.BlockingConnection(pika.URLParameters(env.url))
    try:
        method, props, _body = connection.channel().basic_get(
            f"logrouter.{env.sink}", auto_ack=False
        )
        first = archived(env.dir)[0]
        assert method.routing_key == f"{first['facility']}.{first['severity']}"
        assert (props.message_id, props.app_id) == (first["id"], first["app"])
        assert props.headers["x-logrouter-replay"]
    finally:
        connection.close()


def test_batches_to_the_exchange_are_routed_by_their_records_key(
    env: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    """--batch auto to the exchange: each batch holds records of one facility.severity and
    is published with that key, so the file sink bound to '*.err' gets exactly the err and
    crit records (in fewer messages) and writes each once."""
    fill(env, 40)
    capsys.readouterr()
    args = ["--config", str(env.config), "--sink", env.sink, "--since", SINCE]
    code = cli.main(["replay", *args, "--batch", "auto"])
    assert code == 0, capsys.readouterr().err
    expected = [n for n in range(40) if n % 5 in (0, 4)]  # err, crit
    assert 0 < queue_depth(env.url, f"logrouter.{rebuilt(env)}") < len(expected)
    connection = pika.BlockingConnection(pika.URLParameters(env.url))
    try:
        method, _props, body = connection.channel().basic_get(
            f"logrouter.{env.sink}", auto_ack=False
        )
        records = [json.loads(line) for line in body.splitlines()]
        assert {f"{r['facility']}.{r['severity']}" for r in records} == {method.routing_key}
    finally:
        connection.close()
    result = run_burst(["sink", rebuilt(env), str(env.config)], env.env)
    assert result.returncode == 0, result.stderr
    assert tokens(lines_of(env.tmp / "out" / "all.log")) == Counter(dict.fromkeys(expected, 1))


def test_dry_run_publishes_nothing(env: Archive, capsys: pytest.CaptureFixture[str]) -> None:
    """--dry-run prints the records it would send and leaves every queue alone."""
    fill(env, 10)
    capsys.readouterr()  # what the set-up printed
    code = cli.main(
        [
            "replay",
            "--dir",
            str(env.dir),
            "--config",
            str(env.config),
            "--since",
            SINCE,
            "--to-sink",
            rebuilt(env),
            "--dry-run",
        ]
    )
    out = capsys.readouterr()
    assert code == 0 and len(out.out.splitlines()) == 10 and "would replay 10" in out.err
    assert queue_depth(env.url, f"logrouter.{rebuilt(env)}") == 0


@pytest.mark.parametrize("batch", ["auto", "off"])
def test_killed_replay_resumes_and_the_target_holds_each_record_once(
    env: Archive, batch: str
) -> None:
    """kill -9 mid-replay, then the same command with --resume: the rebuilt file holds every
    selected record exactly once (batch messages or one per record); the command run
    once more finds nothing left and exits 0."""
    count = 2000
    fill(env, count)
    cursor = env.tmp / "cursor"
    cmd = [
        sys.executable,
        "-m",
        "logrouter",
        "replay",
        "--config",
        str(env.config),
        "--sink",
        env.sink,
        "--since",
        SINCE,
        "--to-sink",
        rebuilt(env),
        "--resume",
        str(cursor),
        "--rate",
        "1000",  # about 2 s: the kill lands mid-way
        "--batch",
        batch,
    ]
    process_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(cmd, env=process_env, stderr=subprocess.DEVNULL)
    target = f"logrouter.{rebuilt(env)}"
    some = 200 if batch == "off" else 3  # messages: with --rate 1000 a batch holds <= 100
    wait_for(lambda: queue_depth(env.url, target) >= some and cursor.exists(), "replay under way")
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    partial = queue_depth(env.url, target)
    assert partial > 0
    again = subprocess.run(cmd, env=process_env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    done = subprocess.run(cmd, env=process_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr  # a finished replay run again: nothing left
    assert "replayed 0 record(s)" in done.stderr
    result = run_burst(["sink", rebuilt(env), str(env.config)], env.env)
    assert result.returncode == 0, result.stderr
    expected = [n for n in range(count) if n % 5 in (0, 4)]  # err, crit
    got = tokens(lines_of(env.tmp / "out" / "all.log"))
    assert got == Counter(dict.fromkeys(expected, 1)), (
        sorted(set(expected) - set(got))[:20],
        again.stderr,
        [line for line in result.stderr.splitlines() if "stopped" in line or "dup" in line][:5],
        partial,
    )


def test_bad_usage(env: Archive, capsys: pytest.CaptureFixture[str]) -> None:
    """No --since, an unknown sink or a bad cursor: exit 2 with the reason."""
    base = ["replay", "--dir", str(env.tmp), "--config", str(env.config)]
    assert cli.main(base) == 2
    assert "--since" in capsys.readouterr().err
    assert cli.main([*base, "--since", SINCE, "--to-sink", "nosuch"]) == 2
    assert "'nosuch'" in capsys.readouterr().err
    assert cli.main([*base, "--since", SINCE, "--after", "garbage"]) == 2
    assert "'garbage'" in capsys.readouterr().err


def test_to_a_sink_whose_queue_does_not_exist_fails(
    env: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    """--to-sink of a sink that was never set up: exit 1 naming the queue, nothing counted."""
    fill(env, 3)
    args = ["--dir", str(env.dir), "--url", env.url, "--config", str(env.tmp / "none.toml")]
    code = cli.main(["replay", *args, "--since", SINCE, "--to-sink", "ghost"])
    assert code == 1
    assert "'logrouter.ghost' does not exist" in capsys.readouterr().err
