"""Fixtures of the fault suite: one private node for the session, a pipeline per test,
and the counts table (tests/reliability/last-run.json + a terminal summary)."""

from __future__ import annotations

import contextlib
import datetime
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import RESULTS, Pipeline
from rabbit_nodes import RabbitNode, started_node

LAST_RUN = Path(__file__).with_name("last-run.json")


@pytest.fixture(scope="session")
def rel_node() -> Iterator[RabbitNode]:
    """One private RabbitMQ node for the fault scenarios (always stopped at the end)."""
    with started_node("lrrel") as node:
        yield node


@pytest.fixture
def node(rel_node: RabbitNode) -> Iterator[RabbitNode]:
    """The session's private node, running and alarm-free at the start and end of a test."""
    if not rel_node.is_running():
        rel_node.start()
    yield rel_node
    if not rel_node.is_running():
        rel_node.start()
    rel_node.set_memory_alarm(False)
    rel_node.set_disk_alarm(False)


@pytest.fixture
def pipeline_factory(tmp_path: Path) -> Iterator[Any]:
    """Factory of Pipelines (see harness.py); every one is cleaned up after the test."""
    made: list[Pipeline] = []

    def make(url: str, **options: Any) -> Pipeline:
        pipeline = Pipeline(tmp_path / f"p{len(made)}", url, **options)
        pipeline.tmp.mkdir(parents=True, exist_ok=True)
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        pipeline.cleanup()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Merge this run's scenario counts into last-run.json (scenarios not run are kept)."""
    if not RESULTS:
        return
    previous: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        previous = json.loads(LAST_RUN.read_text())
    scenarios = {s["scenario"]: s for s in previous.get("scenarios", [])}
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    for counts in RESULTS:
        scenarios[counts.scenario] = {**counts.as_dict(), "ok": counts.ok, "when": now}
    LAST_RUN.write_text(
        json.dumps(
            {
                "command": "python -m pytest " + " ".join(sys.argv[1:]),
                "updated": now,
                "scenarios": list(scenarios.values()),
            },
            indent=2,
        )
        + "\n"
    )


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


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """This run's scenario counts, as a Markdown table."""
    if not RESULTS:
        return
    terminalreporter.section("fault suite: lost / duplicated / unexpected")
    for line in markdown_table([c.as_dict() for c in RESULTS]):
        terminalreporter.write_line(line)
