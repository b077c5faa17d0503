"""The quickstart demo (issue 6): `make demo`'s walk-through and `logrouter tail` on it.

`make demo` is a thin wrapper around ``python -m logrouter.demo --full``; these
tests run that same walk-through on a copy of config/demo.toml with a unique
exchange and unique sink names, against the real broker.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pytest

from logrouter import demo

ROOT = Path(__file__).resolve().parents[2]
SINKS = ("errors", "console", "archive")


class DemoConfig:
    """config/demo.toml on the test's broker, exchange and sink names, in a tmp dir."""

    def __init__(self, tmp: Path, url: str, exchange: str) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.exchange = exchange
        self.url = url
        self.var = tmp / "var"
        self.path = tmp / "demo.toml"
        text = (ROOT / "config" / "demo.toml").read_text()
        text = re.sub(r'(?m)^url = ".*"$', f'url = "{url}"', text)
        text = re.sub(r'(?m)^exchange = ".*"$', f'exchange = "{exchange}"', text)
        for sink in SINKS:
            text = text.replace(f"[sinks.{sink}]", f"[sinks.{self.sink(sink)}]")
        self.path.write_text(text)

    def sink(self, name: str) -> str:
        return f"{name}{self.tag}"


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


@pytest.fixture
def config(
    tmp_path: Path, amqp_url: str, unique_name: Callable[[str], str]
) -> Iterator[DemoConfig]:
    c = DemoConfig(tmp_path, amqp_url, unique_name("demo"))
    yield c
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    for sink in SINKS:
        channel.queue_delete(f"logrouter.{c.sink(sink)}")
    channel.queue_delete(f"{c.exchange}.unrouted")
    for name in (c.exchange, f"{c.exchange}.unrouted", f"{c.exchange}.control"):
        channel.exchange_delete(name)
    connection.close()


def test_full_demo_shows_console_lines_error_files_and_archive(config: DemoConfig) -> None:
    """The walk-through exits 0; the console sink printed the info records, the error
    files hold the demo's err/crit lines (the exception too), and the archive holds
    every record of the run."""
    result = run("-m", "logrouter.demo", "--full", str(config.path), "--var", str(config.var))
    assert result.returncode == 0, result.stdout + result.stderr
    run_id = re.search(r"logged \d+ records \(run (\w+)\)", result.stdout)
    assert run_id, result.stdout
    rid = run_id.group(1)

    for _, level, message, extra in demo.RECORDS:
        if level == 20 and not extra:  # plain info: the console sink's lines
            assert demo.tagged(message, rid) in result.stdout
    errors = demo.error_lines(config.var / "log")
    for message in demo.error_messages(rid):
        assert sum(message in line for line in errors) == 1, (message, errors)
    assert {p.name for p in (config.var / "log").glob("*.err.log")} == {
        "auth.err.log",
        "billing.err.log",
        "shop.err.log",
    }
    in_archive = [m for m in demo.archive_messages(config.var / "archive") if rid in m]
    assert len(in_archive) == demo.record_count()
    assert "logrouter tail '*.err'" in result.stdout
    assert "guest:guest" not in result.stdout + result.stderr


def test_tail_shows_an_error_the_demo_app_logged(config: DemoConfig) -> None:
    """`logrouter tail '*.err' --count 1` prints the first error the demo app logs,
    then exits 0."""
    setup = run("-m", "logrouter", "setup", str(config.path))
    assert setup.returncode == 0, setup.stdout + setup.stderr
    target = ["--url", config.url, "--exchange", config.exchange]
    tail = subprocess.Popen(
        [sys.executable, "-m", "logrouter", "tail", "*.err", "--count", "1", *target],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready = threading.Event()
    err_lines: list[str] = []

    def pump() -> None:
        assert tail.stderr is not None
        for line in tail.stderr:
            err_lines.append(line)
            if "Ctrl-C to stop" in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert ready.wait(20), "".join(err_lines)
        start = time.monotonic()
        app = run("-m", "logrouter.demo", "--config", str(config.path), "--run-id", "t1")
        assert app.returncode == 0, app.stdout + app.stderr
        tail.wait(20)  # stdout is one line: no pipe can fill up
        assert tail.stdout is not None
        out = tail.stdout.read()
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    assert tail.returncode == 0, "".join(err_lines)
    assert demo.tagged("payment declined for order 1042", "t1") in out
    print(f"tail printed the demo's first error {time.monotonic() - start:.2f}s after start")
