"""commit.py: a batch is committed with the cyclic collector paused, and the collector
is left as it was found (on, or off when the process turned it off), also when two
sinks of one process commit at the same time."""

from __future__ import annotations

import gc
import threading

from logrouter.sinks.commit import _no_cyclic_gc


def test_the_collector_is_paused_during_a_commit_and_restored_after() -> None:
    """Inside: no cyclic collection; after: on again, also after an exception."""
    assert gc.isenabled()
    with _no_cyclic_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    try:
        with _no_cyclic_gc():
            raise OSError("disk full")
    except OSError:
        pass
    assert gc.isenabled()


def test_a_collector_turned_off_stays_off() -> None:
    """A process that turned the collector off keeps it off after a commit."""
    gc.disable()
    try:
        with _no_cyclic_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_overlapping_commits_of_two_sinks_leave_it_on() -> None:
    """Two sinks' commits overlapping in any order: the collector is on afterwards."""
    inside = threading.Barrier(2)
    done = threading.Event()

    def other() -> None:
        with _no_cyclic_gc():
            inside.wait()
            done.wait(5)

    thread = threading.Thread(target=other)
    thread.start()
    with _no_cyclic_gc():
        inside.wait()
    assert not gc.isenabled()  # the other sink is still committing
    done.set()
    thread.join(5)
    assert gc.isenabled()
