"""The batch wire format: many records of one routing key in one message (pure)."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logrouter import batchwire, wire
from logrouter.app.encoder import record_to_dict


def _body(msg: str, **extra: object) -> bytes:
    record = logging.LogRecord("billing.worker", logging.INFO, "/srv/app.py", 88, msg, None, None)
    record.__dict__.update(extra)
    return wire.encode(
        record_to_dict(record, facility="billing", severity="info", host="h", app="a")
    )


def _batch(*bodies: bytes, first: int = 1) -> bytes:
    lines = [batchwire.record_line(b, f"run{first + i:x}") for i, b in enumerate(bodies)]
    return batchwire.encode_batch(lines)


def test_round_trip_keeps_every_record_and_its_id() -> None:
    """Encoded records come back in order, each with its own id and its message."""
    body = _batch(_body("one"), _body("two"), _body("three"))
    items = batchwire.split_batch(body, "billing.info", message_id="run1+3")
    assert [i.record["msg"] for i in items if i.record] == ["one", "two", "three"]
    assert [i.id for i in items] == ["run1", "run2", "run3"]
    assert all(i.reason is None for i in items)
    assert [i.record["id"] for i in items if i.record] == ["run1", "run2", "run3"]


def test_body_is_one_json_object_per_line() -> None:
    """A plain reader can split the body on newlines and json.loads each line."""
    body = _batch(_body("a"), _body("b"))
    lines = body.decode().splitlines()
    assert [json.loads(line)["msg"] for line in lines] == ["a", "b"]
    assert body.endswith(b"\n") and body.count(b"\n") == 2


def test_exact_lines_are_the_records_as_written() -> None:
    """A line of ours decodes unchanged, so a JSON-lines writer may copy it as it is."""
    items = batchwire.split_batch(_batch(_body("x", order=7)), "billing.info")
    assert items[0].exact
    assert json.loads(items[0].line) == items[0].record


def test_one_bad_line_is_one_bad_record() -> None:
    """A line that is not a JSON object is rejected alone, with its line number."""
    good = batchwire.record_line(_body("good"), "id1")
    body = good + b"\n{not json\n" + batchwire.record_line(_body("after"), "id3") + b"\n"
    items = batchwire.split_batch(body, "billing.info", message_id="m")
    assert [i.record["msg"] if i.record else None for i in items] == ["good", None, "after"]
    bad = items[1]
    assert bad.reason == "line 2: not a JSON object" and bad.line == b"{not json"
    assert bad.id == "m/1"


def test_line_without_facility_or_severity_where_the_key_gives_none() -> None:
    """A line naming no facility/severity under a key that is not facility.severity is bad."""
    body = b'{"msg":"ok","facility":"a","severity":"err","id":"1"}\n{"msg":"lost","id":"2"}\n'
    items = batchwire.split_batch(body, "not-a-key")
    assert items[0].record is not None and items[0].record["severity"] == "err"
    assert items[1].record is None and items[1].id == "2"
    assert items[1].reason is not None and items[1].reason.startswith("line 2: routing key")


def test_missing_keys_are_filled_from_key_and_properties() -> None:
    """facility, severity, ts and app come from the key and properties, as for one message."""
    items = batchwire.split_batch(b'{"msg":"m"}\n', "auth.warn", timestamp=0.5, app_id="x")
    record = items[0].record
    assert record is not None
    assert (record["facility"], record["severity"], record["app"]) == ("auth", "warning", "x")
    assert record["ts"] == "1970-01-01T00:00:00.500000Z"
    assert not items[0].exact


def test_line_without_id_gets_a_stable_id_from_the_message() -> None:
    """The same batch redelivered gives the same per-record ids (dedup works)."""
    body = b'{"msg":"a","facility":"f","severity":"info"}\n{"msg":"b","id":7}\n'
    first = batchwire.split_batch(body, "f.info", message_id="batch9")
    again = batchwire.split_batch(body, "f.info", message_id="batch9")
    assert [i.id for i in first] == ["batch9/0", "batch9/1"] == [i.id for i in again]
    assert first[1].record is not None and first[1].record["id"] == "batch9/1"
    assert not first[1].exact


def test_blank_lines_and_crlf_are_not_records() -> None:
    """Blank lines are skipped; a CRLF line ending is not part of the record."""
    line = batchwire.record_line(_body("x"), "i")
    items = batchwire.split_batch(b"\n\n" + line + b"\r\n  \n", "billing.info")
    assert len(items) == 1 and items[0].line == line and items[0].exact


def test_non_utf8_and_nan_lines_still_decode() -> None:
    """A line orjson refuses (invalid UTF-8, NaN) takes the json module's path, not exact."""
    body = b'{"msg":"caf\xe9","x":NaN,"facility":"f","severity":"info","id":"1"}\n'
    items = batchwire.split_batch(body, "f.info")
    assert items[0].record is not None and items[0].record["msg"] == "caf\ufffd"
    assert not items[0].exact


