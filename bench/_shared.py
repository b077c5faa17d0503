"""Shared by benchmarks: the logging workload and writing results (docs/benchmarks.md)."""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
IP = "10.0.0.1"
#: Set: a quick smoke run (small N) whose figures are printed, never written.
SMOKE = bool(os.environ.get("LOGROUTER_BENCH_N"))


def bench_logger(handler: logging.Handler, name: str | None = None) -> logging.Logger:
    """A logger of its own (INFO, not propagating) with ``handler`` as its only handler."""
    log = logging.getLogger(name or f"bench.{uuid.uuid4().hex[:6]}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.handlers[:] = [handler]
    return log


def workload(log: logging.Logger, count: int) -> float:
    """Seconds for ``count`` calls of ``log.info("user %s logged in from %s", i, ip)``."""
    info = log.info
    start = time.perf_counter()
    for i in range(count):
        info("user %s logged in from %s", i, IP)
    return time.perf_counter() - start


def write_section(name: str, title: str, text: str, docs: Path = DOCS) -> None:
    """Put ``text`` under ``## title`` between ``<!-- name:begin/end -->`` (added at the end)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    section = f"{begin}\n## {title}\n\n{text}{end}\n"
    current = docs.read_text() if docs.exists() else "# Benchmarks\n\n"
    if begin in current and end in current:
        head, _, rest = current.partition(begin)
        _, _, tail = rest.partition(end)
        current = head + section + tail.lstrip("\n")
    else:
        current = current.rstrip("\n") + "\n\n" + section
    docs.write_text(current)


def publish(name: str, title: str, text: str) -> int:
    """Print the report; unless a smoke run, write bench/results/<name>.md and the docs
    section. Returns 0 (the benchmark's exit code)."""
    print(text)
    if SMOKE:
        print("(smoke run: LOGROUTER_BENCH_N is set, results not written)")
        return 0
    results = ROOT / "bench" / "results" / f"{name}.md"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(f"# {title}\n\n{text}")
    write_section(name, title, text)
    return 0
