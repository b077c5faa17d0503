"""The daemons' own logs: structlog to stderr, JSON when stderr is not a terminal.

These never go through the router itself (no feedback loop): they are written by
structlog's own logger straight to stderr, where journald reads them.

Every value of every event is redacted (``connection.redact_all``) after the
traceback is formatted, so a password in an exception message or a local
repr never reaches the log; on a terminal, control and bidi characters are
escaped too (``render.escape``; the JSON renderer escapes all non-ASCII).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from logrouter.connection import redact_all
from logrouter.render import escape_multiline


def _redact_secrets(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Every value redacted (strings, containers, and other objects as their repr)."""
    for key, value in event_dict.items():
        if not isinstance(value, bool | int | float) and value is not None:
            event_dict[key] = redact_all(value)
    return event_dict


def _escape_controls(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """String values with control and bidi characters escaped (for a terminal)."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = escape_multiline(value)
    return event_dict


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    """A logger on ``sys.stderr`` as it is at the time of each use, so a swapped stream
    (a test's capture, a redirect) is never written after it was closed."""
    return structlog.PrintLogger(sys.stderr)


def configure(level: str | None = None, *, json: bool | None = None) -> None:
    """Set up structlog for a daemon or CLI command (idempotent)."""
    level_name = (level or os.environ.get("LOGROUTER_LOG_LEVEL") or "info").upper()
    as_json = (not sys.stderr.isatty()) if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_secrets,
            *([] if as_json else [_escape_controls]),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level_name, logging.INFO)
        ),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str, **initial: Any) -> Any:
    """A structlog logger for one component.

    Lazy: it takes structlog's configuration at first use, so a logger made at import
    time still writes where ``configure()`` later says (stderr), never to stdout.
    """
    return structlog.get_logger(name, component=name, **initial)