def test_deeply_nested_line_is_a_bad_record_not_a_crash() -> None:
    """A hostile line nested beyond any parser's depth is rejected alone."""
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    items = batchwire.split_batch(deep + b"\n" + b'{"msg":"ok","id":"2"}\n', "f.info")
    assert items[0].record is None and items[0].reason
    assert items[1].record is not None and items[1].record["msg"] == "ok"


def test_record_line_escapes_unicode_line_separators() -> None:
    """U+2028 in a message stays inside its line for str.splitlines readers too."""
    line = batchwire.record_line(_body("a\u2028b"), "i")
    assert len(line.decode().splitlines()) == 1
    assert json.loads(line)["msg"] == "a\u2028b"


def test_record_line_quotes_any_id() -> None:
    """An id with quotes or backslashes is JSON-quoted correctly."""
    assert json.loads(batchwire.record_line(b"{}", 'a"b\\c'))["id"] == 'a"b\\c'
    assert json.loads(batchwire.record_line(b'{"x":1}', "z")) == {"x": 1, "id": "z"}


def test_record_line_refuses_what_is_not_one_json_object() -> None:
    """Only a one-line JSON object can be a batch line."""
    with pytest.raises(ValueError, match="one-line JSON object"):
        batchwire.record_line(b'{"a":\n1}', "i")
    with pytest.raises(ValueError, match="one-line JSON object"):
        batchwire.record_line(b"[1]", "i")


def test_content_type_and_count_header() -> None:
    """The batch content type is recognised (any case, with parameters); counts are checked."""
    assert batchwire.is_batch(batchwire.CONTENT_TYPE)
    assert batchwire.is_batch("Application/VND.logrouter.batch+jsonl; charset=utf-8")
    assert not batchwire.is_batch("application/json") and not batchwire.is_batch(None)
    headers = batchwire.headers(3)
    assert batchwire.declared_count(headers) == 3
    assert batchwire.declared_count({batchwire.RECORDS_HEADER: b"4"}) == 4
    assert batchwire.declared_count({batchwire.RECORDS_HEADER: "x"}) is None
    assert batchwire.declared_count({batchwire.RECORDS_HEADER: True}) is None
    assert batchwire.declared_count(None) is None
    assert batchwire.count_problem(3, 3) is None and batchwire.count_problem(None, 2) is None
    assert batchwire.count_problem(3, 2) == (
        "batch declares 3 records (x-logrouter-records) but holds 2 lines"
    )


def test_batch_message_id_names_first_record_and_count() -> None:
    """A batch's message_id is its first record's id and the count."""
    assert batchwire.batch_message_id("abc1", 500) == "abc1+500"
    assert batchwire.encode_batch([]) == b""


