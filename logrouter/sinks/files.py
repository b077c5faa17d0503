"""The base of the writers that keep files (file, archive), and safe file access.

``FilesWriter`` owns what both writers share: the output directory, an LRU of
open descriptors, which files were written since the last checkpoint and since
the last fsync, the all-or-nothing undo of a failed batch, ``flush``,
``checkpoint``, ``rollback``, ``reopen`` and ``close``. A subclass says which
file each record goes to and what bytes it writes.

Files are opened only where the sink creates them: relative to a descriptor of
the output directory, every component with ``O_NOFOLLOW`` (a planted symlink is
refused, never followed), the target must be a regular file with one link; an
existing file is appended to only when the sink's user owns it. A target
refused this way raises ``TargetRefused``: the records for it are rejected
with the reason, the rest of the batch is written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from logrouter.errors import LogrouterError
from logrouter.sinks.base import ABSENT, IntentHook, WriteError
from logrouter.sinks.retention import Retention

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
DIR_MODE = 0o750
#: errors that mean "this record's target is not a file the sink may write": the
#: records are rejected; any other OSError fails the whole batch (retried later)
REFUSED_ERRNOS = frozenset(
    {
        errno.ELOOP,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.EACCES,
        errno.EPERM,
        errno.ENAMETOOLONG,
        errno.ENXIO,
        errno.EEXIST,
    }
)
#: a record time more than this ahead of arrival is not believed
MAX_FUTURE = timedelta(days=1)
_TS = re.compile(r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d)", re.ASCII)


class TargetRefused(LogrouterError, OSError):
    """A record's target file is not one the sink may write (symlink, directory, ...)."""


