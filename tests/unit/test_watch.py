"""ConfigWatcher: edits, atomic rename-saves and symlink swaps are all seen."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from logrouter.watch import ConfigWatcher, file_digest


class Calls:
    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()

    def wait(self, timeout: float = 5.0) -> bool:
        seen = self.event.wait(timeout)
        self.event.clear()
        return seen


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[Path, Calls]]:
    path = tmp_path / "routing.toml"
    path.write_text("a = 1\n")
    calls = Calls()
    watcher = ConfigWatcher(path, calls)
    watcher.start()
    time.sleep(0.3)  # let inotify register before the first edit
    yield path, calls
    watcher.stop()


def test_in_place_write_is_seen(watched: tuple[Path, Calls]) -> None:
    """Writing new bytes into the file calls on_change."""
    path, calls = watched
    path.write_text("a = 2\n")
    assert calls.wait()


def test_atomic_rename_save_is_seen(watched: tuple[Path, Calls]) -> None:
    """An editor's save (write temp file, rename over the config) calls on_change."""
    path, calls = watched
    tmp = path.with_name(".routing.toml.swp")
    tmp.write_text("a = 3\n")
    os.replace(tmp, path)
    assert calls.wait()


def test_symlink_swap_is_seen(tmp_path: Path) -> None:
    """A config that is a symlink re-pointed at a new target (k8s style) is seen."""
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    v1.mkdir()
    v2.mkdir()
    (v1 / "routing.toml").write_text("a = 1\n")
    (v2 / "routing.toml").write_text("a = 2\n")
    (tmp_path / "data").symlink_to("v1")
    path = tmp_path / "routing.toml"
    path.symlink_to("data/routing.toml")
    calls = Calls()
    watcher = ConfigWatcher(path, calls)
    watcher.start()
    try:
        time.sleep(0.3)
        new_link = tmp_path / "data.new"
        new_link.symlink_to("v2")
        os.replace(new_link, tmp_path / "data")
        assert calls.wait()
        assert path.read_text() == "a = 2\n"
    finally:
        watcher.stop()


def test_touch_without_change_is_ignored(watched: tuple[Path, Calls]) -> None:
    """Rewriting the same bytes does not call on_change (no pointless reloads)."""
    path, calls = watched
    path.write_text("a = 1\n")
    assert not calls.wait(1.0)
    assert calls.count == 0


def test_file_digest_of_missing_file_is_none(tmp_path: Path) -> None:
    """A file that is gone mid-rename has no digest rather than raising."""
    assert file_digest(tmp_path / "nope") is None
