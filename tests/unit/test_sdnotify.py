"""sd_notify datagrams, checked on real AF_UNIX sockets (a path and an abstract name)."""

from __future__ import annotations

import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from logrouter import sdnotify

Receiver = Callable[[], dict[str, str]]


def _parse(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().split("\n"))


def _receiver(sock: socket.socket) -> Receiver:
    def receive() -> dict[str, str]:
        return _parse(sock.recv(4096))

    return receive


@pytest.fixture(params=["path", "abstract"])
def notify_socket(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Receiver]:
    """A bound datagram socket set as $NOTIFY_SOCKET; yields: next message."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(5)
    with tempfile.TemporaryDirectory(prefix="sdn-") as directory:
        if request.param == "path":
            address = str(Path(directory) / "notify")
            sock.bind(address)
            monkeypatch.setenv("NOTIFY_SOCKET", address)
        else:
            name = f"logrouter-test-{uuid.uuid4().hex}"
            sock.bind(b"\0" + name.encode())
            monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        try:
            yield _receiver(sock)
        finally:
            sock.close()


def test_ready_sends_ready_and_status(notify_socket: Receiver) -> None:
    """ready("consuming") sends one datagram READY=1 + STATUS=consuming."""
    assert sdnotify.ready("consuming") is True
    assert notify_socket() == {"READY": "1", "STATUS": "consuming"}


def test_reloading_sends_monotonic_usec_then_ready(notify_socket: Receiver) -> None:
    """reloading() sends RELOADING=1 with MONOTONIC_USEC of CLOCK_MONOTONIC; ready() follows."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    sdnotify.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    sdnotify.ready()
    message = notify_socket()
    assert message["RELOADING"] == "1"
    assert before <= int(message["MONOTONIC_USEC"]) <= after
    assert notify_socket() == {"READY": "1"}


def test_stopping_status_and_watchdog(notify_socket: Receiver) -> None:
    """stopping(), status() and watchdog_ping() each send their one assignment."""
    sdnotify.status("3 records/s\nsecond line")
    sdnotify.watchdog_ping()
    sdnotify.stopping()
    assert notify_socket() == {"STATUS": "3 records/s second line"}
    assert notify_socket() == {"WATCHDOG": "1"}
    assert notify_socket() == {"STOPPING": "1"}


def test_notify_sends_arbitrary_fields_and_raw_text(notify_socket: Receiver) -> None:
    """notify(**fields) joins KEY=VALUE lines in one datagram; notify_raw sends text verbatim."""
    sdnotify.notify(STATUS="x", ERRNO=5)
    sdnotify.notify_raw("EXTEND_TIMEOUT_USEC=1000000")
    assert notify_socket() == {"STATUS": "x", "ERRNO": "5"}
    assert notify_socket() == {"EXTEND_TIMEOUT_USEC": "1000000"}


def test_no_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without $NOTIFY_SOCKET (not under systemd) every call does nothing and returns False."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
    assert sdnotify.watchdog_ping() is False
    assert sdnotify.reloading() is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "self"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "junk"}, None),
    ],
)
def test_watchdog_interval_is_half_the_period_for_this_process(
    env: dict[str, str], expected: float | None
) -> None:
    """watchdog_interval() is half of WATCHDOG_USEC, None when unset or meant for another pid."""
    env = {k: str(os.getpid()) if v == "self" else v for k, v in env.items()}
    assert sdnotify.watchdog_interval(env) == expected
