"""What waits to be published: bounded buffer, disk spool, overflow, in logging order.

``emit()`` puts captured records here (``put``); the I/O thread takes them out
encoded, oldest first (``take``), and hands back what the broker confirmed,
nacked, or left unconfirmed when a connection was lost. The outbox decides what
goes to the spool and when (spill policy), and merges the spool, the buffer and
records re-queued after a nack or a lost connection by their logging position
``(run, seq)``. Writing to the spool, its counters and adoption are the
``SpoolStore`` it builds on.

Threads: ``put``, ``dropped`` and ``stats`` run in any thread; everything else in
the I/O thread.
"""

from __future__ import annotations

import operator
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from logrouter.app.encoder import Encoded, Encoder, Frozen
from logrouter.app.fastpack import Deferred
from logrouter.app.spool import SpoolEntry
from logrouter.app.spools import SpoolDir
from logrouter.app.spoolstore import SpoolStore, spool_entry

SPILL_BATCH = 2000
SPOOL_READ = 1000
#: The I/O thread releases the GIL at least this often (seconds) while it spills, so
#: that a logging thread never waits a whole switch interval (5 ms) behind it.
YIELD_INTERVAL = 0.0005


_spool_id = operator.itemgetter(6)  # of an ``Encoded``


def _position(item: Encoded) -> tuple[int, int]:
    return (item.run, item.seq)


