"""Read an archive back: the files a time range needs, their gzip members, time order.

Layout (``logrouter/sinks/archive.py``, unchanged since the first archive
writer): ``DIR/YYYY/MM/DD/<instance>-HH[-n].jsonl.gz`` (hourly) or
``DIR/YYYY/MM/DD/<instance>[-n].jsonl.gz`` (daily), each file a sequence of
complete gzip members, one per batch, each record one JSON line, partitioned by
the record's own ``ts`` (UTC).

- Pruning: only day directories (and, for hourly files, hours) that can hold
  ``[since, until)`` are opened. Whether a name ends in an hour is known from
  the sink's ``rotate_interval`` when given; otherwise a two-digit ``-HH``
  before the suffix is taken as the hour (a daily archive whose instance or
  rotation number ends in two digits should be read with ``interval="day"``).
- Members: a file is read member by member; a trailing member that is not
  complete yet (the sink is writing it, or a crash tore it) is skipped, never
  an error; a corrupt member is reported through ``on_error`` and the reader
  resumes at the next gzip header.
- Order: records of one file are in arrival order, close to but not exactly
  time order, so each file passes through a bounded reorder window; files of
  overlapping partitions are merged with ``heapq.merge``; partitions follow
  each other in time. Memory stays flat: a window per open file.
"""

from __future__ import annotations

import heapq
import operator
import os
import queue
import re
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, NamedTuple, TypeVar

from logrouter.record_filter import RecordFilter, record_key
from logrouter.sinks.archive import SUFFIX
from logrouter.timespec import ts_key
from logrouter.wire import UndecodableMessage, parse_object

READ_CHUNK = 1 << 16
#: Members decompressed ahead of the parser, per open file.
READ_AHEAD = 8
#: Records held per file to put arrival order into time order.
REORDER_WINDOW = 5000
_GZIP_MAGIC = b"\x1f\x8b\x08"
_HOURLY = re.compile(r"-(\d\d)(?:-\d+)?" + re.escape(SUFFIX) + r"\Z")
_DAY = re.compile(r"\d{4}\Z|\d\d\Z")

ErrorHook = Callable[[str], None]
_key = operator.itemgetter(0)  # Entry.key, at C speed (sort and merge keys)
T = TypeVar("T")


class Entry(NamedTuple):
    """One archived record: its sort key, the raw JSON line, the decoded record."""

    key: tuple[str, str]  # (canonical ts, id): a total order independent of files
    line: bytes
    record: dict[str, Any]


@dataclass(frozen=True)
class ArchiveFile:
    """One archive file and the time span its partition covers."""

    path: str
    start: datetime
    end: datetime


def _ignore(_message: str) -> None:
    pass


def list_files(
    root: str | os.PathLike[str],
    since: datetime | None = None,
    until: datetime | None = None,
    interval: str | None = None,
) -> list[ArchiveFile]:
    """Archive files under ``root`` whose partition overlaps ``[since, until)``, by start."""
    found: list[ArchiveFile] = []
    base = os.fspath(root)
    for year in _subdirs(base, 4):
        for month in _subdirs(os.path.join(base, year), 2):
            for day in _subdirs(os.path.join(base, year, month), 2):
                try:
                    day_start = datetime(int(year), int(month), int(day), tzinfo=UTC)
                except ValueError:
                    continue
                day_end = day_start + timedelta(days=1)
                if (since and day_end <= since) or (until and day_start >= until):
                    continue
                directory = os.path.join(base, year, month, day)
                for name in sorted(os.listdir(directory)):
                    if not name.endswith(SUFFIX):
                        continue
                    start, end = day_start, day_end
                    hour = _HOURLY.search(name) if interval != "day" else None
                    if hour and int(hour.group(1)) < 24:
                        start = day_start + timedelta(hours=int(hour.group(1)))
                        end = start + timedelta(hours=1)
                        if (since and end <= since) or (until and start >= until):
                            continue
                    found.append(ArchiveFile(os.path.join(directory, name), start, end))
    found.sort(key=lambda f: (f.start, f.end, f.path))
    return found


