"""The file writer: lines, path templates confined to base_dir, modes, LRU, rotation, errors."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from logrouter.config import FileOptions
from logrouter.render import DEFAULT_LINE_FORMAT, render_line
from logrouter.sinks.file import FileWriter
from tests.helpers.tmpfs import mounted_tmpfs


def options(base: Path, path: str = "{facility}.log", **kw: Any) -> FileOptions:
    """FileOptions for a template below ``base``."""
    values: dict[str, Any] = {
        "path": str(base / path),
        "base_dir": base,
        "format": DEFAULT_LINE_FORMAT,
        "rotate_bytes": 0,
        "rotate_interval": None,
        "keep": 3,
        "max_open_files": 64,
        "file_mode": 0o640,
    }
    values.update(kw)
    return FileOptions(**values)


def rec(i: int, facility: str = "auth", severity: str = "err", **kw: Any) -> dict[str, Any]:
    """A decoded record number ``i``."""
    record: dict[str, Any] = {
        "ts": "2024-05-01T10:11:12.345678Z",
        "host": "web1",
        "app": "billing",
        "pid": 42,
        "logger": "billing.api",
        "facility": facility,
        "severity": severity,
        "msg": f"message {i}",
        "id": f"id-{i}",
    }
    record.update(kw)
    return record


def commit(writer: FileWriter, records: list[dict[str, Any]]) -> dict[str, int]:
    """What the consumer does per batch: write, flush with fsync, checkpoint."""
    writer.write(records)
    writer.flush(True)
    return writer.checkpoint()


def files_under(base: Path) -> list[str]:
    """Relative paths of every file below ``base``."""
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


def test_lines_are_exactly_as_rendered(tmp_path: Path) -> None:
    """Each record becomes its rendered line plus newline, in order, traceback included."""
    writer = FileWriter(options(tmp_path))
    records = [rec(i) for i in range(5)] + [rec(5, exc="Traceback:\n  boom")]
    commit(writer, records)
    writer.close()
    expected = "".join(render_line(r, DEFAULT_LINE_FORMAT) + "\n" for r in records)
    assert (tmp_path / "auth.log").read_text() == expected


def test_custom_line_format(tmp_path: Path) -> None:
    """The configured format is used for the lines."""
    writer = FileWriter(options(tmp_path, format="{severity} {msg} user={user}"))
    commit(writer, [rec(1, fields={"user": "bob"})])
    assert (tmp_path / "auth.log").read_text() == "err message 1 user=bob\n"


def test_template_with_placeholders_and_record_date(tmp_path: Path) -> None:
    """{facility} {severity} {host} {app} and %Y/%m/%d/%H come from the record (UTC ts)."""
    writer = FileWriter(options(tmp_path, "{host}/{app}/%Y/%m/%d/{facility}-{severity}-%H.log"))
    commit(
        writer,
        [
            rec(1, "auth", "err"),
            rec(2, "mail", "crit", ts="2023-12-31T23:59:59.000001Z"),
            rec(3, "auth", "err"),
        ],
    )
    assert files_under(tmp_path) == [
        "web1/billing/2023/12/31/mail-crit-23.log",
        "web1/billing/2024/05/01/auth-err-10.log",
    ]
    assert len((tmp_path / "web1/billing/2024/05/01/auth-err-10.log").read_text().splitlines()) == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("facility", "../../etc"),
        ("facility", "/"),
        ("facility", ".."),
        ("facility", "."),
        ("host", "../../../../tmp/x"),
        ("app", "a/../../b\x00c"),
        ("facility", ""),
        ("host", None),
    ],
)
def test_escape_attempts_stay_inside_base_dir(tmp_path: Path, field: str, value: Any) -> None:
    """Whatever a record says, the file it lands in is a regular file inside base_dir."""
    base = tmp_path / "logs"
    writer = FileWriter(options(base, "{host}/{facility}/{app}.log"))
    commit(writer, [rec(1, **{field: value})])
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and base not in p.parents]
    assert outside == []
    written = [p for p in base.rglob("*") if p.is_file()]
    assert len(written) == 1
    assert written[0].resolve().is_relative_to(base.resolve())
    assert "message 1" in written[0].read_text()


def test_symlink_out_of_base_dir_is_refused(tmp_path: Path) -> None:
    """A symlink in base_dir pointing outside does not let records escape: the record is
    refused with the reason, no file outside, the rest of the batch is written."""
    base = tmp_path / "logs"
    outside = tmp_path / "outside"
    base.mkdir()
    outside.mkdir()
    (base / "evil").symlink_to(outside)
    writer = FileWriter(options(base, "{facility}/x.log"))
    refused = writer.write([rec(1, facility="evil"), rec(3, facility="fine")])
    assert [(index, "symlink" in reason) for index, reason in refused] == [(0, True)]
    assert list(outside.iterdir()) == []
    assert (base / "fine" / "x.log").read_text().endswith("message 3\n")
    commit(writer, [rec(2, facility="good")])  # still usable for other records
    assert (base / "good" / "x.log").exists()


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_files_are_created_0640_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    """New files get file_mode (default 0640), independent of the process umask."""
    old = os.umask(umask)
    try:
        writer = FileWriter(options(tmp_path, "sub/{facility}.log"))
        commit(writer, [rec(1)])
    finally:
        os.umask(old)
    assert (tmp_path / "sub/auth.log").stat().st_mode & 0o777 == 0o640


def test_configured_file_mode(tmp_path: Path) -> None:
    """file_mode = 0600 is honoured."""
    writer = FileWriter(options(tmp_path, file_mode=0o600))
    commit(writer, [rec(1)])
    assert (tmp_path / "auth.log").stat().st_mode & 0o777 == 0o600


def open_fds_under(base: Path) -> int:
    """How many of this process's descriptors point below ``base``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(base)):
            count += 1
    return count


