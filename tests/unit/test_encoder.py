"""The handler's encoder: the fast path for plain records agrees byte for byte with the
dict path (``wire.encode(record_to_dict(...))``), and routes the same way."""

from __future__ import annotations

import logging
import sys
from typing import Any

import pytest

from logrouter import wire
from logrouter.app.encoder import Captured, Encoder, record_to_dict


def _record(
    msg: object = "hello %s", args: tuple[object, ...] = ("bob",), **extra: object
) -> logging.LogRecord:
    record = logging.LogRecord(
        "app.web", logging.INFO, "/srv/app.py", 12, msg, args, None, "handle"
    )
    record.__dict__.update(extra)
    return record


def _encoder(**kw: Any) -> Encoder:
    options: dict[str, Any] = {
        "host": "h",
        "app": "a",
        "facility": "user",
        "facilities": {"app": "web"},
        "max_message": 1000,
        "run": 7,
        "id_prefix": "p",
    }
    options.update(kw)
    return Encoder(**options)


def _both(record: logging.LogRecord, exc: str | None = None) -> tuple[Any, bytes]:
    """(what the encoder made, the dict path's bytes for the same record)."""
    encoder = _encoder()
    message = wire.record_message(record)
    encoded = encoder.encode(Captured(5, record, message, exc))
    facility, severity = encoder.key_words(record)
    slow = wire.encode(
        record_to_dict(
            record,
            facility=facility,
            severity=severity,
            host="h",
            app="a",
            max_message=1000,
            message=message,
            exc=exc,
        )
    )
    assert encoded.routing_key == f"{facility}.{severity}"
    assert (encoded.run, encoded.seq, encoded.message_id) == (7, 5, "p5")
    return encoded, slow


@pytest.mark.parametrize(
    "make",
    [
        lambda: _record(),
        lambda: _record('caf\u00e9 \u2028 "quoted" \\ %s', ("\x00\x1b[31m",)),
        lambda: _record(order=7),
        lambda: _record(facility="auth", severity="warn"),
        lambda: _record({"event": "structlog", "k": 1}, ()),
        lambda: _record("lone \udcff surrogate", ()),
        lambda: _record("x" * 5000, ()),
    ],
)
def test_every_record_encodes_as_the_dict_path_does(make: Any) -> None:
    """Plain records (fast path) and the others (dict path) give the same bytes."""
    encoded, slow = _both(make())
    assert encoded.body == slow


def test_other_shapes_and_repeats_match_too() -> None:
    """Tracebacks, stacks, odd times, no pid/thread, and a cached kind seen again."""
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
    later = _record()
    later.created += 1.5
    warn = _record()
    warn.levelno, warn.levelname = logging.WARNING, "WARNING"
    for record in (with_exc, stack, no_ids, early, negative, later, warn, _record()):
        encoded, slow = _both(record)
        assert encoded.body == slow
    encoded, slow = _both(_record(), exc="Traceback: frozen")
    assert encoded.body == slow and b"frozen" in encoded.body


def test_logger_map_gives_the_routing_key() -> None:
    """The fast path routes by the logger map and the level, as the dict path does."""
    encoder = _encoder()
    record = _record()
    record.levelno, record.levelname = logging.ERROR, "ERROR"
    encoded = encoder.encode(Captured(1, record, "m", None))
    assert encoded.routing_key == "web.err"
