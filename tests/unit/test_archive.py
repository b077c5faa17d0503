"""The archive writer: lossless gzip JSON Lines, date partitions, a gzip member per batch."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from logrouter.config import ArchiveOptions
from logrouter.sinks.archive import (
    PARALLEL_BYTES,
    ArchiveWriter,
    body_line,
    compress_lines,
    with_sender,
)

MIB = 1024 * 1024


def opts(base: Path, **kw: Any) -> ArchiveOptions:
    """ArchiveOptions with the config's defaults."""
    values: dict[str, Any] = {
        "dir": base,
        "compression": "gzip",
        "compresslevel": 6,
        "rotate_bytes": 64 * MIB,
        "rotate_interval": "hour",
    }
    values.update(kw)
    return ArchiveOptions(**values)


def rec(i: int, ts: str = "2024-05-01T10:11:12.345678Z", **kw: Any) -> dict[str, Any]:
    """A full record, with the odd keys a foreign or rich record may have."""
    record: dict[str, Any] = {
        "v": 1,
        "ts": ts,
        "host": "web1",
        "app": "billing",
        "pid": 42,
        "facility": "auth",
        "severity": "err",
        "msg": f"message {i} — ünïcode \u2028 and \n newline",
        "exc": "Traceback:\n  boom",
        "src": {"file": "a.py", "line": 3, "func": "f"},
        "fields": {"user": "bob", "n": i, "nested": [1, {"x": None}], "f": 1.5},
        "id": f"id-{i}",
    }
    record.update(kw)
    return record


def commit(writer: ArchiveWriter, records: list[dict[str, Any]]) -> dict[str, int]:
    """What the consumer does per batch: write, flush with fsync, checkpoint."""
    writer.write(records)
    writer.flush(True)
    return writer.checkpoint()


def archive_files(base: Path) -> list[str]:
    """Relative paths of every archive file."""
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


def zcat(path: Path) -> subprocess.CompletedProcess[bytes]:
    """The real zcat on ``path``."""
    return subprocess.run(["zcat", str(path)], capture_output=True, check=False, timeout=30)


