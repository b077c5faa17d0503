"""The file output: rendered lines in files named by a path template, inside a base dir.

Path templates: ``{facility}/{severity}-%Y-%m-%d.log``. Placeholders take the
record's values, sanitised to one harmless path component each (separators,
``..`` and control characters cannot survive, long values are cut); strftime
directives in the literal parts take the record's time (UTC, from ``ts``). The
final path is normalised and checked to stay inside ``base_dir`` (symlinks
resolved), so a record can never name a file outside it.

Files are created with ``file_mode`` (0640, whatever the umask), opened
``O_APPEND``, kept in an LRU of at most ``max_open_files`` descriptors, and
optionally rotated by size or by hour/day to ``name.1`` ... ``name.<keep>``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import string
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from logrouter.errors import LogrouterError
from logrouter.render import DEFAULT_LINE_FORMAT, PATH_PLACEHOLDERS, compile_format
from logrouter.sinks.base import ABSENT, IntentHook, Record, WriteError, rollback_files

if TYPE_CHECKING:
    from logrouter.config import FileOptions

MAX_COMPONENT = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]")
# directives coarser than an hour: the hour prefix of ts is enough as cache key
_HOURLY = re.compile(r"%[YmdHjyBbAaUWVGuwe%]")
_MAX_CACHE = 4096


class PathEscapeError(LogrouterError, ValueError):
    """A rendered path would leave the base directory."""


def sanitize_component(value: Any) -> str:
    """``value`` as one safe file-name component (never empty, ``.`` or ``..``)."""
    text = "-" if value is None else str(value)
    text = _UNSAFE.sub("_", text)[:MAX_COMPONENT]
    if not text or set(text) == {"."}:
        return "_" * max(len(text), 1)
    return text


def parse_ts(ts: Any) -> datetime:
    """The record time (UTC) from an RFC 3339 ``ts``; now when it is missing or bad."""
    if isinstance(ts, str):
        try:
            parsed = datetime.fromisoformat(ts)
        except ValueError:
            pass
        else:
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.now(UTC)


def inside(base: str, path: str) -> bool:
    """Whether ``path`` is ``base`` or below it (both absolute and normalised)."""
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


class PathTemplate:
    """A compiled path template; ``path_for(record)`` gives an absolute path inside base_dir."""

    def __init__(self, template: str, base_dir: str | os.PathLike[str]) -> None:
        raw_base = os.path.normpath(os.path.abspath(os.fspath(base_dir)))
        self.base = os.path.realpath(raw_base)
        if not os.path.isabs(template):
            template = os.path.join(self.base, template)
        template = os.path.normpath(template)
        if raw_base != self.base and inside(raw_base, template):
            template = self.base + template[len(raw_base) :]
        self.template = template
        self._pieces: list[tuple[str, bool, str | None]] = []
        self.names: list[str] = []
        uses_time = False
        hourly = True
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise ValueError(f"bad path template {template!r}: {exc}") from None
        for literal, name, spec, conversion in parsed:
            has_time = "%" in literal
            if has_time:
                uses_time = True
                hourly = hourly and not _HOURLY.sub("", literal).count("%")
            if name is not None and (name not in PATH_PLACEHOLDERS or spec or conversion):
                raise ValueError(
                    f"bad placeholder {{{name}}} in path template {template!r} "
                    f"(allowed: {', '.join('{' + n + '}' for n in PATH_PLACEHOLDERS)})"
                )
            self._pieces.append((literal, has_time, name))
            if name is not None:
                self.names.append(name)
        self._time_key_len = 0 if not uses_time else (13 if hourly else 26)
        self._cache: dict[tuple[Any, ...], str] = {}
        static = os.path.normpath(os.path.dirname(re.split(r"[{%]", template, maxsplit=1)[0]))
        if not inside(self.base, static):
            raise PathEscapeError(f"path template {template!r} is not inside {self.base}")

    def path_for(self, record: dict[str, Any]) -> str:
        """The absolute file path of ``record``; raises ``PathEscapeError`` if outside base."""
        ts = record.get("ts")
        tkey = ts[: self._time_key_len] if self._time_key_len and isinstance(ts, str) else None
        key = (tkey, *[record.get(n) for n in self.names])
        try:
            return self._cache[key]
        except (KeyError, TypeError):
            pass
        path = self._build(record)
        try:
            if len(self._cache) >= _MAX_CACHE:
                self._cache.clear()
            self._cache[key] = path
        except TypeError:  # an unhashable foreign value: just don't cache
            pass
        return path

    def _build(self, record: dict[str, Any]) -> str:
        when: datetime | None = None
        parts: list[str] = []
        for literal, has_time, name in self._pieces:
            if has_time:
                if when is None:
                    when = parse_ts(record.get("ts"))
                literal = when.strftime(literal)
            parts.append(literal)
            if name is not None:
                parts.append(sanitize_component(record.get(name)))
        path = os.path.normpath("".join(parts))
        if not inside(self.base, path) or path == self.base:
            raise PathEscapeError(f"{path} is not inside {self.base}")
        real_parent = os.path.realpath(os.path.dirname(path))
        if not inside(self.base, real_parent):
            raise PathEscapeError(f"{path} resolves outside {self.base}")
        return path


# --- the writer --------------------------------------------------------------

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
DIR_MODE = 0o750


def period_key(interval: str | None, epoch: float) -> str:
    """The rotation period (UTC) ``epoch`` falls in: ``YYYYMMDDHH`` or ``YYYYMMDD``."""
    if not interval:
        return ""
    stamp = datetime.fromtimestamp(epoch, UTC)
    return stamp.strftime("%Y%m%d%H" if interval == "hour" else "%Y%m%d")


@dataclass
class _OpenFile:
    fd: int
    size: int
    period: str


def open_append(path: str, mode: int) -> tuple[int, bool]:
    """An O_APPEND fd on ``path`` and whether it was created (then chmod ``mode``, umask-proof)."""
    while True:
        try:
            fd = os.open(path, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            try:
                return os.open(path, _OPEN_FLAGS), False
            except FileNotFoundError:
                continue  # removed between the two opens: create it after all
        try:
            os.fchmod(fd, mode)
        except OSError:
            os.close(fd)
            raise
        return fd, True


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` (a regular file takes it in one call unless the disk is full)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def rotate_file(path: str, keep: int) -> None:
    """``path`` -> ``path.1`` -> ... -> ``path.<keep>`` (older ones removed; keep 0 = keep all)."""
    if keep <= 0:
        keep = 1
        while os.path.lexists(f"{path}.{keep}"):
            keep += 1
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}.{keep}")
    for index in range(keep - 1, 0, -1):
        with contextlib.suppress(FileNotFoundError):
            os.rename(f"{path}.{index}", f"{path}.{index + 1}")
    with contextlib.suppress(FileNotFoundError):
        os.rename(path, f"{path}.1")


class FileWriter:
    """Writes rendered lines to files named by a path template (see the module doc).

    Every ``write`` is one ``os.write`` per file of the batch, and all-or-nothing:
    when one file fails, the files already written by this batch are truncated
    back, so a retry after the condition clears does not duplicate lines.
    Rotation (size or time) happens at batch boundaries, in ``checkpoint()``
    (which then reports the new file at size 0), or in ``write`` when no
    checkpoint was taken since the file became due.
    """

    def __init__(self, options: FileOptions, *, instance: str = "") -> None:
        self.options = options
        # {instance} is fixed for the writer's life: fill it in before compiling.
        template = options.path.replace("{instance}", sanitize_component(instance or "0"))
        self.paths = PathTemplate(template, options.base_dir)
        self.line_format = compile_format(options.format or DEFAULT_LINE_FORMAT)
        self.mode = options.file_mode or 0o640
        self.max_open = max(1, options.max_open_files)
        self.rotate_bytes = options.rotate_bytes or 0
        self.rotate_interval = options.rotate_interval or None
        self.keep = options.keep
        self._open: OrderedDict[str, _OpenFile] = OrderedDict()
        self._touched: dict[str, int] = {}
        self._dirty: set[str] = set()  # written since the last fsync, fd still open
        self._dirty_closed: set[str] = set()  # written since the last fsync, fd closed
        self._dirty_dirs: set[str] = set()  # a file was created or renamed in them
        self._known_dirs: set[str] = set()
        #: set by the consumer: journals a file's size before its first write since
        #: the last checkpoint (see ``base.IntentHook``)
        self.intent: IntentHook | None = None
        self._created: set[str] = set()  # created since the last checkpoint
        self._base: dict[str, int] = {}  # size before the first write since the checkpoint

    # -- Writer ---------------------------------------------------------------

    def write(self, records: Sequence[Record]) -> None:
        """Render and append ``records``: one write per file; all-or-nothing; OSError on failure."""
        groups: dict[str, list[str]] = {}
        path_for = self.paths.path_for
        render = self.line_format.render
        for record in records:
            try:
                path = path_for(record)
            except PathEscapeError as exc:
                raise WriteError(self.paths.base, PermissionError(errno.EACCES, str(exc))) from exc
            line = render(record)
            bucket = groups.get(path)
            if bucket is None:
                groups[path] = [line, "\n"]
            else:
                bucket += (line, "\n")
        before: dict[str, int] = {}
        try:
            for path, lines in groups.items():
                data = "".join(lines).encode("utf-8", "backslashreplace")
                self._append(path, data, before)
        except OSError as exc:
            self._undo(before)
            if isinstance(exc, WriteError):
                raise
            raise WriteError(exc.filename or "?", exc) from exc

    def flush(self, fsync: bool) -> None:
        """Lines are in the kernel after ``write``; with ``fsync``, fsync every touched file."""
        if not fsync:
            return
        for path in list(self._dirty):
            entry = self._open.get(path)
            if entry is None:
                self._dirty_closed.add(path)
                continue
            try:
                os.fsync(entry.fd)
            except OSError as exc:
                raise WriteError(path, exc, "fsync") from exc
            self._dirty.discard(path)
        fsync_closed(self._dirty_closed, self._dirty_dirs)

    def checkpoint(self) -> dict[str, int]:
        """Sizes of the files touched since the last checkpoint; rotates files that are due."""
        touched, self._touched = self._touched, {}
        base, self._base = self._base, {}
        self._created.clear()
        now = time.time()
        for path, size in touched.items():
            if self._due(path, size, now):
                # the renamed file holds this uncommitted batch: journal where to cut it
                if self.intent is not None:
                    self.intent(f"{path}.1", base.get(path, ABSENT))
                self._rotate(path)
                touched[path] = 0
        return touched

    def rollback(self, checkpoint: dict[str, int]) -> None:
        """Truncate the files of ``checkpoint`` to its sizes (and forget open files)."""
        self._close_all(sync=False)
        rollback_files(checkpoint)
        self._touched.clear()
        self._base.clear()
        self._created.clear()

    def reopen(self) -> None:
        """Close every file (fsync what is unsynced first); reopened lazily on the next write."""
        self._close_all(sync=True)

    def close(self) -> None:
        """Close every file."""
        self._close_all(sync=False)

    # -- internals ------------------------------------------------------------

    def _append(self, path: str, data: bytes, before: dict[str, int]) -> None:
        entry = self._get(path)
        if self._touched.get(path) is None and self._due(path, entry.size, time.time()):
            # due and no checkpoint will rotate it first (its data is committed)
            self._rotate(path)
            entry = self._get(path)
        if path not in self._touched and path not in self._base:
            size = ABSENT if path in self._created else entry.size
            self._base[path] = size
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

    def _get(self, path: str) -> _OpenFile:
        entry = self._open.get(path)
        if entry is not None:
            self._open.move_to_end(path)
            return entry
        directory = os.path.dirname(path)
        if directory not in self._known_dirs:
            try:
                created = make_dirs(directory)
            except OSError as exc:
                raise WriteError(directory, exc, "create directory") from exc
            self._dirty_dirs.update(created)
            self._known_dirs.add(directory)
        try:
            fd, created_file = open_append(path, self.mode)
        except OSError as exc:  # e.g. the directory went away (rm -r): make it again next time
            self._known_dirs.discard(directory)
            raise WriteError(path, exc, "open") from exc
        try:
            stat = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            raise WriteError(path, exc, "open") from exc
        if created_file:
            self._dirty_dirs.add(directory)
            self._created.add(path)
        period = period_key(self.rotate_interval, stat.st_mtime if stat.st_size else time.time())
        while len(self._open) >= self.max_open:
            self._evict()
        entry = _OpenFile(fd, stat.st_size, period)
        self._open[path] = entry
        return entry

    def _evict(self) -> None:
        path, entry = self._open.popitem(last=False)
        if path in self._dirty:
            self._dirty.discard(path)
            self._dirty_closed.add(path)
        with contextlib.suppress(OSError):
            os.close(entry.fd)

    def _due(self, path: str, size: int, now: float) -> bool:
        if size <= 0:
            return False
        if self.rotate_bytes and size >= self.rotate_bytes:
            return True
        if self.rotate_interval:
            entry = self._open.get(path)
            if entry is not None and entry.period != period_key(self.rotate_interval, now):
                return True
        return False

    def _rotate(self, path: str) -> None:
        entry = self._open.pop(path, None)
        if entry is not None:
            if path in self._dirty:
                # its lines must be durable before they change name
                with contextlib.suppress(OSError):
                    os.fsync(entry.fd)
                self._dirty.discard(path)
            with contextlib.suppress(OSError):
                os.close(entry.fd)
        try:
            rotate_file(path, self.keep)
        except OSError as exc:
            raise WriteError(path, exc, "rotate") from exc
        self._dirty_closed.discard(path)
        self._dirty_dirs.add(os.path.dirname(path))

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
                self._drop(path)
            if self._touched.get(path) is not None:
                self._touched[path] = size

    def _drop(self, path: str) -> None:
        entry = self._open.pop(path, None)
        if entry is not None:
            with contextlib.suppress(OSError):
                os.close(entry.fd)

    def _close_all(self, *, sync: bool) -> None:
        while self._open:
            path, entry = self._open.popitem(last=False)
            if sync and path in self._dirty:
                with contextlib.suppress(OSError):
                    os.fsync(entry.fd)
                self._dirty.discard(path)
            elif path in self._dirty:
                self._dirty.discard(path)
                self._dirty_closed.add(path)
            with contextlib.suppress(OSError):
                os.close(entry.fd)
        self._known_dirs.clear()


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


def fsync_closed(paths: set[str], directories: set[str]) -> None:
    """fsync files written since the last flush but closed since (LRU, rotation), then
    the directories where files were created; each set is emptied as it is done."""
    for path in list(paths):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # rotated away or deleted: nothing left to sync
            paths.discard(path)
            continue
        except OSError as exc:
            raise WriteError(path, exc, "fsync") from exc
        try:
            os.fsync(fd)
        except OSError as exc:
            raise WriteError(path, exc, "fsync") from exc
        finally:
            os.close(fd)
        paths.discard(path)
    for directory in list(directories):
        fsync_dir(directory)
        directories.discard(directory)


def fsync_dir(directory: str) -> None:
    """fsync a directory (its entries: created, renamed files); missing ones are skipped."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise WriteError(directory, exc, "fsync") from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        raise WriteError(directory, exc, "fsync") from exc
    finally:
        os.close(fd)
