"""The sink daemon against the real broker: `python -m logrouter sink|run` as subprocesses."""

from __future__ import annotations

import random
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pika
import pytest

from logrouter import topology
from tests.helpers.broker import queue_depth, wait_for
from tests.helpers.sinks import (
    archive_records,
    declare,
    lines_of,
    message,
    name,
    publish,
    run_burst,
    start,
    stop,
    tokens,
    write_config,
)


def file_sink(sinkenv: dict[str, Any], tag: str, match: str = "*.*") -> tuple[str, Path, Path]:
    """(sink name, config, output directory) of one declared file sink writing
    ``out/{facility}.log`` for ``match``."""
    out = sinkenv["tmp"] / "out"
    sink = name(sinkenv, tag)
    config = write_config(
        sinkenv["tmp"] / "routing.toml",
        sinkenv["url"],
        sinkenv["exchange"],
        {sink: {"type": "file", "match": match, "path": f"{out}/{{facility}}.log"}},
    )
    declare(config)
    return sink, config, out


# ---------------------------------------------------------------- tests


def test_duplicates_are_written_once(sinkenv: dict[str, Any]) -> None:
    """The same message_id delivered twice ends up once in the file."""
    sink, config, out = file_sink(sinkenv, "dup")
    publish(
        sinkenv["url"],
        sinkenv["exchange"],
        [
            message("app", "err", "rec-1", "same-id"),
            message("app", "err", "rec-1", "same-id"),
            message("app", "err", "rec-2", "other-id"),
        ],
    )
    result = run_burst(["sink", sink, str(config)], sinkenv["env"])
    assert result.returncode == 0, result.stderr
    assert tokens(lines_of(out / "app.log")) == Counter({1: 1, 2: 1})


def test_malformed_message_is_rejected_and_sink_keeps_running(sinkenv: dict[str, Any]) -> None:
    """A message with key "garbage" and a non-JSON body lands in logrouter.rejected with the
    reason header; records after it are still written and the sink exits 0."""
    sink, config, out = file_sink(sinkenv, "rej")
    connection = pika.BlockingConnection(pika.URLParameters(sinkenv["url"]))
    try:
        channel = connection.channel()
        watch = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(watch, topology.REJECTED_QUEUE)
        bad_id = uuid.uuid4().hex
        publish(
            sinkenv["url"],
            sinkenv["exchange"],
            [
                ("garbage", b"not json {", pika.BasicProperties(message_id=bad_id)),
                message("app", "info", "rec-7"),
            ],
        )
        result = run_burst(["sink", sink, str(config)], sinkenv["env"])
        assert result.returncode == 0, result.stderr
        assert tokens(lines_of(out / "app.log")) == Counter({7: 1})
        found = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not found:
            method, props, body = channel.basic_get(watch, auto_ack=True)
            if method is None:
                time.sleep(0.05)
            elif props.message_id == bad_id:
                found.append((props, body))
        assert found, "the malformed message did not reach logrouter.rejected"
        props, body = found[0]
        assert body == b"not json {"
        assert props.headers["x-logrouter-sink"] == sink
        assert "garbage" in props.headers["x-logrouter-reason"]
        assert queue_depth(sinkenv["url"], f"logrouter.{sink}") == 0
    finally:
        connection.close()


