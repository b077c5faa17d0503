"""The outbox's disk side: this process's spool, what is written to it, and adoption.

``SpoolStore`` opens the process's spool on first need (retrying an unusable one
after a doubling pause, saying so once on stderr), writes records to it (the
overflow batches of a full buffer from ``emit()``, the spills of the I/O thread)
counting what was spooled or dropped, marks the oldest position written so that
the reader goes back to it (``_rewind``, bumped ``_writes``), and adopts the
spools of dead processes of the app. ``Outbox`` builds its ordered queue and
its spill policy on top.

Threads: spool writes from both sides and the counters share one re-entrant
lock (a signal handler that logs while the lock is held must not hang).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable

from logrouter.app.encoder import Encoded, Encoder, Frozen
from logrouter.app.spool import Spool, SpoolEntry
from logrouter.app.spools import SpoolDir
from logrouter.backoff import Backoff
from logrouter.connection import describe_error

OVERFLOW_BATCH = 256
#: A spool that cannot be opened is tried again after this long (doubling, capped).
OPEN_RETRY = (1.0, 30.0)


def spool_entry(item: Encoded) -> SpoolEntry:
    """The spool row of an encoded record."""
    return (item.run, item.seq, item.routing_key, item.message_id, item.timestamp, item.body)


class SpoolStore:
    """Writes to this process's optional spool and accounts for it; see the module docstring."""

    def __init__(
        self,
        encoder: Encoder,
        spools: SpoolDir | None,
        *,
        report: Callable[[str], None],
    ) -> None:
        self.encoder = encoder
        self.spools = spools
        self._report = report
        self._lock = threading.RLock()
        self.dropped = 0
        self.spooled = 0
        #: Bumped by every spool write; the reader compares it to what it has read.
        self._writes = 0
        #: Oldest position written since the reader last looked (None: nothing older).
        self._rewind: tuple[int, int] | None = None
        self._overflow: list[SpoolEntry] = []
        self._said = ""
        self._open_retry_at = 0.0
        self._open_backoff = Backoff(first=OPEN_RETRY[0], cap=OPEN_RETRY[1])

    def spool(self) -> Spool | None:
        """This process's spool, opened on first need; None while off or unusable."""
        spools = self.spools
        if spools is None:
            return None
        if spools.spool is not None:
            return spools.spool
        with self._lock:
            if spools.spool is None and time.monotonic() >= self._open_retry_at:
                try:
                    spools.open_own()
                    self._open_backoff.reset()
                except Exception as exc:  # retried later; records wait in memory meanwhile
                    self._open_retry_at = time.monotonic() + self._open_backoff.next()
                    error = describe_error(exc)
                    self._say_once(f"spool {spools.path} unusable (retrying): {error}")
            return spools.spool

    def _say_once(self, text: str) -> None:
        """Report a spool problem on stderr, unless it is the one reported last."""
        if text != self._said:
            self._said = text
            self._report(text)

    def adopt(self) -> None:
        """Take over the spools of dead processes of this app (their rows replay first)."""
        if self.spools is None:
            return
        try:
            moved = self.spools.adopt()
        except Exception as exc:
            self._report(f"cannot adopt spools in {self.spools.path}: {describe_error(exc)}")
            return
        if moved:
            with self._lock:
                self._writes += 1
                self._rewind = (-1, -1)

    def close(self) -> None:
        """Close the spool (deleted when empty)."""
        if self.spools is not None:
            self.spools.close()

    def _overflowed(self, captured: Frozen) -> None:
        """The buffer is full: the record joins the overflow batch (dropped without a spool)."""
        entry = spool_entry(self.encoder.encode(captured))
        with self._lock:
            if self.spool() is None:
                self.dropped += 1
                return
            self._overflow.append(entry)
            if len(self._overflow) >= OVERFLOW_BATCH:
                self._flush_overflow()

    def _store(self, entries: list[SpoolEntry]) -> None:
        """Write to the spool (any thread, lock held or not) and account for it."""
        spool = self.spool()
        if not entries:
            return
        rejected = entries
        if spool is not None:
            try:
                rejected = spool.append(entries)
            except (sqlite3.Error, OSError) as exc:  # the disk is full, or the file went bad
                error = describe_error(exc)
                self._say_once(f"spool {spool.path} write failed (records dropped): {error}")
        first = min((e[0], e[1]) for e in entries)
        with self._lock:
            self._writes += 1
            self.spooled += len(entries) - len(rejected)
            self.dropped += len(rejected)
            if self._rewind is None or first < self._rewind:
                self._rewind = first

    def _flush_overflow(self) -> None:
        """Write the overflow batch (lock held: the I/O thread, which flushes it before
        taking a newer record, never publishes past a record on its way to the spool)."""
        pending, self._overflow = self._overflow, []
        self._store(pending)
