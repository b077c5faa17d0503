"""Crash between a batch's write and its journal commit: recovery cuts every file back.

The kill is simulated in-process: a batch is written through the writer (the
journal hook records its intents) and the process "dies" before the journal
commit; a fresh journal and writer then recover as a restarted sink does, and
the batch is written again as the broker would redeliver it.
"""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path
from typing import Any

from logrouter.config import ArchiveOptions, FileOptions
from logrouter.sinks.archive import ArchiveWriter
from logrouter.sinks.file import FileWriter
from logrouter.sinks.journal import Journal, intent_line, parse_journal

QUEUE = "logrouter.crash"


def file_options(base: Path, **kw: Any) -> FileOptions:
    values: dict[str, Any] = {
        "path": str(base / "{facility}.log"),
        "base_dir": base,
        "format": "{facility} {msg}",
        "rotate_bytes": 0,
        "rotate_interval": None,
        "keep": 5,
        "max_open_files": 16,
        "file_mode": 0o640,
    }
    values.update(kw)
    return FileOptions(**values)


def archive_options(base: Path) -> ArchiveOptions:
    return ArchiveOptions(
        dir=base,
        compression="gzip",
        compresslevel=6,
        rotate_bytes=0,
        rotate_interval="hour",
    )


def rec(i: int, facility: str = "auth", hour: str = "10") -> dict[str, Any]:
    return {
        "ts": f"2024-05-01T{hour}:11:12.345678Z",
        "facility": facility,
        "severity": "err",
        "msg": f"message {i}",
        "id": f"id-{i}",
    }


def start(state: Path, make: Any) -> tuple[Journal, Any]:
    """What a (re)started sink does: open the journal, roll the writer back, hook it."""
    journal = Journal(state, QUEUE, keep_ids=100)
    recovered = journal.open()
    writer = make()
    if recovered.checkpoint:
        writer.rollback(recovered.checkpoint)
    journal.recovered()
    writer.intent = journal.intent
    return journal, writer


def commit(journal: Journal, writer: Any, records: list[dict[str, Any]]) -> None:
    writer.write(records)
    writer.flush(True)
    journal.commit(writer.checkpoint(), [r["id"] for r in records], fsync=True)


def killed_mid_batch(writer: Any, records: list[dict[str, Any]]) -> None:
    """Write and flush a batch, then 'die' before its journal commit (nothing else runs)."""
    writer.write(records)
    writer.flush(True)


def file_numbers(path: Path) -> list[int]:
    return [int(line.rsplit(" ", 1)[1]) for line in path.read_text().splitlines()]


def test_file_first_created_by_the_killed_batch_holds_no_duplicate(tmp_path: Path) -> None:
    """A file created by the batch in flight at the kill is removed; redelivery writes it once."""
    out, state = tmp_path / "out", tmp_path / "state"
    journal, writer = start(state, lambda: FileWriter(file_options(out)))
    commit(journal, writer, [rec(1), rec(2)])
    in_flight = [rec(3), rec(4, "mail"), rec(5, "kern")]
    killed_mid_batch(writer, in_flight)
    journal.close()  # SIGKILL: the lock goes, nothing is committed

    journal, writer = start(state, lambda: FileWriter(file_options(out)))
    commit(journal, writer, in_flight)  # the broker redelivers the unacked batch
    journal.close()
    assert file_numbers(out / "auth.log") == [1, 2, 3]
    assert file_numbers(out / "mail.log") == [4]
    assert file_numbers(out / "kern.log") == [5]


def test_file_rotated_by_the_killed_batch_holds_no_duplicate(tmp_path: Path) -> None:
    """A kill after checkpoint() rotated the file (name -> name.1) but before the journal
    commit: the uncommitted lines are cut from name.1, so every record is there once."""
    out, state = tmp_path / "out", tmp_path / "state"

    def make() -> FileWriter:
        return FileWriter(file_options(out, rotate_bytes=40, keep=0))

    journal, writer = start(state, make)
    commit(journal, writer, [rec(1)])
    batch = [rec(2), rec(3)]
    killed_mid_batch(writer, batch)
    writer.checkpoint()  # rotates auth.log (past 40 bytes) to auth.log.1, then the kill
    journal.close()

    journal, writer = start(state, make)
    commit(journal, writer, batch)
    commit(journal, writer, [rec(4)])
    journal.close()
    numbers = sorted(n for path in out.iterdir() if path.stat().st_size for n in file_numbers(path))
    assert numbers == [1, 2, 3, 4]


def test_archive_hour_file_of_the_killed_batch_is_removed(tmp_path: Path) -> None:
    """An archive file first created by the killed batch (a new hour) is removed on
    recovery; after redelivery each record is archived once and every file zcats cleanly."""
    out, state = tmp_path / "archive", tmp_path / "state"

    def make() -> ArchiveWriter:
        return ArchiveWriter(archive_options(out), instance="h-0")

    journal, writer = start(state, make)
    commit(journal, writer, [rec(1, hour="10")])
    batch = [rec(2, hour="10"), rec(3, hour="11")]
    killed_mid_batch(writer, batch)
    journal.close()

    journal, writer = start(state, make)
    commit(journal, writer, batch)
    journal.close()
    files = sorted(out.rglob("*.jsonl.gz"))
    assert [f.name for f in files] == ["h-0-10.jsonl.gz", "h-0-11.jsonl.gz"]
    ids = []
    for path in files:
        subprocess.run(["gzip", "-t", str(path)], check=True)
        with gzip.open(path, "rt") as handle:
            ids += [json.loads(line)["id"] for line in handle]
    assert sorted(ids) == ["id-1", "id-2", "id-3"]


def test_intent_after_the_last_commit_cuts_back_absent_means_remove() -> None:
    """Only intents after the last commit count; the smaller size wins, -1 means remove."""
    lines = [
        intent_line("/a", 0),
        b'{"c":{"/a":10},"ids":["1"]}\n',  # commits clear earlier intents
        intent_line("/a", 10),
        intent_line("/b", -1),
        intent_line("/c", 7),
    ]
    state = parse_journal(lines, keep_ids=10)
    assert state.checkpoint == {"/a": 10, "/b": -1, "/c": 7}


def test_steady_writes_to_known_files_journal_no_intent(tmp_path: Path) -> None:
    """Batches that only append to files the last commit knows add no intent line."""
    out, state = tmp_path / "out", tmp_path / "state"
    journal, writer = start(state, lambda: FileWriter(file_options(out)))
    commit(journal, writer, [rec(1)])
    assert journal.path is not None
    size = journal.path.stat().st_size
    writer.write([rec(2)])
    writer.flush(True)
    assert journal.path.stat().st_size == size
    journal.close()
