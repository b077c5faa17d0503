"""Django with ``LOGGING`` in settings.py: ``manage.py runserver`` and under gunicorn."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

from tests.servers.realserver import (
    APPS,
    GRACEFUL,
    REQUESTS,
    Route,
    Server,
    free_port,
    gunicorn,
    serve_and_stop,
)

PROJECT = APPS / "djproj"


def test_runserver_every_record_once(route: Route, servers: Callable[..., Server]) -> None:
    """manage.py runserver --noreload (threads, one process), 500 requests to one view.

    Every record is on the broker while it runs; the import record (WSGI application
    loaded) arrives once; after Ctrl-C (SIGINT) nothing is lost or twice.
    """
    port = free_port()
    argv = [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"]
    server = servers("runserver", argv, cwd=PROJECT)
    server.wait_port(port)
    problems = serve_and_stop(
        server,
        port,
        route,
        REQUESTS,
        workers=[server.pid],
        import_pids=[server.pid],
        stop_signal=signal.SIGINT,
    )
    assert problems == [], "\n".join(problems) + "\n" + server.output()


def test_under_gunicorn_preload(route: Route, servers: Callable[..., Server]) -> None:
    """gunicorn djproj.wsgi --preload -w 4: settings' LOGGING configured in the master.

    Every record of every worker is on the broker while it runs (all 4 pids); the
    master's import record arrives once; a graceful stop returns before
    --graceful-timeout; nothing lost or twice.
    """
    server, port = gunicorn(servers, "--preload", "--chdir", str(PROJECT), app="djproj.wsgi")
    workers = server.wait_children(4)
    problems = serve_and_stop(
        server,
        port,
        route,
        REQUESTS,
        workers=workers,
        import_pids=[server.pid],
        stop_within=GRACEFUL,
    )
    assert problems == [], "\n".join(problems) + "\n" + server.output()
