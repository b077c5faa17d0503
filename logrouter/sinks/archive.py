"""The archive output: every record, lossless, as gzip-compressed JSON Lines.

Files are partitioned by the record's time (UTC):
``dir/YYYY/MM/DD/<instance>-HH[-n].jsonl.gz`` (hourly) or
``dir/YYYY/MM/DD/<instance>[-n].jsonl.gz`` (daily); ``-n`` counts files of a
partition split by ``rotate_bytes``. ``instance`` (host-pid) keeps two
processes from ever appending to one file.

Every batch is one complete gzip member written with one ``write`` call, so
whatever happens later, every earlier batch stays readable by plain ``zcat``;
a member cut short by a crash is what ``rollback`` truncates away.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from logrouter.sinks.base import ABSENT, IntentHook, Record, WriteError, rollback_files
from logrouter.sinks.file import fsync_closed, make_dirs, open_append, parse_ts, write_all

if TYPE_CHECKING:
    from logrouter.config import ArchiveOptions

FILE_MODE = 0o640
MAX_OPEN = 8
SUFFIX = ".jsonl.gz"
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


def _one_line(text: str) -> str:
    """JSON text with the characters ``str.splitlines`` breaks on escaped (U+2028 ...)."""
    if "\u2028" in text or "\u2029" in text or "\x85" in text:
        return (
            text.replace("\u2028", "\\u2028")
            .replace("\u2029", "\\u2029")
            .replace("\x85", "\\u0085")
        )
    return text


def record_line(record: Record) -> bytes:
    """One record as a JSON line (keys and values kept; lone surrogates escaped)."""
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=repr)
    try:
        return _one_line(text).encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        return json.dumps(record, separators=(",", ":"), default=repr).encode("ascii") + b"\n"


_PARTITIONS: dict[str, tuple[str, str]] = {}


def partition_of(ts: Any, interval: str) -> tuple[str, str]:
    """``(YYYY/MM/DD, HH or "")`` of a record time; ``ts`` prefixes avoid parsing."""
    if isinstance(ts, str) and len(ts) >= 13 and ts[-1] == "Z":
        prefix = ts[:13]
        found = _PARTITIONS.get(prefix)
        if found is None and (
            ts[4] == "-"
            and ts[7] == "-"
            and ts[10] == "T"
            and ts[:4].isdigit()
            and ts[5:7].isdigit()
            and ts[8:10].isdigit()
            and ts[11:13].isdigit()
        ):
            if len(_PARTITIONS) >= 4096:
                _PARTITIONS.clear()
            found = _PARTITIONS[prefix] = (f"{ts[:4]}/{ts[5:7]}/{ts[8:10]}", ts[11:13])
        if found is not None:
            return found if interval == "hour" else (found[0], "")
    when = parse_ts(ts)
    day, hour = when.strftime("%Y/%m/%d"), when.strftime("%H")
    return day, (hour if interval == "hour" else "")


class _Archive:
    __slots__ = ("fd", "size")

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size


class ArchiveWriter:
    """Appends each batch as gzip members to date-partitioned ``.jsonl.gz`` files."""

    def __init__(self, options: ArchiveOptions, *, instance: str = "") -> None:
        self.dir = os.path.abspath(os.fspath(options.dir))
        self.level = options.compresslevel if options.compresslevel is not None else 6
        self.rotate_bytes = options.rotate_bytes or 0
        self.interval = options.rotate_interval or "hour"
        self.instance = _UNSAFE.sub("_", instance)[:64]
        self._serial: dict[tuple[str, str], int] = {}  # partition -> current -n
        self._open: OrderedDict[str, _Archive] = OrderedDict()
        self._touched: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._dirty_closed: set[str] = set()
        self._dirty_dirs: set[str] = set()
        self._path_of: dict[tuple[str, str], str] = {}
        #: set by the consumer (see ``base.IntentHook``)
        self.intent: IntentHook | None = None
        self._created: set[str] = set()  # created since the last checkpoint

    # -- naming ---------------------------------------------------------------

    def _name(self, hour: str, serial: int) -> str:
        stem = "-".join(part for part in (self.instance, hour) if part) or "archive"
        return f"{stem}-{serial}{SUFFIX}" if serial else f"{stem}{SUFFIX}"

    def path_of(self, partition: tuple[str, str]) -> str:
        """The current file of a partition (the first one not full yet)."""
        path = self._path_of.get(partition)
        if path is not None:
            return path
        day, hour = partition
        serial = self._serial.get(partition, 0)
        while True:
            path = os.path.join(self.dir, day, self._name(hour, serial))
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                break
            except OSError as exc:
                raise WriteError(path, exc, "stat") from exc
            if not self.rotate_bytes or size < self.rotate_bytes:
                break
            serial += 1
        self._serial[partition] = serial
        self._path_of[partition] = path
        return path

    # -- Writer ---------------------------------------------------------------

    def write(self, records: Sequence[Record]) -> None:
        """Append ``records``: one gzip member, one write per file; all-or-nothing."""
        self.write_lines(records, None)

    def write_lines(self, records: Sequence[Record], lines: Sequence[bytes | None] | None) -> None:
        """``write``, taking ``lines[i]`` (when not None) as the ready JSON line of ``records[i]``.

        The consumer passes the message body when it already is the record
        (``batch.body_line``): nothing is serialised again.
        """
        groups: dict[tuple[str, str], list[bytes]] = {}
        interval = self.interval
        for index, record in enumerate(records):
            line = lines[index] if lines is not None else None
            if line is None:
                line = record_line(record)
            partition = partition_of(record.get("ts"), interval)
            bucket = groups.get(partition)
            if bucket is None:
                groups[partition] = [line]
            else:
                bucket.append(line)
        before: dict[str, int] = {}
        try:
            for partition, batch in groups.items():
                path = self.path_of(partition)
                member = gzip.compress(b"".join(batch), compresslevel=self.level, mtime=0)
                entry = self._get(path)
                if path not in self._touched and path not in before and self.intent is not None:
                    self.intent(path, ABSENT if path in self._created else entry.size)
                before.setdefault(path, entry.size)
                try:
                    write_all(entry.fd, member)
                except OSError as exc:
                    raise WriteError(path, exc) from exc
                entry.size += len(member)
                self._touched[path] = entry.size
                self._dirty.add(path)
        except OSError as exc:
            self._undo(before)
            if isinstance(exc, WriteError):
                raise
            raise WriteError(exc.filename or self.dir, exc) from exc

    def flush(self, fsync: bool) -> None:
        """Members are in the kernel after ``write``; with ``fsync``, fsync every touched file."""
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
        """Sizes of the files touched since the last checkpoint.

        A file that reached ``rotate_bytes`` is closed here, and its successor
        reported at size 0, so a crash after this point rolls the successor
        back too.
        """
        touched, self._touched = self._touched, {}
        self._created.clear()
        if self.rotate_bytes:
            for partition, path in list(self._path_of.items()):
                if touched.get(path, 0) >= self.rotate_bytes:
                    self._close(path)
                    self._serial[partition] = self._serial.get(partition, 0) + 1
                    del self._path_of[partition]
                    touched[self.path_of(partition)] = 0
        return touched

    def rollback(self, checkpoint: dict[str, int]) -> None:
        """Truncate those files to the given sizes (cutting unacked or torn members)."""
        self._close_all()
        rollback_files(checkpoint)
        self._created.clear()

    def reopen(self) -> None:
        """Close every file; reopened on the next write."""
        self._close_all()

    def close(self) -> None:
        """Close every file."""
        self._close_all()

    # -- internals ------------------------------------------------------------

    def _get(self, path: str) -> _Archive:
        entry = self._open.get(path)
        if entry is not None:
            self._open.move_to_end(path)
            return entry
        directory = os.path.dirname(path)
        try:
            self._dirty_dirs.update(make_dirs(directory))
            fd, created = open_append(path, FILE_MODE)
        except OSError as exc:
            raise WriteError(path, exc, "open") from exc
        try:
            size = os.fstat(fd).st_size
        except OSError as exc:
            os.close(fd)
            raise WriteError(path, exc, "open") from exc
        if created:
            self._dirty_dirs.add(directory)
            self._created.add(path)
        while len(self._open) >= MAX_OPEN:
            self._close(next(iter(self._open)))
        entry = _Archive(fd, size)
        self._open[path] = entry
        return entry

    def _close(self, path: str) -> None:
        entry = self._open.pop(path, None)
        if path in self._dirty:
            self._dirty.discard(path)
            self._dirty_closed.add(path)
        if entry is not None:
            with contextlib.suppress(OSError):
                os.close(entry.fd)

    def _close_all(self) -> None:
        for path in list(self._open):
            self._close(path)
        self._path_of.clear()

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
                self._close(path)
            if path in self._touched:
                self._touched[path] = size
