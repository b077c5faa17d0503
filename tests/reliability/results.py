"""The fault suite's results file, kept outside the work tree, and its Markdown table.

Every run of the fault scenarios merges its counts into ``RESULTS_FILE``
(``$LOGROUTER_RESULTS_DIR/reliability-last-run.json``; default: the temp dir), so a
test run never rewrites a tracked file. The table in docs/reliability.md is made
on purpose, by::

    .venv/bin/python -m tests.reliability.results [RESULTS_FILE]
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS_ENV = "LOGROUTER_RESULTS_DIR"


def results_file() -> Path:
    """Where runs write their counts: ``$LOGROUTER_RESULTS_DIR`` or the temp dir."""
    directory = os.environ.get(RESULTS_ENV) or os.path.join(tempfile.gettempdir(), "logrouter")
    return Path(directory) / "reliability-last-run.json"


def merge_results(rows: list[dict[str, Any]], argv: Sequence[str]) -> Path:
    """Merge ``rows`` (one per scenario) into the results file; returns its path."""
    path = results_file()
    previous: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        previous = json.loads(path.read_text())
    scenarios = {s["scenario"]: s for s in previous.get("scenarios", [])}
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    for row in rows:
        scenarios[row["scenario"]] = {**row, "when": now}
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "command": "python -m pytest " + " ".join(argv),
        "updated": now,
        "scenarios": list(scenarios.values()),
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    """The scenario counts as a Markdown table (what docs/reliability.md shows)."""
    lines = [
        "| scenario | records | lost | duplicated | unexpected | in files | in archive | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['records']:,} | {r['lost']} | {r['duplicated']} | "
            f"{r['unexpected']} | {r['in_files']:,} | {r['in_archive']:,} | {r['notes']} |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table of a results file (default: ``results_file()``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    path = Path(args[0]) if args else results_file()
    document = json.loads(path.read_text())
    print(f"<!-- {document['command']} ({document['updated']}) -->")
    print("\n".join(markdown_table(document["scenarios"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
