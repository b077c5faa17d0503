"""sd_notify without a library: one datagram to ``$NOTIFY_SOCKET`` per call.

The protocol (sd_notify(3)): newline-separated ``KEY=VALUE`` assignments sent as a
single datagram on an AF_UNIX socket whose path is in ``$NOTIFY_SOCKET``; a leading
``@`` means the Linux abstract namespace. Every function is a no-op returning False
when the variable is unset (not under systemd), so daemons call them freely.

Reload sequence for ``Type=notify`` on systemd 252 (no ``notify-reload``):
``reloading()`` (RELOADING=1 + MONOTONIC_USEC), re-read, then ``ready()``.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


def _address(value: str) -> str | bytes:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def notify_raw(text: str, *, env: Mapping[str, str] | None = None) -> bool:
    """Send ``text`` as one datagram; True when sent, False when there is no socket."""
    target = (os.environ if env is None else env).get(NOTIFY_SOCKET_ENV, "")
    if not target or not (target.startswith("@") or target.startswith("/")):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto(text.encode(), _address(target))
    return True


def format_fields(fields: Mapping[str, object]) -> str:
    """``{"READY": 1, "STATUS": "x"}`` -> ``"READY=1\\nSTATUS=x"``; newlines in values flattened."""
    lines = []
    for key, value in fields.items():
        text = str(value).replace("\n", " ")
        lines.append(f"{key}={text}")
    return "\n".join(lines)


def notify(**fields: object) -> bool:
    """Send the fields as one datagram, e.g. ``notify(READY=1, STATUS="consuming")``."""
    return notify_raw(format_fields(fields))


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd compares MONOTONIC_USEC with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def ready(status: str | None = None) -> bool:
    """READY=1 (startup finished or reload done), with an optional STATUS."""
    return notify(READY=1, **({"STATUS": status} if status else {}))


def reloading(status: str | None = None) -> bool:
    """RELOADING=1 with MONOTONIC_USEC, sent before a reload; follow with ready()."""
    fields: dict[str, object] = {"RELOADING": 1, "MONOTONIC_USEC": monotonic_usec()}
    if status:
        fields["STATUS"] = status
    return notify(**fields)


def stopping(status: str | None = None) -> bool:
    """STOPPING=1: the service is shutting down."""
    return notify(STOPPING=1, **({"STATUS": status} if status else {}))


def status(text: str) -> bool:
    """STATUS=<text>: one line shown by ``systemctl status``."""
    return notify(STATUS=text)


def watchdog_ping() -> bool:
    """WATCHDOG=1: call from the work loop, only while healthy."""
    return notify(WATCHDOG=1)


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings (half of WATCHDOG_USEC), or None when not enabled.

    None also when WATCHDOG_PID names another process (the watchdog is not ours).
    """
    environ = os.environ if env is None else env
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 2 / 1_000_000
