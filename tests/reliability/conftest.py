"""Fixtures of the fault suite: one private node for the session, a pipeline per test,
and the counts table (a terminal summary, and ``results.RESULTS_FILE`` outside the work
tree: ``$LOGROUTER_RESULTS_DIR/reliability-last-run.json``, default in the temp dir).
``python -m tests.reliability.results`` prints that file as the docs' Markdown table."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.rabbit_nodes import RabbitNode
from tests.reliability.harness import RESULTS, Pipeline
from tests.reliability.results import markdown_table, merge_results


@pytest.fixture
def node(private_node: RabbitNode) -> RabbitNode:
    """The session's private node (tests/helpers/rabbit_nodes.py ``private_node``), running
    and alarm-free at the start and end of a test."""
    return private_node


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
    """Merge this run's scenario counts into the results file (scenarios not run are kept)."""
    if RESULTS:
        merge_results([c.as_dict() | {"ok": c.ok} for c in RESULTS], sys.argv[1:])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """This run's scenario counts, as a Markdown table."""
    if not RESULTS:
        return
    terminalreporter.section("fault suite: lost / duplicated / unexpected")
    for line in markdown_table([c.as_dict() for c in RESULTS]):
        terminalreporter.write_line(line)