def test_round_trip_is_lossless_with_gzip_open(tmp_path: Path) -> None:
    """Every record comes back equal (all keys, id, nested fields) through gzip.open."""
    writer = ArchiveWriter(opts(tmp_path), instance="web1-42")
    records = [rec(i) for i in range(10)]
    commit(writer, records[:4])
    commit(writer, records[4:])
    writer.close()
    (path,) = tmp_path.rglob("*.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        back = [json.loads(line) for line in handle]
    assert back == records


def test_lone_surrogates_survive(tmp_path: Path) -> None:
    """A msg with a lone surrogate (valid in JSON, not in UTF-8) is kept, file stays UTF-8."""
    writer = ArchiveWriter(opts(tmp_path), instance="i")
    records = [rec(1, msg="bad \ud800 half"), rec(2)]
    commit(writer, records)
    (path,) = tmp_path.rglob("*.jsonl.gz")
    text = gzip.decompress(path.read_bytes()).decode("utf-8")
    assert [json.loads(line) for line in text.splitlines()] == records


def test_real_zcat_reads_every_member(tmp_path: Path) -> None:
    """Plain zcat prints all records of a file written in several batches."""
    writer = ArchiveWriter(opts(tmp_path), instance="i")
    for batch in range(5):
        commit(writer, [rec(batch * 3 + k) for k in range(3)])
    (path,) = tmp_path.rglob("*.jsonl.gz")
    done = zcat(path)
    assert done.returncode == 0
    ids = [json.loads(line)["id"] for line in done.stdout.decode().splitlines()]
    assert ids == [f"id-{i}" for i in range(15)]


def test_partitions_by_record_time_hourly_and_daily(tmp_path: Path) -> None:
    """Files are dir/YYYY/MM/DD/<instance>-HH.jsonl.gz (hour) or <instance>.jsonl.gz (day)."""
    hourly = ArchiveWriter(opts(tmp_path / "h"), instance="web1-42")
    daily = ArchiveWriter(opts(tmp_path / "d", rotate_interval="day"), instance="web1-42")
    batch = [
        rec(1, ts="2024-05-01T10:00:00.000000Z"),
        rec(2, ts="2024-05-01T11:59:59.999999Z"),
        rec(3, ts="2023-12-31T23:00:00+00:00"),
        rec(4, ts="2024-05-01T12:30:00+02:00"),
    ]
    commit(hourly, batch)
    commit(daily, batch)
    assert archive_files(tmp_path / "h") == [
        "2023/12/31/web1-42-23.jsonl.gz",
        "2024/05/01/web1-42-10.jsonl.gz",
        "2024/05/01/web1-42-11.jsonl.gz",
    ]
    assert archive_files(tmp_path / "d") == [
        "2023/12/31/web1-42.jsonl.gz",
        "2024/05/01/web1-42.jsonl.gz",
    ]
    with gzip.open(tmp_path / "h/2024/05/01/web1-42-10.jsonl.gz", "rt") as handle:
        assert [json.loads(line)["id"] for line in handle] == ["id-1", "id-4"]


def test_size_rotation_starts_a_numbered_file(tmp_path: Path) -> None:
    """Past rotate_bytes the next batch goes to <instance>-HH-1; the checkpoint names it at 0."""
    writer = ArchiveWriter(opts(tmp_path, rotate_bytes=300), instance="i")
    first = commit(writer, [rec(i) for i in range(20)])
    day = tmp_path / "2024/05/01"
    assert first[str(day / "i-10.jsonl.gz")] >= 300
    assert first[str(day / "i-10-1.jsonl.gz")] == 0
    commit(writer, [rec(100)])
    assert archive_files(tmp_path) == ["2024/05/01/i-10-1.jsonl.gz", "2024/05/01/i-10.jsonl.gz"]
    with gzip.open(day / "i-10-1.jsonl.gz", "rt") as handle:
        assert [json.loads(line)["id"] for line in handle] == ["id-100"]


def test_torn_last_member_leaves_earlier_records_readable(tmp_path: Path) -> None:
    """A crash mid-write (last member cut short): zcat still prints every earlier record,
    and rollback to the last checkpoint gives a file zcat reads cleanly."""
    writer = ArchiveWriter(opts(tmp_path), instance="i")
    committed = commit(writer, [rec(i) for i in range(3)])
    commit(writer, [rec(i) for i in range(3, 6)])
    committed = {**committed, **commit(writer, [rec(i) for i in range(6, 9)])}
    writer.write([rec(i) for i in range(9, 40)])  # the batch a crash tears
    (path,) = tmp_path.rglob("*.jsonl.gz")
    full = path.stat().st_size
    torn = committed[str(path)] + (full - committed[str(path)]) // 2
    os.truncate(path, torn)
    done = zcat(path)
    assert done.returncode != 0  # "unexpected end of file"
    ids = [json.loads(line)["id"] for line in done.stdout.decode().splitlines()[:9]]
    assert ids == [f"id-{i}" for i in range(9)]
    ArchiveWriter(opts(tmp_path), instance="i").rollback(committed)
    clean = zcat(path)
    assert clean.returncode == 0
    assert len(clean.stdout.decode().splitlines()) == 9


def test_unwritable_directory_raises_with_path_and_recovers(tmp_path: Path) -> None:
    """A file where a partition directory should be: the records for it are refused with a
    reason naming it (the rest of the batch is written); once it is gone, writing works."""
    (tmp_path / "2024").write_text("in the way")
    writer = ArchiveWriter(opts(tmp_path), instance="i")
    refused = writer.write([rec(1), rec(2, ts="2025-01-01T00:00:00Z")])
    assert [(index, str(tmp_path / "2024") in reason) for index, reason in refused] == [(0, True)]
    assert archive_files(tmp_path) == ["2024", "2025/01/01/i-00.jsonl.gz"]
    (tmp_path / "2024").unlink()
    commit(writer, [rec(1)])
    assert archive_files(tmp_path) == ["2024/05/01/i-10.jsonl.gz", "2025/01/01/i-00.jsonl.gz"]


def test_make_writer_builds_an_archive_writer_from_routing_toml(tmp_path: Path) -> None:
    """A [sinks.x] type = "archive" table of a real config gives a working archive writer."""
    from logrouter.config import parse_config
    from logrouter.sinks import make_writer

    text = f"""
[sinks.archive]
type = "archive"
match = "*.*"
dir = "{tmp_path}"
"""
    config = parse_config(text, tmp_path / "routing.toml")
    writer = make_writer(config.sinks["archive"], instance="host-9")
    writer.write([rec(1)])
    writer.flush(True)
    assert archive_files(tmp_path) == ["2024/05/01/host-9-10.jsonl.gz"]


def test_bogus_record_times_are_partitioned_by_arrival(tmp_path: Path) -> None:
    """ts "9999-99-99T99...", Arabic-Indic digits, or a year ahead: the record goes to the
    partition of its arrival (now), never to a directory named by the sender; kept as sent."""
    writer = ArchiveWriter(opts(tmp_path), instance="i")
    bogus = ["9999-99-99T99:99:99Z", "\u0662\u0660\u0662\u0664-01-01T00:00:00Z"]
    bogus.append(f"{datetime.now(UTC).year + 1}-01-01T00:00:00Z")
    before = datetime.now(UTC)
    commit(writer, [rec(i, ts=ts) for i, ts in enumerate(bogus)])
    after = datetime.now(UTC)
    allowed = {f"{t:%Y/%m/%d}/i-{t:%H}.jsonl.gz" for t in (before, after)}
    files = archive_files(tmp_path)
    assert len(files) == 1 and files[0] in allowed
    with gzip.open(tmp_path / files[0], "rb") as handle:
        assert [json.loads(line)["ts"] for line in handle] == bogus


def test_a_large_batch_compressed_in_two_members_reads_back_in_order(tmp_path: Path) -> None:
    """A batch over PARALLEL_BYTES is compressed as two members at once (one in the
    compressor thread): zcat and gzip.open give every line back, in order, and the
    file is what one member of the same lines would decompress to."""
    lines = [json.dumps(rec(i)).encode() + b"\n" for i in range(3000)]
    assert sum(map(len, lines)) >= PARALLEL_BYTES
    data = compress_lines(lines, 6, parallel=True)
    assert gzip.decompress(data) == b"".join(lines)
    assert gzip.decompress(compress_lines(lines, 6, parallel=False)) == b"".join(lines)
    path = tmp_path / "two.jsonl.gz"
    path.write_bytes(data + compress_lines(lines[:2], 6, parallel=True))
    done = zcat(path)
    assert done.returncode == 0
    assert done.stdout == b"".join(lines) + b"".join(lines[:2])


def test_a_large_batch_through_the_writer_is_readable_with_zcat(tmp_path: Path) -> None:
    """The writer's batches of thousands of records (two members each when the process
    has two CPUs) leave a file plain zcat reads whole, records in write order."""
    writer = ArchiveWriter(opts(tmp_path), instance="i")
    records = [rec(i) for i in range(6000)]
    commit(writer, records[:2500])
    commit(writer, records[2500:])
    writer.close()
    (path,) = tmp_path.rglob("*.jsonl.gz")
    done = zcat(path)
    assert done.returncode == 0
    assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == [
        f"id-{i}" for i in range(6000)
    ]


def test_compression_runs_through_the_offload_hook_and_the_file_is_the_same(
    tmp_path: Path,
) -> None:
    """A writer whose ``offload`` hook is set (the sink runs the step in its fsync
    thread) compresses every batch through it, before anything is written, and
    leaves the same file as a writer without the hook."""
    records = [rec(i, ts=f"2024-05-01T1{i % 3}:11:12.345678Z") for i in range(50)]
    plain = ArchiveWriter(opts(tmp_path / "plain"), instance="i")
    hooked = ArchiveWriter(opts(tmp_path / "hooked"), instance="i")
    steps: list[list[str]] = []

    def offload(step: Any) -> None:
        steps.append(archive_files(tmp_path / "hooked") if (tmp_path / "hooked").exists() else [])
        step()

    hooked.offload = offload
    for writer in (plain, hooked):
        commit(writer, records)
        commit(writer, records[:7])
        writer.close()
    assert len(steps) == 2 and steps[0] == []  # compressed before the first file existed
    files = archive_files(tmp_path / "plain")
    assert files == archive_files(tmp_path / "hooked") and len(files) == 3
    for name in files:
        assert (tmp_path / "plain" / name).read_bytes() == (tmp_path / "hooked" / name).read_bytes()


def test_a_batch_message_of_one_known_hour_is_archived_as_its_lines(tmp_path: Path) -> None:
    """A handler batch message whose records are all of one UTC hour the archive already
    partitions by (its records share one ts then) and one with a ts of another form:
    the archive files are those the records with their own ts give."""
    from types import SimpleNamespace

    from logrouter import batchwire, wire
    from logrouter.sinks.archive import partition_of
    from logrouter.sinks.batch import Delivery, classify_pending

    def fresh(i: int, ts: str) -> dict[str, Any]:
        return {k: v for k, v in rec(i, ts=ts, msg="m").items() if k not in ("id", "exc")}

    def body(n: int, stamps: list[str]) -> bytes:
        lines = [
            batchwire.record_line(wire.encode(fresh(i, ts)), f"k{n}-{i}")
            for i, ts in enumerate(stamps)
        ]
        return batchwire.encode_batch(lines)

    partition_of("2024-05-01T10:00:00Z", "hour")  # the hour is known
    stamps = [f"2024-05-01T10:{m:02d}:00.5Z" for m in range(50)]
    odd = [*stamps[:3], "2024-05-01T10:59:59+00:00", "2024-05-01T10:99:00Z"]
    pending = [
        Delivery(
            n,
            "auth.err",
            body(n, ts),
            SimpleNamespace(content_type=batchwire.CONTENT_TYPE, app_id="billing"),
        )
        for n, ts in enumerate((stamps, odd), 1)
    ]
    outcome = classify_pending(pending, lambda f, s: True, set(), keep_lines=True)
    assert len(outcome.records) == 55 and not outcome.rejected
    shared = ArchiveWriter(opts(tmp_path / "shared"), instance="i")
    own = ArchiveWriter(opts(tmp_path / "own"), instance="i")
    shared.write_lines(outcome.records, outcome.lines)
    own.write_lines([{"ts": ts} for ts in stamps + odd], outcome.lines)
    for writer in (shared, own):
        writer.flush(True)
        writer.close()
    files = archive_files(tmp_path / "own")
    assert files == archive_files(tmp_path / "shared")
    for name in files:
        assert (tmp_path / "own" / name).read_bytes() == (tmp_path / "shared" / name).read_bytes()


def deep(levels: int) -> list[Any]:
    """A value nested ``levels`` deep (what a decoder takes and json.dumps cannot write)."""
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


def test_a_record_too_deep_to_encode_is_refused_alone(tmp_path: Path) -> None:
    """A record nested deeper than the JSON encoder goes (any broker user can send one
    that decodes): that record is refused with the reason, the others are written (it
    used to raise out of the write, and the redelivered batch wedged the sink)."""
    writer = ArchiveWriter(opts(tmp_path), instance="i")
    records = [rec(0), rec(1, fields={"x": deep(5000)}), rec(2)]
    assert writer.write(records) == [(1, "record nested too deep to write as JSON")]
    writer.flush(True)
    writer.close()
    (path,) = tmp_path.rglob("*.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        assert [json.loads(line)["msg"] for line in handle] == [rec(0)["msg"], rec(2)["msg"]]


def test_a_body_line_ends_with_its_id_then_the_validated_sender() -> None:
    """body_line/with_sender add the sender as the last key of the line as it came, after
    an id decoding added, quoted as JSON (a login with a quote or a separator stays one
    valid line); without a sender the line is unchanged."""
    body = b'{"msg":"x"} '
    assert body_line(body, None) == b'{"msg":"x"} \n'
    assert body_line(body, "m1", "alice") == b'{"msg":"x","id":"m1","sender":"alice"}\n'
    odd = 'a"b\u2028'
    line = body_line(body, None, odd)
    assert line is not None and line.count(b"\n") == 1 and json.loads(line)["sender"] == odd
    assert with_sender(b'{"msg":"x"}\n', "bob") == b'{"msg":"x","sender":"bob"}\n'
    assert with_sender(b'{"msg":"x"}', None) == b'{"msg":"x"}\n'
