"""Reading archives written by the archive writer: pruning, members, order, torn tails."""

from __future__ import annotations

import gzip
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from logrouter.archive_reader import (
    count_archive,
    last_entries,
    list_files,
    members,
    read_archive,
)
from logrouter.config import ArchiveOptions
from logrouter.record_filter import RecordFilter, parse_field
from logrouter.selector import compile_selector
from logrouter.sinks.archive import ArchiveWriter


def writer(base: Path, instance: str, interval: str = "hour", rotate: int = 0) -> ArchiveWriter:
    options = ArchiveOptions(
        dir=base, compression="gzip", compresslevel=1, rotate_bytes=rotate, rotate_interval=interval
    )
    return ArchiveWriter(options, instance=instance)


def rec(ts: str, n: int, severity: str = "info") -> dict[str, Any]:
    return {"ts": ts, "facility": "auth", "severity": severity, "msg": f"rec-{n}", "id": f"id-{n}"}


def commit(w: ArchiveWriter, records: list[dict[str, Any]]) -> None:
    w.write(records)
    w.flush(False)
    w.checkpoint()


def msgs(entries: Any) -> list[str]:
    return [e.record["msg"] for e in entries]


def when(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_instances_and_partitions_merge_in_time_order(tmp_path: Path) -> None:
    """Two instances' hourly files over a day boundary come out in ts order, every record once."""
    a, b = writer(tmp_path, "a-0"), writer(tmp_path, "b-1")
    commit(a, [rec("2026-11-29T23:59:58.000000Z", 1), rec("2026-11-30T00:00:01.000000Z", 4)])
    commit(b, [rec("2026-11-29T23:59:59.000000Z", 2), rec("2026-11-30T00:00:00.000000Z", 3)])
    commit(a, [rec("2026-11-30T01:00:00.000000Z", 6), rec("2026-11-30T00:30:00.000000Z", 5)])
    assert msgs(read_archive(tmp_path, RecordFilter())) == [f"rec-{n}" for n in range(1, 7)]
    assert msgs(read_archive(tmp_path, RecordFilter(), reverse=True)) == [
        f"rec-{n}" for n in range(6, 0, -1)
    ]


def test_only_partitions_of_the_range_are_opened(tmp_path: Path) -> None:
    """since/until select day directories and hour files; others are not even listed."""
    w = writer(tmp_path, "a-0")
    for day in (28, 29, 30):
        commit(w, [rec(f"2026-11-{day}T{h:02d}:10:00.000000Z", day * 100 + h) for h in range(24)])
    files = list_files(tmp_path, when("2026-11-29T22:30:00"), when("2026-11-30T01:00:00"))
    assert [os.path.relpath(f.path, tmp_path) for f in files] == [
        "2026/11/29/a-0-22.jsonl.gz",
        "2026/11/29/a-0-23.jsonl.gz",
        "2026/11/30/a-0-00.jsonl.gz",
    ]
    query = RecordFilter(since=when("2026-11-29T22:30:00"), until=when("2026-11-30T01:00:00"))
    assert msgs(read_archive(tmp_path, query)) == ["rec-2923", "rec-3000"]


def test_daily_archives_and_size_rotation(tmp_path: Path) -> None:
    """Daily files (interval known) and -n rotated files are read whole and merged."""
    w = writer(tmp_path, "web-12", interval="day", rotate=200)
    for n in range(10):
        commit(w, [rec(f"2026-11-30T{n:02d}:00:00.000000Z", n)])
    assert len(list(tmp_path.rglob("*.jsonl.gz"))) > 2
    query = RecordFilter(since=when("2026-11-30T05:00:00"))
    assert msgs(read_archive(tmp_path, query, interval="day")) == [f"rec-{n}" for n in range(5, 10)]


def test_a_member_being_written_is_skipped_not_an_error(tmp_path: Path) -> None:
    """A trailing half member (a sink mid-write) is left out; the earlier records are read."""
    w = writer(tmp_path, "a-0")
    commit(w, [rec("2026-11-30T10:00:00.000000Z", 1)])
    (path,) = tmp_path.rglob("*.jsonl.gz")
    member = gzip.compress(b'{"ts":"2026-11-30T10:00:01.000000Z","msg":"rec-2"}\n')
    with open(path, "ab") as handle:
        handle.write(member[: len(member) // 2])
    errors: list[str] = []
    assert msgs(read_archive(tmp_path, RecordFilter(), on_error=errors.append)) == ["rec-1"]
    assert errors == []
    with open(path, "ab") as handle:
        handle.write(member[len(member) // 2 :])
    assert [len(data.splitlines()) for data, _ in members(str(path))] == [1, 1]


def test_a_corrupt_member_is_reported_and_the_rest_read(tmp_path: Path) -> None:
    """Garbage between members is reported with the file and offset; later members still count."""
    w = writer(tmp_path, "a-0")
    commit(w, [rec("2026-11-30T10:00:00.000000Z", 1)])
    (path,) = tmp_path.rglob("*.jsonl.gz")
    good = path.stat().st_size
    with open(path, "ab") as handle:
        handle.write(b"\x1f\x8b\x08\x00garbage!garbage!")
    w.reopen()
    commit(w, [rec("2026-11-30T10:00:02.000000Z", 3)])
    errors: list[str] = []
    assert msgs(read_archive(tmp_path, RecordFilter(), on_error=errors.append)) == [
        "rec-1",
        "rec-3",
    ]
    assert len(errors) == 1 and f"byte {good}" in errors[0] and str(path) in errors[0]


def test_last_entries_reads_backwards_only_as_far_as_needed(tmp_path: Path) -> None:
    """-n N gives the newest N matches, oldest first."""
    w = writer(tmp_path, "a-0")
    for h in range(5):
        commit(
            w,
            [
                rec(f"2026-11-30T{h:02d}:00:00.000000Z", h * 2, "err"),
                rec(f"2026-11-30T{h:02d}:30:00.000000Z", h * 2 + 1, "info"),
            ],
        )
    query = RecordFilter(selector=compile_selector("*.err"))
    assert msgs(last_entries(tmp_path, query, 3)) == ["rec-4", "rec-6", "rec-8"]


def test_out_of_order_arrivals_within_a_file_are_sorted(tmp_path: Path) -> None:
    """Batches that arrive late (older ts after newer) still come out in ts order."""
    w = writer(tmp_path, "a-0")
    commit(w, [rec("2026-11-30T10:00:05.000000Z", 3), rec("2026-11-30T10:00:01.000000Z", 1)])
    commit(w, [rec("2026-11-30T10:00:02.000000Z", 2)])
    assert msgs(read_archive(tmp_path, RecordFilter())) == ["rec-1", "rec-2", "rec-3"]


def test_a_record_filed_by_arrival_sorts_with_its_partition(tmp_path: Path) -> None:
    """A ts the writer did not believe (far ahead, unreadable) is filed by arrival; the reader
    orders and range-checks it by that partition, so keys never go backwards."""
    from logrouter.wire import format_ts

    now = time.time()
    w = writer(tmp_path, "a-0")
    commit(w, [rec(format_ts(now - 7200), 1)])
    commit(w, [rec("2099-01-01T00:00:00.000000Z", 2), rec("not a time", 3), rec(format_ts(now), 4)])
    entries = list(read_archive(tmp_path, RecordFilter()))
    keys = [e.key for e in entries]
    assert keys == sorted(keys)
    assert msgs(entries) == ["rec-1", "rec-2", "rec-3", "rec-4"]
    until = RecordFilter(until=when("2098-01-01T00:00:00"), since=when("2000-01-01T00:00:00"))
    assert sorted(msgs(read_archive(tmp_path, until))) == ["rec-1", "rec-2", "rec-3", "rec-4"]


def test_unreadable_lines_are_reported_and_skipped(tmp_path: Path) -> None:
    """A line that is not a JSON object, or nested too deeply to decode, is reported with the
    file; the records around it are read."""
    w = writer(tmp_path, "a-0")
    commit(w, [rec("2026-11-30T10:00:00.000000Z", 1)])
    (path,) = tmp_path.rglob("*.jsonl.gz")
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    with open(path, "ab") as handle:
        handle.write(gzip.compress(b"not json\n" + deep + b"\n"))
    w.reopen()
    commit(w, [rec("2026-11-30T10:00:02.000000Z", 3)])
    errors: list[str] = []
    assert msgs(read_archive(tmp_path, RecordFilter(), on_error=errors.append)) == [
        "rec-1",
        "rec-3",
    ]
    assert len(errors) == 2 and all(str(path) in e for e in errors)


def test_count_archive_counts_what_read_archive_yields(tmp_path: Path) -> None:
    """Counting (raw members where they decide, decoding elsewhere) gives the number of
    records the ordered read yields: selectors, a range cutting through partitions, fields."""
    severities = ("info", "err", "debug", "crit", "emerg", "warning")
    a, b = writer(tmp_path, "a-0"), writer(tmp_path, "b-1")
    for h in range(4):
        batch = [
            rec(f"2026-11-30T{h:02d}:{m:02d}:00.000000Z", h * 100 + m, severities[m % 6])
            for m in range(0, 60, 7)
        ]
        commit(a if h % 2 else b, batch)
    commit(a, [{**rec("2026-11-30T01:00:00.000000Z", 999, "err"), "fields": {"severity": "info"}}])
    queries = [
        RecordFilter(),
        RecordFilter(selector=compile_selector("*.err")),
        RecordFilter(selector=compile_selector("*.=emerg")),
        RecordFilter(selector=compile_selector("auth.!=info")),
        RecordFilter(
            selector=compile_selector("*.err"),
            since=when("2026-11-30T01:30:00"),
            until=when("2026-11-30T03:00:00"),
        ),
        RecordFilter(fields=(parse_field("msg=rec-999"),)),
    ]
    for query in queries:
        assert count_archive(tmp_path, query) == len(list(read_archive(tmp_path, query)))
    assert count_archive(tmp_path, queries[1]) > 0


def test_count_archive_reports_unreadable_lines_and_skips_them(tmp_path: Path) -> None:
    """A member of lines the writer did not write is decoded: bad lines reported, not counted."""
    w = writer(tmp_path, "a-0")
    commit(w, [rec("2026-11-30T10:00:00.000000Z", 1)])
    (path,) = tmp_path.rglob("*.jsonl.gz")
    with open(path, "ab") as handle:
        handle.write(gzip.compress(b'{"severity":"info"}\nnot json\n'))
    errors: list[str] = []
    assert count_archive(tmp_path, RecordFilter(), on_error=errors.append) == 2
    assert len(errors) == 1 and str(path) in errors[0]
