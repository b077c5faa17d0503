"""The wire format (schema v1): record -> JSON body, any message -> record dict (pure).

The sink's decode fast path is tested against ``wire.decode`` in tests/test_sink_decode.py.
"""

from __future__ import annotations

import json
import logging
import sys

import pytest

from logrouter import wire
from logrouter.app.encoder import record_to_dict


def _record(
    msg: object = "hello %s", args: tuple[object, ...] = ("bob",), **extra: object
) -> logging.LogRecord:
    record = logging.LogRecord(
        "app.web", logging.INFO, "/srv/app.py", 12, msg, args, None, "handle"
    )
    record.__dict__.update(extra)
    return record


def _body(record: logging.LogRecord, **kw: object) -> dict[str, object]:
    options: dict[str, object] = {"facility": "user", "severity": "info", "host": "h", "app": "a"}
    options.update(kw)
    return json.loads(wire.encode(record_to_dict(record, **options)))  # type: ignore[arg-type]


def test_body_has_every_schema_key() -> None:
    """A record becomes a v1 body with ts, host, app, pid, thread, logger, src, fields."""
    body = _body(_record(order=7))
    assert body["v"] == 1 and body["msg"] == "hello bob" and body["logger"] == "app.web"
    assert body["ts"].endswith("Z") and len(body["ts"]) == len("2026-01-01T00:00:00.000000Z")
    assert body["src"] == {"file": "/srv/app.py", "line": 12, "func": "handle"}
    assert body["fields"] == {"order": 7} and body["level"] == "INFO"
    assert {"host", "app", "pid", "thread", "facility", "severity"} <= body.keys()


def test_precomputed_message_and_traceback_win() -> None:
    """The handler's frozen message and traceback are used as given."""
    body = _body(_record(), message="frozen", exc="Traceback: x")
    assert body["msg"] == "frozen" and body["exc"] == "Traceback: x"


def test_exception_and_stack() -> None:
    """exc_info gives the formatted traceback; stack_info is kept."""
    try:
        raise KeyError("k")
    except KeyError:
        record = _record()
        record.exc_info = sys.exc_info()
    record.stack_info = "Stack (most recent call last):\n  here"
    body = _body(record)
    assert "KeyError: 'k'" in body["exc"] and body["stack"].startswith("Stack")
    assert "KeyError" in (wire.record_exception(record) or "")


def test_unjsonable_values_become_repr() -> None:
    """Objects, NaN and sets in extra are JSON-safe; a broken repr does not raise."""

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    body = _body(_record(obj=object(), nan=float("nan"), s={1}, bad=Broken()))
    fields = body["fields"]
    assert fields["obj"].startswith("<object") and fields["nan"] == "nan" and fields["s"] == [1]
    assert fields["bad"].startswith("<unrepresentable Broken")


def test_structlog_event_dict_message() -> None:
    """A dict msg (structlog wrap_for_formatter) gives msg=event, the rest as fields."""
    body = _body(_record(msg={"event": "login", "user": "bob"}, args=()))
    assert body["msg"] == "login" and body["fields"] == {"user": "bob"}


def test_bad_format_args_do_not_raise() -> None:
    """Wrong %-args keep the template and say formatting failed."""
    body = _body(_record(msg="%s %s", args=("one",)))
    assert "formatting failed" in body["msg"]


def test_truncation_marks_the_cut() -> None:
    """Text over the cap is cut on a UTF-8 boundary with the marker."""
    text = "é" * 1000
    cut = wire.truncate(text, 101)
    assert cut.endswith(wire.TRUNCATION_MARK) and len(cut.encode()) <= 101
    assert wire.truncate("short", 100) == "short"


def test_lone_surrogates_encode_to_valid_utf8() -> None:
    """Invalid text (lone surrogates) never breaks encoding; the result is valid UTF-8 JSON."""
    data = wire.encode({"msg": "bad \udcff", "fields": {"k": "\ud800"}})
    data.decode("utf-8")
    assert json.loads(data)["msg"].startswith("bad ")


def test_decode_foreign_text_message() -> None:
    """A syslog daemon's text body: msg is the text, facility/severity from the key."""
    record = wire.decode(b"sshd[1]: refused\n", "auth.warn", timestamp=1.0, message_id="m1")
    assert record["msg"] == "sshd[1]: refused" and record["facility"] == "auth"
    assert record["severity"] == "warning" and record["ts"] == "1970-01-01T00:00:01.000000Z"
    assert record["id"] == "m1"


