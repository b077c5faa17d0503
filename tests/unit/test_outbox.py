"""outbox: buffer, overflow, spool and re-queued records leave in logging order (no broker)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from logrouter.app.encoder import Captured, Encoded, Encoder
from logrouter.app.fastpack import Deferred
from logrouter.app.outbox import Outbox
from logrouter.app.spools import SpoolDir


def _outbox(tmp_path: Path | None, buffer_size: int = 10) -> tuple[Outbox, list[str]]:
    encoder = Encoder(
        host="h", app="a", facility="user", facilities={}, max_message=1000, run=5, id_prefix="x"
    )
    spools = None if tmp_path is None else SpoolDir(tmp_path, 1 << 20, name="p1-5")
    said: list[str] = []
    return Outbox(encoder, spools, buffer_size=buffer_size, report=said.append), said


def _put(outbox: Outbox, first: int, last: int) -> None:
    for seq in range(first, last):
        record = logging.LogRecord("app", logging.INFO, "f.py", 1, "n %d", (seq,), None)
        outbox.put(Captured(seq, record, record.getMessage(), None))


def _take_all(outbox: Outbox) -> list[Encoded]:
    out = []
    while (item := outbox.take()) is not None:
        out.append(item)
    return out


def _msgs(items: list[Encoded]) -> list[str]:
    return [json.loads(i.body)["msg"] for i in items]


def test_overflow_goes_to_spool_and_comes_out_in_order(tmp_path: Path) -> None:
    """Beyond the buffer, records are spooled by the caller; taking merges by logging order."""
    outbox, _ = _outbox(tmp_path, buffer_size=10)
    _put(outbox, 1, 31)
    assert outbox.spooled == 0  # overflow waits for a batch; take flushes it first
    got = _take_all(outbox)
    assert _msgs(got) == [f"n {i}" for i in range(1, 11)] + [f"n {i}" for i in range(11, 31)]
    assert outbox.spooled == 20 and outbox.dropped == 0
    outbox.confirmed([got])
    outbox.sweep()
    assert outbox.idle()
    outbox.close()
    assert list(tmp_path.iterdir()) == []  # empty spool removed


def test_spill_while_down_then_replay_in_order(tmp_path: Path) -> None:
    """Broker away for over a second: the buffer goes to the spool, then replays in order."""
    outbox, _ = _outbox(tmp_path, buffer_size=100)
    _put(outbox, 1, 51)
    outbox.maybe_spill(down_for=2.0)
    assert len(outbox.buffer) == 0 and outbox.spooled == 50
    _put(outbox, 51, 61)
    assert _msgs(_take_all(outbox)) == [f"n {i}" for i in range(1, 61)]


def test_buffer_spilled_between_rows_read_ahead_loses_none_of_them(tmp_path: Path) -> None:
    """Rows read ahead of the replay stay when the buffer spills records that fall between
    them (the broker away, the buffer refilled between two overflow batches): every record
    comes out once, in logging order. Before, the read-ahead rows older than the spilled
    ones were dropped from memory and stayed in the spool until another process adopted it."""
    outbox, _ = _outbox(tmp_path, buffer_size=4)
    _put(outbox, 1, 5)  # the buffer: 1-4
    _put(outbox, 5, 261)  # an overflow batch: spooled by the caller
    outbox.maybe_spill(down_for=2.0)  # the broker is away: 1-4 spooled too
    _put(outbox, 261, 265)  # room again: 261-264 wait in the buffer
    _put(outbox, 265, 521)  # the next overflow batch
    first = outbox.take()  # reads 1-260 and 265-520 ahead
    outbox.maybe_spill(down_for=2.0)  # 261-264 spooled: older than rows read ahead
    got = [first, *_take_all(outbox)] if first is not None else []
    assert _msgs(got) == [f"n {i}" for i in range(1, 521)]
    outbox.confirmed([got])
    outbox.sweep()
    assert outbox.idle()


def test_rewind_puts_unconfirmed_back_in_front_in_order(tmp_path: Path) -> None:
    """Records unconfirmed when the channel went away come back first, oldest first."""
    outbox, _ = _outbox(tmp_path)
    _put(outbox, 1, 7)
    first = [outbox.take() for _ in range(4)]
    outbox.retry([first[3]])  # nacked
    outbox.rewind([first[2], first[0], first[1]])  # lost with the connection
    assert _msgs(_take_all(outbox)) == [f"n {i}" for i in range(1, 7)]


def test_spool_off_counts_drops_beyond_buffer() -> None:
    """Without a spool, records beyond the buffer are counted as dropped, never silently."""
    outbox, _ = _outbox(None, buffer_size=10)
    _put(outbox, 1, 26)
    assert outbox.dropped == 15 and len(outbox.buffer) == 10


def test_unusable_spool_is_reported_and_retried(tmp_path: Path) -> None:
    """A spool that cannot be opened is said once on stderr and tried again later."""
    blocker = tmp_path / "spool"
    blocker.write_text("a file where the directory goes")
    outbox, said = _outbox(blocker, buffer_size=2)
    _put(outbox, 1, 5)
    assert outbox.dropped == 2 and len(said) == 1 and "retrying" in said[0]
    blocker.unlink()
    outbox._open_retry_at = 0.0  # the retry delay has passed
    _put(outbox, 5, 6)
    assert outbox.spool() is not None and outbox.dropped == 2


def test_only_new_records_are_taken_frozen(tmp_path: Path) -> None:
    """take_buffered hands out the buffer's records as emit() froze them, oldest
    first, only while nothing older waits (overflow, spool, re-queued records): else
    None, and take_many merges them in order."""
    outbox, _ = _outbox(tmp_path, buffer_size=10)
    _put(outbox, 1, 5)
    assert [f[0] for f in outbox.take_buffered(3) or []] == [1, 2, 3]
    _put(outbox, 5, 20)  # 5..10 in the buffer (with 4), 11..19 overflow
    assert outbox.take_buffered(100) is None
    assert _msgs(outbox.take_many(100)) == [f"n {i}" for i in range(4, 20)]
    outbox.retry(outbox.encoder.encode_many([_frozen(20)]))
    _put(outbox, 21, 22)
    assert outbox.take_buffered(100) is None
    assert _msgs(outbox.take_many(100)) == ["n 20", "n 21"]
    assert outbox.take_buffered(100) == []


def test_confirming_a_deferred_batch_encodes_nothing(tmp_path: Path) -> None:
    """A confirmed batch from the buffer (a fastpack ``Deferred``) has no spool rows:
    confirming it leaves its records unencoded; spooled records are swept."""
    outbox, _ = _outbox(tmp_path, buffer_size=2)
    _put(outbox, 1, 5)
    spooled = outbox.take_many(10)
    spool = outbox.spools.spool if outbox.spools else None
    assert spool is not None and len(spool) == 2
    deferred = Deferred(outbox.encoder, [_frozen(9)])
    outbox.confirmed([deferred, spooled])
    assert deferred._encoded is None
    outbox.sweep()
    assert len(spool) == 0 and outbox.idle()


def _frozen(seq: int) -> Captured:
    record = logging.LogRecord("app", logging.INFO, "f.py", 1, "n %d", (seq,), None)
    return Captured(seq, record, record.getMessage(), None)
