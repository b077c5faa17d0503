"""Helpers for tests that run sink daemons as processes: configs, publishing, reading outputs."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
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
from tests.helpers import ROOT

DEADLINE = 30.0


# ---------------------------------------------------------------- helpers


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, str) else str(value)


def write_config(path: Path, url: str, exchange: str, sinks: dict[str, dict[str, Any]]) -> Path:
    """A routing config with the given sinks (values: str, int, float, bool)."""
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
