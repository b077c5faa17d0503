"""encoder: a LogRecord becomes wire bytes, routing key and message id (pure)."""

from __future__ import annotations

import json
import logging

from logrouter.app.encoder import Captured, Encoder, parse_facilities, record_body
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