def test_lru_cap_on_open_files(tmp_path: Path) -> None:
    """With more facilities than max_open_files, every record is written, never more fds open."""
    writer = FileWriter(options(tmp_path, max_open_files=3))
    facilities = [f"f{i}" for i in range(20)]
    for round_ in range(3):
        commit(writer, [rec(round_, f) for f in facilities])
        assert open_fds_under(tmp_path) <= 3 + 1  # and the base directory's
    writer.close()
    assert open_fds_under(tmp_path) == 0
    for facility in facilities:
        lines = (tmp_path / f"{facility}.log").read_text().splitlines()
        assert [line.rsplit(" ", 1)[1] for line in lines] == ["0", "1", "2"]


def test_size_rotation_keeps_n_backups(tmp_path: Path) -> None:
    """Past rotate_bytes the file becomes name.1 (name.2 ...); only `keep` backups remain.

    Rotation happens at batch boundaries: a file exceeds rotate_bytes by at most one batch.
    """
    writer = FileWriter(options(tmp_path, rotate_bytes=200, keep=2))
    for i in range(11):
        commit(writer, [rec(2 * i), rec(2 * i + 1)])
    writer.close()
    assert files_under(tmp_path) == ["auth.log", "auth.log.1", "auth.log.2"]
    chunks = [(tmp_path / n).read_text() for n in ("auth.log.2", "auth.log.1", "auth.log")]
    numbers = [int(line.rsplit(" ", 1)[1]) for c in chunks for line in c.splitlines()]
    assert numbers == list(range(12, 22))  # the newest records, in order, no gaps
    batch_bytes = len(chunks[2].encode())
    assert all(len(c.encode()) < 200 + batch_bytes for c in chunks)


def test_time_rotation_of_a_file_from_an_earlier_day(tmp_path: Path) -> None:
    """With rotate_interval=day, a file last written yesterday is rotated before new lines."""
    (tmp_path / "auth.log").write_text("old line\n")
    day = 86400
    os.utime(tmp_path / "auth.log", (os.path.getmtime(tmp_path / "auth.log") - 2 * day,) * 2)
    writer = FileWriter(options(tmp_path, rotate_interval="day", keep=1))
    commit(writer, [rec(1)])
    assert (tmp_path / "auth.log.1").read_text() == "old line\n"
    assert (tmp_path / "auth.log").read_text().endswith("message 1\n")