def test_sigterm_exits_zero_with_everything_acked(sinkenv: dict[str, Any]) -> None:
    """SIGTERM mid-stream: exit 0; what was written was acked, the rest is still queued,
    and nothing is written twice. The sink stops consuming at the signal and commits only
    what it holds (its prefetch): it does not drain a backlog first (it did, as every
    commit read more deliveries while its fsync ran, until systemd's stop timeout)."""
    sink, config, out = file_sink(sinkenv, "term")
    total = 30_000
    publish(
        sinkenv["url"],
        sinkenv["exchange"],
        (message("app", "info", f"rec-{i}") for i in range(total)),
        confirm=False,
    )
    process = start(["sink", sink, str(config)], sinkenv["env"], sinkenv["tmp"] / "sink.log")
    wait_for(lambda: len(lines_of(out / "app.log")) > 0, "first lines written")
    assert stop(process) == 0, (sinkenv["tmp"] / "sink.log").read_text()
    written = tokens(lines_of(out / "app.log"))
    assert max(written.values()) == 1
    assert len(written) < total, "the sink drained its backlog after SIGTERM"
    # Deliveries the sink held unacked go back to the queue as the broker sees its
    # connection close, which can be a moment after the process exited.
    wait_for(
        lambda: len(written) + queue_depth(sinkenv["url"], f"logrouter.{sink}") == total,
        "every record either written once or back in the queue",
        timeout=10,
    )


def start_blocked_sink(
    sinkenv: dict[str, Any], tag: str
) -> tuple[subprocess.Popen[bytes], Path, Path, str]:
    """A file sink whose base directory is a regular file (ENOTDIR, which stops root
    too: no record can be written, so it is a write error, not a refused target), with 20
    records queued: (process, its log, the blocking file, sink name)."""
    out = sinkenv["tmp"] / "out"
    out.mkdir()
    blocker = out / "app"
    blocker.write_text("in the way\n")
    sink = name(sinkenv, tag)
    config = write_config(
        sinkenv["tmp"] / "routing.toml",
        sinkenv["url"],
        sinkenv["exchange"],
        {sink: {"type": "file", "match": "*.*", "path": f"{out}/app/{{facility}}.log"}},
    )
    declare(config)
    publish(
        sinkenv["url"], sinkenv["exchange"], (message("app", "err", f"rec-{i}") for i in range(20))
    )
    log = sinkenv["tmp"] / "sink.log"
    return start(["sink", sink, str(config)], sinkenv["env"], log), log, blocker, sink


def test_write_error_keeps_records_on_the_broker(sinkenv: dict[str, Any]) -> None:
    """A file that cannot be created (its directory is a regular file: ENOTDIR, which stops
    root too) is not acked: records stay queued and are written once the cause is gone."""
    process, log, blocker, sink = start_blocked_sink(sinkenv, "werr")
    try:
        wait_for(lambda: log.exists() and "write failed" in log.read_text(), "a logged write error")
        assert "app" in log.read_text()  # the log names the path
        assert blocker.read_text() == "in the way\n"
        blocker.unlink()
        wait_for(lambda: len(lines_of(blocker / "app.log")) >= 20, "records written after recovery")
    finally:
        code = stop(process)
    assert code == 0, log.read_text()
    assert tokens(lines_of(blocker / "app.log")) == Counter(dict.fromkeys(range(20), 1))
    assert queue_depth(sinkenv["url"], f"logrouter.{sink}") == 0


def test_write_error_acks_nothing(sinkenv: dict[str, Any]) -> None:
    """While writing fails, nothing is acked: after SIGTERM every record is still queued."""
    process, log, _blocker, sink = start_blocked_sink(sinkenv, "wnack")
    try:
        wait_for(
            lambda: log.exists() and log.read_text().count("write failed") >= 2, "two write errors"
        )
    finally:
        assert stop(process) == 0, log.read_text()
    assert queue_depth(sinkenv["url"], f"logrouter.{sink}") == 20


def test_unknown_sink_name_exits_78_naming_the_sinks(sinkenv: dict[str, Any]) -> None:
    """`logrouter sink NOPE` exits 78 and names the sinks the config has."""
    sink = name(sinkenv, "known")
    config = write_config(
        sinkenv["tmp"] / "routing.toml",
        sinkenv["url"],
        sinkenv["exchange"],
        {sink: {"type": "console", "match": "*.*"}},
    )
    result = run_burst(["sink", "nope", str(config)], sinkenv["env"], timeout=30)
    assert result.returncode == 78
    assert sink in result.stderr and "nope" in result.stderr


