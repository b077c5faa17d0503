"""commit.py: a batch is committed with the cyclic collector paused, and the collector
is left as it was found (on, or off when the process turned it off), also when two
sinks of one process commit at the same time; its fsyncs run in a thread of their own
while deliveries are read, their errors and a connection lost meanwhile are kept."""

from __future__ import annotations

import gc
import threading
import time
from types import SimpleNamespace
from typing import Any

import pika.exceptions
import pytest

from logrouter.backoff import Backoff
from logrouter.counters import SinkCounters
from logrouter.sinks.batch import Batch, Delivery, Outcome
from logrouter.sinks.commit import Committer, _no_cyclic_gc


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


class _Link:
    """What Committer.durable uses of a BrokerLink: process (here: counts, runs a hook),
    wake, and a connection."""

    def __init__(self, on_process: Any = None) -> None:
        self.connection = object()
        self.processed = 0
        self.woken = 0
        self.on_process = on_process

    def process(self, seconds: float) -> None:
        self.processed += 1
        if self.on_process is not None:
            self.on_process()
        time.sleep(min(seconds, 0.001))

    def wake(self) -> None:
        self.woken += 1


def _committer(link: Any) -> Committer:
    output = SimpleNamespace(durable=None)
    return Committer(
        output,  # type: ignore[arg-type]
        link,
        counters=SinkCounters(),
        backoff=Backoff(),
        log=SimpleNamespace(),
    )


def test_deliveries_are_read_while_an_fsync_runs() -> None:
    """The durable step (an fsync) runs in another thread while the committer keeps
    reading the socket: a step that can only finish once the socket was read does."""
    read = threading.Event()
    link = _Link(on_process=read.set)
    committer = _committer(link)
    ran_in: list[str] = []

    def step() -> None:
        ran_in.append(threading.current_thread().name)
        assert read.wait(5), "the socket was not read during the step"

    committer.durable(step)
    committer.close()
    assert link.processed >= 1 and link.woken == 1
    assert ran_in and ran_in[0] != threading.current_thread().name
    assert committer.link_error is None


def test_a_connection_lost_during_an_fsync_is_kept_until_the_step_is_done() -> None:
    """The connection failing while the fsync runs: the step still completes (nothing
    is left half done), and the error is kept for the commit to raise before its ack."""
    lost = ConnectionError("broker gone")
    done = threading.Event()

    def fail() -> None:
        raise lost

    committer = _committer(_Link(on_process=fail))

    def step() -> None:
        time.sleep(0.05)
        done.set()

    committer.durable(step)
    assert done.is_set()
    assert committer.link_error is lost
    committer.durable(done.clear)  # with the link failed: run in place, not awaited
    assert not done.is_set()
    committer.close()


def test_an_fsync_error_is_raised_by_the_commit() -> None:
    """A step that fails (fsync: EIO) raises its error in the committer's thread, so the
    batch is nacked and rolled back as before."""
    committer = _committer(_Link())

    def step() -> None:
        raise OSError(5, "Input/output error")

    try:
        committer.durable(step)
    except OSError as exc:
        assert exc.errno == 5
    else:
        raise AssertionError("the fsync error was not raised")
    finally:
        committer.close()


def test_a_reject_publish_that_fails_rolls_the_written_records_back() -> None:
    """The batch is written, then publishing its rejected copies fails (the broker closed
    the connection): the writer is rolled back before the error goes up, so the batch,
    redelivered, is written once (it was written again on every round: not journaled,
    not acked, never rolled back)."""
    calls: list[str] = []
    outcome = Outcome()
    outcome.rejected.append((Delivery(1, "a.err", b"x", None), "bad"))

    class Output:
        config = SimpleNamespace(name="s")
        durable = None

        def classify(self, _pending: Any) -> Outcome:
            return outcome

        def write(self, _outcome: Any) -> tuple[list[Any], dict[str, int], bool]:
            calls.append("write")
            return [], {}, False

        def commit(self, *_args: Any, **_kw: Any) -> None:
            calls.append("journal")

        def rollback(self) -> None:
            calls.append("rollback")

    class Link(_Link):
        def reject(self, *_args: Any) -> None:
            raise pika.exceptions.StreamLostError("frame_too_large")

        def ack(self, _tag: int) -> None:
            calls.append("ack")

    committer = Committer(
        Output(),  # type: ignore[arg-type]
        Link(),  # type: ignore[arg-type]
        counters=SinkCounters(),
        backoff=Backoff(),
        log=SimpleNamespace(),
    )
    batch = Batch(10, 1.0)
    batch.append(Delivery(1, "a.err", b"x", None), 0.0)
    with pytest.raises(pika.exceptions.StreamLostError):
        committer.commit(batch)
    assert calls == ["write", "rollback"]