def test_decode_our_json_roundtrip() -> None:
    """Our own body decodes to itself (plus nothing lost)."""
    body = record_to_dict(_record(), facility="mail", severity="err", host="h", app="a")
    assert wire.decode(wire.encode(body), "mail.err") | {} == json.loads(wire.encode(body))


def test_undecodable_message() -> None:
    """No facility/severity anywhere: UndecodableMessage, never a crash."""
    with pytest.raises(wire.UndecodableMessage):
        wire.decode(b"text", "not-a-key")


@pytest.mark.parametrize(
    "epoch", [0.0, 1.5, 1_795_725_294.999_999_7, 1_795_725_294.000_000_4, 2e9 + 0.25]
)
def test_format_ts_matches_datetime(epoch: float) -> None:
    """The cached-second timestamp equals datetime's own RFC 3339 rendering."""
    from datetime import UTC, datetime

    expected = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert wire.format_ts(epoch) == expected
    assert wire.format_ts(epoch) == expected  # second call: from the cache


@pytest.mark.parametrize(
    "body",
    [
        b'{"msg":' + b"[" * 100_000,
        b'{"msg":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"msg":' + b"[" * 100_000 + b"\xff",
        b'{"a":' + b'{"a":' * 2000 + b"1" + b"}" * 2001,
    ],
)
def test_deeply_nested_json_is_undecodable_never_a_crash(body: bytes) -> None:
    """A 100,000-deep JSON object body: UndecodableMessage with the reason, no RecursionError."""
    with pytest.raises(wire.UndecodableMessage, match="nested deeper"):
        wire.decode(body, "auth.err")


def test_a_bracket_flood_that_is_not_an_object_is_text() -> None:
    """'[' x 100,000 is no JSON object: it is a foreign text body, decoded as msg."""
    record = wire.decode(b"[" * 100_000, "auth.err")
    assert record["msg"] == "[" * 100_000


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[" * 100_000, "nested deeper"),
        (b"\xff\xfe", "not UTF-8"),
        (b"{", "not JSON"),
        (b"1" * 5000, "not JSON"),
    ],
)
def test_parse_json_is_total(body: bytes, reason: str) -> None:
    """parse_json raises only UndecodableMessage, saying why."""
    with pytest.raises(wire.UndecodableMessage, match=reason):
        wire.parse_json(body)


def test_parse_json_reads_any_json_value() -> None:
    """Valid JSON of any kind (with surrounding whitespace, NaN) comes back as the value."""
    assert wire.parse_json(b" [1, 2] \n") == [1, 2]
    assert wire.parse_json(b"null") is None
    assert wire.parse_json(b'{"a": NaN}')["a"] != wire.parse_json(b'{"a": NaN}')["a"]


def test_the_sender_is_the_validated_user_id_and_replaces_any_claim() -> None:
    """set_sender: the record's sender is the message's user_id (none without one), and a
    body's own 'sender' is replaced or removed, never kept (the validated one is the last
    key, where the archive's spliced lines have it); it says when there was one."""
    assert wire.message_sender(type("P", (), {"user_id": "alice"})()) == "alice"
    for props in (object(), type("P", (), {"user_id": ""})(), type("P", (), {"user_id": 5})()):
        assert wire.message_sender(props) is None
    claimed = {"msg": "x", "sender": "guest", "id": "1"}
    assert wire.set_sender(claimed, "mallory") is True
    assert list(claimed.items()) == [("msg", "x"), ("id", "1"), ("sender", "mallory")]
    forged = {"msg": "x", "sender": "guest"}
    assert wire.set_sender(forged, None) is True and forged == {"msg": "x"}
    plain = {"msg": "x"}
    assert wire.set_sender(plain, "alice") is False and list(plain) == ["msg", "sender"]


def test_a_timestamp_property_past_year_9999_gives_the_arrival_time() -> None:
    """A foreign message without ts whose timestamp property is 2**62 s: its record is
    timed by its arrival (it was rejected as undecodable)."""
    record = wire.decode(b"far future", "app.err", timestamp=2**62, arrival=1_764_567_000.0)
    assert record["ts"] == wire.format_ts(1_764_567_000.0)