def record_time(ts: Any, now: float | None = None) -> datetime:
    """The time (UTC) of a record from its RFC 3339 ``ts`` (pure but for the default ``now``).

    ASCII digits and a real date only; a time that is missing, invalid, or more
    than ``MAX_FUTURE`` after ``now`` (arrival) gives ``now``.
    """
    arrival = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    if not isinstance(ts, str) or not _TS.match(ts) or not ts.isascii():
        return arrival
    try:
        parsed = datetime.fromisoformat(ts)
    except ValueError:
        return arrival
    when = parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return arrival if when - arrival > MAX_FUTURE else when


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` (a regular file takes it in one call unless the disk is full)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _open_dir(name: str, dir_fd: int, mode: int, created: list[int]) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except NotADirectoryError:
        if stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode):  # O_NOFOLLOW says ENOTDIR
            raise OSError(errno.ELOOP, "symlink", name) from None
        raise
    except FileNotFoundError:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, mode, dir_fd=dir_fd)
            created.append(dir_fd)
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def open_beneath(base_fd: int, parts: Sequence[str], mode: int) -> tuple[int, bool, int]:
    """An O_APPEND fd on ``base/<parts...>``, never through a symlink (see the module doc).

    Missing directories are created. Returns ``(fd, created, new_dirs)``:
    whether the file was created (then it is chmod ``mode``, umask-proof) and
    how many directory entries were created (the caller fsyncs their parents).
    Raises ``TargetRefused`` when the target is not a file the sink may write,
    other OSErrors as they come.
    """
    opened: list[int] = []
    made: list[int] = []
    dir_fd = base_fd
    try:
        try:
            for name in parts[:-1]:
                dir_fd = _open_dir(name, dir_fd, DIR_MODE, made)
                opened.append(dir_fd)
            name = parts[-1]
            while True:
                try:
                    fd = os.open(name, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, mode, dir_fd=dir_fd)
                    created = True
                except FileExistsError:
                    try:
                        fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
                        created = False
                    except FileNotFoundError:
                        continue  # removed between the two opens: create it after all
                break
        except OSError as exc:
            if exc.errno in REFUSED_ERRNOS:
                raise TargetRefused(exc.errno, _reason(exc)) from exc
            raise
        try:
            if created:
                os.fchmod(fd, mode)
            else:
                _check_existing(os.fstat(fd))
        except OSError:
            os.close(fd)
            raise
        return fd, created, len(made) + int(created)
    finally:
        for fd_ in opened:
            os.close(fd_)


def _reason(exc: OSError) -> str:
    code = exc.errno if exc.errno is not None else errno.EIO
    if code == errno.ELOOP:
        return "a symlink is in the way (not followed)"
    return f"{exc.strerror or exc} ({errno.errorcode.get(code, code)})"


def _check_existing(info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise TargetRefused(errno.EPERM, "not a regular file")
    if info.st_nlink != 1:
        raise TargetRefused(errno.EPERM, f"a file with {info.st_nlink} hard links")
    if info.st_uid != os.geteuid():
        raise TargetRefused(errno.EPERM, f"owned by uid {info.st_uid}, not the sink's user")


def rollback_files(checkpoint: dict[str, int]) -> None:
    """Truncate each file of ``checkpoint`` to its size (files that vanished are skipped).

    A size of ``ABSENT`` (negative) removes the file: it did not exist before
    the batch that was never committed. Nothing is cut or removed through a link:
    a path whose directory is no longer what it names (a symlink on the way) is
    skipped, the file is opened ``O_NOFOLLOW`` and must be a regular file.
    """
    for path, size in checkpoint.items():
        parent = os.path.dirname(path)
        if os.path.realpath(parent) != parent:
            continue  # a link on the way now: not the file the sink wrote
        if size < 0:
            try:
                os.unlink(path)  # removes a link, never its target
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise WriteError(path, exc, "remove") from exc
            continue
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except (FileNotFoundError, IsADirectoryError):
            continue
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO):
                continue  # a link or a FIFO now: not a file the sink wrote
            raise WriteError(path, exc, "truncate") from exc
        try:
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode) and info.st_size > size:
                os.ftruncate(fd, size)
                os.fsync(fd)
        except OSError as exc:
            raise WriteError(path, exc, "truncate") from exc
        finally:
            os.close(fd)


def fsync_closed(paths: set[str], directories: set[str]) -> None:
    """fsync files written since the last flush but closed since (LRU, rotation), then
    the directories where files were created; each set is emptied as it is done."""
    for path in list(paths):
        # rotated away, deleted or replaced by a link: nothing of ours left to sync
        _fsync_path(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        paths.discard(path)
    for directory in list(directories):
        fsync_dir(directory)
        directories.discard(directory)


def fsync_dir(directory: str) -> None:
    """fsync a directory (its entries: created, renamed files); missing ones are skipped."""
    _fsync_path(directory, os.O_RDONLY | os.O_DIRECTORY)


def _fsync_path(path: str, flags: int) -> None:
    """Open ``path`` with ``flags`` and fsync it; a path that is gone, a directory where a
    file was, or a link is skipped; other errors raise ``WriteError``."""
    try:
        fd = os.open(path, flags | os.O_CLOEXEC)
    except (FileNotFoundError, IsADirectoryError):
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return
        raise WriteError(path, exc, "fsync") from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        raise WriteError(path, exc, "fsync") from exc
    finally:
        os.close(fd)


def make_dirs(directory: str) -> list[str]:
    """``mkdir -p`` (mode 0750); the parents of every directory created (to fsync)."""
    missing: list[str] = []
    current = directory
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    touched: list[str] = []
    for path in reversed(missing):
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            if not os.path.isdir(path):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", path) from None
        touched.append(os.path.dirname(path))
    return touched


class OpenFile:
    """An open output file: its descriptor, its size, its rotation period."""

    __slots__ = ("fd", "period", "size")

    def __init__(self, fd: int, size: int, period: str = "") -> None:
        self.fd = fd
        self.size = size
        self.period = period


class FilesWriter:
    """What the file and archive writers share (see the module docstring).

    Subclasses call ``_append(path, data, before)`` per file of a batch and
    ``_undo(before)`` when the batch fails; ``path`` is absolute, inside ``base``.
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
