"""Watch a config file for edits, the way editors and deploy tools really save.

Editors write a temp file and rename it over the config; Kubernetes and some
deploy tools swap a symlink. Watching the file itself misses both, so the
*directory* is watched (and the symlink target's directory, if different), and
every change there re-reads the file: ``on_change`` runs only when the bytes
differ from the last ones seen.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import watchfiles

from logrouter import log


def file_digest(path: Path) -> str | None:
    """sha256 of the file's bytes, or None while it is missing or unreadable."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class ConfigWatcher:
    """Calls ``on_change()`` from a daemon thread whenever ``path``'s content changes."""

    def __init__(
        self,
        path: Path,
        on_change: Callable[[], None],
        *,
        debounce_ms: int = 50,
    ) -> None:
        self.path = Path(path)
        self.on_change = on_change
        self.debounce_ms = debounce_ms
        self._last = file_digest(self.path)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.log = log.get_logger("watch", path=str(self.path))

    def directories(self) -> list[Path]:
        """The directory of the path as given, and of its resolved target if elsewhere."""
        given = self.path.absolute().parent
        target = self.path.resolve().parent
        return [given] if target == given else [given, target]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="config-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def check(self) -> bool:
        """Re-read the file; call ``on_change`` if it differs. True when it did."""
        digest = file_digest(self.path)
        if digest is None or digest == self._last:
            return False
        self._last = digest
        self.on_change()
        return True

    def _run(self) -> None:
        dirs = [str(d) for d in self.directories()]
        while not self._stop.is_set():
            try:
                for _changes in watchfiles.watch(
                    *dirs,
                    stop_event=self._stop,
                    debounce=self.debounce_ms,
                    step=20,
                    recursive=False,
                    raise_interrupt=False,
                    rust_timeout=500,
                    yield_on_timeout=True,
                ):
                    self.check()
            except Exception as exc:  # directory gone for a moment, inotify limits
                self.log.warning("config watch failed; retrying", error=str(exc))
                self._stop.wait(1.0)