def test_bad_config_exits_78_with_the_issue(sinkenv: dict[str, Any]) -> None:
    """A config error at start exits 78 and prints the offending word on stderr."""
    config = write_config(
        sinkenv["tmp"] / "routing.toml",
        sinkenv["url"],
        sinkenv["exchange"],
        {"bad": {"type": "console", "match": "*.eror"}},
    )
    result = run_burst(["run", str(config)], sinkenv["env"], timeout=30)
    assert result.returncode == 78
    assert "eror" in result.stderr


def test_starts_while_broker_is_down_and_connects_later(sinkenv: dict[str, Any]) -> None:
    """A sink started before its broker exists retries, then consumes once the broker is up."""
    from tests.helpers.rabbit_nodes import (
        RabbitNode,
        require_rabbitmq_server,
        short_dir,
        unique_node_name,
    )

    require_rabbitmq_server()
    base = short_dir()
    node = RabbitNode(unique_node_name("lrsink"), base)
    out = sinkenv["tmp"] / "out"
    sink = name(sinkenv, "late")
    config = write_config(
        sinkenv["tmp"] / "routing.toml",
        node.url,
        sinkenv["exchange"],
        {sink: {"type": "file", "match": "*.*", "path": f"{out}/{{facility}}.log"}},
    )
    log = sinkenv["tmp"] / "sink.log"
    process = start(["sink", sink, str(config)], sinkenv["env"], log)
    try:
        wait_for(lambda: log.exists() and "retrying" in log.read_text(), "a logged retry")
        assert process.poll() is None
        node.start()
        wait_for(lambda: "consuming" in log.read_text(), "consuming after the broker came up", 60)
        publish(node.url, sinkenv["exchange"], [message("app", "err", "rec-5")])
        wait_for(lambda: len(lines_of(out / "app.log")) == 1, "the record written")
        assert stop(process) == 0
        assert "guest:guest" not in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
        try:
            node.stop()
        except Exception:
            node.kill()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_sigkill_ten_times_loses_and_duplicates_nothing(sinkenv: dict[str, Any]) -> None:
    """A `run` process (file + archive sinks) SIGKILLed 10 times during a 50,000-record stream
    leaves files and an archive holding every record exactly once; the archive decompresses
    cleanly with gzip and zcat."""
    total = 50_000
    out = sinkenv["tmp"] / "out"
    archive = sinkenv["tmp"] / "archive"
    files, arch = name(sinkenv, "kfile"), name(sinkenv, "karch")
    config = write_config(
        sinkenv["tmp"] / "routing.toml",
        sinkenv["url"],
        sinkenv["exchange"],
        {
            files: {"type": "file", "match": "*.*", "path": f"{out}/{{facility}}.log"},
            arch: {"type": "archive", "match": "*.*", "dir": str(archive)},
        },
    )
    declare(config)
    facilities = ["auth", "mail", "billing", "kern", "local0"]
    stream = threading.Thread(
        target=publish,
        args=(
            sinkenv["url"],
            sinkenv["exchange"],
            (message(facilities[i % 5], "info", f"rec-{i}") for i in range(total)),
        ),
        kwargs={"confirm": False},
    )
    stream.start()
    log = sinkenv["tmp"] / "sink.log"
    rng = random.Random(4)
    try:
        for _ in range(10):
            process = start(["run", str(config)], sinkenv["env"], log)
            time.sleep(rng.uniform(0.6, 1.5))
            stop(process, signal.SIGKILL)
    finally:
        stream.join(60)
    result = run_burst(["run", str(config)], sinkenv["env"], timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    written = tokens(line for f in facilities for line in lines_of(out / f"{f}.log"))
    assert sorted(written) == list(range(total)), "files: records missing"
    assert max(written.values()) == 1, "files: duplicates"
    archived = tokens(r["msg"] for r in archive_records(archive))
    assert sorted(archived) == list(range(total)), "archive: records missing"
    assert max(archived.values()) == 1, "archive: duplicates"
    for path in archive.rglob("*.jsonl.gz"):
        assert subprocess.run(["zcat", str(path)], capture_output=True, timeout=60).returncode == 0


def test_batch_messages_of_many_frames_are_written_whole(sinkenv: dict[str, Any]) -> None:
    """Batch messages far larger than a frame (and than a socket read) reach a file and
    an archive sink whole: every record once, in order, none rejected; and the sink's
    connection reads the socket in large chunks."""
    from logrouter import batchwire
    from logrouter.sinks.deliveries import RECV_BYTES, read_in_large_chunks

    out, archive = sinkenv["tmp"] / "out", sinkenv["tmp"] / "archive"
    file_sink, archive_sink = name(sinkenv, "bigf"), name(sinkenv, "biga")
    config = write_config(
        sinkenv["tmp"] / "routing.toml",
        sinkenv["url"],
        sinkenv["exchange"],
        {
            file_sink: {"type": "file", "match": "big.*", "path": f"{out}/{{facility}}.log"},
            archive_sink: {"type": "archive", "match": "big.*", "dir": str(archive)},
        },
    )
    declare(config)
    messages = []
    for batch in range(3):
        lines = []
        for n in range(batch * 4000, (batch + 1) * 4000):
            _key, body, _props = message("big", "info", f"rec-{n} " + "x" * 200)
            lines.append(batchwire.record_line(body, f"big-{n}"))
        body = batchwire.encode_batch(lines)
        assert len(body) > 4 * 128 * 1024
        props = pika.BasicProperties(
            content_type=batchwire.CONTENT_TYPE,
            delivery_mode=2,
            message_id=f"big-{batch}+{len(lines)}",
            headers=batchwire.headers(len(lines)),
            app_id="test",
        )
        messages.append(("big.info", body, props))
    publish(sinkenv["url"], sinkenv["exchange"], messages)
    for sink in (file_sink, archive_sink):
        result = run_burst(["sink", sink, str(config)], sinkenv["env"])
        assert result.returncode == 0, result.stderr
    expected = list(range(12000))
    assert [int(t) for t in re.findall(r"rec-(\d+)", (out / "big.log").read_text())] == expected
    assert [int(r["msg"].split()[0][4:]) for r in archive_records(archive)] == expected
    assert queue_depth(sinkenv["url"], f"logrouter.{file_sink}") == 0
    connection = pika.BlockingConnection(pika.URLParameters(sinkenv["url"]))
    try:
        assert read_in_large_chunks(connection)
        assert connection._impl._transport._MAX_RECV_BYTES == RECV_BYTES
    finally:
        connection.close()


def test_a_batch_short_of_its_declared_count_is_written_and_said(sinkenv: dict[str, Any]) -> None:
    """A batch declaring 9 records that holds 5 (cut short on its way, or forged): the
    file sink writes the 5 and its log names the message and the two counts, so an
    operator learns records may be missing."""
    from logrouter import batchwire

    sink, config, out = file_sink(sinkenv, "cnt", "cnt.*")
    lines = []
    for n in range(5):
        _key, body, _props = message("cnt", "info", f"rec-{n}")
        lines.append(batchwire.record_line(body, f"cnt-{n}"))
    props = pika.BasicProperties(
        content_type=batchwire.CONTENT_TYPE,
        delivery_mode=2,
        message_id="cnt-0+9",
        headers=batchwire.headers(9),
        app_id="test",
    )
    publish(
        sinkenv["url"], sinkenv["exchange"], [("cnt.info", batchwire.encode_batch(lines), props)]
    )
    result = run_burst(["sink", sink, str(config)], sinkenv["env"])
    assert result.returncode == 0, result.stderr
    assert re.findall(r"rec-(\d+)", (out / "cnt.log").read_text()) == [str(n) for n in range(5)]
    warning = [line for line in result.stderr.splitlines() if "record count differs" in line]
    assert len(warning) == 1, result.stderr
    assert (
        "cnt-0+9" in warning[0] and "declares 9 records" in warning[0] and "holds 5" in warning[0]
    )
