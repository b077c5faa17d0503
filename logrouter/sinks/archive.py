"""The archive output: every record, lossless, as gzip-compressed JSON Lines.

Files are partitioned by the record's time (UTC, from a validated ``ts``: ASCII
digits, a real date, at most a day ahead; else the arrival time):
``dir/YYYY/MM/DD/<instance>-HH[-n].jsonl.gz`` (hourly) or
``dir/YYYY/MM/DD/<instance>[-n].jsonl.gz`` (daily); ``-n`` counts files of a
partition split by ``rotate_bytes``. ``instance`` (host-pid) keeps two
processes from ever appending to one file.

Every batch is one complete gzip member (two, compressed at once, when it is
large: ``compress_lines``) written with one ``write`` call, so
whatever happens later, every earlier batch stays readable by plain ``zcat``;
a member cut short by a crash is what ``rollback`` truncates away.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache
from operator import itemgetter
from typing import TYPE_CHECKING, Any, cast

from logrouter.sinks.base import Record, Refused, WriteError, run_inline
from logrouter.sinks.files import FilesWriter, record_time
from logrouter.sinks.fsio import REFUSED_ERRNOS
from logrouter.sinks.retention import Retention
from logrouter.wire import SENDER

if TYPE_CHECKING:
    from logrouter.config import ArchiveOptions

FILE_MODE = 0o640
MAX_OPEN = 8
SUFFIX = ".jsonl.gz"
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")
#: a partition's batch at least this large is compressed as two gzip members at once,
#: one in the compressor thread (zlib releases the GIL), when the process has two CPUs
PARALLEL_BYTES = 128 * 1024
_PARALLEL = len(os.sched_getaffinity(0)) > 1 if hasattr(os, "sched_getaffinity") else False
_compressor: ThreadPoolExecutor | None = None
_compressor_lock = threading.Lock()


def gzip_member(data: bytes, level: int) -> bytes:
    """``data`` as one complete gzip member (mtime 0, as ``gzip.compress(mtime=0)``)."""
    return zlib.compress(data, level, wbits=31)


def _in_background(data: bytes, level: int) -> Future[bytes]:
    """``gzip_member`` in the process's compressor thread (sinks of one process share it)."""
    global _compressor
    with _compressor_lock:
        if _compressor is None:
            _compressor = ThreadPoolExecutor(1, thread_name_prefix="archive-gzip")
        return _compressor.submit(gzip_member, data, level)


def compress_lines(lines: Sequence[bytes], level: int, parallel: bool = _PARALLEL) -> bytes:
    """The gzip data of ``lines`` (pure): one member, or, for a large batch with
    ``parallel``, two members compressed at once (the first half in the compressor
    thread). Either way ``zcat`` gives back the lines in order."""
    if parallel and len(lines) > 1 and sum(map(len, lines)) >= PARALLEL_BYTES:
        mid = len(lines) // 2
        head = _in_background(b"".join(lines[:mid]), level)
        tail = gzip_member(b"".join(lines[mid:]), level)
        return head.result() + tail
    return gzip_member(b"".join(lines), level)


_ONE_LINE = (
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
    (b"\xc2\x85", b"\\u0085"),
)


_SENDER_TOKEN = b'"' + SENDER.encode("ascii") + b'"'
_SENDER_KEY = b"," + _SENDER_TOKEN + b":"


def _quoted(text: str) -> bytes:
    """``text`` as a JSON string (ASCII: a line never gets a raw separator from it)."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return b'"' + text.encode("ascii") + b'"'
    return json.dumps(text).encode("ascii")


@lru_cache(maxsize=1024)
def _sender_pair(sender: str) -> bytes:
    """``,"sender":"<login>"`` (cached: a sink sees few logins, each on every record)."""
    return _SENDER_KEY + _quoted(sender)


def sender_tail(sender: str) -> bytes:
    """``,"sender":"<login>"}\n``: the end of a line the sink adds the validated sender
    to (``wire.SENDER``), in place of the line's closing ``}\n``."""
    return _sender_pair(sender) + b"}\n"


def with_sender(line: bytes, sender: str | None) -> bytes:
    """A record's JSON line (``{...}``, with or without its ``\n``) ending ``\n``, with
    ``sender`` added as its last key (pure). The line must hold no ``sender`` key of its
    own (``wire.set_sender`` says whether it did): a key is never written twice."""
    if line[-1:] == b"\n":
        line = line[:-1]
    if sender is None:
        return line + b"\n"
    return line[:-1] + sender_tail(sender)


def without_sender(line: bytes, sender: Any) -> bytes:
    """An archived line (no ``\n``) without the ``sender`` a sink added at its end (pure):
    what ``replay`` publishes, as a sink replaces that key anyway (with the replayer's
    login) and copies a line naming none instead of encoding it again. The line as it
    is when that cannot be sure (the key elsewhere, a ``\\u`` escape that could spell it)."""
    if not isinstance(sender, str) or b"\\u" in line or line.count(_SENDER_TOKEN) != 1:
        return line
    return unspliced(line, sender)


