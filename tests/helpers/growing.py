"""Count what sinks append to their files, reading only what is new since the last look.

Wait loops poll these many times a second while sinks write tens of thousands of
records; re-reading (and, for the archive, decompressing) every file on each poll
took a core away from the sinks under test. A file that was replaced or truncated
(a sink undoing a torn write) is read again from its start.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

TOKEN_BYTES = re.compile(rb"\brec-(\d+)\b")  # tests.helpers.sinks.TOKEN, on bytes
#: Bytes of a chunk that form whole units (lines, gzip members), and what they hold.
Split = Callable[[bytes], tuple[int, int]]


class Appended:
    """Per file under ``root`` matching ``pattern``: the units appended since the last call."""

    def __init__(self, root: Path, pattern: str, split: Split) -> None:
        self.root, self.pattern, self.split = root, pattern, split
        self._read: dict[Path, tuple[int, int]] = {}  # path -> (inode, bytes consumed)
        self.units: dict[Path, int] = {}

    def chunks(self) -> Iterator[tuple[Path, int, bytes]]:
        """``(path, offset, new bytes)``; offset 0 means the file is read from its start."""
        for path in sorted(self.root.rglob(self.pattern)):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            inode, offset = self._read.get(path, (stat.st_ino, 0))
            if inode != stat.st_ino or stat.st_size < offset:
                offset = 0
            if stat.st_size == offset:
                continue
            with path.open("rb") as handle:
                handle.seek(offset)
                data = handle.read(stat.st_size - offset)
            used, units = self.split(data)
            self.units[path] = (self.units.get(path, 0) if offset else 0) + units
            self._read[path] = (stat.st_ino, offset + used)
            yield path, offset, data[:used]

    def __call__(self) -> int:
        """How many units the files hold now (by what was appended: see ``reaches``)."""
        for _ in self.chunks():
            pass
        return sum(self.units.values())

    def reaches(self, target: int) -> bool:
        """Whether the files hold ``target`` units, confirmed by one full count.

        A file rolled back and rewritten between two looks can leave the appended-only
        count ahead of the truth; the full count settles it, and resynchronises.
        """
        if self() < target:
            return False
        fresh = Appended(self.root, self.pattern, self.split)
        if fresh() >= target:
            return True
        self._read, self.units = fresh._read, fresh.units
        return False


def whole_lines(data: bytes) -> tuple[int, int]:
    """A line being written is left for the next look."""
    used = data.rfind(b"\n") + 1
    return used, data.count(b"\n", 0, used)


def whole_members(data: bytes) -> tuple[int, int]:
    """Complete gzip members and the records (lines) in them; a member being written waits."""
    used = records = 0
    while used < len(data):
        unpacker = zlib.decompressobj(zlib.MAX_WBITS | 16)
        try:
            text = unpacker.decompress(data[used:])
        except zlib.error:
            break
        if not unpacker.eof:
            break
        records += text.count(b"\n")
        used = len(data) - len(unpacker.unused_data)
    return used, records


def line_count(root: Path, pattern: str = "*.log") -> Appended:
    """Callable: complete lines in the matching files."""
    return Appended(root, pattern, whole_lines)


def archive_count(root: Path, pattern: str = "*.jsonl.gz") -> Appended:
    """Callable: records in the complete gzip members of the matching archive files."""
    return Appended(root, pattern, whole_members)


class DistinctTokens:
    """Distinct ``rec-N`` numbers in the growing ``*.log`` files under ``root``."""

    def __init__(self, root: Path, pattern: str = "*.log") -> None:
        self.seen: set[int] = set()
        self._lines = line_count(root, pattern)

    def count(self) -> int:
        for _path, _offset, data in self._lines.chunks():
            self.seen.update(int(m) for m in TOKEN_BYTES.findall(data))
        return len(self.seen)
