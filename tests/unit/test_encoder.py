"""encoder: a LogRecord becomes wire bytes, routing key and message id (pure); the fast
record encoder agrees byte for byte with the dict path."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logrouter import batchwire, wire
from logrouter.app.encoder import (
    Captured,
    Encoder,
    freeze,
    parse_facilities,
    record_body,
    record_to_dict,
)
from logrouter.commands.send import build_record


def _encoder(**kw: object) -> Encoder:
    options: dict[str, object] = {
        "host": "h",
        "app": "billing",
        "facility": "user",
        "facilities": parse_facilities("a.b=auth, a.b.c=mail"),
        "max_message": 1000,
        "run": 7,
        "id_prefix": "abc",
    }
    options.update(kw)
    return Encoder(**options)  # type: ignore[arg-type]


def _captured(
    name: str = "app", level: int = logging.INFO, seq: int = 1, **extra: object
) -> Captured:
    record = logging.LogRecord(name, level, "/srv/app.py", 3, "hello %s", ("bob",), None)
    record.__dict__.update(extra)
    return Captured(seq, record, record.getMessage(), None)


def test_key_id_and_body() -> None:
    """Routing key is facility.severity, message id prefix+seq in hex, body schema v1."""
    out = _encoder().encode(_captured(seq=26))
    assert out.routing_key == "user.info" and out.message_id == "abc1a"
    assert (out.run, out.seq, out.spool_id) == (7, 26, None)
    body = json.loads(out.body)
    assert body["msg"] == "hello bob" and body["app"] == "billing" and body["v"] == 1


def test_facility_map_longest_prefix_and_extras_win() -> None:
    """The longest logger prefix picks the facility; extra facility/severity override both."""
    enc = _encoder()
    assert enc.encode(_captured("a.b.c.d")).routing_key == "mail.info"
    assert enc.encode(_captured("a.bc")).routing_key == "user.info"
    extra = _captured("a.b", facility="Cron.Daily", severity="panic")
    assert enc.encode(extra).routing_key == "cron_daily.emerg"


def test_huge_record_keeps_what_matters() -> None:
    """A record whose fields are huge is cut to msg + a note of its size, never dropped."""
    out = _encoder(max_message=100).encode(_captured(blob="x" * 400_000))
    body = json.loads(out.body)
    assert body["msg"] == "hello bob" and body["fields"]["_truncated"].startswith("record was")


def test_unrenderable_record_still_goes_out() -> None:
    """A rendering bug gives an err record saying why, with passwords hidden."""
    enc = _encoder()
    captured = _captured()
    captured.record.created = "not a time"  # type: ignore[assignment]
    captured = captured._replace(message="amqp://u:secret@h/ said hi")
    out = enc.encode(captured)
    body = json.loads(out.body)
    assert out.routing_key == "user.err" and "not renderable" in body["msg"]
    assert "secret" not in body["msg"]


def test_send_and_handler_share_one_body_shape() -> None:
    """logrouter send's record has the handler's keys in the same order (one builder)."""
    sent = build_record("auth", "err", "login failed", "shell")
    assert list(sent) == [
        "v", "ts", "host", "app", "pid", "thread", "logger",
        "facility", "severity", "level", "msg", "fields",
    ]  # fmt: skip
    assert sent["level"] == "ERROR" and sent["msg"] == "login failed"
    minimal = record_body(ts=0.0, host="h", app="a", facility="f", severity="err", msg="m")
    assert list(minimal) == ["v", "ts", "host", "app", "facility", "severity", "msg"]


def _record(
    msg: object = "hello %s", args: tuple[object, ...] = ("bob",), **extra: object
) -> logging.LogRecord:
    record = logging.LogRecord(
        "app.web", logging.INFO, "/srv/app.py", 12, msg, args, None, "handle"
    )
    record.__dict__.update(extra)
    return record


def _plain_encoder(**kw: Any) -> Encoder:
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
    encoder = _plain_encoder()
    message = wire.record_message(record)
    frozen = freeze(5, record) if exc is None else Captured(5, record, message, exc)
    encoded = encoder.encode(frozen)
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


def test_a_plain_record_is_frozen_without_the_record() -> None:
    """emit() keeps a plain record as a tuple of atoms (not the LogRecord, which the
    garbage collector would trace while it waits), and a record with extras, a
    traceback or a dict message whole."""
    assert not isinstance(freeze(1, _record()), Captured)
    assert all(type(v) in (int, str, float) for v in freeze(1, _record()))
    for other in (_record(order=7), _record({"event": "e"}, ())):
        assert isinstance(freeze(1, other), Captured)


def test_a_plain_record_with_a_bogus_time_still_goes_out() -> None:
    """A plain capture that the fast path cannot render takes the general path, which
    says why in an err record (the record is rebuilt from what was kept)."""
    record = _record()
    record.created = "not a time"  # type: ignore[assignment]
    out = _plain_encoder().encode(freeze(3, record))
    body = json.loads(out.body)
    assert out.routing_key == "user.err" and "not renderable" in body["msg"]
    assert body["msg"].startswith("hello bob")


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
    encoder = _plain_encoder()
    record = _record()
    record.levelno, record.levelname = logging.ERROR, "ERROR"
    encoded = encoder.encode(Captured(1, record, "m", None))
    assert encoded.routing_key == "web.err"


@given(st.floats(min_value=0, max_value=4e9) | st.integers(0, 4 * 10**15).map(lambda n: n / 2e6))
def test_any_time_encodes_as_the_dict_path_does(created: float) -> None:
    """The fast path's microseconds round exactly as format_ts does (halves to even),
    whatever the time: the body is the dict path's, byte for byte."""
    record = _record()
    record.created = created
    encoded, slow = _both(record)
    assert encoded.body == slow


def test_plain_records_are_vouched_for_as_batch_lines() -> None:
    """A plain record (the fast path) is marked ``checked``: a batch of them made without
    the line checks is byte for byte the checked one (separators escaped, ids in); a
    record of the general path is not marked."""
    encoder = _plain_encoder()
    records = [_record(), _record("caf\u00e9 \u2028 %s", ("x",)), _record("z", ())]
    encoded = encoder.encode_many([freeze(n, r) for n, r in enumerate(records, 1)])
    assert all(item.checked for item in encoded)
    bodies, ids = [item.body for item in encoded], [item.message_id for item in encoded]
    body = batchwire.encode_records(bodies, ids, checked=True)
    assert body == batchwire.encode_records(bodies, ids)
    assert [r.id for r in batchwire.split_batch(body, "web.info")] == ["p1", "p2", "p3"]
    assert not encoder.encode(freeze(4, _record(order=7))).checked


def test_a_second_that_cannot_be_written_is_not_cached_for_the_next_record() -> None:
    """A time past year 9999 takes the general path (an err record); the next record
    of the same second used to reuse an unset second's text ("ts":"000000Z", found by
    fastpack's property test): each record is encoded as it is alone."""
    encoder = _plain_encoder()
    records = []
    for fraction in (0.25, 0.5):
        record = _record()
        record.created = 253402300800 + fraction
        records.append(freeze(len(records) + 1, record))
    together = encoder.encode_many(records)
    assert all(b'"ts":"000000Z"' not in item.body for item in together)
    assert [item.routing_key for item in together] == ["user.err", "user.err"]