def unspliced(line: bytes, sender: str) -> bytes:
    """A line (no ``\n``) without the ``sender`` pair a sink spliced in before its closing
    ``}`` (``with_sender``, ``sender_tail``); the line as it is when it does not end so."""
    tail = _sender_pair(sender) + b"}"
    return line[: -len(tail)] + b"}" if line.endswith(tail) else line


def body_line(body: bytes, added_id: str | None, sender: str | None = None) -> bytes | None:
    """The JSON line of a record that is its (valid UTF-8, compact enough) body (pure).

    ``added_id``: the ``id`` that decoding appended to it; ``sender``: the validated
    sender the sink appends after it (the body must hold no ``sender`` key of its own).
    None when the body cannot be one line as it is (a line break between tokens).
    """
    if b"\n" in body or b"\r" in body:
        return None
    if added_id is not None or sender is not None:
        body = body.rstrip(b" \t")
        if body[-1:] != b"}":
            return None
        tail = b',"id":' + _quoted(added_id) if added_id is not None else b""
        if sender is not None:
            tail += _sender_pair(sender)
        body = body[:-1] + tail + b"}"
    if not body.isascii():
        for raw, escaped in _ONE_LINE:
            if raw in body:
                body = body.replace(raw, escaped)
    return body + b"\n"


def _one_line(text: str) -> str:
    """JSON text with the characters ``str.splitlines`` breaks on escaped (U+2028 ...)."""
    if "\u2028" in text or "\u2029" in text or "\x85" in text:
        return (
            text.replace("\u2028", "\\u2028")
            .replace("\u2029", "\\u2029")
            .replace("\x85", "\\u0085")
        )
    return text


class UnencodableRecord(ValueError):
    """A decoded record that cannot be written as JSON again (nested too deep for the
    encoder: any broker user can send one a decoder still takes)."""


def record_line(record: Record) -> bytes:
    """One record as a JSON line (keys and values kept; lone surrogates escaped).

    Raises ``UnencodableRecord`` for one nested too deep to encode: its writer refuses
    that record alone (rejected with the reason), the rest of the batch is written.
    """
    try:
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=repr)
    except RecursionError:
        raise UnencodableRecord("record nested too deep to write as JSON") from None
    try:
        return _one_line(text).encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        return json.dumps(record, separators=(",", ":"), default=repr).encode("ascii") + b"\n"


_PARTITIONS: dict[str, tuple[str, str]] = {}
#: partition -> (record indices, their lines)
_Groups = dict[tuple[str, str], tuple[list[int], list[bytes]]]
_ts_of = itemgetter("ts")


def known_hour(prefix: str) -> bool:
    """Whether a ``ts`` starting ``prefix`` (``YYYY-MM-DDTHH``) and ending ``Z`` is
    partitioned by its prefix alone (``partition_of``'s cache holds it)."""
    return prefix in _PARTITIONS


def partition_of(ts: Any, interval: str, now: float | None = None) -> tuple[str, str]:
    """``(YYYY/MM/DD, HH or "")`` of a record time (``files.record_time``: the arrival
    time ``now`` when ``ts`` is invalid or far ahead); UTC ``ts`` prefixes are cached."""
    when = None
    if isinstance(ts, str) and len(ts) >= 13 and ts[-1] == "Z":
        prefix = ts[:13]
        found = _PARTITIONS.get(prefix)
        if found is None:
            when = record_time(ts, now)
            if when.strftime("%Y-%m-%dT%H") == prefix:  # ts itself was believed
                if len(_PARTITIONS) >= 4096:
                    _PARTITIONS.clear()
                found = _PARTITIONS[prefix] = (when.strftime("%Y/%m/%d"), prefix[11:13])
        if found is not None:
            return found if interval == "hour" else (found[0], "")
    if when is None:
        when = record_time(ts, now)
    day, hour = when.strftime("%Y/%m/%d"), when.strftime("%H")
    return day, (hour if interval == "hour" else "")


