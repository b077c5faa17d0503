"""Celery prefork workers (billiard children end with os._exit) publishing task records."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pytest
from celery import Celery

from tests.servers.realserver import (
    ARRIVAL_TIMEOUT,
    BIN,
    REQUESTS,
    Reply,
    Route,
    Server,
    complete,
    detail_problems,
    import_problems,
    record_problems,
    spooled_rows,
)


@pytest.fixture
def celery_queue(amqp_url: str, unique_name: Callable[[str], str]) -> Iterator[str]:
    """A task queue (and its direct exchange) unique to this test; deleted afterwards."""
    name = unique_name("celery")
    yield name
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        ch.queue_delete(name)
        ch.exchange_delete(name)
    finally:
        conn.close()


@pytest.mark.parametrize(("batch", "details"), [("off", 0), ("auto", 20)], ids=["off", "auto"])
def test_prefork_four_children_every_task_record_once(
    route: Route,
    servers: Callable[..., Server],
    celery_queue: str,
    tmp_path: Path,
    batch: str,
    details: int,
) -> None:
    """celery worker -c 4 --pool prefork, 500 tasks that log (an error every tenth; with
    ``batch="auto"`` 20 detail records more each, a busy worker).

    Every task run (traced to a file by the task: its pid and records logged) has its
    records on the broker while the worker runs, counted per child pid; the record logged
    when logging was configured (main process, before the pool forked) arrives exactly
    once; after a warm shutdown (SIGTERM) nothing is lost or twice; with auto, the
    children sent batches.
    """
    trace = tmp_path / "tasks.jsonl"
    argv = [str(BIN / "celery"), "-A", "celery_app", "worker", "-c", "4", "--pool", "prefork"]
    server = servers(
        "celery",
        [*argv, "--loglevel", "INFO"],
        LR_TEST_CELERY_QUEUE=celery_queue,
        LR_TEST_TRACE=str(trace),
        LR_TEST_BATCH=batch,
        LR_TEST_DETAILS=str(details),
    )
    # No need to wait for "ready": the tasks wait in their queue until the pool takes them.
    client = Celery("servers-client", broker=route.url)
    try:
        for n in range(1, REQUESTS + 1):
            client.send_task("servers.log", args=[n], queue=celery_queue)
    finally:
        client.close()
    runs = traced(trace, REQUESTS)
    problems = []
    if len(runs) != REQUESTS:
        problems.append(f"only {len(runs)} of {REQUESTS} tasks ran")
    problems += record_problems(route.drain(complete(runs)), runs, "while running")
    if server.pid in {r.pid for r in runs}:
        problems.append(f"tasks ran in the main process {server.pid}, not the pool")
    server.stop()
    final = route.settle()
    problems += record_problems(final, runs, "after stop")
    problems += import_problems(final, [server.pid])
    problems += detail_problems(final, (r.req for r in runs), details)
    if batch == "auto" and not final.batches:
        problems.append(f"no batch among {final.messages} messages: batch=auto never packed")
    if problems and (left := spooled_rows(tmp_path / "cache")):
        problems.append(f"rows left in the children's spools (not replayed here): {left}")
    assert problems == [], "\n".join(problems) + "\n" + server.output()


def traced(trace: Path, count: int, timeout: float = ARRIVAL_TIMEOUT) -> list[Reply]:
    """The task runs the trace file lists, once ``count`` are there (or ``timeout`` passed)."""
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = trace.read_text().splitlines() if trace.exists() else []
        if len(lines) >= count:
            break
        time.sleep(0.1)
    runs = [json.loads(line) for line in lines]
    return [Reply(r["req"], 200, r["pid"], r["logged"], r["stats"]) for r in runs]
