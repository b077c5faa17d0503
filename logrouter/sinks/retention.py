"""``keep = "30d"``: the file and archive sinks delete what is older than that.

The archive deletes whole partitions (an hour file, a day's files) whose time
span ended before ``now - keep``; the file sink deletes rotated files
(``name.1``, ``name.2`` ...) last written before that. Never a file the writer
has open, never a live (unrotated) file, nothing outside the sink's own
directory. Each deletion is logged and counted (``logrouter_files_expired_total``).

The decisions are pure (``parse_age``, ``expired``); ``Retention`` does the small
I/O: at most one sweep every ``SWEEP_EVERY`` seconds, from the writer's checkpoint.
A deletion that fails is logged and retried at the next sweep; it never fails a batch.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable

from logrouter import log

SWEEP_EVERY = 600.0
_AGE = re.compile(r"(\d+)(m|h|d|w)\Z")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
_ROTATED = re.compile(r"\.(\d+)\Z")


def parse_age(text: object) -> float:
    """Seconds of a ``keep`` duration (``90m``, ``12h``, ``30d``, ``2w``); ValueError says why."""
    match = _AGE.match(text.strip()) if isinstance(text, str) else None
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f'expected a duration like "30d", "12h", "2w" or "90m", got {text!r}')
    return float(int(match.group(1)) * _UNITS[match.group(2)])


def format_age(seconds: float) -> str:
    """``parse_age``'s inverse for display (largest whole unit)."""
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


def expired(items: Iterable[tuple[str, float]], cutoff: float, in_use: set[str]) -> list[str]:
    """Paths whose time (partition end, or last write) is before ``cutoff``, not in use."""
    return sorted(path for path, when in items if when < cutoff and path not in in_use)


class Retention:
    """Throttled sweeps of one writer's directory; ``take_expired`` hands the count over."""

    def __init__(
        self, keep: float, *, every: float = SWEEP_EVERY, clock: Callable[[], float] = time.time
    ) -> None:
        self.keep = keep
        self.every = every
        self.clock = clock
        self._next = 0.0
        self._expired = 0
        self.log = log.get_logger("retention")

    def take_expired(self) -> int:
        """Files deleted since the last call."""
        count, self._expired = self._expired, 0
        return count

    def due(self) -> bool:
        now = self.clock()
        if now < self._next:
            return False
        self._next = now + self.every
        return True

    def sweep_archive(self, root: str, interval: str, in_use: set[str]) -> list[str]:
        """Delete archive files whose partition ended more than ``keep`` ago; then empty dirs."""
        from logrouter.archive_reader import list_files

        items = [(f.path, f.end.timestamp()) for f in list_files(root, interval=interval)]
        gone = self._delete(expired(items, self.clock() - self.keep, in_use))
        for path in gone:
            _remove_empty_dirs(os.path.dirname(path), root)
        return gone

    def sweep_rotated(self, root: str, in_use: set[str]) -> list[str]:
        """Delete rotated files (``NAME.N`` next to a live ``NAME``) under ``root`` last
        written before the cutoff."""
        items: list[tuple[str, float]] = []
        for directory, _dirs, names in os.walk(root):
            present = set(names)
            for name in names:
                match = _ROTATED.search(name)
                if match is None or name[: match.start()] not in present:
                    continue
                full = os.path.join(directory, name)
                try:
                    items.append((full, os.lstat(full).st_mtime))
                except OSError:
                    continue
        return self._delete(expired(items, self.clock() - self.keep, in_use))

    def _delete(self, paths: list[str]) -> list[str]:
        gone = []
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                self.log.warning("retention could not delete", path=path, error=str(exc))
                continue
            gone.append(path)
            self._expired += 1
            self.log.info("retention deleted", path=path, keep=format_age(self.keep))
        return gone


def _remove_empty_dirs(directory: str, root: str) -> None:
    """Remove ``directory`` and its parents up to (not including) ``root`` while empty."""
    root = os.path.abspath(root)
    current = os.path.abspath(directory)
    while current.startswith(root + os.sep):
        try:
            os.rmdir(current)
        except OSError:
            return
        current = os.path.dirname(current)
