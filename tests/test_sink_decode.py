"""The sink's decode path: wire.decode on odd bodies; the inlined batch path agrees."""

from __future__ import annotations

import gzip
import json
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
