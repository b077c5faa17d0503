"""`logrouter rejected list/show/replay/purge` on real queues (real broker, real sink)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from logrouter import cli, topology
from logrouter.connection import login
from tests.helpers import ROOT
from tests.helpers.broker import queue_depth, wait_for
from tests.helpers.sinks import publish, stop
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
    """Without --yes nothing is deleted (exit 2); --since in the future selects nothing;
    with --yes the queue is emptied."""
    unrouted(env, 4, "pg")
    queue = f"{env.exchange}.unrouted"
    assert rejected(capsys, env, "purge", "--queue", "unrouted")[0] == 2
    assert queue_depth(env.url, queue) == 4
    assert rejected(capsys, env, "purge", "--queue", "unrouted", "--yes", "--since", "+1h")[0] == 0
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
