"""The base of the writers that keep files (file, archive), and the time of a record.

``FilesWriter`` owns what both writers share: the output directory, an LRU of
open descriptors, which files were written since the last checkpoint and since
the last fsync, the all-or-nothing undo of a failed batch, ``flush``,
``checkpoint``, ``rollback``, ``reopen`` and ``close``. A subclass says which
file each record goes to and what bytes it writes. Files are opened with
``fsio.open_beneath`` (never through a link); a refused target raises
``fsio.TargetRefused``: the records for it are rejected with the reason, the
rest of the batch is written.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from logrouter.sinks.base import ABSENT, IntentHook, Refused, WriteError
from logrouter.sinks.fsio import (
    TargetRefused,
    fsync_closed,
    make_dirs,
    open_beneath,
    rollback_files,
    write_all,
)
from logrouter.sinks.retention import Retention

#: a record time more than this ahead of arrival is not believed
MAX_FUTURE = timedelta(days=1)
_TS = re.compile(r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d)", re.ASCII)


def record_time(ts: Any, now: float | None = None) -> datetime:
    """The time (UTC) of a record from its RFC 3339 ``ts`` (pure but for the default ``now``).

    ASCII digits and a real date only; a time that is missing, invalid, outside what
    UTC can hold, or more than ``MAX_FUTURE`` after ``now`` (arrival) gives ``now``.
    """
    arrival = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    if not isinstance(ts, str) or not _TS.match(ts) or not ts.isascii():
        return arrival
    try:
        parsed = datetime.fromisoformat(ts)
        when = parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError):  # no such time; one UTC cannot hold (year 1, +01:00)
        return arrival
    return arrival if when - arrival > MAX_FUTURE else when


class OpenFile:
    """An open output file: its descriptor, its size, its rotation period."""

    __slots__ = ("fd", "period", "size")

    def __init__(self, fd: int, size: int, period: str = "") -> None:
        self.fd = fd
        self.size = size
        self.period = period


class FilesWriter:
    """What the file and archive writers share (see the module docstring).

    Subclasses hand a batch to ``_append_batch`` (one ``(path, record indices, data)``
    per file), which calls ``_append(path, data, before)`` per file and ``_undo(before)``
    when the batch fails; ``path`` is absolute, inside ``base``.
    """

    def __init__(self, base: str, *, mode: int, max_open: int) -> None:
        self.base = os.path.realpath(base)
        self.mode = mode
        self.max_open = max(1, max_open)
        self._base_fd: int | None = None
        self._open: OrderedDict[str, OpenFile] = OrderedDict()
        self._touched: dict[str, int] = {}
        self._dirty: set[str] = set()  # written since the last fsync, fd still open
        self._dirty_closed: set[str] = set()  # written since the last fsync, fd closed
        self._dirty_dirs: set[str] = set()  # a file was created or renamed in them
        #: set by the consumer: journals a file's size before its first write since
        #: the last checkpoint (see ``base.IntentHook``)
        self.intent: IntentHook | None = None
        self._created: set[str] = set()  # created since the last checkpoint
        self._first: dict[str, int] = {}  # size before the first write since the checkpoint
        #: ``keep = "30d"`` (set by subclasses; see sinks/retention.py)
        self.retention: Retention | None = None

    # -- Writer ---------------------------------------------------------------

    def flush(self, fsync: bool) -> None:
        """Bytes are in the kernel after ``write``; with ``fsync``, fsync every touched file."""
        if not fsync:
            return
        for path in list(self._dirty):
            entry = self._open.get(path)
            if entry is None:
                self._dirty_closed.add(path)
            else:
                try:
                    os.fsync(entry.fd)
                except OSError as exc:
                    raise WriteError(path, exc, "fsync") from exc
            self._dirty.discard(path)
        fsync_closed(self._dirty_closed, self._dirty_dirs)

    def checkpoint(self) -> dict[str, int]:
        """Sizes of the files touched since the last checkpoint (see ``_rotate_due``)."""
        touched, self._touched = self._touched, {}
        first, self._first = self._first, {}
        self._created.clear()
        self._rotate_due(touched, first)
        if self.retention is not None and self.retention.due():
            self._sweep(self.retention)
        return touched

    def take_expired(self) -> int:
        """Files deleted by retention since the last call (for the sink's counters)."""
        return self.retention.take_expired() if self.retention is not None else 0

    def rollback(self, checkpoint: dict[str, int]) -> None:
        """Truncate the files of ``checkpoint`` to its sizes (and forget open files)."""
        self._close_all(sync=False)
        rollback_files(checkpoint)
        self._touched.clear()
        self._first.clear()
        self._created.clear()

    def reopen(self) -> None:
        """Close every file (fsync what is unsynced first); reopened lazily on the next write."""
        self._close_all(sync=True)

    def close(self) -> None:
        """Close every file."""
        self._close_all(sync=False)

    # -- for subclasses -------------------------------------------------------

    def _sweep(self, retention: Retention) -> None:
        """At a checkpoint, when due: delete what ``keep`` says is too old (no-op here)."""

    def _rotate_due(self, touched: dict[str, int], first: dict[str, int]) -> None:
        """At a checkpoint: rotate files that are due, updating ``touched`` (no-op here)."""

    def _append_batch(
        self, chunks: Iterable[tuple[str, list[int], bytes]], refused: list[Refused], where: str
    ) -> list[Refused]:
        """Append each ``(path, indices, data)``; all-or-nothing but for refused targets.

        A target ``_get`` refuses (``TargetRefused``) adds its records to ``refused``
        with the reason; any other OSError undoes the whole batch and raises
        ``WriteError`` (naming ``where`` when the error names no file). Returns
        ``refused``, sorted.
        """
        before: dict[str, int] = {}
        try:
            for path, indices, data in chunks:
                try:
                    self._append(path, data, before)
                except TargetRefused as exc:
                    reason = f"cannot write {path}: {exc.strerror}"
                    refused.extend((index, reason) for index in indices)
        except OSError as exc:
            self._undo(before)
            if isinstance(exc, WriteError):
                raise
            raise WriteError(exc.filename or where, exc) from exc
        refused.sort()
        return refused

    def _append(self, path: str, data: bytes, before: dict[str, int]) -> None:
        """Append ``data`` to ``path``; ``before`` collects sizes for ``_undo``."""
        entry = self._get(path)
        if path not in self._touched and path not in self._first:
            size = ABSENT if path in self._created else entry.size
            self._first[path] = size
            if self.intent is not None:
                self.intent(path, size)
        before.setdefault(path, entry.size)
        try:
            write_all(entry.fd, data)
        except OSError as exc:
            raise WriteError(path, exc) from exc
        entry.size += len(data)
        self._touched[path] = entry.size
        self._dirty.add(path)

    def _period(self, info: os.stat_result) -> str:
        """The rotation period of a file just opened ("" without time rotation)."""
        return ""

    def _base(self) -> int:
        if self._base_fd is None:
            try:
                self._dirty_dirs.update(make_dirs(self.base))
                self._base_fd = os.open(self.base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                raise WriteError(self.base, exc, "open") from exc
        return self._base_fd

    def _get(self, path: str) -> OpenFile:
        entry = self._open.get(path)
        if entry is not None:
            self._open.move_to_end(path)
            return entry
        parts = os.path.relpath(path, self.base).split(os.sep)
        try:
            fd, created, new_entries = open_beneath(self._base(), parts, self.mode)
        except TargetRefused:
            raise
        except OSError as exc:
            raise WriteError(path, exc, "open") from exc
        try:
            info = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            raise WriteError(path, exc, "open") from exc
        if new_entries:
            # the created file's directory and the parents of created directories
            directory = os.path.dirname(path)
            for _ in range(new_entries):
                self._dirty_dirs.add(directory)
                directory = os.path.dirname(directory)
        if created:
            self._created.add(path)
        while len(self._open) >= self.max_open:
            self._close(next(iter(self._open)))
        entry = OpenFile(fd, info.st_size, self._period(info))
        self._open[path] = entry
        return entry

    def _close(self, path: str, *, sync: bool = False) -> None:
        entry = self._open.pop(path, None)
        if path in self._dirty:
            self._dirty.discard(path)
            if sync and entry is not None:
                with contextlib.suppress(OSError):
                    os.fsync(entry.fd)
            else:
                self._dirty_closed.add(path)
        if entry is not None:
            with contextlib.suppress(OSError):
                os.close(entry.fd)

    def _close_all(self, *, sync: bool) -> None:
        for path in list(self._open):
            self._close(path, sync=sync)
        if self._base_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._base_fd)
            self._base_fd = None

    def _undo(self, before: dict[str, int]) -> None:
        for path, size in before.items():
            entry = self._open.get(path)
            try:
                if entry is not None:
                    os.ftruncate(entry.fd, size)
                    entry.size = size
                else:
                    rollback_files({path: size})
            except OSError:
                # cannot undo: forget the fd so the size is re-read on the next open
                self._close(path)
            if self._touched.get(path) is not None:
                self._touched[path] = size
