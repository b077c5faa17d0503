"""The sink daemon against the real broker: `python -m logrouter sink|run` as subprocesses."""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from logrouter import topology, wire
from logrouter.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 30.0


# ---------------------------------------------------------------- helpers


def toml_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else str(value)


def write_config(path: Path, url: str, exchange: str, sinks: dict[str, dict[str, Any]]) -> Path:
    """A routing config with the given sinks (values: str, int, float)."""
    lines = ["[broker]", f"url = {toml_value(url)}", f"exchange = {toml_value(exchange)}", ""]
    for name, options in sinks.items():
        lines.append(f"[sinks.{name}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in options.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def sink_env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LOGROUTER_URL", "NOTIFY_SOCKET")}
    env["LOGROUTER_STATE_DIR"] = str(state)
    env["PYTHONPATH"] = str(ROOT)
    return env


def logrouter(*args: str) -> list[str]:
    return [sys.executable, "-m", "logrouter", *args]


def run_burst(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a sink command with --burst to completion (bounded)."""
    return subprocess.run(
        logrouter(*args, "--burst"),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start a sink command in the background, stderr (its structlog) to ``log``."""
    with open(log, "ab") as err:
        return subprocess.Popen(
            logrouter(*args), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err
        )


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting ({timeout:g}s) for: {what}")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20) -> int:
    process.send_signal(sig)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
        raise AssertionError(f"sink did not exit within {timeout}s of signal {sig}") from None


def message(
    facility: str, severity: str, msg: str, message_id: str | None = None
) -> tuple[str, bytes, pika.BasicProperties]:
    """A record as the handler publishes it: key, JSON body, properties."""
    body = {
        "v": 1,
        "ts": wire.format_ts(time.time()),
        "host": "testhost",
        "app": "test",
        "pid": 1,
        "logger": "t",
        "facility": facility,
        "severity": severity,
        "level": severity.upper(),
        "msg": msg,
    }
    props = pika.BasicProperties(
        content_type="application/json",
        delivery_mode=2,
        message_id=message_id or uuid.uuid4().hex,
        timestamp=int(time.time()),
        app_id="test",
    )
    return f"{facility}.{severity}", wire.encode(body), props


def publish(
    url: str,
    exchange: str,
    messages: Iterable[tuple[str, bytes, pika.BasicProperties]],
    *,
    confirm: bool = True,
) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    count = 0
    try:
        channel = connection.channel()
        if confirm:
            channel.confirm_delivery()
        for key, body, props in messages:
            channel.basic_publish(exchange, key, body, props, mandatory=confirm)
            count += 1
    finally:
        connection.close()
    return count


def queue_depth(url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        frame = connection.channel().queue_declare(queue, passive=True)
        return int(frame.method.message_count)
    finally:
        connection.close()


def declare(config_path: Path) -> None:
    """Declare the config's exchange and queues (what `logrouter setup` does)."""
    config = load_config(config_path)
    topology.setup(config.broker, [topology.queue_spec(s) for s in config.sinks.values()])


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def archive_records(directory: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(directory.rglob("*.jsonl.gz")):
        with gzip.open(path, "rt") as handle:
            records += [json.loads(line) for line in handle if line.strip()]
    return records


TOKEN = re.compile(r"\brec-(\d+)\b")


def tokens(texts: Iterable[str]) -> Counter[int]:
    return Counter(int(m.group(1)) for text in texts for m in TOKEN.finditer(text))


@pytest.fixture
def sinkenv(
    tmp_path: Path, amqp_url: str, broker_settings: Any, unique_name: Callable[[str], str]
) -> Iterator[dict[str, Any]]:
    """Unique exchange + sink-name tag, a state dir, and cleanup of the sink queues."""
    tag = unique_name("s").rsplit(".", 1)[-1]
    created: list[str] = []
    yield {
        "url": amqp_url,
        "exchange": broker_settings.exchange,
        "tag": tag,
        "tmp": tmp_path,
        "env": sink_env(tmp_path / "state"),
        "queues": created,
    }
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for queue in [*created, f"{broker_settings.exchange}.unrouted"]:
            channel.queue_delete(queue)
    finally:
        connection.close()


def name(env: dict[str, Any], base: str) -> str:
    sink = f"{base}_{env['tag']}"
    env["queues"].append(f"logrouter.{sink}")
    return sink


# ---------------------------------------------------------------- tests


def test_duplicates_are_written_once(sinkenv: dict[str, Any]) -> None:
    """The same message_id delivered twice ends up once in the file."""
    out = sinkenv["tmp"] / "out"
    sink = name(sinkenv, "dup")
    config = write_config(
        sinkenv["tmp"] / "routing.toml",
        sinkenv["url"],
        sinkenv["exchange"],
        {sink: {"type": "file", "match": "*.*", "path": f"{out}/{{facility}}.log"}},
    )
    declare(config)
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
    out = sinkenv["tmp"] / "out"
    sink = name(sinkenv, "rej")
    config = write_config(
        sinkenv["tmp"] / "routing.toml",
        sinkenv["url"],
        sinkenv["exchange"],
        {sink: {"type": "file", "match": "*.*", "path": f"{out}/{{facility}}.log"}},
    )
    declare(config)
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
    and nothing is written twice."""
    out = sinkenv["tmp"] / "out"
    sink = name(sinkenv, "term")
    config = write_config(
        sinkenv["tmp"] / "routing.toml",
        sinkenv["url"],
        sinkenv["exchange"],
        {sink: {"type": "file", "match": "*.*", "path": f"{out}/{{facility}}.log"}},
    )
    declare(config)
    total = 5000
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
    assert len(written) + queue_depth(sinkenv["url"], f"logrouter.{sink}") == total


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
    from rabbit_nodes import RabbitNode, require_rabbitmq_server, short_dir, unique_node_name

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
