"""Throughput of the sink writers against a plain "render + write + fsync" loop.

    .venv/bin/python -m bench.sink_writers [--records N] [--batch N]

Prints records/s for: the baseline (render with the same format, one write and
one fsync per batch of 500, a single file), the file writer (write + flush(fsync)
+ checkpoint per batch; one file, then 4 facility files, i.e. 4 fsyncs per
batch), and the archive writer (gzip member per
batch, fsync per batch), each as a ratio of the baseline. Figures drift between
runs; compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from logrouter.config import DEFAULT_FILE_FORMAT, ArchiveOptions, FileOptions
from logrouter.render import render_line
from logrouter.sinks.archive import ArchiveWriter
from logrouter.sinks.file import FileWriter

FACILITIES = ("auth", "mail", "billing", "kern")


def records(count: int) -> list[dict[str, Any]]:
    """Records as wire.decode gives them (the handler's schema)."""
    return [
        {
            "v": 1,
            "ts": f"2024-05-01T10:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}000Z",
            "host": "web1",
            "app": "billing",
            "pid": 4242,
            "thread": "MainThread",
            "logger": "billing.api",
            "facility": FACILITIES[i % len(FACILITIES)],
            "severity": "err",
            "level": "ERROR",
            "msg": f"user {i} logged in from 10.0.{i % 256}.{i * 7 % 256}",
            "src": {"file": "/srv/app/api.py", "line": 120, "func": "login"},
            "fields": {"request_id": f"r-{i}"},
            "id": f"0f1e2d3c-{i:012d}",
        }
        for i in range(count)
    ]


def baseline(base: Path, recs: list[dict[str, Any]], batch: int) -> None:
    """render + one write + one fsync per batch, one file."""
    fd = os.open(base / "plain.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        for start in range(0, len(recs), batch):
            chunk = recs[start : start + batch]
            data = "".join(render_line(r, DEFAULT_FILE_FORMAT) + "\n" for r in chunk)
            os.write(fd, data.encode())
            os.fsync(fd)
    finally:
        os.close(fd)


def file_writer(base: Path, recs: list[dict[str, Any]], batch: int, template: str) -> None:
    """The file writer as the consumer drives it."""
    options = FileOptions(
        path=str(base / "files" / template),
        base_dir=base / "files",
        format=DEFAULT_FILE_FORMAT,
        rotate_bytes=0,
        rotate_interval=None,
        keep=7,
        max_open_files=64,
        file_mode=0o640,
    )
    writer = FileWriter(options)
    for start in range(0, len(recs), batch):
        writer.write(recs[start : start + batch])
        writer.flush(True)
        writer.checkpoint()
    writer.close()


def archive_writer(base: Path, recs: list[dict[str, Any]], batch: int) -> None:
    """The archive writer as the consumer drives it."""
    options = ArchiveOptions(
        dir=base / "archive",
        compression="gzip",
        compresslevel=6,
        rotate_bytes=64 << 20,
        rotate_interval="hour",
    )
    writer = ArchiveWriter(options, instance="bench")
    for start in range(0, len(recs), batch):
        writer.write(recs[start : start + batch])
        writer.flush(True)
        writer.checkpoint()
    writer.close()


Loop = Callable[[Path, list[dict[str, Any]], int], None]


def once(run: Loop, recs: list[dict[str, Any]], batch: int) -> float:
    """Records/s of one run in a fresh directory."""
    with tempfile.TemporaryDirectory(prefix="logrouter-bench-") as tmp:
        started = time.perf_counter()
        run(Path(tmp), recs, batch)
        return len(recs) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    """Run the loops interleaved (best of --rounds each) and print records/s and ratios."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    recs = records(args.records)
    runs: list[tuple[str, Loop]] = [
        ("plain render+write+fsync", baseline),
        ("file writer, 1 file", lambda b, r, n: file_writer(b, r, n, "errors.log")),
        ("file writer, 4 files", lambda b, r, n: file_writer(b, r, n, "{facility}.log")),
        ("archive writer (gzip 6)", archive_writer),
    ]
    best = dict.fromkeys((name for name, _ in runs), 0.0)
    for _ in range(args.rounds):  # interleaved: a noisy neighbour hurts every contender alike
        for name, run in runs:
            best[name] = max(best[name], once(run, recs, args.batch))
    base = best[runs[0][0]]
    print(f"records={args.records} batch={args.batch} fsync per batch, best of {args.rounds}")
    for name, _ in runs:
        print(f"{name:28} {best[name]:>10,.0f} rec/s  {best[name] / base:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
