"""uvicorn --workers 4: spawned (not forked) processes serving an asyncio app."""

from __future__ import annotations

from collections.abc import Callable

from tests.servers.realserver import BIN, REQUESTS, Route, Server, free_port, serve_and_stop


def test_four_spawned_workers_every_record_once(
    route: Route, servers: Callable[..., Server]
) -> None:
    """uvicorn --workers 4, 500 requests to an ASGI app that configures logging at import.

    Each worker imports the app (its import record arrives once, 4 in all); every record
    of every request is on the broker while the server runs, per worker pid; after a
    graceful stop (SIGTERM) nothing is lost or twice.
    """
    port = free_port()
    argv = [str(BIN / "uvicorn"), "asgi_app:app", "--workers", "4", "--port", str(port)]
    server = servers("uvicorn", [*argv, "--no-access-log", "--timeout-graceful-shutdown", "5"])
    server.wait_port(port)
    ready = route.drain(lambda d: len(d.per_pid("import")) >= 4)
    workers = list(ready.per_pid("import"))
    problems = serve_and_stop(server, port, route, REQUESTS, workers=workers, import_pids=workers)
    assert problems == [], "\n".join(problems) + "\n" + server.output()
