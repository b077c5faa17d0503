"""What every test app shares: the logging config users write, and one logged request.

Configured from the environment (set by tests/servers/conftest.py): ``LR_TEST_URL``,
``LR_TEST_EXCHANGE``, ``LR_TEST_FLUSH_TIMEOUT``, ``LR_TEST_BUFFER_SIZE``,
``LR_TEST_BATCH``, ``LR_TEST_DETAILS``. Every record the tests count carries ``kind``
(``import``, ``request``, ``detail``, ``error``) and, for requests,
``req`` (the request number) in its ``extra``, so a drained queue can be counted per pid
and per request.
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import Any

from logrouter import RabbitHandler

LOG = logging.getLogger("servers.app")
_logged = itertools.count(1)
_last_logged = 0


def logging_config() -> dict[str, Any]:
    """The dictConfig a user writes (Django's ``LOGGING`` is this dict)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "router": {
                "class": "logrouter.RabbitHandler",
                "url": os.environ["LR_TEST_URL"],
                "exchange": os.environ["LR_TEST_EXCHANGE"],
                "flush_timeout": os.environ.get("LR_TEST_FLUSH_TIMEOUT", "5"),
                "buffer_size": os.environ.get("LR_TEST_BUFFER_SIZE", "25000"),
                "batch": os.environ.get("LR_TEST_BATCH", "off"),
            }
        },
        "root": {"handlers": ["router"], "level": "INFO"},
    }


def _count() -> int:
    global _last_logged
    _last_logged = next(_logged)
    return _last_logged


def _fresh_count() -> None:
    global _logged, _last_logged
    _logged, _last_logged = itertools.count(1), 0


os.register_at_fork(after_in_child=_fresh_count)


def log_import() -> None:
    """The record a process logs when it configures logging (before any fork)."""
    LOG.info("app imported", extra={"kind": "import"})
    _count()


def handler_stats() -> dict[str, int]:
    """The RabbitHandler's ``stats`` of this process ({} when there is none)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, RabbitHandler):
            return dict(handler.stats)
    return {}


#: Records of kind ``detail`` each request logs after its own (a busy app, for batching).
DETAILS = int(os.environ.get("LR_TEST_DETAILS", "0"))


def log_request(n: int) -> dict[str, Any]:
    """Log request ``n`` (one info, then ``DETAILS`` details; every tenth also an error);
    what the response says."""
    LOG.info("request %d served", n, extra={"kind": "request", "req": n})
    _count()
    for i in range(DETAILS):
        LOG.info("request %d detail %d", n, i, extra={"kind": "detail", "req": n})
        _count()
    if n % 10 == 0:
        LOG.error("request %d failed", n, extra={"kind": "error", "req": n})
        _count()
    return {"pid": os.getpid(), "req": n, "logged": _last_logged, "stats": handler_stats()}


def request_number(query: str) -> int:
    """``n`` of a query string such as ``n=12``."""
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == "n":
            return int(value)
    raise ValueError(f"no n= in query {query!r}")
