"""Where a replay stands: the cursor, its file, and the confirms that move it.

The cursor is the ``(ts, id)`` key of the newest archived record that was
confirmed together with every record before it (in the archive's order, the
order ``replay`` reads). ``Confirms`` keeps the unconfirmed messages of one
confirm-mode channel in publish order; a message carries the cursor it
completes, or None when records before its own are still unpublished (a
batch round publishes several messages, and only its last one completes it).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from itertools import takewhile
from pathlib import Path

from logrouter.archive_reader import Entry
from logrouter.commands.query import UsageError

Cursor = tuple[str, str]


def parse_cursor(text: str) -> Cursor:
    """``TS/ID`` as printed by an interrupted replay; raises ``UsageError`` naming it."""
    ts, slash, ident = text.strip().partition("/")
    if not slash or len(ts) != 27 or not ts.endswith("Z"):
        raise UsageError(f"bad cursor {text!r} (expected TS/ID as printed by replay)")
    return ts, ident


def format_cursor(cursor: Cursor) -> str:
    return f"{cursor[0]}/{cursor[1]}"


def read_cursor_file(path: Path) -> Cursor | None:
    """The cursor saved in ``path`` (None when the file does not exist yet)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return parse_cursor(text)


def write_cursor_file(path: Path, cursor: Cursor) -> None:
    """Replace ``path`` with ``cursor`` atomically (a crash leaves the old or the new one)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(format_cursor(cursor) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def after(entries: Iterator[Entry], cursor: Cursor | None) -> Iterator[Entry]:
    """The entries that come after ``cursor`` (all of them without one)."""
    if cursor is None:
        yield from entries
        return
    for entry in entries:
        if entry.key > cursor:
            yield entry


class Confirms:
    """The unconfirmed messages of one confirm-mode channel, in publish order."""

    def __init__(self) -> None:
        #: (delivery tag, cursor it completes or None, records) of each unconfirmed message
        self.pending: deque[tuple[int, Cursor | None, int]] = deque()
        self.acked: set[int] = set()  # acked out of order, waiting for the ones before
        #: delivery tag of the last message sent (the broker numbers them from 1)
        self.tag = 0
        #: records in the unconfirmed messages
        self.records = 0

    def __len__(self) -> int:
        return len(self.pending)

    def sent(self, cursor: Cursor | None, records: int = 1) -> None:
        """One more message published on the channel, of ``records`` records, completing
        ``cursor`` (None: it completes none)."""
        self.tag += 1
        self.pending.append((self.tag, cursor, records))
        self.records += records

    def ack(self, tag: int, multiple: bool) -> tuple[int, Cursor | None]:
        """A basic.ack: how many records are now confirmed with every message before them,
        and the newest cursor they complete (None when none)."""
        pending, acked = self.pending, self.acked
        if multiple:
            acked.update(number for number, _, _ in takewhile(lambda m: m[0] <= tag, pending))
        else:
            acked.add(tag)
        count, cursor = 0, None
        while pending and pending[0][0] in acked:
            done, completed, records = pending.popleft()
            acked.discard(done)
            count += records
            cursor = completed or cursor
        self.records -= count
        return count, cursor
