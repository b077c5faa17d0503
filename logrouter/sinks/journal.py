"""The crash journal of a sink instance: what was written before it was acked.

After a batch is written and flushed, and BEFORE it is acked, the consumer
appends one line ``{"c": {path: size}, "ids": [[user_id, app_id, message_id] ...]}``. On start the
journal gives back the merged checkpoint (the size of every file at its last
committed batch) and the last committed ids:

* bytes past the checkpoint were never acked (the broker redelivers them), so
  the writer is rolled back to it;
* ids committed but perhaps not acked (SIGKILL between journal and ack) go into
  the dedup window, so their redelivery is dropped.

One journal per sink instance, locked with ``flock`` so two processes running
the same sink on one host never share it. The file is compacted (one snapshot
line, written to a temp file then renamed) when it grows. Journal files are
0600 and a state directory the journal creates is 0700, whatever the umask:
they name every output file and the ids of what was written.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from logrouter.errors import LogrouterError
from logrouter.sinks.dedup import DedupKey, key_from_json

STATE_ENV = "LOGROUTER_STATE_DIR"
MAX_INSTANCES = 64
DEFAULT_COMPACT_BYTES = 1 << 20
FILE_MODE = 0o600
DIR_MODE = 0o700


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where sinks keep their journals.

    ``$LOGROUTER_STATE_DIR``, else systemd's ``$STATE_DIRECTORY`` (first entry),
    else ``$XDG_STATE_HOME/logrouter``, else ``~/.local/state/logrouter``.
    """
    env = os.environ if env is None else env
    if value := env.get(STATE_ENV):
        return Path(value)
    if value := env.get("STATE_DIRECTORY"):
        return Path(value.split(":")[0])
    if value := env.get("XDG_STATE_HOME"):
        return Path(value) / "logrouter"
    return Path.home() / ".local" / "state" / "logrouter"


@dataclass
class JournalState:
    """What the journal remembers: merged file sizes and the last committed ids."""

    checkpoint: dict[str, int] = field(default_factory=dict)
    ids: list[DedupKey] = field(default_factory=list)


def parse_journal(lines: Iterable[bytes], keep_ids: int) -> JournalState:
    """Fold journal lines into a state (pure). A torn or garbled line is skipped.

    Intent lines (``{"i": {path: size}}``) written after the last commit belong
    to a batch that was never committed: each such file is cut back to the
    smaller of its committed and its intent size (a negative size: the file
    did not exist, remove it).
    """
    checkpoint: dict[str, int] = {}
    pending: dict[str, int] = {}
    ids: deque[DedupKey] = deque(maxlen=max(keep_ids, 0))
    last: list[DedupKey] = []  # the keys of the last commit
    for raw in lines:
        try:
            entry = json.loads(raw)
        except ValueError:
            continue  # the line a SIGKILL tore in half: its batch was never acked
        if not isinstance(entry, dict):
            continue
        intents = entry.get("i")
        if isinstance(intents, dict):
            for path, size in intents.items():
                if isinstance(size, int):
                    pending[str(path)] = min(size, pending.get(str(path), size))
            continue
        sizes = entry.get("c")
        if isinstance(sizes, dict):
            if entry.get("snap"):
                checkpoint = {}
            checkpoint.update(
                (str(path), size) for path, size in sizes.items() if isinstance(size, int)
            )
            pending.clear()
        entry_ids = entry.get("ids")
        if isinstance(entry_ids, list):
            if entry.get("snap"):
                ids.clear()
            last = [key for key in map(key_from_json, entry_ids) if key is not None]
            ids.extend(last)
    for path, size in pending.items():
        checkpoint[path] = min(size, checkpoint.get(path, size))
    if keep_ids > 0 and len(last) > len(ids):  # the last commit, whole (see DedupWindow)
        return JournalState(checkpoint, last)
    return JournalState(checkpoint, list(ids))


def intent_line(path: str, size: int) -> bytes:
    """One intent line (pure)."""
    return json.dumps({"i": {path: size}}, separators=(",", ":")).encode() + b"\n"


def entry_line(
    checkpoint: Mapping[str, int], ids: Sequence[DedupKey], *, snap: bool = False
) -> bytes:
    """One journal line (pure)."""
    entry: dict[str, Any] = {"c": dict(checkpoint), "ids": list(ids)}
    if snap:
        entry = {"snap": True, **entry}
    return orjson.dumps(entry) + b"\n"  # ~10x the json module on 500 ids per batch


class JournalLocked(LogrouterError, OSError):
    """Every journal slot of this sink is held by another running process."""


