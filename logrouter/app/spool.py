"""The disk spool: records the broker could not take yet, replayed in order.

SQLite in WAL mode with batched transactions (see docs/handler.md for why not an
append-only file). Each row keeps its position ``(run, seq)``: ``run`` is the
process start time of the writer, ``seq`` the record's sequence number in that
process, so replay order is the order in which records were logged even when the
caller and the I/O thread spill concurrently. Rows leave the spool only once the
broker confirmed them (at-least-once; sinks drop duplicates by message_id).

Thread-safe (one lock around the SQLite connection). Not fork-safe: a child never
uses (nor closes) a connection it inherited; it opens a spool file of its own
(``logrouter.app.spools``). Private at rest: the directory is made 0700 and the
file 0600 whatever the umask (SQLite gives its -wal/-shm files the mode of the
database file).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from logrouter.app.encoder import Encoded

#: (run, seq, routing_key, message_id, timestamp, body)
SpoolEntry = tuple[int, int, str, str, int, bytes]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    routing_key TEXT NOT NULL,
    message_id TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS spool_order ON spool (run, seq);
"""


def private_dir(path: Path) -> None:
    """Make ``path`` (and missing parents) and set it to 0700 whatever the umask."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != 0o700:
        os.chmod(path, 0o700)


class Spool:
    """A bounded, ordered, durable queue of encoded records."""

    def __init__(
        self, path: str | os.PathLike[str], max_bytes: int = 256 << 20, *, create: bool = True
    ) -> None:
        """Open (or, with ``create``, make) the spool file; raises OSError / sqlite3.Error."""
        self.path = Path(path)
        self.max_bytes = max_bytes
        if create:
            private_dir(self.path.parent)
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600))
            os.chmod(self.path, 0o600)
        elif not self.path.is_file():
            raise FileNotFoundError(f"no spool file {self.path}")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute(
            "SELECT count(*), coalesce(sum(length(body)), 0) FROM spool"
        ).fetchone()
        self._count: int = row[0]
        self._bytes: int = row[1]

    def __len__(self) -> int:
        """Rows in the spool (as far as this process knows; cheap)."""
        return self._count

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def append(self, entries: Iterable[SpoolEntry]) -> list[SpoolEntry]:
        """Store ``entries`` in one transaction; return those that did not fit."""
        kept: list[SpoolEntry] = []
        rejected: list[SpoolEntry] = []
        added = 0
        with self._lock:
            for entry in entries:
                size = len(entry[5])
                if self._bytes + added + size > self.max_bytes:
                    rejected.append(entry)
                else:
                    kept.append(entry)
                    added += size
            if kept:
                with self._db:
                    self._db.execute("BEGIN")
                    self._db.executemany(
                        "INSERT INTO spool (run, seq, routing_key, message_id, timestamp, body)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        kept,
                    )
                self._count += len(kept)
                self._bytes += added
        return rejected

    def read(self, after: tuple[int, int], limit: int) -> list[Encoded]:
        """Up to ``limit`` rows positioned after ``after`` = (run, seq), in order, as the
        records they hold (``spool_id`` the row's id)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT run, seq, routing_key, message_id, timestamp, body, id FROM spool"
                " WHERE (run, seq) > (?, ?) ORDER BY run, seq LIMIT ?",
                (after[0], after[1], limit),
            ).fetchall()
        return [Encoded(*row) for row in rows]

    def delete(self, rows: Iterable[tuple[int, int]]) -> None:
        """Remove rows ``(id, body size)`` the broker confirmed, in one transaction."""
        batch = list(rows)
        if not batch:
            return
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM spool WHERE id = ?", [(i,) for i, _ in batch])
            self._count = max(0, self._count - len(batch))
            self._bytes = max(0, self._bytes - sum(size for _, size in batch))

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()

    def remove(self) -> None:
        """Close and delete the file with its -wal and -shm (the owner, when empty)."""
        self.close()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}{suffix}")
