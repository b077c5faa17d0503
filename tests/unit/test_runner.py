"""sinks.runner: signal handlers take no lock (a handler runs in the main thread, which may
be holding the very lock ``Event.set`` would take)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from logrouter.sinks.runner import Runner


def _bare_runner() -> Runner:
    runner = object.__new__(Runner)
    runner._stop = threading.Event()
    runner._reload = threading.Event()
    runner._stop_signalled = False
    runner._hup_signalled = False
    runner.reloader = SimpleNamespace(reopen=threading.Event())  # type: ignore[assignment]
    return runner


def test_handlers_return_while_the_events_locks_are_held() -> None:
    """SIGTERM/SIGHUP handlers called while their thread holds the stop and reload
    events' locks return at once (Event.set there would wait forever); the loop then
    turns the flags into the events."""
    runner = _bare_runner()
    returned = threading.Event()

    def handle_inside_the_locks() -> None:
        with runner._stop._cond, runner._reload._cond:  # as inside Event.wait / clear
            runner._on_stop(15, None)
            runner._on_hup(1, None)
        returned.set()

    threading.Thread(target=handle_inside_the_locks, daemon=True).start()
    assert returned.wait(2), "a signal handler blocked on an event's lock"
    assert not runner._stop.is_set()
    runner._take_signals()
    assert runner._stop.is_set() and runner._reload.is_set()
    assert runner.reloader.reopen.is_set()