def test_checkpoint_and_rollback_truncate_unacked_lines(tmp_path: Path) -> None:
    """rollback(checkpoint) cuts every line written after that checkpoint."""
    writer = FileWriter(options(tmp_path))
    committed = commit(writer, [rec(1), rec(2, "mail")])
    assert committed == {
        str(tmp_path / "auth.log"): (tmp_path / "auth.log").stat().st_size,
        str(tmp_path / "mail.log"): (tmp_path / "mail.log").stat().st_size,
    }
    commit(writer, [rec(3), rec(4, "mail")])
    writer.write([rec(5)])  # crashed before the checkpoint
    fresh = FileWriter(options(tmp_path))
    fresh.rollback(committed)
    commit(fresh, [rec(6)])
    assert [
        line.rsplit(" ", 1)[1] for line in (tmp_path / "auth.log").read_text().splitlines()
    ] == [
        "1",
        "6",
    ]
    assert (tmp_path / "mail.log").read_text().splitlines()[-1].endswith("message 2")


def test_reopen_after_logrotate_moves_the_file(tmp_path: Path) -> None:
    """After the file is renamed away and reopen() is called, new lines go to a new file."""
    writer = FileWriter(options(tmp_path))
    commit(writer, [rec(1)])
    os.rename(tmp_path / "auth.log", tmp_path / "auth.log.old")
    writer.reopen()
    commit(writer, [rec(2)])
    assert (tmp_path / "auth.log.old").read_text().endswith("message 1\n")
    assert (tmp_path / "auth.log").read_text().endswith("message 2\n")


def test_directory_in_the_way_raises_with_path_then_recovers(tmp_path: Path) -> None:
    """A directory where the file should be: the record is refused with a reason naming the
    path and EISDIR (not the whole batch); once it is gone, records are written again."""
    (tmp_path / "auth.log").mkdir()
    writer = FileWriter(options(tmp_path))
    ((index, reason),) = writer.write([rec(1)])
    assert index == 0
    assert str(tmp_path / "auth.log") in reason
    assert errno.errorcode[errno.EISDIR] in reason
    (tmp_path / "auth.log").rmdir()
    commit(writer, [rec(1)])
    assert (tmp_path / "auth.log").read_text().endswith("message 1\n")


def test_file_in_place_of_a_directory_raises_with_path(tmp_path: Path) -> None:
    """A regular file where a parent directory should be: the record is refused with a
    reason naming it, then recovery."""
    (tmp_path / "auth").write_text("")
    writer = FileWriter(options(tmp_path, "{facility}/x.log"))
    ((_, reason),) = writer.write([rec(1)])
    assert str(tmp_path / "auth") in reason
    (tmp_path / "auth").unlink()
    commit(writer, [rec(1)])
    assert (tmp_path / "auth/x.log").exists()


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (needs root and mount; the test fails otherwise, it is a real disk-full)."""
    with mounted_tmpfs(tmp_path / "tiny", "64k") as mount_point:
        yield mount_point


def test_disk_full_raises_keeps_files_clean_and_recovers(tiny_fs: Path) -> None:
    """ENOSPC: OSError naming the file, no partial batch left behind, writes resume once space
    is freed (all-or-nothing batches, so a retry never duplicates lines)."""
    (tiny_fs / "ballast").write_bytes(b"x" * 40_000)
    writer = FileWriter(options(tiny_fs, "{facility}.log", max_open_files=4))
    committed = commit(writer, [rec(1, "a"), rec(1, "b")])
    big = [rec(i, "a", msg="y" * 1000) for i in range(40)] + [rec(i, "b") for i in range(2, 5)]
    with pytest.raises(OSError) as caught:
        writer.write(big)
    assert caught.value.errno == errno.ENOSPC
    assert str(tiny_fs) in str(caught.value)
    sizes = {p: os.path.getsize(p) for p in committed}
    assert sizes == committed  # the failed batch left nothing behind
    (tiny_fs / "ballast").unlink()
    writer.write(big)
    writer.flush(True)
    a_lines = (tiny_fs / "a.log").read_text().splitlines()
    assert len(a_lines) == 41
    assert len((tiny_fs / "b.log").read_text().splitlines()) == 4


def test_keep_zero_keeps_every_backup(tmp_path: Path) -> None:
    """keep = 0 means no backup is ever deleted: name.1, name.2, ... all stay."""
    writer = FileWriter(options(tmp_path, rotate_bytes=10, keep=0))
    for i in range(4):
        commit(writer, [rec(i)])
    assert files_under(tmp_path) == ["auth.log.1", "auth.log.2", "auth.log.3", "auth.log.4"]
    assert (tmp_path / "auth.log.4").read_text().endswith("message 0\n")


def test_make_writer_builds_a_file_writer_from_routing_toml(tmp_path: Path) -> None:
    """A [sinks.x] type = "file" table of a real config gives a working file writer."""
    from logrouter.config import parse_config
    from logrouter.sinks import make_writer

    text = f"""
