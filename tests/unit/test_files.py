"""Safe file access and record times of the writers with files (files.py)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from logrouter.sinks.files import TargetRefused, open_beneath, record_time, rollback_files

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "ts",
    [
        "9999-99-99T99:00:00Z",  # not a date
        "\u0662\u0660\u0662\u0664-01-01T00:00:00Z",  # Arabic-Indic digits pass isdigit()
        "2026-03-03T12:00:01Z",  # more than a day ahead
        "yesterday",
        None,
        20260301,
    ],
)
def test_an_unbelievable_record_time_is_the_arrival_time(ts: object) -> None:
    """ts that is not ASCII RFC 3339, not a real date, or more than a day in the future:
    the record's time is the arrival time."""
    assert record_time(ts, NOW) == datetime.fromtimestamp(NOW, UTC)


def test_a_valid_record_time_is_believed() -> None:
    """A real past time (any offset) and one a few hours ahead (clock skew) are kept, in UTC."""
    assert record_time("2020-02-29T23:30:00+02:00", NOW) == datetime(
        2020, 2, 29, 21, 30, tzinfo=UTC
    )
    assert record_time("2026-03-01T18:00:00Z", NOW).hour == 18


def base_fd(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY)


def refused(base: Path, *parts: str) -> str:
    fd = base_fd(base)
    try:
        with pytest.raises(TargetRefused) as caught:
            open_beneath(fd, parts, 0o640)
    finally:
        os.close(fd)
    return str(caught.value.strerror)


def test_creates_directories_and_the_file_beneath_the_base(tmp_path: Path) -> None:
    """Missing directories are made, the file is created with the mode asked, and the
    count of new directory entries is reported (to fsync their parents)."""
    fd = base_fd(tmp_path)
    try:
        out, created, entries = open_beneath(fd, ["a", "b", "x.log"], 0o604)
        os.write(out, b"line\n")
        os.close(out)
        assert (created, entries) == (True, 3)
        out, created, entries = open_beneath(fd, ["a", "b", "x.log"], 0o604)
        os.close(out)
        assert (created, entries) == (False, 0)
    finally:
        os.close(fd)
    assert (tmp_path / "a" / "b" / "x.log").read_text() == "line\n"
    assert (tmp_path / "a" / "b" / "x.log").stat().st_mode & 0o777 == 0o604


def test_a_symlink_anywhere_is_refused_never_followed(tmp_path: Path) -> None:
    """A planted symlink as the file or as a directory on the way is refused; the files it
    points to are untouched."""
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    (tmp_path / "outside").mkdir()
    base = tmp_path / "base"
    base.mkdir()
    (base / "x.log").symlink_to(victim)
    (base / "dir").symlink_to(tmp_path / "outside")
    assert "symlink" in refused(base, "x.log")
    assert "symlink" in refused(base, "dir", "y.log")
    assert victim.read_text() == "keep\n"
    assert list((tmp_path / "outside").iterdir()) == []


def test_a_fifo_a_directory_and_a_hard_link_are_refused(tmp_path: Path) -> None:
    """Only a regular file with one link is a target: a FIFO (which would block), a
    directory and a hard link to another file are refused with a reason."""
    os.mkfifo(tmp_path / "fifo.log")
    (tmp_path / "dir.log").mkdir()
    (tmp_path / "other").write_text("")
    os.link(tmp_path / "other", tmp_path / "linked.log")
    assert refused(tmp_path, "fifo.log")
    assert "EISDIR" in refused(tmp_path, "dir.log")
    assert "hard links" in refused(tmp_path, "linked.log")


def test_a_file_of_another_user_is_refused(tmp_path: Path) -> None:
    """An existing file the sink's user does not own (another program's log) is refused."""
    theirs = tmp_path / "auth.log"
    theirs.write_text("theirs\n")
    if os.geteuid() == 0:
        os.chown(theirs, 12345, 12345)
    else:
        pytest.fail("this test needs root to make a file of another user")
    assert "owned by uid 12345" in refused(tmp_path, "auth.log")
    assert theirs.read_text() == "theirs\n"


def test_rollback_never_truncates_through_a_link(tmp_path: Path) -> None:
    """A journal entry whose file, or a directory on its way, became a symlink leaves the
    link's target alone; a real file is cut back to its committed size."""
    victim = tmp_path / "victim"
    victim.write_text("0123456789")
    (tmp_path / "planted.log").symlink_to(victim)
    (tmp_path / "ours.log").write_text("0123456789")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.log").write_text("0123456789")
    (tmp_path / "sub").symlink_to(tmp_path / "elsewhere")  # a directory became a link
    rollback_files(
        {
            str(tmp_path / "planted.log"): 2,
            str(tmp_path / "ours.log"): 4,
            str(tmp_path / "sub" / "x.log"): 1,
            str(tmp_path / "sub" / "new.log"): -1,
        }
    )
    assert victim.read_text() == "0123456789"
    assert (tmp_path / "ours.log").read_text() == "0123"
    assert (tmp_path / "elsewhere" / "x.log").read_text() == "0123456789"