class Outbox(SpoolStore):
    """Bounded in-memory buffer in front of an optional per-process disk spool."""

    def __init__(
        self,
        encoder: Encoder,
        spools: SpoolDir | None,
        *,
        buffer_size: int,
        report: Callable[[str], None],
    ) -> None:
        super().__init__(encoder, spools, report=report)
        self.buffer_size = buffer_size
        self.buffer: deque[Frozen] = deque()  # seq first
        # I/O thread only:
        self._seen = 0  # the spool's write counter when the reader last found nothing new
        self._retry: deque[Encoded] = deque()
        self._ahead: deque[Encoded] = deque()
        self._cursor: tuple[int, int] = (-1, -1)
        self._done: list[tuple[int, int]] = []
        self._last_yield = 0.0

    # ---- any thread -----------------------------------------------------------------

    def put(self, captured: Frozen) -> bool:
        """Append a record; False when the buffer was full (spooled or counted instead)."""
        if len(self.buffer) < self.buffer_size:
            self.buffer.append(captured)
            return True
        self._overflowed(captured)
        return False

    # ---- the I/O thread ---------------------------------------------------------------

    def idle(self) -> bool:
        """Nothing waits: buffer, re-queued records, unread spool rows, overflow."""
        return not (
            self.buffer
            or self._retry
            or self._ahead
            or self._overflow
            or self._writes != self._seen
        )

    def take(self) -> Encoded | None:
        """The oldest record not yet published: re-queued ones, then spool and buffer merged."""
        if self._retry:
            return self._retry.popleft()
        ahead = self._ahead
        buffer = self.buffer
        for attempt in range(3):
            if self._overflow:
                with self._lock:
                    self._flush_overflow()  # older than what the buffer holds now
            if self._rewind is not None:
                self._apply_rewind()
            if not ahead and self._writes != self._seen:
                self._read_spool()
            if ahead and not (buffer and (self.encoder.run, buffer[0][0]) < _position(ahead[0])):
                return ahead.popleft()
            if not buffer:
                return None
            captured = buffer.popleft()
            if attempt < 2 and (self._overflow or self._rewind is not None):
                # emit() spilled an older record meanwhile: take that one first.
                buffer.appendleft(captured)
                continue
            return self.encoder.encode(captured)
        return None

    def take_many(self, limit: int) -> list[Encoded]:
        """Up to ``limit`` records, oldest first: what ``take`` would give one by one.

        While only the in-memory buffer holds records (the busy app's case), the
        records present when a round starts are taken and encoded in one go; anything
        else (re-queued records, spool rows, overflow, rewind) goes through ``take``.
        """
        out: list[Encoded] = []
        buffer = self.buffer
        popleft = buffer.popleft
        encode_many = self.encoder.encode_many
        while len(out) < limit:
            if self._older_waiting() or not buffer:
                item = self.take()
                if item is None:
                    break
                out.append(item)
                continue
            # only records present now: older than any overflow emit() may add meanwhile
            chunk = [popleft() for _ in range(min(limit - len(out), len(buffer)))]
            out += encode_many(chunk)
        return out

    def _older_waiting(self) -> bool:
        """Records older than the buffer's may wait: re-queued, read ahead, overflowing,
        behind a rewind mark, or unread in the spool."""
        return bool(
            self._retry
            or self._ahead
            or self._overflow
            or self._rewind is not None
            or self._writes != self._seen
        )

    def take_buffered(self, limit: int) -> list[Frozen] | None:
        """Up to ``limit`` of the oldest records as ``emit()`` froze them, when only the
        buffer holds records (the usual case); else None: ``take_many``."""
        buffer = self.buffer
        if self._older_waiting():
            return None
        popleft = buffer.popleft  # only records present now (see take_many)
        return [popleft() for _ in range(min(limit, len(buffer)))]

    def confirmed(self, messages: Iterable[Sequence[Encoded]]) -> None:
        """The broker stored the records of these messages: their spool rows go at the
        next ``sweep``. Those of a ``Deferred`` came from the buffer: no rows."""
        for items in messages:
            if isinstance(items, Deferred):
                continue
            spool_ids = list(map(_spool_id, items))
            if spool_ids.count(None) != len(spool_ids):  # else none came from the spool
                self._done.extend(
                    (i.spool_id, len(i.body)) for i in items if i.spool_id is not None
                )

    def retry(self, items: Iterable[Encoded]) -> None:
        """Nacked: publish these again, after the records already waiting for a retry."""
        self._retry.extend(items)

    def rewind(self, items: Iterable[Encoded]) -> None:
        """Unconfirmed when the channel went away: back in front, in logging order."""
        merged = [*items, *self._retry]
        if merged:
            merged.sort(key=_position)
            self._retry = deque(merged)

    def sweep(self) -> None:
        """Delete confirmed spool rows (one transaction)."""
        if self._done:
            spool = self.spools.spool if self.spools else None
            if spool is not None:
                spool.delete(self._done)
            self._done = []

    def maybe_spill(self, down_for: float) -> None:
        """Broker away or blocked: move records to the spool beyond half the buffer,
        or all of them once it has been away for a second."""
        if len(self.buffer) > self.buffer_size // 2 or (self.buffer and down_for > 1.0):
            self.spill(everything=False)

    def spill(self, *, everything: bool, final: bool = False) -> None:
        """Move records from memory to the spool, in batches (one transaction each).

        ``everything`` takes re-queued records and the whole buffer; ``final`` (the
        thread stops) counts what has nowhere to go as dropped.
        """
        if everything:
            with self._lock:
                self._flush_overflow()
        if self.spool() is None:
            if final:
                with self._lock:
                    self.dropped += len(self.buffer) + len(self._retry)
                self.buffer.clear()
                self._retry.clear()
            return
        if everything:
            retry = [spool_entry(item) for item in self._retry if item.spool_id is None]
            self._retry.clear()
            self._store(retry)  # unconfirmed records from memory too (duplicates are harmless)
            self._ahead.clear()
            self._cursor = (-1, -1)
            with self._lock:
                self._seen = -1
        buffer = self.buffer
        encode = self.encoder.encode
        while buffer:
            batch: list[SpoolEntry] = []
            while buffer and len(batch) < SPILL_BATCH:
                batch.append(spool_entry(encode(buffer.popleft())))
                if not len(batch) % 8:
                    self._yield_gil()
            self._store(batch)
            if not everything and len(buffer) <= self.buffer_size // 4:
                break

    # ---- internals --------------------------------------------------------------------

    def _apply_rewind(self) -> None:
        """Rows older than what replay already read were written: read again from there.

        Rows read ahead that are older than the rewind stay (the cursor goes back only to
        the rewind): dropping them too would skip them until the next process adopts the
        spool. Newer ones are read again, in order, with the rows just written.
        """
        with self._lock:
            rewind, self._rewind = self._rewind, None
        if rewind is not None and rewind <= self._cursor:
            self._cursor = (rewind[0], rewind[1] - 1)
            ahead = self._ahead
            while ahead and _position(ahead[-1]) >= rewind:
                ahead.pop()
            with self._lock:
                self._seen = -1  # and do read, whatever the write counter says

    def _read_spool(self) -> None:
        spool = self.spools.spool if self.spools else None
        if spool is None:
            self._seen = self._writes
            return
        writes = self._writes
        rows = spool.read(self._cursor, SPOOL_READ)
        if rows:
            self._cursor = (rows[-1].run, rows[-1].seq)
            self._ahead.extend(rows)
        else:
            self._seen = writes

    def _yield_gil(self) -> None:
        now = time.perf_counter()
        if now - self._last_yield >= YIELD_INTERVAL:
            time.sleep(0)
            self._last_yield = time.perf_counter()