class ArchiveWriter(FilesWriter):
    """Appends each batch as gzip members to date-partitioned ``.jsonl.gz`` files."""

    def __init__(self, options: ArchiveOptions, *, instance: str = "") -> None:
        super().__init__(os.fspath(options.dir), mode=FILE_MODE, max_open=MAX_OPEN)
        self.dir = self.base
        self.level = options.compresslevel if options.compresslevel is not None else 6
        self.rotate_bytes = options.rotate_bytes or 0
        self.interval = options.rotate_interval or "hour"
        self.instance = _UNSAFE.sub("_", instance)[:64]
        self.retention = Retention(options.keep_age) if options.keep_age else None
        self._serial: dict[tuple[str, str], int] = {}  # partition -> current -n
        self._path_of: dict[tuple[str, str], str] = {}
        #: runs a step (the batch's compression) and returns when it is done; the sink
        #: sets it to run the step in its fsync thread while it reads deliveries
        #: (``Output.durable``): zlib releases the GIL, so socket and zlib overlap
        self.offload: Callable[[Callable[[], None]], None] = run_inline

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
                size = os.lstat(path).st_size
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno in REFUSED_ERRNOS:
                    break  # opening it says why it is refused
                raise WriteError(path, exc, "stat") from exc
            if not self.rotate_bytes or size < self.rotate_bytes:
                break
            serial += 1
        self._serial[partition] = serial
        self._path_of[partition] = path
        return path

    # -- Writer ---------------------------------------------------------------

    def write(self, records: Sequence[Record]) -> list[Refused]:
        """Append ``records``: one gzip member, one write per file; all-or-nothing."""
        return self.write_lines(records, None)

    def write_lines(
        self, records: Sequence[Record], lines: Sequence[bytes | None] | None
    ) -> list[Refused]:
        """``write``, taking ``lines[i]`` (when not None) as the ready JSON line of ``records[i]``.

        The consumer passes the message body when it already is the record
        (``body_line``): nothing is serialised again. Returns the refused records
        (a partition file that is not one the sink may write).
        """
        groups = self._one_partition(records, lines)
        if groups is not None:
            return self._append_members(groups, [])
        groups = {}
        refused: list[Refused] = []
        interval = self.interval
        now = time.time()
        if lines is None:
            lines = [None] * len(records)
        known = _PARTITIONS
        for index, record in enumerate(records):
            line = lines[index]
            if line is None:
                try:
                    line = record_line(record)
                except UnencodableRecord as exc:
                    refused.append((index, str(exc)))
                    continue
            ts = record.get("ts")
            # partition_of inlined for a known UTC hour (the common case)
            found = known.get(ts[:13]) if type(ts) is str and ts[-1:] == "Z" else None
            if found is None:
                partition = partition_of(ts, interval, now)
            else:
                partition = found if interval == "hour" else (found[0], "")
            group = groups.get(partition)
            if group is None:
                groups[partition] = ([index], [line])
            else:
                group[0].append(index)
                group[1].append(line)
        return self._append_members(groups, refused)

    def _append_members(self, groups: _Groups, refused: list[Refused]) -> list[Refused]:
        """One gzip member per partition (two for a large one, see ``compress_lines``),
        appended to its file with one write (all-or-nothing). The members are all
        compressed (by ``offload``) before the first write."""
        level = self.level
        parts = list(groups.items())
        data: list[bytes] = []

        def compress() -> None:
            data.extend(compress_lines(batch, level) for _, (_, batch) in parts)

        self.offload(compress)
        members = (
            (self.path_of(partition), indices, member)
            for (partition, (indices, _)), member in zip(parts, data, strict=True)
        )
        return self._append_batch(members, refused, self.dir)

    def _one_partition(
        self, records: Sequence[Record], lines: Sequence[bytes | None] | None
    ) -> _Groups | None:
        """The common batch, taken whole: every record has its line and a ``ts`` of one
        UTC hour already known (``partition_of``'s cache). None for any other batch."""
        if not records or lines is None or None in lines:
            return None
        try:
            # the distinct ts first: records of one message may share theirs (fastbatch)
            stamps = set(map(_ts_of, records))
            hours = {ts[:13] if ts[-1:] == "Z" else "" for ts in stamps}
        except (TypeError, KeyError):  # a ts that is not text (or unhashable), or none
            return None
        if len(hours) != 1:
            return None
        found = _PARTITIONS.get(hours.pop())
        if found is None:
            return None
        partition = found if self.interval == "hour" else (found[0], "")
        ready = cast("list[bytes]", lines)
        return {partition: (list(range(len(records))), ready)}

    def _rotate_due(self, touched: dict[str, int], first: dict[str, int]) -> None:
        """A file that reached ``rotate_bytes`` is closed, its successor reported at size 0,
        so a crash after this point rolls the successor back too."""
        if not self.rotate_bytes:
            return
        for partition, path in list(self._path_of.items()):
            if touched.get(path, 0) >= self.rotate_bytes:
                self._close(path)
                self._serial[partition] = self._serial.get(partition, 0) + 1
                del self._path_of[partition]
                touched[self.path_of(partition)] = 0

    def _sweep(self, retention: Retention) -> None:
        retention.sweep_archive(
            self.dir, self.interval, set(self._open) | set(self._path_of.values())
        )

    def _close_all(self, *, sync: bool) -> None:
        super()._close_all(sync=sync)
        self._path_of.clear()