def _subdirs(path: str, width: int) -> list[str]:
    try:
        names = os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n for n in names if len(n) == width and n.isdigit())


def members(
    path: str, offset: int = 0, on_error: ErrorHook = _ignore
) -> Iterator[tuple[bytes, int]]:
    """``(data, end offset)`` of each complete gzip member of ``path`` from ``offset``.

    An incomplete trailing member ends the iteration quietly (it is being
    written); a corrupt one is reported and skipped up to the next gzip header.
    A file that vanished yields nothing.
    """
    try:
        handle = open(path, "rb")  # noqa: SIM115 (a generator: closed in finally)
    except FileNotFoundError:
        return
    try:
        start = offset  # file offset where the current member starts
        handle.seek(start)
        decompressor = zlib.decompressobj(wbits=31)
        out: list[bytes] = []
        consumed = start
        while True:
            chunk = handle.read(READ_CHUNK)
            if not chunk:
                return  # clean end, or a member still being written
            try:
                while chunk:
                    out.append(decompressor.decompress(chunk))
                    if not decompressor.eof:
                        consumed += len(chunk)
                        break
                    rest = decompressor.unused_data
                    consumed += len(chunk) - len(rest)
                    yield b"".join(out), consumed
                    start, out, chunk = consumed, [], rest
                    decompressor = zlib.decompressobj(wbits=31)
            except zlib.error as exc:
                on_error(f"{path}: corrupt gzip member at byte {start}: {exc}; skipped")
                found = _find_magic(handle, start + 1)
                if found is None:
                    return
                start = consumed = found
                handle.seek(found)
                decompressor, out = zlib.decompressobj(wbits=31), []
    finally:
        handle.close()


