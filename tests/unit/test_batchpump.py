"""batchpump: when batch="auto" holds a backlog back (linger) and when it lets it go."""

from __future__ import annotations

import types
from collections import deque
from typing import Any, cast

from logrouter.app.batchpump import INFLIGHT_RECORDS, PUMP_RECORDS, BatchPump
from logrouter.app.inflight import Inflight


class _Loop:
    """The two IOLoop calls the pump makes, recorded; timers fire only when told."""

    def __init__(self) -> None:
        self.timers: list[object] = []
        self.removed: list[object] = []

    def call_later(self, delay: float, callback: Any) -> object:
        timer = object()
        self.timers.append(timer)
        return timer

    def remove_timeout(self, timer: object) -> None:
        self.removed.append(timer)


def _pump(linger: float = 5.0) -> tuple[BatchPump, Inflight, deque[int], _Loop]:
    inflight, buffer, loop = Inflight(), deque([1, 2, 3]), _Loop()
    outbox = types.SimpleNamespace(buffer=buffer)
    pump = BatchPump(
        cast(Any, outbox),
        inflight,
        cast(Any, loop),
        linger=linger,
        batch_records=100,
        batch_bytes=1 << 20,
        on_due=lambda: None,
    )
    return pump, inflight, buffer, loop


def test_quiet_app_publishes_at_once() -> None:
    """Nothing in flight: a small backlog is published now, no timer is set."""
    pump, _inflight, _buffer, loop = _pump()
    assert not pump.lingering(limit=10)
    assert loop.timers == []


def test_backlog_waits_while_the_broker_owes_confirms() -> None:
    """A message in flight: the backlog waits (one timer, at most ``linger``), and a
    pump before the last confirm keeps waiting without another timer."""
    pump, inflight, _buffer, loop = _pump()
    inflight.add(())
    assert pump.lingering(limit=10)
    assert pump.lingering(limit=10)
    assert len(loop.timers) == 1


def test_last_confirm_ends_the_wait_and_its_timer() -> None:
    """When the broker has confirmed everything in flight, the next pump publishes the
    backlog at once (no waiting out the linger) and cancels the linger's timer."""
    pump, inflight, _buffer, loop = _pump()
    inflight.add(())
    assert pump.lingering(limit=10)
    inflight.settle(1, multiple=False)
    assert not pump.lingering(limit=10)
    assert loop.removed == loop.timers


def test_full_batch_or_no_linger_goes_at_once() -> None:
    """A backlog of a full batch, a linger of 0 or no room in flight: no waiting."""
    pump, inflight, buffer, _loop = _pump()
    inflight.add(())
    buffer.extend(range(200))
    assert not pump.lingering(limit=10)
    assert not pump.lingering(limit=0)
    no_linger, inflight2, _buffer2, _loop2 = _pump(linger=0.0)
    inflight2.add(())
    assert not no_linger.lingering(limit=10)


def test_records_in_flight_are_capped() -> None:
    """A batch carries up to batch_records records, so the publisher's cap of messages
    in flight does not bound records: the pump takes no more than INFLIGHT_RECORDS
    less those in flight, and nothing when none are left; confirms give room back."""
    pump, inflight, _buffer, _loop = _pump()
    taken: list[int] = []
    cast(Any, pump.outbox).take_buffered = lambda count: taken.append(count) or []
    writer = cast(Any, None)  # never reached: take_buffered gives nothing
    inflight.add(cast(Any, (None,) * (INFLIGHT_RECORDS - 30)))
    assert pump.publish(writer, limit=10) == 0
    inflight.add(cast(Any, (None,) * 30))
    assert pump.publish(writer, limit=10) == 0
    assert taken == [30] and inflight.records == INFLIGHT_RECORDS
    (first,) = inflight.settle(1, multiple=False)
    assert len(first) == INFLIGHT_RECORDS - 30
    pump.publish(writer, limit=100)  # 100 messages of batch_records 100: a pump's share
    assert taken == [30, PUMP_RECORDS] and inflight.records == 30
    assert len(inflight.drain()) == 30 and inflight.records == 0