def test_decode_message_takes_both_forms() -> None:
    """A batch gives its lines, a single message its one record, an undecodable one the
    reason; a foreign publisher's headers fill what its body lacks."""
    batch = _batch(_body("a"), _body("b"))
    items = batchwire.decode_message(batch, "billing.info", content_type=batchwire.CONTENT_TYPE)
    assert [i.record["msg"] for i in items if i.record] == ["a", "b"]
    (single,) = batchwire.decode_message(
        b"plain text", "auth.err", message_id="m1", headers={"HOST": "web1"}
    )
    assert single.record is not None and single.record["msg"] == "plain text"
    assert single.record["host"] == "web1" and single.id == "m1"
    (bad,) = batchwire.decode_message(b"x", "not-a-key", content_type="text/plain")
    assert bad.record is None and bad.reason and "routing key" in bad.reason


_BODIES = [
    b'{"msg":"plain"}',
    b"{}",
    '{"msg":"a\u2028b\u0085c"}'.encode(),
    '{"msg":"caf\u00e9"}'.encode(),
    b'{"msg":"x"}',
]
_IDS = ["abc0123", "", 'q"uote', "caf\u00e9", "Z9"]


@given(st.lists(st.tuples(st.sampled_from(_BODIES), st.sampled_from(_IDS)), max_size=12))
def test_encode_records_is_the_lines_of_record_line(pairs: list[tuple[bytes, str]]) -> None:
    """The packer's fast body is byte for byte the batch of ``record_line`` lines:
    separators escaped, odd ids quoted, an empty object given its id."""
    bodies = [body for body, _ in pairs]
    ids = [record_id for _, record_id in pairs]
    lines = [batchwire.record_line(body, record_id) for body, record_id in pairs]
    assert batchwire.encode_records(bodies, ids) == batchwire.encode_batch(lines)


def test_encode_records_refuses_a_body_that_is_not_one_line() -> None:
    """A body with a raw newline, or not an object, makes the batch refuse (the packer
    then sends that record alone)."""
    for bad in (b'{"a":\n1}', b"[1]", b'{"a":1} '):
        with pytest.raises(ValueError):
            batchwire.encode_records([b'{"msg":"ok"}', bad], ["a1", "a2"])


def test_line_count_is_what_a_body_can_hold_not_what_it_declares() -> None:
    """A sink counts a batch body by its lines (at least one, at most MAX_LINES), which a
    sender cannot understate in a header."""
    assert batchwire.line_count(b'{"a":1}') == 1
    assert batchwire.line_count(b'{"a":1}\n{"a":2}\n') == 2
    assert batchwire.line_count(b'{"a":1}\n{"a":2}') == 2
    assert batchwire.line_count(b"") == 1
    assert batchwire.line_count(b"{}\n" * (batchwire.MAX_LINES + 5)) == batchwire.MAX_LINES


def test_decode_message_gives_the_validated_sender_never_the_bodys() -> None:
    """What tail and query --follow show: each record's sender is the message's user_id,
    a body's or line's own 'sender' replaced, and removed when there is no user_id."""
    claim = b'{"facility":"auth","severity":"err","msg":"m","sender":"guest"}'
    batch = batchwire.encode_batch([claim, b'{"facility":"auth","severity":"err","msg":"n"}'])
    items = batchwire.decode_message(
        batch, "auth.err", content_type=batchwire.CONTENT_TYPE, user_id="mallory"
    )
    assert [item.record and item.record["sender"] for item in items] == ["mallory"] * 2
    (single,) = batchwire.decode_message(claim, "auth.err", user_id="mallory")
    assert single.record is not None and single.record["sender"] == "mallory"
    (anonymous,) = batchwire.decode_message(claim, "auth.err")
    assert anonymous.record is not None and "sender" not in anonymous.record


def test_a_content_type_pika_gives_as_bytes_is_not_a_batch() -> None:
    """A content_type that is not UTF-8 (pika decodes it as bytes) is no batch, and no
    error (it raised TypeError in the sink's delivery callback: a reconnect loop)."""
    assert batchwire.is_batch(b"\xff\xfe") is False  # type: ignore[arg-type]
    assert batchwire.is_batch(batchwire.CONTENT_TYPE + "; charset=utf-8")
