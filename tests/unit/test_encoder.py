"""The handler's encoder: the fast record encoder agrees byte for byte with the dict path."""

from __future__ import annotations

import logging
import sys
from typing import Any

import pytest

from logrouter import wire
from logrouter.app.encoder import encode_record, record_to_dict


def _record(
    msg: object = "hello %s", args: tuple[object, ...] = ("bob",), **extra: object
) -> logging.LogRecord:
    record = logging.LogRecord(
        "app.web", logging.INFO, "/srv/app.py", 12, msg, args, None, "handle"
    )
    record.__dict__.update(extra)
    return record


def _both(record: logging.LogRecord, **kw: object) -> tuple[bytes, bytes]:
    options: dict[str, object] = {"facility": "user", "severity": "info", "host": "h", "app": "a"}
    options.update(kw)
    fast = encode_record(record, **options)  # type: ignore[arg-type]
    slow = wire.encode(record_to_dict(record, **options))  # type: ignore[arg-type]
    return fast, slow


@pytest.mark.parametrize(
    "make",
    [
        lambda: _record(),
        lambda: _record('caf\u00e9 \u2028 "quoted" \\ %s', ("\x00\x1b[31m",)),
        lambda: _record(order=7),
        lambda: _record({"event": "structlog", "k": 1}, ()),
        lambda: _record("lone \udcff surrogate", ()),
        lambda: _record("x" * 5000, ()),
    ],
)
def test_encode_record_is_byte_for_byte_encode_of_the_dict(make: Any) -> None:
    """The fast encoder gives exactly the bytes of encode(record_to_dict(...))."""
    fast, slow = _both(make(), max_message=1000)
    assert fast == slow


def test_encode_record_other_shapes_match_too() -> None:
    """Tracebacks, stacks, odd times, no pid/thread and other routes match the dict path."""
    try:
        raise ValueError("v")
    except ValueError:
        with_exc = _record()
        with_exc.exc_info = sys.exc_info()
    stack = _record()
    stack.stack_info = "Stack:\n here"
    no_ids = _record()
    no_ids.process = None
    no_ids.threadName = None
    early = _record()
    early.created = 1_700_000_000.9999996  # rounds up into the next second
    negative = _record()
    negative.created = -1.25
    for record in (with_exc, stack, no_ids, early, negative):
        fast, slow = _both(record, facility="auth", severity="err", exc=None)
        assert fast == slow
    fast, slow = _both(_record(), exc="Traceback: frozen")
    assert fast == slow and b"frozen" in fast
    again = _record()
    again.created += 1.5  # the next second, same call site: caches give the same bytes
    assert _both(again)[0] == _both(again)[1]
