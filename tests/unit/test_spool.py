"""The disk spool: ordered, bounded, durable (pure SQLite, no broker)."""

from __future__ import annotations

from pathlib import Path

from logrouter.app.spool import Spool


def _entry(run: int, seq: int, size: int = 10) -> tuple[int, int, str, str, int, bytes]:
    return (run, seq, "user.info", f"id{run}-{seq}", 0, b"x" * size)


def test_rows_come_back_in_logging_order(tmp_path: Path) -> None:
    """Rows written out of order (caller and I/O thread spilling) are read by (run, seq)."""
    spool = Spool(tmp_path / "s.sqlite")
    spool.append([_entry(2, 5), _entry(2, 1)])
    spool.append([_entry(1, 9), _entry(2, 3)])
    rows = spool.read((-1, -1), 10)
    assert [(r.run, r.seq) for r in rows] == [(1, 9), (2, 1), (2, 3), (2, 5)]
    assert [(r.run, r.seq) for r in spool.read((2, 1), 2)] == [(2, 3), (2, 5)]
    spool.close()


def test_confirmed_rows_leave_and_survive_reopen(tmp_path: Path) -> None:
    """Deleted rows are gone; the others are still there after reopening the file."""
    path = tmp_path / "s.sqlite"
    spool = Spool(path)
    spool.append([_entry(1, i) for i in range(5)])
    first = spool.read((-1, -1), 2)
    spool.delete((r.spool_id, len(r.body)) for r in first if r.spool_id)
    assert len(spool) == 3 and spool.size_bytes == 30
    spool.close()
    again = Spool(path)
    assert [r.seq for r in again.read((-1, -1), 10)] == [2, 3, 4]
    assert len(again) == 3
    again.close()


def test_full_spool_rejects_what_does_not_fit(tmp_path: Path) -> None:
    """Beyond max_bytes, append returns the entries it could not keep (counted as drops)."""
    spool = Spool(tmp_path / "s.sqlite", max_bytes=35)
    rejected = spool.append([_entry(1, i) for i in range(5)])
    assert [e[1] for e in rejected] == [3, 4]
    assert len(spool) == 3
    spool.close()
