"""logrouter.sinks.notify, the pure parts: the STATUS= line and when READY=1,
STATUS= and WATCHDOG=1 go out."""

from __future__ import annotations

from typing import Any

from logrouter.counters import SinkCounters
from logrouter.sinks.notify import READY_GRACE, Readiness, status_line


class Sent:
    """Records the sd_notify calls; a watchdog interval of 10 s."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, name: str, *args: Any) -> Any:
        if name == "watchdog_interval":
            return 10.0
        self.calls.append((name, *args))
        return True


class FakeSink:
    def __init__(self, state: str, written: int, rejected: int) -> None:
        self.counters = SinkCounters(written=written, rejected=rejected, state=state)


def test_status_line_names_each_sink_and_a_refused_config_first() -> None:
    """One part per sink (state, written, rejected); a refused config leads the line."""
    sinks: Any = {"a": FakeSink("running", 3, 1), "b": FakeSink("backing-off", 0, 0)}
    line = "a: running, 3 written, 1 rejected; b: backing-off, 0 written, 0 rejected"
    assert status_line(sinks, []) == line
    assert status_line(sinks, ["x.toml:2: bad"]) == (
        f"config refused, old routing kept: x.toml:2: bad; {line}"
    )


def test_ready_once_when_all_consume_then_status_on_change_and_watchdog_while_healthy() -> None:
    """STATUS= whenever the line changes (also before READY=1); READY=1 (with its
    status) once, when every sink consumes; WATCHDOG=1 at most every half interval
    and never while a sink is unhealthy."""
    sent = Sent()
    readiness = Readiness(sent, started=0.0)  # type: ignore[arg-type]
    readiness.tick(1.0, "s1", lambda: False, lambda now, limit: True)
    readiness.tick(2.0, "s1", lambda: True, lambda now, limit: True)
    readiness.tick(3.0, "s1", lambda: True, lambda now, limit: True)
    readiness.tick(4.0, "s2", lambda: True, lambda now, limit: True)
    readiness.tick(6.0, "s2", lambda: True, lambda now, limit: False)
    readiness.tick(8.0, "s2", lambda: True, lambda now, limit: True)
    readiness.tick(9.0, "s2", lambda: True, lambda now, limit: True)
    assert sent.calls == [("status", "s1"), ("ready", "s1"), ("status", "s2"), ("watchdog_ping",)]


def test_ready_after_the_grace_period_even_when_a_sink_never_consumes() -> None:
    """A broker down at start must not hold systemd: READY=1 after READY_GRACE."""
    sent = Sent()
    readiness = Readiness(sent, started=0.0)  # type: ignore[arg-type]
    readiness.tick(READY_GRACE + 0.1, "down", lambda: False, lambda now, limit: False)
    assert sent.calls == [("ready", "down")]