class Journal:
    """The append-only journal of one sink instance (see the module docstring)."""

    def __init__(
        self,
        directory: Path,
        name: str,
        *,
        keep_ids: int,
        compact_bytes: int = DEFAULT_COMPACT_BYTES,
    ) -> None:
        self.directory = directory
        self.name = name
        self.keep_ids = keep_ids
        self.compact_bytes = compact_bytes
        self.path: Path | None = None
        self._snapshot_bytes = 0
        self.slot = 0  # which journal of this sink this process holds (0 for the first)
        self._lock: IO[bytes] | None = None
        self._file: IO[bytes] | None = None
        self.state = JournalState()
        #: intents since the last commit; fsync them when the batch will be fsynced
        self._pending: dict[str, int] = {}
        self.sync_intents = True
        #: keys in the last commit
        self._last_ids = 0

    def peer_ids(self, last: int = 10_000) -> frozenset[DedupKey]:
        """Dedup keys the *other* instances of this sink on this host committed lately.

        A delivery another instance wrote and journaled but had not acked when it died
        is redelivered to a survivor; these ids let the survivor drop it. Read only for
        batches with redeliveries (rare), from the other slots' journal files.
        """
        ids: set[DedupKey] = set()
        for slot in range(MAX_INSTANCES):
            if slot == self.slot:
                continue
            suffix = "" if slot == 0 else f".{slot}"
            try:
                with open(self.directory / f"{self.name}{suffix}.journal", "rb") as handle:
                    ids.update(parse_journal(handle, last).ids)
            except FileNotFoundError:
                continue
            except OSError:
                continue  # unreadable: this instance's own window still applies
        return frozenset(ids)

    def open(self) -> JournalState:
        """Lock a journal slot, load it, and return the remembered state."""
        make_private_dirs(self.directory)
        for slot in range(MAX_INSTANCES):
            suffix = "" if slot == 0 else f".{slot}"
            lock = open_private(self.directory / f"{self.name}{suffix}.lock")
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            self._lock = lock
            self.slot = slot
            self.path = self.directory / f"{self.name}{suffix}.journal"
            break
        else:
            raise JournalLocked(f"all {MAX_INSTANCES} journal slots of {self.name} in use")
        try:
            with open(self.path, "rb") as handle:
                self.state = parse_journal(handle, self.keep_ids)
        except FileNotFoundError:
            self.state = JournalState()
        self._last_ids = len(self.state.ids)  # more than keep_ids: the last commit's, whole
        self._compact()
        return self.state

    def intent(self, path: str, size: int) -> None:
        """Before a batch first writes ``path`` (``size`` now; negative: absent), journal it.

        Nothing is written when the last commit already knows a size no larger
        (recovery cuts the file back to it anyway), so a steady stream to the
        same files costs nothing here. Written before the data: a SIGKILL after
        the write finds it (page cache); fsynced per ``sync_intents`` for power loss.
        """
        known = self.state.checkpoint.get(path)
        if known is not None and 0 <= known <= size:
            return
        pending = self._pending.get(path)
        if pending is not None and pending <= size:
            return
        assert self._file is not None, "journal not open"
        self._pending[path] = size
        self._file.write(intent_line(path, size))
        self._file.flush()
        if self.sync_intents:
            os.fsync(self._file.fileno())

    def rollback_point(self) -> dict[str, int]:
        """Sizes to roll the writer back to now: the last commit, cut by pending intents."""
        point = dict(self.state.checkpoint)
        for path, size in self._pending.items():
            point[path] = min(size, point.get(path, size))
        return point

    def recovered(self) -> None:
        """The writer was rolled back to ``state.checkpoint``: forget removed files."""
        absent = [path for path, size in self.state.checkpoint.items() if size < 0]
        if absent:
            for path in absent:
                del self.state.checkpoint[path]
            self._compact()

    def commit(
        self, checkpoint: Mapping[str, int], ids: Sequence[DedupKey], *, fsync: bool
    ) -> None:
        """Append one batch (file sizes after it, its dedup keys); fsync when asked."""
        assert self._file is not None, "journal not open"
        self._file.write(entry_line(checkpoint, ids))
        self._file.flush()
        if fsync:
            os.fsync(self._file.fileno())
        self._pending.clear()
        self.state.checkpoint.update(checkpoint)
        self.state.ids.extend(ids)
        self._last_ids = len(ids)
        if len(self.state.ids) > 2 * self._keep():
            del self.state.ids[: -self._keep()]
        # Compact when the appended part outgrows the snapshot (and the minimum): linear cost.
        if self._file.tell() > 2 * self._snapshot_bytes + self.compact_bytes:
            self._compact()

    def _keep(self) -> int:
        """Keys to keep: the window's, or all of the last commit's when it had more (the
        batch a lost ack redelivers; see ``DedupWindow``)."""
        return max(self.keep_ids, self._last_ids) if self.keep_ids > 0 else 0

    def _compact(self) -> None:
        """Rewrite the journal as one snapshot line (temp file, fsync, rename)."""
        assert self.path is not None
        if self._file is not None:
            self._file.close()
        del self.state.ids[: -self._keep() or len(self.state.ids)]
        tmp = self.path.with_suffix(".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # a leftover of a crash: recreate it private
        with open_private(tmp) as handle:
            handle.write(entry_line(self.state.checkpoint, self.state.ids, snap=True))
            handle.flush()
            os.fsync(handle.fileno())
        self._snapshot_bytes = tmp.stat().st_size
        os.replace(tmp, self.path)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._file = open_private(self.path)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None


def make_private_dirs(directory: Path) -> None:
    """``mkdir -p`` where each directory created is 0700 (umask-proof); existing ones kept."""
    missing: list[Path] = []
    current = directory
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir(DIR_MODE)
            os.chmod(path, DIR_MODE)


def open_private(path: Path) -> IO[bytes]:
    """``path`` opened for appending (binary), created 0600; an existing file is made 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, "ab")