def read_ahead(items: Iterator[T], depth: int = READ_AHEAD) -> Iterator[T]:
    """``items`` produced by a helper thread up to ``depth`` ahead.

    zlib releases the GIL while it inflates, so decompressing the next members
    overlaps with parsing this one (what ``zcat | grep`` gets from two processes).
    """
    ready: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ready.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put((False, None))
        except BaseException as exc:  # handed to the consumer, raised there
            ready.put((False, exc))

    worker = threading.Thread(target=produce, name="archive-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            more, item = ready.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()


def _find_magic(handle: BinaryIO, offset: int) -> int | None:
    """The offset of the next gzip header at or after ``offset`` (None at the end)."""
    handle.seek(offset)
    carry = b""
    base = offset
    while True:
        chunk = handle.read(READ_CHUNK)
        if not chunk:
            return None
        data = carry + chunk
        index = data.find(_GZIP_MAGIC)
        if index >= 0:
            return base + index
        carry = data[-2:]
        base += len(data) - len(carry)


def file_entries(
    path: str,
    query: RecordFilter,
    on_error: ErrorHook = _ignore,
    window: int = REORDER_WINDOW,
    span: tuple[str, str] = ("", "~"),
) -> Iterator[Entry]:
    """Matching records of one file, in time order (given the reorder window).

    ``span`` is the file's partition (canonical ts texts, end exclusive); a
    record whose time lies outside it was filed by its arrival (the writer
    did not believe its ``ts``) and is placed at the partition's start, so the
    order of the whole archive and the ``--since``/``--until`` test agree with
    where the record is stored.

    The newest ``window`` records are held back and sorted with what follows
    (timsort: nearly sorted input costs about one comparison per record).
    """
    held: list[Entry] = []
    for entry in _raw_entries(path, query, on_error, span):
        held.append(entry)
        if len(held) >= 2 * window:
            held.sort(key=_key)
            cut = len(held) - window
            yield from held[:cut]
            del held[:cut]
    held.sort(key=_key)
    yield from held


def _raw_entries(
    path: str, query: RecordFilter, on_error: ErrorHook, span: tuple[str, str]
) -> Iterator[Entry]:
    for data, _end in read_ahead(members(path, 0, on_error)):
        yield from _member_entries(path, data, query, on_error, span)


def _member_entries(
    path: str, data: bytes, query: RecordFilter, on_error: ErrorHook, span: tuple[str, str]
) -> Iterator[Entry]:
    """The matching records of one member of ``path``, in the member's order."""
    first, end = span
    wants = query.wants
    for line in query.candidates(data):
        try:
            record = parse_object(line)
        except UndecodableMessage as exc:
            record, why = None, str(exc)
        else:
            why = "not a JSON object"
        if record is None:
            on_error(f"{path}: a line that cannot be read ({why}); skipped")
            continue
        key = record_key(record, first)
        if not first <= key < end:
            key = first  # filed by arrival: its ts was unreadable or far ahead
        if wants(record, key):
            yield Entry((key, str(record.get("id", ""))), line, record)


def count_archive(
    root: str | os.PathLike[str],
    query: RecordFilter,
    *,
    interval: str | None = None,
    on_error: ErrorHook = _ignore,
) -> int:
    """How many records ``read_archive`` yields, counted without ordering them.

    A member of a file whose partition lies inside the time range is counted
    off its raw bytes when ``RecordFilter.count_raw`` can; the others are
    decoded. One helper thread decompresses every file ahead of the counting.
    """
    files = list_files(root, query.since, query.until, interval)

    def chunks() -> Iterator[tuple[str, tuple[str, str], bool, bytes]]:
        for item in files:
            span = (ts_key(item.start), ts_key(item.end))
            raw = query.covers(*span)
            for data, _end in members(item.path, 0, on_error):
                yield item.path, span, raw, data

    total = 0
    count_raw = query.count_raw
    for path, span, raw, data in read_ahead(chunks()):
        counted = count_raw(data) if raw else None
        if counted is None:
            counted = sum(1 for _ in _member_entries(path, data, query, on_error, span))
        total += counted
    return total


def clusters(files: Iterable[ArchiveFile]) -> list[list[ArchiveFile]]:
    """Files grouped so that groups cover disjoint, increasing time spans."""
    groups: list[list[ArchiveFile]] = []
    end: datetime | None = None
    for item in sorted(files, key=lambda f: (f.start, f.end, f.path)):
        if groups and end is not None and item.start < end:
            groups[-1].append(item)
            end = max(end, item.end)
        else:
            groups.append([item])
            end = item.end
    return groups


def merged(
    group: list[ArchiveFile], query: RecordFilter, on_error: ErrorHook = _ignore
) -> Iterator[Entry]:
    """The matching records of a group of files, merged in time order."""
    streams = [
        file_entries(f.path, query, on_error, span=(ts_key(f.start), ts_key(f.end))) for f in group
    ]
    return streams[0] if len(streams) == 1 else heapq.merge(*streams, key=_key)


def read_archive(
    root: str | os.PathLike[str],
    query: RecordFilter,
    *,
    interval: str | None = None,
    reverse: bool = False,
    on_error: ErrorHook = _ignore,
) -> Iterator[Entry]:
    """Every matching record under ``root`` in time order (newest first with ``reverse``).

    ``reverse`` holds one partition's matches in memory at a time.
    """
    groups = clusters(list_files(root, query.since, query.until, interval))
    if not reverse:
        for group in groups:
            yield from merged(group, query, on_error)
        return
    for group in reversed(groups):
        yield from reversed(list(merged(group, query, on_error)))


def last_entries(
    root: str | os.PathLike[str],
    query: RecordFilter,
    count: int,
    *,
    interval: str | None = None,
    on_error: ErrorHook = _ignore,
) -> list[Entry]:
    """The newest ``count`` matching records, oldest first, reading partitions backwards."""
    from collections import deque

    groups = clusters(list_files(root, query.since, query.until, interval))
    picked: list[Entry] = []
    for group in reversed(groups):
        need = count - len(picked)
        if need <= 0:
            break
        tail = deque(merged(group, query, on_error), maxlen=need)
        picked = list(tail) + picked
    return picked
