"""What a sink process tells systemd: READY=1, STATUS=, WATCHDOG=1 (sd_notify).

READY=1 goes out once every sink consumes, or after ``READY_GRACE`` seconds
(a broker down at start must not hold systemd's start job). STATUS= is one
line per process, sent when it changes. WATCHDOG=1 is sent at half the
watchdog interval and only while every sink loop is alive and recently seen,
so a stuck sink gets the process restarted. Without a notify socket every call
is a no-op, and a socket error never fails the daemon.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from logrouter import sdnotify
from logrouter.sinks.consumer import Sink

#: READY=1 is sent when every sink consumes, or after this long (broker down at start).
READY_GRACE = 10.0


class Notify:
    """sd_notify calls that never fail the daemon (no socket: a no-op)."""

    def __call__(self, name: str, *args: Any) -> Any:
        try:
            return getattr(sdnotify, name)(*args)
        except OSError:
            return None


def status_line(sinks: Mapping[str, Sink], refused: list[str]) -> str:
    """The STATUS= line: per sink its state and counts; a refused config first."""
    line = "; ".join(
        f"{name}: {s.counters.state}, {s.counters.written} written, {s.counters.rejected} rejected"
        for name, s in sinks.items()
    )
    if refused:
        line = f"config refused, old routing kept: {refused[0]}; {line}"
    return line


class Readiness:
    """READY=1 once, STATUS= on change, WATCHDOG=1 while healthy (module docstring)."""

    def __init__(self, notify: Notify, started: float) -> None:
        self.notify = notify
        self.started = started
        self.ready = False
        self.watchdog = notify("watchdog_interval")
        self._last_ping = 0.0
        self._last_status = ""

    def tick(
        self,
        now: float,
        status: str,
        all_consuming: Callable[[], bool],
        healthy: Callable[[float, float], bool],
    ) -> None:
        """One look of the runner's loop at ``now`` with the current ``status`` line."""
        if not self.ready and (all_consuming() or now - self.started > READY_GRACE):
            self.ready = True
            self.notify("ready", status)  # READY=1 and the STATUS= it is ready with
            self._last_status = status
        if status != self._last_status:
            self.notify("status", status)
            self._last_status = status
        watchdog = self.watchdog
        if watchdog and now - self._last_ping >= watchdog / 2 and healthy(now, watchdog):
            self.notify("watchdog_ping")
            self._last_ping = now
