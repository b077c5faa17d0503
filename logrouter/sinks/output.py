"""The durable side of one sink: its writer, crash journal and dedup window.

What a sink has written and what it remembers live here, apart from the broker
connection (``sinks/link.py``) and the loop that drives both
(``sinks/consumer.py``). The loop hands a batch of deliveries in; this module
decides which are written (decode, selector, dedup, size cap), writes and
flushes them (fsync per the sink's policy), and commits the writer's checkpoint
and the written keys to the journal. Only after that commit may the loop ack.

Recovery after a crash runs the other way: the journal's last commit rolls the
writer back and seeds the dedup window, so redelivered messages are written once.
A redelivered message may also have been written by another instance of this
sink on this host before it died; a batch with redeliveries is checked against
the keys those peers committed too (``Journal.peer_ids``).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from logrouter.sinks.base import Writer, run_inline
from logrouter.sinks.batch import Delivery, Outcome, classify_pending
from logrouter.sinks.dedup import DedupKey, DedupWindow
from logrouter.sinks.fastbatch import whole_records
from logrouter.sinks.journal import Journal, JournalState

if TYPE_CHECKING:
    from logrouter.config import SinkConfig

WriterFactory = Callable[["SinkConfig", str], Writer]
#: runs one durable step (an fsync and what waits on it) and returns when it is done
Durable = Callable[[Callable[[], None]], None]


class _WithPeers:
    """The dedup window plus the keys other instances on this host committed."""

    def __init__(self, own: DedupWindow[DedupKey], peers: frozenset[DedupKey]) -> None:
        self.own = own
        self.peers = peers

    def __contains__(self, message_id: object) -> bool:
        return message_id in self.own or message_id in self.peers

    def isdisjoint(self, keys: list[DedupKey]) -> bool:
        return self.own.isdisjoint(keys) and self.peers.isdisjoint(keys)


class Output:
    """Writer + journal + dedup window of one sink (see the module docstring).

    Used by the sink's thread alone. ``write`` raises ``OSError`` when the writer
    fails; the caller then ``rollback``s to the last commit.
    """

    def __init__(
        self,
        config: SinkConfig,
        *,
        state_dir: Path,
        instance: str | None,
        writer_factory: WriterFactory,
    ) -> None:
        self.config = config
        # Stable across restarts (host + journal slot), so a restarted sink appends to the
        # files its journal knows; two live processes of one sink never share a slot.
        self._instance = instance
        self.instance = instance or f"{socket.gethostname()}-{os.getpid()}"
        self.writer: Writer | None = None
        self._writer_factory = writer_factory
        self.journal = Journal(state_dir, config.queue, keep_ids=max(config.dedup_window, 1))
        self.dedup: DedupWindow[DedupKey] = DedupWindow(config.dedup_window)
        self._last_fsync = time.monotonic()
        #: how the fsync of the data and the journal's commit with its fsync (and a
        #: writer's ``offload`` step: the archive's compression) are run: the
        #: committer waits for each while it keeps reading deliveries
        self.durable: Durable = run_inline

    # ---- recovery ------------------------------------------------------

    def recover(self) -> JournalState:
        """Open the journal: roll the writer back to the last commit, seed the dedup window.

        Raises what opening fails with (journal locked, rollback refused, bad output).
        """
        state = self.journal.open()
        self.dedup.extend(state.ids)
        self.instance = self._instance or f"{socket.gethostname()}-{self.journal.slot}"
        self._refuse_shared_file()
        self.writer = self._writer_factory(self.config, self.instance)
        if state.checkpoint:
            self.writer.rollback(state.checkpoint)
        self.journal.recovered()
        self._hook(self.writer)
        return state

    def _refuse_shared_file(self) -> None:
        """A second instance of a file sink on this host needs its own files.

        Each instance's crash journal rolls files back to the sizes *it* committed; on
        a file another instance appends to, that would cut the other's acked lines.
        """
        path = getattr(self.config.options, "path", "")
        if self.config.type == "file" and self.journal.slot != 0 and "{instance}" not in path:
            raise RuntimeError(
                f"sink {self.config.name!r} already runs on this host and this second "
                f"instance would append to the same files ({path}); put {{instance}} in "
                "its path so every instance writes its own files"
            )

    def _hook(self, writer: Writer) -> None:
        """Let a writer with files journal each file's size before a batch first writes it,
        and one that offloads work run it as the fsyncs are run (``durable``)."""
        if hasattr(writer, "intent"):
            writer.intent = self.journal.intent
        if hasattr(writer, "offload"):  # its CPU work (compression) off this thread
            writer.offload = lambda step: self.durable(step)

    # ---- one batch -----------------------------------------------------

    def classify(self, pending: list[Delivery]) -> Outcome:
        """Decode ``pending`` and sort it: records to write, rejected, duplicates, filtered."""
        assert self.writer is not None
        dedup: Any = self.dedup
        if any(delivery.redelivered for delivery in pending):
            dedup = _WithPeers(self.dedup, self.journal.peer_ids())
        # writers that take ready JSON lines (archive) get the bodies that already are records
        return classify_pending(
            pending,
            self.config.selector.matches,
            dedup,
            keep_lines=getattr(self.writer, "write_lines", None) is not None,
            max_record_bytes=self.config.max_record_bytes,
            row_keys=getattr(self.writer, "row_keys", None),
        )

    def write(self, outcome: Outcome) -> tuple[list[tuple[int, str]], Any, bool]:
        """Write and flush ``outcome.records``: ``(refused, checkpoint, fsynced)``.

        ``refused`` holds ``(index, reason)`` of records whose target the writer
        refused. Raises ``OSError`` when writing or flushing fails.
        """
        assert self.writer is not None
        write_lines = getattr(self.writer, "write_lines", None)
        fsync = self._fsync_due()
        self.journal.sync_intents = fsync
        refused: list[tuple[int, str]] = []
        if outcome.records:
            if write_lines is not None:
                refused = write_lines(outcome.records, outcome.lines)
            else:
                refused = self._write_records(outcome)
        writer = self.writer
        if fsync:
            self.durable(lambda: writer.flush(True))
        else:
            writer.flush(False)
        checkpoint = writer.checkpoint()
        if fsync:
            self._last_fsync = time.monotonic()
        return refused, checkpoint, fsync

    def _write_records(self, outcome: Outcome) -> list[tuple[int, str]]:
        """``writer.write``: a batch with rows (``fastbatch.row_type``) to ``write_rows``;
        one ``write_rows`` declines as records decoded whole."""
        assert self.writer is not None
        records = outcome.records
        if outcome.rows:
            write_rows = getattr(self.writer, "write_rows", None)
            if write_rows is not None:
                refused: list[tuple[int, str]] | None = write_rows(records)
                if refused is not None:
                    return refused
            records = whole_records(records, outcome.lines)
        return self.writer.write(records)

    def commit(self, checkpoint: Any, keys: list[DedupKey], *, fsync: bool) -> None:
        """Journal ``checkpoint`` and the written ``keys``; remember the keys."""
        if fsync:
            self.durable(lambda: self.journal.commit(checkpoint, keys, fsync=True))
        else:
            self.journal.commit(checkpoint, keys, fsync=False)
        self.dedup.extend(keys)

    def take_expired(self) -> int:
        """Files the writer's retention deleted since the last call."""
        take_expired = getattr(self.writer, "take_expired", None)
        return int(take_expired()) if take_expired is not None else 0

    def rollback(self) -> None:
        """Cut the writer's files back to the last commit (after a failed write)."""
        assert self.writer is not None
        self.writer.rollback(self.journal.rollback_point())

    def _fsync_due(self) -> bool:
        policy = self.config.fsync
        if policy == "batch":
            return True
        if policy == "interval":
            return time.monotonic() - self._last_fsync >= self.config.fsync_interval
        return False

    # ---- reopen / reload / close ----------------------------------------

    def reopen(self) -> bool:
        """Reopen the writer's files (SIGHUP); False before the writer exists."""
        if self.writer is None:
            return False
        self.writer.reopen()
        return True

    def apply(self, new: SinkConfig) -> None:
        """Take ``new`` settings: a changed output gets a new writer, the window its size."""
        old = self.config
        if new.type != old.type or new.options != old.options:
            fresh = self._writer_factory(new, self.instance)
            self._hook(fresh)
            if self.writer is not None:
                self.writer.close()
            self.writer = fresh
        self.dedup.resize(new.dedup_window)
        self.config = new

    def close(self) -> None:
        """Close the writer, then the journal. Raises ``OSError`` from the writer's close
        (the journal is closed either way)."""
        try:
            if self.writer is not None:
                self.writer.close()
        finally:
            self.journal.close()
