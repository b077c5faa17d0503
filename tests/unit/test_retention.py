"""Retention (`keep = "30d"`): what is old enough goes, nothing in use, nothing else."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from logrouter import cli
from logrouter.config import ArchiveOptions, ConfigError, parse_config
from logrouter.sinks.archive import ArchiveWriter
from logrouter.sinks.retention import Retention, expired, format_age, parse_age
from logrouter.wire import format_ts

DAY = 86400.0


def test_parse_and_format_age() -> None:
    """90m, 12h, 30d, 2w parse to seconds and print back; anything else names the value."""
    assert [parse_age(t) for t in ("90m", "12h", "30d", "2w")] == [5400, 43200, 2592000, 1209600]
    assert format_age(2592000) == "30d"
    for bad in ("30", "0d", "30 days", "-1d", 30):
        with pytest.raises(ValueError, match="duration"):
            parse_age(bad)


def test_expired_is_older_than_cutoff_and_not_in_use() -> None:
    """Only items before the cutoff, and never one in use."""
    items = [("a", 1.0), ("b", 5.0), ("c", 2.0)]
    assert expired(items, 3.0, {"c"}) == ["a"]


def archive(base: Path, keep: float | None = None) -> ArchiveWriter:
    options = ArchiveOptions(
        dir=base,
        compression="gzip",
        compresslevel=1,
        rotate_bytes=0,
        rotate_interval="hour",
        keep_age=keep,
    )
    return ArchiveWriter(options, instance="a-0")


def rec(ts: float, n: int) -> dict[str, Any]:
    return {"ts": format_ts(ts), "facility": "auth", "severity": "err", "msg": f"rec-{n}"}


def test_the_archive_sink_deletes_old_partitions_at_a_checkpoint(tmp_path: Path) -> None:
    """keep=1d: partitions that ended more than a day ago are deleted (and their empty day
    directories), the current ones kept; the count is handed to the sink's counters."""
    now = time.time()
    writer = archive(tmp_path)  # no retention: write the old partitions
    writer.write([rec(now - 3 * DAY, 1), rec(now - 2 * DAY, 2), rec(now - 3600, 3)])
    writer.checkpoint()
    writer.close()
    old = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.jsonl.gz"))
    assert len(old) == 3
    keeping = archive(tmp_path, keep=DAY)
    keeping.write([rec(now, 4)])
    keeping.checkpoint()
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.jsonl.gz"))
    assert len(left) == 2 and old[2] in left and not set(old[:2]) & set(left)
    assert keeping.take_expired() == 2 and keeping.take_expired() == 0
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_dir() and not any(p.iterdir())) == []


def test_the_file_being_written_is_never_deleted(tmp_path: Path) -> None:
    """A file the writer holds open is kept even when its partition is past the cutoff."""
    now = time.time()
    writer = archive(tmp_path)
    writer.write([rec(now - 3 * DAY, 1)])
    (path,) = tmp_path.rglob("*.jsonl.gz")
    retention = Retention(DAY)
    assert retention.sweep_archive(str(tmp_path), "hour", {str(path)}) == []
    assert path.exists()


def test_rotated_files_older_than_keep_are_deleted(tmp_path: Path) -> None:
    """name.N next to a live name: deleted when last written before the cutoff; the live file,
    recent rotations and numbered files without a live sibling stay."""
    for name in ("app.log", "app.log.1", "app.log.2", "app.log.3", "other.7", "app.log.x"):
        (tmp_path / name).write_text("x\n")
    old = time.time() - 10 * DAY
    for name in ("app.log", "app.log.2", "app.log.3", "other.7", "app.log.x"):
        os.utime(tmp_path / name, (old, old))
    gone = Retention(DAY).sweep_rotated(str(tmp_path), set())
    assert sorted(Path(p).name for p in gone) == ["app.log.2", "app.log.3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "app.log",
        "app.log.1",
        "app.log.x",
        "other.7",
    ]


def test_config_keep_values_and_errors(tmp_path: Path) -> None:
    """keep = "30d" on archive and file sinks; a file sink's integer keep still counts files;
    a bad duration names file, line and key."""
    text = (
        '[sinks.a]\ntype = "archive"\nmatch = "*.*"\ndir = "/tmp/a"\nkeep = "30d"\n'
        '[sinks.f]\ntype = "file"\nmatch = "*.*"\npath = "/tmp/f.log"\nkeep = "2w"\n'
        '[sinks.g]\ntype = "file"\nmatch = "*.*"\npath = "/tmp/g.log"\nkeep = 5\n'
    )
    config = parse_config(text, tmp_path / "r.toml")
    assert config.sinks["a"].options.keep_age == 30 * DAY
    assert config.sinks["f"].options.keep_age == 14 * DAY
    assert config.sinks["g"].options.keep == 5
    assert config.sinks["g"].options.keep_age is None
    with pytest.raises(ConfigError) as info:
        parse_config(text.replace('"30d"', '"30 days"'), tmp_path / "r.toml")
    assert "r.toml:5: sinks.a.keep" in str(info.value) and "30 days" in str(info.value)


def test_check_shows_keep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`logrouter check` prints the retention of a sink."""
    path = tmp_path / "r.toml"
    path.write_text('[sinks.a]\ntype = "archive"\nmatch = "*.*"\ndir = "/tmp/a"\nkeep = "30d"\n')
    assert cli.main(["check", str(path)]) == 0
    assert "keep      30d (partitions older than that are deleted)" in capsys.readouterr().out


def test_the_file_sink_deletes_old_rotated_files_at_a_checkpoint(tmp_path: Path) -> None:
    """A file sink with keep = "1d": at its checkpoint, rotated files last written more than a
    day ago go; the live file it appends to and a recent rotation stay."""
    from logrouter.config import FileOptions
    from logrouter.render import DEFAULT_LINE_FORMAT
    from logrouter.sinks.file import FileWriter

    for name in ("auth.log.1", "auth.log.2"):
        (tmp_path / name).write_text("old\n")
    old = time.time() - 3 * DAY
    os.utime(tmp_path / "auth.log.2", (old, old))
    options = FileOptions(
        path=str(tmp_path / "{facility}.log"),
        base_dir=tmp_path,
        format=DEFAULT_LINE_FORMAT,
        rotate_bytes=0,
        rotate_interval=None,
        keep=0,
        max_open_files=8,
        file_mode=0o640,
        keep_age=DAY,
    )
    writer = FileWriter(options)
    writer.write([rec(time.time(), 1)])
    writer.checkpoint()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auth.log", "auth.log.1"]
    assert writer.take_expired() == 1