[sinks.errors]
type = "file"
match = "*.err"
path = "{tmp_path}/{{facility}}/%Y.log"
"""
    config = parse_config(text, tmp_path / "routing.toml")
    writer = make_writer(config.sinks["errors"], instance="h-1")
    writer.write([rec(1)])
    writer.flush(True)
    assert (tmp_path / "auth" / "2024.log").read_text() == render_line(rec(1)) + "\n"


def test_fan_out_is_capped_and_the_rest_goes_to_the_overflow_file(tmp_path: Path) -> None:
    """With max_files = 3, records of 5 facilities make 3 files; the other 2 facilities'
    records are in the overflow file as JSON with every field; nothing is dropped."""
    import json

    from logrouter.sinks.file import OVERFLOW_NAME

    writer = FileWriter(options(tmp_path, max_files=3))
    records = [rec(i, facility=f"f{i % 5}") for i in range(10)]
    assert writer.write(records) == []
    writer.close()
    assert sorted(files_under(tmp_path)) == sorted([OVERFLOW_NAME, "f0.log", "f1.log", "f2.log"])
    overflow = [json.loads(line) for line in (tmp_path / OVERFLOW_NAME).read_text().splitlines()]
    assert overflow == [r for r in records if r["facility"] in ("f3", "f4")]
    assert sum(len((tmp_path / f"f{i}.log").read_text().splitlines()) for i in range(3)) == 6


def test_with_sender_in_the_path_each_sender_has_its_own_fan_out_cap(tmp_path: Path) -> None:
    """Path {sender}/{app}.log, max_files = 3: one login's records of 5 apps fill its 3
    slots and the rest go to the overflow file, but another login's app still gets its
    own file (one broker user's fan-out sent every later sender to overflow)."""
    from logrouter.sinks.file import OVERFLOW_NAME

    writer = FileWriter(options(tmp_path, "{sender}/{app}.log", max_files=3))
    flood = [rec(i, app=f"junk{i}", sender="mallory") for i in range(5)]
    assert writer.write([*flood, rec(9, app="goodapp", sender="guest")]) == []
    writer.close()
    assert sorted(files_under(tmp_path)) == sorted(
        [OVERFLOW_NAME, "guest/goodapp.log", *(f"mallory/junk{i}.log" for i in range(3))]
    )


def test_a_value_starting_with_a_dot_makes_a_visible_name(tmp_path: Path) -> None:
    """facility ".hidden" or ".." cannot make a dot file or climb: the name gets a "_" first."""
    writer = FileWriter(options(tmp_path, "{facility}/{app}.log"))
    writer.write([rec(1, facility=".hidden", app=".."), rec(2, facility="...")])
    writer.close()
    assert sorted(files_under(tmp_path)) == ["_.../billing.log", "_.hidden/_...log"]


def test_a_record_too_deep_for_the_overflow_file_is_refused_alone(tmp_path: Path) -> None:
    """The overflow file holds records as JSON: one nested deeper than the encoder goes
    (any broker user can send one that decodes) is refused with the reason, its
    neighbours written (it used to raise out of the write and wedge the sink)."""
    import json

    from logrouter.sinks.file import OVERFLOW_NAME

    nested: list[Any] = []
    for _ in range(5000):
        nested = [nested]
    writer = FileWriter(options(tmp_path, max_files=1))
    records = [rec(0, facility="f0"), rec(1, facility="f1", fields={"x": nested})]
    records.append(rec(2, facility="f2"))
    assert writer.write(records) == [(1, "record nested too deep to write as JSON")]
    writer.close()
    overflow = [json.loads(line) for line in (tmp_path / OVERFLOW_NAME).read_text().splitlines()]
    assert overflow == [records[2]]
    assert (tmp_path / "f0.log").read_text() == render_line(records[0]) + "\n"
