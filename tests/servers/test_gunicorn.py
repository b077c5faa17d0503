"""gunicorn with 4 workers and an app that configures logging at import (issue 11).

Each scenario collects every problem it sees (lost, duplicated, per-pid counts, the
master's pre-fork record, a stop that needed gunicorn's SIGKILL) and asserts none.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.servers.realserver import (
    GRACEFUL,
    REQUESTS,
    Route,
    Server,
    complete,
    detail_problems,
    gunicorn,
    import_problems,
    load,
    lost_and_duplicated,
    record_problems,
    serve_and_stop,
    spooled_rows,
)


@pytest.mark.parametrize(
    ("worker_class", "preload", "batch"),
    [
        ("sync", True, "off"),
        ("gthread", True, "off"),
        ("sync", False, "off"),
        ("sync", True, "auto"),
    ],
    ids=["sync-preload", "gthread-preload", "sync", "sync-preload-batch"],
)
def test_every_record_of_every_worker_once(
    route: Route, servers: Callable[..., Server], worker_class: str, preload: bool, batch: str
) -> None:
    """gunicorn -w 4 (sync/gthread, with and without --preload), 500 requests; with
    ``batch="auto"`` each request logs 20 detail records more (a busy app).

    While the server runs, every record of every request is on the broker, counted per
    worker pid (all 4 present); the record logged at import arrives exactly once (from the
    master with --preload, from each worker without); a graceful stop returns before
    --graceful-timeout; after it nothing is lost and nothing arrived twice; with auto,
    the workers sent batches.
    """
    details = 20 if batch == "auto" else 0
    options = ["-k", worker_class] + (["--threads", "4"] if worker_class == "gthread" else [])
    server, port = gunicorn(
        servers,
        *options,
        *(["--preload"] if preload else []),
        LR_TEST_BATCH=batch,
        LR_TEST_DETAILS=str(details),
    )
    workers = server.wait_children(4)
    if not preload:  # a worker serves once it has imported the app (and logged so)
        route.drain(lambda d: len(d.per_pid("import")) >= 4)
    problems = serve_and_stop(
        server,
        port,
        route,
        REQUESTS,
        workers=workers,
        stop_within=GRACEFUL,
        import_pids=[server.pid] if preload else workers,
    )
    problems += detail_problems(route.drained, range(1, REQUESTS + 1), details)
    if batch == "auto" and not route.drained.batches:
        problems.append(f"no batch among {route.drained.messages} messages: auto never packed")
    assert problems == [], "\n".join(problems) + "\n" + server.output()


def test_recycled_workers_lose_nothing(route: Route, servers: Callable[..., Server]) -> None:
    """--preload --max-requests 50: workers exit and are replaced during 500 requests.

    Every record of every request is on the broker while the server runs (including those
    of workers that already exited), none twice, and after a graceful stop as well.
    """
    server, port = gunicorn(servers, "--preload", "--max-requests", "50")
    replies = load(port, range(1, REQUESTS + 1))
    problems = []
    pids = {r.pid for r in replies}
    if len(pids) <= 4:
        problems.append(f"only {len(pids)} worker pids served: no worker was recycled")
    problems += record_problems(route.drain(complete(replies)), replies, "while running")
    server.stop()
    final = route.settle()
    problems += record_problems(final, replies, "after stop")
    problems += import_problems(final, [server.pid])
    assert problems == [], "\n".join(problems) + "\n" + server.output()


@pytest.mark.parametrize("buffer_size", ["25000", "2"], ids=["memory", "through-spool"])
def test_worker_sigkilled_mid_traffic(
    route: Route, servers: Callable[..., Server], buffer_size: str, tmp_path: Path
) -> None:
    """One of 4 --preload workers is SIGKILLed while requests are in flight (at 3/4 of them).

    Bound (docs/handler.md): only records held in the killed worker's memory can be
    lost. Its last 200 reply says how many records it had logged and how many the
    broker had confirmed; that difference bounds its losses (confirmation only grows
    until the kill). Every record of the other workers arrives once; one of the killed worker
    arrives again only as the same message (its id), which sinks drop.
    With buffer_size=2 most records go through each worker's spool (the logging call
    spools what the full buffer cannot hold): the killed worker's spool is left behind
    and adopted by a live process, its rows replayed once: after the stop no spool holds
    a row.
    """
    server, port = gunicorn(servers, "--preload", LR_TEST_BUFFER_SIZE=buffer_size)
    half = REQUESTS // 2
    first = load(port, range(1, half + 1))
    victim = first[-1].pid
    kill_at = half + (REQUESTS - half) // 2

    def kill_victim(n: int) -> None:
        if n == kill_at:
            os.kill(victim, signal.SIGKILL)

    replies = first + load(port, range(half + 1, REQUESTS + 1), before=kill_victim)
    problems = []
    killed = [r for r in replies if r.pid == victim and r.status == 200]
    last = max(killed, key=lambda r: r.logged)
    if "confirmed" not in last.stats:
        problems.append(f"handler.stats has no 'confirmed' count: {last.stats}")
    elif last.stats["confirmed"] == 0:
        problems.append(f"killed worker {victim} had none of its {last.logged} records confirmed")
    bound = last.logged - last.stats.get("confirmed", 0)
    others = [r for r in replies if r.pid != victim]
    problems += record_problems(route.drain(complete(others)), others, "other workers, running")
    server.stop()
    final = route.settle()
    problems += record_problems(final, others, "other workers, after stop")
    lost, duplicated = lost_and_duplicated(final, (r.req for r in killed))
    if len(lost) > bound:
        problems.append(
            f"killed worker {victim}: {len(lost)} records lost, more than the {bound} its"
            f" last reply had unconfirmed (logged {last.logged}, stats {last.stats})"
        )
    # A record the broker confirmed just before the kill, its spool row not yet deleted, is
    # published again by the process that adopts the spool: the same message_id, which sinks
    # drop. Anything else arriving twice is a defect.
    repeated = [key for key in duplicated if len(final.ids_of(key)) > 1]
    if repeated:
        problems.append(
            f"killed worker {victim}: records arrived twice under different ids: {repeated[:5]}"
        )
    if left := spooled_rows(tmp_path / "cache"):
        problems.append(f"spools still hold rows after the stop: {left}")
    print(
        f"killed worker: {len(killed)} requests answered, lost {len(lost)} records, bound {bound},"
        f" stats at its last reply {last.stats}"
    )
    assert problems == [], "\n".join(problems) + "\n" + server.output()
