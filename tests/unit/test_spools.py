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


def test_legacy_shared_spool_file_is_adopted(tmp_path: Path) -> None:
    """Rows in the single spool file of earlier versions (<dir>.sqlite) are replayed."""
    legacy = Spool(tmp_path / "spool-app.sqlite")
    legacy.append(_entries(1, 4))
    legacy.close()
    spools = SpoolDir(tmp_path / "spool-app", 1 << 20, name="p2-2")
    assert spools.adopt() == 4
    assert _rows(spools.open_own()) == [(1, i) for i in range(4)]
    assert not (tmp_path / "spool-app.sqlite").exists()
    assert SpoolDir(tmp_path / "spool-app", 1 << 20, name="p3-3").adopt() == 0


def test_handler_given_an_old_spool_file_uses_a_directory_beside_it(tmp_path: Path) -> None:
    """spool= naming an existing one-file spool of an earlier version: its rows are adopted
    into a directory next to it, nothing refused."""
    from logrouter import RabbitHandler

    old = Spool(tmp_path / "app.sqlite")
    old.append(_entries(1, 2))
    old.close()
    handler = RabbitHandler(spool=str(tmp_path / "app.sqlite"), app="x")
    spools = handler._outbox.spools
    assert spools is not None and spools.path == tmp_path / "app.sqlite.d"
    assert spools.adopt() == 2
    spools.close()
    handler.close()


def test_for_process_puts_the_directory_next_to_an_old_one_file_spool(tmp_path: Path) -> None:
    """A ``spool`` option naming a file (an earlier version's spool) gets ``<file>.d``,
    which adopts that file; a directory path is used as is. Files are named by pid and run."""
    old = tmp_path / "spool"
    old.write_bytes(b"")
    spools = SpoolDir.for_process(old, 100, run=7)
    assert (spools.path, spools.legacy, spools.name) == (
        old.with_name("spool.d"),
        old,
        f"p{os.getpid()}-7",
    )
    fresh = SpoolDir.for_process(tmp_path / "new", 100, run=8)
    assert fresh.path == tmp_path / "new" and fresh.legacy == tmp_path / "new.sqlite"
