"""spools: one spool per process, orphans adopted exactly once, private modes (no broker)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from logrouter.app.spool import Spool
from logrouter.app.spools import SpoolDir


def _entries(run: int, count: int) -> list[tuple[int, int, str, str, int, bytes]]:
    return [(run, i, "user.info", f"m{run}-{i}", 0, b"x" * 10) for i in range(count)]


def _rows(spool: Spool) -> list[tuple[int, int]]:
    return [(r.run, r.seq) for r in spool.read((-1, -1), 10_000)]


def test_live_spool_is_not_adopted_dead_one_is_once(tmp_path: Path) -> None:
    """A spool whose owner holds its lock stays put; once released, one adopter takes it all."""
    owner = SpoolDir(tmp_path, 1 << 20, name="p1-1")
    owner.open_own().append(_entries(1, 5))
    first, second = (
        SpoolDir(tmp_path, 1 << 20, name="p2-2"),
        SpoolDir(tmp_path, 1 << 20, name="p3-3"),
    )
    assert first.adopt() == 0  # owner alive
    owner.spool.close()  # type: ignore[union-attr]
    owner._release(unlink=False)  # the owner dies with rows in its spool
    assert first.adopt() == 5
    assert second.adopt() == 0
    assert _rows(first.open_own()) == [(1, i) for i in range(5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "p2-2.lock", "p2-2.sqlite", "p2-2.sqlite-shm", "p2-2.sqlite-wal",
    ]  # fmt: skip


def test_empty_spool_is_removed_at_close_full_one_kept(tmp_path: Path) -> None:
    """An empty spool leaves nothing behind; one with rows stays for a later process."""
    empty = SpoolDir(tmp_path, 1 << 20, name="p1-1")
    empty.open_own()
    empty.close()
    assert list(tmp_path.iterdir()) == []
    kept = SpoolDir(tmp_path, 1 << 20, name="p2-2")
    kept.open_own().append(_entries(2, 3))
    kept.close()
    assert (tmp_path / "p2-2.sqlite").exists()
    assert SpoolDir(tmp_path, 1 << 20, name="p3-3").adopt() == 3


def test_adopter_with_full_spool_leaves_the_rest(tmp_path: Path) -> None:
    """Rows that do not fit in the adopter's spool stay in the orphan, none lost."""
    dead = SpoolDir(tmp_path, 1 << 20, name="p1-1")
    dead.open_own().append(_entries(1, 10))
    dead.close()
    small = SpoolDir(tmp_path, 35, name="p2-2")
    assert small.adopt() == 3
    small.close()
    big = SpoolDir(tmp_path, 1 << 20, name="p3-3")
    assert big.adopt() == 10  # 7 left in the orphan, 3 in small's (now orphaned) spool
    assert sorted(_rows(big.open_own())) == [(1, i) for i in range(10)]


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_spool_files_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    """Directory 0700, database, -wal, -shm and lock files 0600 (issue 13 item 8)."""
    old = os.umask(umask)
    try:
        spools = SpoolDir(tmp_path / "cache" / "spool-app", 1 << 20, name="p1-1")
        spools.open_own().append(_entries(1, 3))
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in spools.path.iterdir()}
    assert stat.S_IMODE(spools.path.stat().st_mode) == 0o700
    assert set(modes) == {"p1-1.lock", "p1-1.sqlite", "p1-1.sqlite-wal", "p1-1.sqlite-shm"}
    assert set(modes.values()) == {0o600}
    spools.close()
