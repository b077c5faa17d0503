"""WSGI app of ``bench/servers.py``: each request logs one record through one handler.

``LR_BENCH_HANDLER``: ``rabbit`` (logrouter.RabbitHandler to ``LR_BENCH_URL`` /
``LR_BENCH_EXCHANGE``), ``null`` (NullHandler), ``file`` (FileHandler on
``LR_BENCH_FILE``), ``queue`` (stdlib QueueHandler + QueueListener writing that file).
Loaded by each gunicorn worker (no --preload), so every process builds its own handler.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import time
from collections.abc import Callable, Iterable
from typing import Any

from logrouter import RabbitHandler


def _handler(kind: str) -> logging.Handler:
    if kind == "rabbit":
        return RabbitHandler(
            url=os.environ["LR_BENCH_URL"], exchange=os.environ["LR_BENCH_EXCHANGE"], app="bench"
        )
    if kind == "null":
        return logging.NullHandler()
    if kind == "file":
        return logging.FileHandler(os.environ["LR_BENCH_FILE"])
    if kind == "queue":
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        listener = logging.handlers.QueueListener(
            records, logging.FileHandler(os.environ["LR_BENCH_FILE"])
        )
        listener.start()
        return logging.handlers.QueueHandler(records)
    raise ValueError(f"LR_BENCH_HANDLER={kind!r}: rabbit, null, file or queue")


log = logging.getLogger("bench.app")
log.propagate = False
log.setLevel(logging.INFO)
log.addHandler(_handler(os.environ["LR_BENCH_HANDLER"]))


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Log one record per request, as a view would; answer the ns that call took."""
    start = time.perf_counter_ns()
    log.info("request %s from %s", environ["QUERY_STRING"], environ.get("REMOTE_ADDR"))
    took = time.perf_counter_ns() - start
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(took).encode()]
