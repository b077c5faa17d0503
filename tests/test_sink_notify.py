"""A real sink process speaks sd_notify: READY, STATUS, WATCHDOG, RELOADING, STOPPING.

The test plays systemd: it binds the NOTIFY_SOCKET (a path, and an abstract name)
and reads the datagrams a `logrouter run` process sends through its life.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pytest


class Systemd:
    """The receiving end of NOTIFY_SOCKET."""

    def __init__(self, address: str, bind_to: str | bytes) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bind_to)
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []
        self.cursor = 0  # wait_for matches messages in order, each at most once

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append(fields)

    def wait_for(self, key: str, value: str | None = None, timeout: float = 20.0) -> dict[str, str]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for index in range(self.cursor, len(self.messages)):
                message = self.messages[index]
                if key in message and (value is None or message[key] == value):
                    self.cursor = index + 1
                    return message
            self.pump(0.2)
        raise AssertionError(f"no {key}={value or '*'} within {timeout}s; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


def config_text(url: str, exchange: str, sink: str, match: str, path: str) -> str:
    return (
        f'[broker]\nurl = "{url}"\nexchange = "{exchange}"\n\n'
        f'[sinks.{sink}]\ntype = "file"\nmatch = "{match}"\npath = "{path}"\n'
    )


@pytest.fixture
def names(amqp_url: str, unique_name: Callable[[str], str]) -> Iterator[tuple[str, str]]:
    exchange, sink = unique_name("notify"), f"notify-{uuid.uuid4().hex[:6]}"
    yield exchange, sink
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.queue_delete(f"logrouter.{sink}")
    channel.queue_delete(f"{exchange}.unrouted")
    for name in (exchange, f"{exchange}.unrouted", f"{exchange}.control"):
        channel.exchange_delete(name)
    connection.close()


def start(
    config: Path, tmp: Path, notify_socket: str, stdout: int = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        NOTIFY_SOCKET=notify_socket,
        WATCHDOG_USEC="2000000",
        LOGROUTER_STATE_DIR=str(tmp / "state"),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "logrouter", "run", str(config)],
        stdout=stdout,
        stderr=(tmp / "daemon.log").open("wb"),
        env=env,
    )


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_lifecycle_messages(
    kind: str, tmp_path: Path, amqp_url: str, names: tuple[str, str]
) -> None:
    """READY=1 once consuming, STATUS= with state, WATCHDOG=1 while healthy, a reload
    wrapped in RELOADING=1 (+ MONOTONIC_USEC) and READY=1, and STOPPING=1 on SIGTERM."""
    exchange, sink = names
    if kind == "path":
        address = str(tmp_path / "notify.sock")
        systemd = Systemd(address, address)
    else:
        name = f"logrouter-test-{uuid.uuid4().hex}"
        systemd = Systemd(f"@{name}", b"\0" + name.encode())
    config = tmp_path / "routing.toml"
    config.write_text(config_text(amqp_url, exchange, sink, "*.err", "out/{facility}.log"))
    process = start(config, tmp_path, systemd.address)
    try:
        systemd.wait_for("READY", "1")
        assert any(
            sink in m.get("STATUS", "") and "running" in m["STATUS"] for m in systemd.messages
        ), systemd.messages
        systemd.wait_for("WATCHDOG", "1")
        systemd.wait_for("WATCHDOG", "1")  # repeatedly, not once

        config.write_text(config_text(amqp_url, exchange, sink, "*.warning", "out/{facility}.log"))
        reloading = systemd.wait_for("RELOADING", "1")
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert 0 < now_usec - int(reloading["MONOTONIC_USEC"]) < 60_000_000
        systemd.wait_for("READY", "1")

        process.send_signal(signal.SIGTERM)
        systemd.wait_for("STOPPING", "1")
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        systemd.close()


def test_refused_reload_shows_in_status(
    tmp_path: Path, amqp_url: str, names: tuple[str, str]
) -> None:
    """A broken edit puts the refusal, with file, line and key, into STATUS=."""
    exchange, sink = names
    address = str(tmp_path / "notify.sock")
    systemd = Systemd(address, address)
    config = tmp_path / "routing.toml"
    config.write_text(config_text(amqp_url, exchange, sink, "*.err", "out/{facility}.log"))
    process = start(config, tmp_path, address)
    try:
        systemd.wait_for("READY", "1")
        config.write_text(config_text(amqp_url, exchange, sink, "*.eror", "out/{facility}.log"))
        end = time.monotonic() + 20
        while time.monotonic() < end:
            systemd.pump(0.2)
            refused = [m for m in systemd.messages if "config refused" in m.get("STATUS", "")]
            if refused:
                break
        assert refused, systemd.messages
        assert f"routing.toml:7: sinks.{sink}.match" in refused[-1]["STATUS"]
    finally:
        process.kill()
        process.wait()
        systemd.close()


def test_wedged_sink_stops_the_watchdog(
    tmp_path: Path, amqp_url: str, names: tuple[str, str]
) -> None:
    """A sink loop stuck in a blocking write (a console sink whose stdout is a pipe nobody
    reads, filled past its buffer) stops WATCHDOG=1, so systemd would restart the unit.
    (A file sink cannot be wedged by a FIFO any more: it refuses a target that is not a
    regular file.)"""
    exchange, sink = names
    address = str(tmp_path / "notify.sock")
    systemd = Systemd(address, address)
    config = tmp_path / "routing.toml"
    config.write_text(
        f'[broker]\nurl = "{amqp_url}"\nexchange = "{exchange}"\n\n'
        f'[sinks.{sink}]\ntype = "console"\nmatch = "*.*"\ncolor = "never"\n'
    )
    process = start(config, tmp_path, address, stdout=subprocess.PIPE)  # never read
    try:
        systemd.wait_for("READY", "1")
        systemd.wait_for("WATCHDOG", "1")
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        channel = connection.channel()
        for _ in range(2000):  # ~1 MB of lines: far past a pipe's 64 KiB
            channel.basic_publish(exchange, "stuck.err", b"this write blocks " * 25)
        connection.close()
        time.sleep(3.0)  # > the 1 s health window: the loop is wedged by now
        systemd.pump(0.5)
        systemd.messages.clear()
        systemd.pump(3.0)
        assert process.poll() is None
        assert not [m for m in systemd.messages if m.get("WATCHDOG") == "1"], systemd.messages
    finally:
        process.kill()
        process.wait()
        systemd.close()
