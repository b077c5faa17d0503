"""The wire format (schema v1).

wire.decode: our JSON, foreign bodies, and the sink's fast path giving the same
records; record_to_dict/encode: what the handler puts on the wire.
"""

from __future__ import annotations

import gzip
import json
import logging
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logrouter import wire
from logrouter.config import ArchiveOptions
from logrouter.sinks.archive import ArchiveWriter
from logrouter.sinks.batch import Batch, Delivery, classify, classify_pending
from logrouter.sinks.dedup import DedupWindow

ARRIVAL = 1_700_000_000.0


def props(message_id: str | None = "m1", **kw: Any) -> SimpleNamespace:
    values = {"message_id": message_id, "timestamp": None, "app_id": None}
    values.update(kw)
    return SimpleNamespace(**values)


def test_our_record_is_taken_as_it_is_plus_id() -> None:
    """A handler body decodes to the same dict with the message_id added as id."""
    body = {"ts": "2024-05-01T10:11:12.000000Z", "facility": "auth", "severity": "err", "msg": "x"}
    record = wire.decode(wire.encode(body), "auth.err", message_id="m1")
    assert record == {**body, "id": "m1"}


def test_foreign_text_and_invalid_utf8_become_msg() -> None:
    """A non-JSON body (even invalid UTF-8) is the msg; facility/severity from the key."""
    record = wire.decode(b"sshd: failed \xff\n", "auth.error", timestamp=ARRIVAL)
    assert record["msg"] == "sshd: failed \ufffd"
    assert (record["facility"], record["severity"]) == ("auth", "err")
    assert record["ts"] == wire.format_ts(ARRIVAL)


def test_json_the_fast_parser_refuses_still_decodes_like_json_loads() -> None:
    """NaN, lone surrogate escapes, huge integers and invalid UTF-8 inside JSON decode as
    json.loads of the body (with replacement characters) would."""
    body = b'{"msg":"a\\ud800 \xff","n":NaN,"big":123456789012345678901234567890}'
    record = wire.decode(body, "a.info")
    assert record["msg"] == "a\ud800 \ufffd"
    assert record["big"] == 123456789012345678901234567890
    assert record["n"] != record["n"]  # NaN


def test_body_that_is_not_one_json_object_is_text() -> None:
    """Extra data after the object, an empty object or an array: the body is the msg."""
    for body in (b'{"a":1} x', b"{}", b'{"a":1}{"b":2}'):
        assert wire.decode(body, "a.info")["msg"] == body.decode()


def test_undecodable_without_key_or_body_fields() -> None:
    """No facility/severity in the body and a key of another shape: UndecodableMessage."""
    with pytest.raises(wire.UndecodableMessage):
        wire.decode(b"hello", "not-a-key")


BODIES = [
    wire.encode({"ts": "2024-05-01T10:00:00.000000Z", "facility": "Auth.X", "severity": "error"}),
    wire.encode({"facility": "auth", "severity": "info", "msg": "é\u2028x", "id": "own"}),
    b'{"facility": "auth", "severity": "err", "msg": "spaced"} \n',
    wire.encode(
        {"ts": "2024-05-01T10:00:00Z", "app": "a", "facility": "a", "severity": "err", "msg": "ok"}
    ),
    wire.encode(
        {
            "ts": "2024-05-01T11:00:00Z",
            "app": "a",
            "facility": "b",
            "severity": "crit",
            "msg": "\u2028",
        }
    ),
    b'{"ts": "2024-05-01T11:00:00Z", "app": "a", "facility": "b", "severity": "crit", '
    b'"msg": "q\\"", "id": 1}  ',
    b'{\n "msg": "pretty"\n}',
    b'{"msg": 5, "app": 3}',
    b'{"msg": "nan", "x": NaN}',
    b"plain text",
    b"",
    b"\xff\xfe",
    b"[1, 2]",
]


