"""One spool file per process, in a directory per app and exchange; orphans adopted.

Each process that needs a spool creates ``p<pid>-<run>.sqlite`` next to a lock
file ``p<pid>-<run>.lock`` and holds an exclusive ``flock`` on it for its lifetime.
A spool whose lock can be taken belongs to a dead process: a live process of the
same app takes the lock, moves the rows into its own spool and deletes the
files. The lock makes that exactly-once when several processes start together.

Why ``flock`` on a dedicated file: POSIX (``lockf``/``fcntl``) locks are dropped
when the process closes *any* descriptor of the file, which SQLite does, and are
not inherited by a forked child; ``flock`` locks belong to the open file
description, so they survive SQLite's own fd juggling. They are inherited across
``fork``: a child closes the inherited descriptor (never unlocks it, which would
unlock the parent's) with ``SpoolDir.forget_after_fork``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from logrouter.app.spool import Spool, private_dir

#: Rows moved from an orphan to our spool per transaction.
ADOPT_BATCH = 1000


def _lock_exclusive(path: Path, *, create: bool) -> int | None:
    """An fd holding ``flock(LOCK_EX)`` on ``path``, or None if it is held (or gone)."""
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT | os.O_EXCL if create else 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Still the file under that name? (its adopter may have unlinked it meanwhile)
        if os.fstat(fd).st_ino != os.stat(path).st_ino:
            raise FileNotFoundError(path)
    except OSError:
        os.close(fd)
        return None
    return fd


class SpoolDir:
    """The spool directory of one app and exchange, seen from one process."""

    def __init__(
        self, path: Path, max_bytes: int, *, name: str, legacy: Path | None = None
    ) -> None:
        self.path = path
        #: The one shared spool file of earlier versions, adopted like an orphan.
        self.legacy = legacy or path.with_name(path.name + ".sqlite")
        self.max_bytes = max_bytes
        self.name = name  # "p<pid>-<run>": this process's files
        self._lock_fd: int | None = None
        self.spool: Spool | None = None

    @classmethod
    def for_process(cls, path: Path, max_bytes: int, *, run: int) -> SpoolDir:
        """This process's view of the spool at ``path`` (the ``spool`` option).

        A ``path`` that is a file is an earlier version's one-file spool, named
        explicitly: the directory goes next to it and adopts it.
        """
        legacy = None
        if path.is_file():
            path, legacy = path.with_name(path.name + ".d"), path
        return cls(path, max_bytes, name=f"p{os.getpid()}-{run}", legacy=legacy)

    @property
    def own_file(self) -> Path:
        return self.path / f"{self.name}.sqlite"

    def open_own(self) -> Spool:
        """Create and lock this process's spool (idempotent); raises OSError / sqlite3.Error."""
        if self.spool is not None:
            return self.spool
        private_dir(self.path)
        if self._lock_fd is None:
            fd = _lock_exclusive(self.path / f"{self.name}.lock", create=True)
            if fd is None:
                raise OSError(f"cannot lock {self.path / self.name}.lock")
            self._lock_fd = fd
        self.spool = Spool(self.own_file, self.max_bytes)
        return self.spool

    def orphans(self) -> Iterator[tuple[Path, int]]:
        """Spool files of dead processes, each with the lock fd we now hold on it."""
        try:
            names = sorted(os.listdir(self.path))
        except FileNotFoundError:
            return
        for entry in names:
            if not entry.endswith(".lock") or entry == f"{self.name}.lock":
                continue
            lock = self.path / entry
            fd = _lock_exclusive(lock, create=False)
            if fd is not None:
                yield lock.with_suffix(".sqlite"), fd

    def adopt(self) -> int:
        """Move the rows of every orphaned spool into ours; return how many rows moved.

        An orphan is deleted once empty. When our spool is full, the rest stays in
        the orphan (released, for a later attempt). Raises OSError / sqlite3.Error.
        """
        moved = 0
        for path, fd in self.orphans():
            try:
                moved += self._drain(path)
            finally:
                os.close(fd)
        return moved + self._adopt_legacy()

    def _adopt_legacy(self) -> int:
        """Rows of the one shared spool file of earlier versions (``self.legacy``).

        Earlier versions take no lock: one still running may replay a row we moved
        too (at-least-once; sinks drop the duplicate by message_id).
        """
        legacy = self.legacy
        if not legacy.is_file():
            return 0
        private_dir(self.path)
        lock = self.path / "legacy.lock"
        os.close(os.open(lock, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600))
        fd = _lock_exclusive(lock, create=False)
        if fd is None:
            return 0
        try:
            return self._drain(legacy)
        finally:
            os.close(fd)

    def _drain(self, path: Path) -> int:
        moved = 0
        if path.exists():
            own = self.open_own()
            orphan = Spool(path, create=False)
            try:
                while rows := orphan.read((-1, -1), ADOPT_BATCH):
                    entries = [
                        (r.run, r.seq, r.routing_key, r.message_id, r.timestamp, r.body)
                        for r in rows
                    ]
                    rejected = {(e[0], e[1], e[3]) for e in own.append(entries)}
                    kept = [r for r in rows if (r.run, r.seq, r.message_id) not in rejected]
                    orphan.delete((r.spool_id, len(r.body)) for r in kept if r.spool_id)
                    moved += len(kept)
                    if rejected:  # our spool is full: the rest waits in the orphan
                        return moved
            finally:
                orphan.close()
            orphan.remove()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path.with_suffix(".lock"))
        return moved

    def close(self) -> None:
        """Close our spool; delete it (and our lock file) when it is empty."""
        spool, self.spool = self.spool, None
        if spool is not None:
            if len(spool):
                spool.close()
                self._release(unlink=False)
                return
            spool.remove()
        self._release(unlink=True)

    def _release(self, *, unlink: bool) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is None:
            return
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path / f"{self.name}.lock")
        os.close(fd)

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's lock fd without unlocking it.

        The inherited SQLite connection is left open on purpose: closing it in the
        child could release locks and checkpoint a database the parent still uses.
        """
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)