def deliveries(bodies: list[bytes]) -> list[Delivery]:
    return [
        Delivery(
            i + 1,
            "kern.warn" if i % 2 else "bad key",
            body,
            props(f"m{i % 7}" if i % 3 else None, timestamp=1_600_000_000, app_id="app"),
            arrival=ARRIVAL,
        )
        for i, body in enumerate(bodies)
    ]


def fast(items: list[Delivery], keep_lines: bool = False) -> Any:
    batch = Batch(len(items) or 1, 1.0)
    for item in items:
        batch.add(item, 0.0)
    return classify_pending(
        batch.take_pending(),
        lambda f, s: s != "debug",
        DedupWindow(3, ["m6"]),
        keep_lines=keep_lines,
    )


def same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=repr) == json.dumps(
        b, sort_keys=True, default=repr
    )


def test_fast_classify_equals_classify_with_wire_decode() -> None:
    """The consumer's inlined path gives exactly the records, ids, rejects and counts of
    classify() with wire.decode, on ours, foreign, odd and undecodable bodies."""
    items = deliveries(BODIES * 3)
    slow = classify(items, lambda f, s: s != "debug", DedupWindow(3, ["m6"]))
    quick = fast(items)
    assert same(quick.records, slow.records)
    assert quick.ids == slow.ids
    assert [(d.tag, r) for d, r in quick.rejected] == [(d.tag, r) for d, r in slow.rejected]
    assert (quick.duplicates, quick.filtered) == (slow.duplicates, slow.filtered)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.dictionaries(
                st.sampled_from(["msg", "facility", "severity", "ts", "app", "id", "x"]),
                st.one_of(st.none(), st.text(max_size=8), st.integers(), st.floats()),
                max_size=6,
            ).map(lambda d: json.dumps(d, ensure_ascii=False).encode("utf-8", "surrogatepass")),
        ),
        max_size=12,
    )
)
def test_fast_classify_equals_classify_on_any_body(bodies: list[bytes]) -> None:
    """Property: for any bodies, the inlined path and classify(wire.decode) agree."""
    items = deliveries(bodies)
    slow = classify(items, lambda f, s: s != "debug", DedupWindow(3, ["m6"]))
    quick = fast(items)
    assert same(quick.records, slow.records)
    assert quick.ids == slow.ids
    assert len(quick.rejected) == len(slow.rejected)


def test_archive_lines_from_bodies_equal_the_serialised_records(tmp_path: Any) -> None:
    """The archive lines built from message bodies hold exactly the decoded records,
    one per line (U+2028 escaped), as the re-serialised records would."""
    items = deliveries(BODIES * 2)
    outcome = fast(items, keep_lines=True)
    assert any(line is not None for line in outcome.lines)
    options = ArchiveOptions(
        dir=tmp_path, compression="gzip", compresslevel=1, rotate_bytes=0, rotate_interval="day"
    )
    writer = ArchiveWriter(options, instance="i")
    writer.write_lines(outcome.records, outcome.lines)
    writer.close()
    read = []
    for path in sorted(tmp_path.rglob("*.jsonl.gz")):
        with gzip.open(path, "rb") as handle:
            data = handle.read()
        assert "\u2028".encode() not in data
        read += [json.loads(line) for line in data.decode().splitlines()]
    assert len(read) == len(outcome.records)
    key = lambda r: json.dumps(r, sort_keys=True, default=repr)  # noqa: E731
    assert sorted(map(key, read)) == sorted(map(key, outcome.records))


# ---- record -> body (the handler's side) ----


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
    return json.loads(wire.encode(wire.record_to_dict(record, **options)))  # type: ignore[arg-type]


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
    body = wire.record_to_dict(_record(), facility="mail", severity="err", host="h", app="a")
    assert wire.decode(wire.encode(body), "mail.err") | {} == json.loads(wire.encode(body))


def test_undecodable_message() -> None:
    """No facility/severity anywhere: UndecodableMessage, never a crash."""
    with pytest.raises(wire.UndecodableMessage):
        wire.decode(b"text", "not-a-key")
