"""The sink's decode path (batch.py): wire.decode on odd bodies; the inlined batch path
agrees with the plain reference (batch_reference.classify)."""

from __future__ import annotations

import gzip
import json
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logrouter import batchwire, wire
from logrouter.config import ArchiveOptions
from logrouter.sinks.archive import ArchiveWriter, record_line
from logrouter.sinks.batch import (
    SPLIT_UNCOUNTED,
    Batch,
    Delivery,
    classify_pending,
    suppressed_in,
)
from logrouter.sinks.dedup import DedupWindow
from tests.unit.batch_reference import add, classify, take, time_left

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


def test_a_json_object_after_a_byte_order_mark_or_spaces_is_still_the_record() -> None:
    """A foreign publisher's UTF-8 BOM (.NET, PowerShell) or leading whitespace before its
    JSON object: the object is the record (it was the whole body as text), for wire.decode
    and the sink's classify alike; without an object after them it stays text."""
    body = '{"msg": "hi", "facility": "auth", "severity": "err"}'
    for padded in (b"\xef\xbb\xbf" + body.encode(), b" \r\n\t" + body.encode()):
        record = wire.decode(padded, "a.info")
        assert (record["msg"], record["facility"], record["severity"]) == ("hi", "auth", "err")
        outcome = classify_pending([Delivery(1, "a.info", padded, None)], lambda *_: True, set())
        assert [r["msg"] for r in outcome.records] == ["hi"]
        assert outcome.lines == [None]  # not archived as it came: with its padding
    assert wire.decode(b"\xef\xbb\xbfplain text", "a.info")["msg"] == "\ufeffplain text"


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
        batch.append(item, 0.0)
    return classify_pending(
        batch.take_pending(),
        lambda f, s: s != "debug",
        DedupWindow(3, [("", "app", "m6")]),
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
    slow = classify(items, lambda f, s: s != "debug", DedupWindow(3, [("", "app", "m6")]))
    quick = fast(items)
    assert same(quick.records, slow.records)
    assert quick.keys == slow.keys
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
    slow = classify(items, lambda f, s: s != "debug", DedupWindow(3, [("", "app", "m6")]))
    quick = fast(items)
    assert same(quick.records, slow.records)
    assert quick.keys == slow.keys
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


def delivery(tag: int, key: str, body: bytes, message_id: str | None = None) -> Delivery:
    props = SimpleNamespace(message_id=message_id, timestamp=None, app_id=None)
    return Delivery(tag, key, body, props, arrival=1_700_000_000.0)


def only_err_and_worse(facility: str, severity: str) -> bool:
    return severity in ("emerg", "alert", "crit", "err")


def test_batch_is_due_when_full_or_old() -> None:
    """A batch is written when it holds batch_size deliveries or its interval has passed."""
    batch = Batch(size=2, interval=0.5)
    assert not batch.due(0.0)
    add(batch, delivery(1, "a.err", b"x"), now=10.0)
    assert not batch.due(10.1)
    assert batch.due(10.6)
    add(batch, delivery(2, "a.err", b"y"), now=10.2)
    assert batch.full and batch.due(10.2)
    assert batch.last_tag == 2
    assert [d.tag for d in take(batch)] == [1, 2]
    assert len(batch) == 0


def test_time_left_bounds_the_wait() -> None:
    """The loop never waits past the moment the batch is due."""
    batch = Batch(size=10, interval=0.5)
    assert time_left(batch, 0.0, 0.2) == 0.2
    add(batch, delivery(1, "a.err", b"x"), now=10.0)
    assert abs(time_left(batch, 10.4, 0.2) - 0.1) < 1e-9
    assert time_left(batch, 11.0, 0.2) == 0.0


def test_classify_writes_matching_and_filters_the_rest() -> None:
    """Records outside the selector are dropped; matching ones are decoded for the writer."""
    body = json.dumps({"facility": "auth", "severity": "err", "msg": "denied"}).encode()
    outcome = classify(
        [delivery(1, "auth.err", body, "m1"), delivery(2, "auth.info", b"hello", "m2")],
        only_err_and_worse,
        DedupWindow(10),
    )
    assert [r["msg"] for r in outcome.records] == ["denied"]
    assert outcome.filtered == 1
    assert outcome.committed_keys() == [("", "", "m1")]


def test_foreign_text_message_takes_key_facility_and_severity() -> None:
    """A syslog-style plain text body becomes msg; facility/severity come from the key."""
    batch = [delivery(1, "auth.err", b"sshd: failed\n")]
    (record,) = classify(batch, only_err_and_worse, DedupWindow(5)).records
    assert record["facility"] == "auth"
    assert (record["severity"], record["msg"]) == ("err", "sshd: failed")


def test_classify_drops_duplicates_from_window_and_batch() -> None:
    """A message_id already committed, or seen earlier in the batch, is a duplicate."""
    outcome = classify(
        [
            delivery(1, "a.err", b"one", "old"),
            delivery(2, "a.err", b"two", "new"),
            delivery(3, "a.err", b"two again", "new"),
        ],
        only_err_and_worse,
        DedupWindow(10, [("", "", "old")]),
    )
    assert [r["msg"] for r in outcome.records] == ["two"]
    assert outcome.duplicates == 2


def test_classify_does_not_touch_the_window() -> None:
    """Ids enter the window only on commit, so a failed write's redelivery is not a duplicate."""
    window = DedupWindow(10)
    classify([delivery(1, "a.err", b"x", "m1")], only_err_and_worse, window)
    assert ("", "", "m1") not in window


def test_undecodable_message_is_rejected_with_reason() -> None:
    """A message with a bad key and a non-JSON body is rejected, with the reason, not raised."""
    batch = [delivery(7, "garbage", b"not json", "g1")]
    outcome = classify(batch, only_err_and_worse, DedupWindow(5))
    assert outcome.records == []
    ((rejected, reason),) = outcome.rejected
    assert rejected.tag == 7
    assert "garbage" in reason
    assert outcome.committed_keys() == []  # a rejected id suppresses nothing later


def test_decoder_bug_is_a_rejection_not_a_crash() -> None:
    """Any exception while decoding one message rejects that message only."""

    def broken(_: Delivery) -> dict[str, object]:
        raise RuntimeError("boom")

    outcome = classify([delivery(1, "a.err", b"x")], only_err_and_worse, DedupWindow(5), broken)
    assert "boom" in outcome.rejected[0][1]


def sent(
    tag: int,
    body: bytes,
    message_id: str,
    user_id: str | None,
    app_id: str,
    headers: dict[str, Any] | None = None,
) -> Delivery:
    """A delivery with the sender's properties (what the broker hands the sink)."""
    properties = SimpleNamespace(
        message_id=message_id, user_id=user_id, app_id=app_id, timestamp=None, headers=headers
    )
    return Delivery(tag, "auth.err", body, properties, arrival=ARRIVAL)


def test_forged_and_colliding_ids_suppress_nothing() -> None:
    """Same message_id from another login, from another app, or without user_id before a
    stamped one: every record is written; a real redelivery (same sender) is dropped."""
    batch = [
        sent(1, b"forged", "42", "attacker", "api"),
        sent(2, b"anonymous", "42", None, "api"),
        sent(3, b"real", "42", "billing", "api"),
        sent(4, b"other app", "42", "billing", "web"),
        sent(5, b"real again", "42", "billing", "api"),
    ]
    outcome = classify_pending(batch, only_err_and_worse, DedupWindow(10))
    assert [r["msg"] for r in outcome.records] == ["forged", "anonymous", "real", "other app"]
    assert outcome.duplicates == 1


def test_replays_are_written_again_and_deduplicated_against_replays() -> None:
    """A replay (header x-logrouter-replay) of a record the sink wrote is written again
    (a sink being rebuilt), its redelivery is dropped, and what another login sent
    first with the same app and id, replay header or not, does not suppress it."""
    replay = {"x-logrouter-replay": "2026-12-01T03:00:00Z"}
    batch = [
        sent(1, b"original", "42", "billing", "api"),
        sent(2, b"replayed", "42", "billing", "api", replay),
        sent(3, b"replayed, redelivered", "42", "billing", "api", replay),
        sent(4, b"pre-empted?", "43", None, "api"),
        sent(5, b"forged replay", "43", "attacker", "api", replay),
        sent(6, b"replay of 43", "43", "billing", "api", replay),
    ]
    outcome = classify_pending(batch, only_err_and_worse, DedupWindow(10))
    assert [r["msg"] for r in outcome.records] == [
        "original",
        "replayed",
        "pre-empted?",
        "forged replay",
        "replay of 43",
    ]
    assert outcome.duplicates == 1


def test_a_rejected_message_id_does_not_suppress_the_valid_one() -> None:
    """An undecodable or oversize message with an id is rejected and its key is not kept:
    the valid record with the same key, later in the batch, is written."""
    batch = [
        Delivery(1, "garbage", b"not json", SimpleNamespace(message_id="7"), arrival=ARRIVAL),
        Delivery(2, "a.err", b"x" * 2000, SimpleNamespace(message_id="7"), arrival=ARRIVAL),
        Delivery(3, "a.err", b"valid", SimpleNamespace(message_id="7"), arrival=ARRIVAL),
    ]
    outcome = classify_pending(batch, only_err_and_worse, DedupWindow(10), max_record_bytes=1024)
    assert [r["msg"] for r in outcome.records] == ["valid"]
    assert [(d.tag, "max_record_bytes" in r) for d, r in outcome.rejected] == [
        (1, False),
        (2, True),
    ]
    assert outcome.committed_keys() == [("", "", "7")]


def test_committed_keys_leave_out_refused_records() -> None:
    """A record the writer refused is rejected, so its key is not remembered either."""
    batch = [sent(1, b"a", "1", "u", "app"), sent(2, b"b", "2", "u", "app")]
    outcome = classify_pending(batch, only_err_and_worse, DedupWindow(10))
    assert outcome.committed_keys([0]) == [("u", "app", "2")]
    assert [d.tag for d in outcome.sources] == [1, 2]


# ---- batch messages (logrouter.batchwire): every line a record of its own ----------------


def _line(msg: str, record_id: str, severity: str = "err") -> bytes:
    body = wire.encode(
        {
            "v": 1,
            "ts": "2024-05-01T10:00:00.000001Z",
            "app": "app",
            "facility": "auth",
            "severity": severity,
            "msg": msg,
        }
    )
    return batchwire.record_line(body, record_id)


def batch_delivery(tag: int, lines: list[bytes], **kw: Any) -> Delivery:
    values: dict[str, Any] = {
        "message_id": "b1+3",
        "content_type": batchwire.CONTENT_TYPE,
        "headers": batchwire.headers(len(lines)),
        "timestamp": 1_600_000_000,
        "app_id": "app",
        "user_id": "alice",
    }
    values.update(kw)
    return Delivery(
        tag, "auth.err", batchwire.encode_batch(lines), props(**values), arrival=ARRIVAL
    )


def test_batch_message_gives_one_record_per_line_with_its_own_key() -> None:
    """Each line is a record; its dedup key is (user_id, app_id, the line's id)."""
    lines = [_line("one", "r1"), _line("two", "r2"), _line("three", "r3")]
    outcome = classify_pending([batch_delivery(1, lines)], only_err_and_worse, DedupWindow(10))
    assert [r["msg"] for r in outcome.records] == ["one", "two", "three"]
    assert outcome.committed_keys() == [("alice", "app", f"r{n}") for n in (1, 2, 3)]
    sources = [outcome.source(index) for index in range(3)]
    assert [(s.record_id, s.body, s.line) for s in sources] == [
        (f"r{n}", line, True) for n, line in enumerate(lines, 1)
    ]


def test_one_bad_line_is_rejected_alone() -> None:
    """A batch with one undecodable line: that line is rejected with the reason, the rest kept."""
    lines = [_line("one", "r1"), b"{broken", _line("three", "r3")]
    outcome = classify_pending([batch_delivery(7, lines)], only_err_and_worse, DedupWindow(10))
    assert [r["msg"] for r in outcome.records] == ["one", "three"]
    ((source, reason),) = outcome.rejected
    assert source.body == b"{broken" and source.tag == 7 and source.record_id == "b1+3/1"
    assert source.line
    assert reason == "line 2: not a JSON object"
    assert ("alice", "app", "b1+3/1") not in outcome.committed_keys()


def test_batch_lines_dedup_per_record_against_window_and_single_messages() -> None:
    """A record already written (alone or in another batch) is a duplicate inside a batch."""
    single = Delivery(
        1, "auth.err", _line("two", "r2"), props("r2", app_id="app", user_id="alice"), False
    )
    again = batch_delivery(2, [_line("one", "r1"), _line("two", "r2"), _line("three", "r3")])
    window = DedupWindow(10, [("alice", "app", "r1")])
    outcome = classify_pending([single, again], only_err_and_worse, window)
    assert [r["msg"] for r in outcome.records] == ["two", "three"]
    assert outcome.duplicates == 2


def test_another_user_cannot_suppress_batch_records() -> None:
    """The same record ids from another broker user are not duplicates."""
    window = DedupWindow(10, [("mallory", "app", "r1")])
    outcome = classify_pending(
        [batch_delivery(1, [_line("one", "r1")])], only_err_and_worse, window
    )
    assert [r["msg"] for r in outcome.records] == ["one"]


def test_selector_and_size_cap_apply_per_line() -> None:
    """A line below the selector is filtered, an oversized line rejected, the others written."""
    lines = [_line("keep", "r1"), _line("quiet", "r2", "info"), _line("x" * 500, "r3")]
    outcome = classify_pending(
        [batch_delivery(1, lines)], only_err_and_worse, DedupWindow(10), max_record_bytes=300
    )
    assert [r["msg"] for r in outcome.records] == ["keep"]
    assert outcome.filtered == 1
    assert [reason for _, reason in outcome.rejected] == [
        f"line 3: record of {len(lines[2])} bytes exceeds max_record_bytes"
    ]


def test_an_oversized_line_is_refused_by_its_size_before_it_is_parsed() -> None:
    """A line over max_record_bytes is rejected for its size without being parsed: a
    100,000-deep one gets the size reason (the parser's, before), next to a good line."""
    deep = b'{"msg": ' + b"[" * 100_000
    outcome = classify_pending(
        [batch_delivery(1, [_line("keep", "r1"), deep])],
        lambda _f, _s: True,
        DedupWindow(10),
        max_record_bytes=1024,
    )
    assert [r["msg"] for r in outcome.records] == ["keep"]
    assert [(d.body, reason) for d, reason in outcome.rejected] == [
        (deep, f"line 2: record of {len(deep)} bytes exceeds max_record_bytes")
    ]


def test_archive_writes_batch_lines_as_they_came(tmp_path: Any) -> None:
    """With keep_lines the archive gets each batch line as it is (no re-encoding) but for
    the message's validated sender, added as the last key."""
    lines = [_line("one", "r1"), _line("two", "r2")]
    outcome = classify_pending(
        [batch_delivery(1, lines)], only_err_and_worse, DedupWindow(10), keep_lines=True
    )
    archived = [line[:-1] + b',"sender":"alice"}\n' for line in lines]
    assert outcome.lines == archived
    options = ArchiveOptions(
        dir=tmp_path, compression="gzip", compresslevel=1, rotate_bytes=0, rotate_interval="day"
    )
    writer = ArchiveWriter(options, instance="i")
    writer.write_lines(outcome.records, outcome.lines)
    writer.close()
    (path,) = tmp_path.rglob("*.jsonl.gz")
    with gzip.open(path, "rb") as handle:
        assert handle.read() == b"".join(archived)


def test_a_sink_batch_is_bounded_by_records() -> None:
    """A batch message counts as the records it carries toward the sink's batch size."""
    batch = Batch(size=10, interval=5.0)
    batch.append(batch_delivery(1, []), 0.0, records=6)
    assert not batch.full
    batch.append(batch_delivery(2, []), 0.0, records=6)
    assert batch.full and len(batch) == 2
    batch.take_pending()
    assert not batch.full and batch.records == 0


def test_a_commit_takes_at_most_the_batch_size_of_records_in_hand() -> None:
    """Deliveries read while a commit waited for its fsync can hold many batches' worth:
    ``take_slice`` hands over the oldest whole deliveries up to ``slice_records`` (always
    at least one, even an oversized one) and keeps the rest, due at once, for the next
    commit."""
    batch = Batch(size=2, interval=5.0, slice_records=10)
    for tag, records in enumerate([4, 5, 3, 30, 2], start=1):
        batch.append(batch_delivery(tag, []), 0.0, records=records)
    assert [d.tag for d in batch.take_slice()] == [1, 2]
    assert batch.records == 35 and batch.due(0.0)
    assert [d.tag for d in batch.take_slice()] == [3]
    assert [d.tag for d in batch.take_slice()] == [4]
    assert [d.tag for d in batch.take_slice()] == [5]
    assert len(batch) == 0 and batch.records == 0 and batch.started is None


def test_suppressed_counts_come_from_summary_records_only() -> None:
    """The sink's suppressed counter adds up rate-limit summaries' counts, nothing else:
    not an app's own field, not a count above 2**53 (a forged one would make the
    metrics a number of hundreds of digits)."""
    records: list[dict[str, Any]] = [
        {"msg": "suppressed 5 records", "fields": {"rate_limit_summary": True, "suppressed": 5}},
        {"msg": "x", "fields": {"suppressed": 1000}},  # an app's own field: not a summary
        {"msg": "y", "fields": {"rate_limit_summary": True, "suppressed": "7"}},
        {"msg": "z", "fields": "odd"},
        {"msg": "suppressed 2 records", "fields": {"rate_limit_summary": True, "suppressed": 2}},
        # forged by any broker user: a count no handler reaches would break the metrics
        {"msg": "forged", "fields": {"rate_limit_summary": True, "suppressed": 10**400}},
        {"msg": "forged", "fields": {"rate_limit_summary": True, "suppressed": 2**53 + 1}},
    ]
    assert suppressed_in(records) == 7


def test_a_batch_beyond_max_lines_is_rejected_whole() -> None:
    """A (hostile) batch of more lines than batchwire.MAX_LINES is one rejected message."""
    item = batch_delivery(1, [b'{"msg":"x"}'] * (batchwire.MAX_LINES + 1))
    outcome = classify_pending([item], only_err_and_worse, DedupWindow(10))
    assert outcome.records == []
    ((source, reason),) = outcome.rejected
    assert source is item and not source.line
    assert reason == "batch of more than 100,000 records"


@pytest.mark.parametrize(
    "line", [b"{}", b'{"msg":"x","id":"' + b"a" * 20 + b'"}'], ids=["short", "long"]
)
def test_a_batch_beyond_max_lines_is_rejected_whole_whatever_its_size(line: bytes) -> None:
    """Over batchwire.MAX_LINES lines of "{...}", in a body split without a count first
    (short lines) or counted first (long ones): one rejected message either way."""
    item = batch_delivery(1, [line] * (batchwire.MAX_LINES + 1))
    assert (len(item.body) > SPLIT_UNCOUNTED) == (line != b"{}")
    outcome = classify_pending([item], lambda facility, severity: True, DedupWindow(10))
    assert outcome.records == [] and outcome.duplicates == 0
    ((source, reason),) = outcome.rejected
    assert source is item and not source.line
    assert reason == "batch of more than 100,000 records"


@pytest.mark.parametrize("odd", [False, True], ids=["whole", "per-line"])
def test_a_batch_that_holds_another_count_than_it_declares_is_written_and_noted(
    odd: bool,
) -> None:
    """A batch declaring 9 records (x-logrouter-records) that holds 5 lines, say cut
    short on its way: its records are written (and an odd line rejected alone) and the
    message is noted with what is wrong, so the sink can say records may be missing;
    a batch whose count matches is not noted."""
    lines = [_line(f"r{n}", f"r{n}") for n in range(4 if odd else 5)]
    lines += [b"{broken"] if odd else []
    short = batch_delivery(1, lines, headers=batchwire.headers(9))
    right = batch_delivery(2, [_line("x", "x1")], headers=batchwire.headers(1), message_id="b2")
    outcome = classify_pending([short, right], only_err_and_worse, DedupWindow(10))
    assert [r["msg"] for r in outcome.records] == [f"r{n}" for n in range(4 if odd else 5)] + ["x"]
    assert len(outcome.rejected) == (1 if odd else 0)
    assert [(d.tag, problem) for d, problem in outcome.miscounted] == [
        (1, "batch declares 9 records (x-logrouter-records) but holds 5 lines")
    ]


def archived(outcome: Any, index: int) -> bytes:
    """What the archive writes of record ``index``: its kept line, else the record encoded."""
    return outcome.lines[index] or record_line(outcome.records[index])


def senders_in(line: bytes) -> list[Any]:
    """The values of every top-level 'sender' key of a JSON line (a repeated key too)."""
    pairs = json.loads(line, object_pairs_hook=lambda items: items)
    return [value for key, value in pairs if key == "sender"]


@pytest.mark.parametrize("keep_lines", [False, True])
def test_a_single_message_carries_its_validated_sender_never_the_bodys(keep_lines: bool) -> None:
    """A record's sender is its message's user_id: a body's own 'sender' (forged, null, or
    spelled with an escape) is replaced, and removed when the message has no user_id;
    the archive line names the sender once."""
    good = {"ts": "2024-05-01T10:00:00.000001Z", "facility": "auth", "severity": "err"}
    bodies = [
        (wire.encode({**good, "msg": "plain"}), "mallory", "mallory"),
        (wire.encode({**good, "msg": "forged", "sender": "guest"}), "mallory", "mallory"),
        (b'{"facility":"auth","severity":"err","msg":"esc","\\u0073ender":"guest"}', "eve", "eve"),
        (wire.encode({**good, "msg": "null", "sender": None}), "mallory", "mallory"),
        (wire.encode({**good, "msg": "anonymous", "sender": "guest"}), None, None),
        (b"plain text from syslog", "syslog-ng", "syslog-ng"),
    ]
    pending = [
        Delivery(n, "auth.err", body, props(f"m{n}", user_id=user), arrival=ARRIVAL)
        for n, (body, user, _) in enumerate(bodies)
    ]
    outcome = classify_pending(pending, lambda f, s: True, DedupWindow(10), keep_lines=keep_lines)
    assert len(outcome.records) == len(bodies)
    for index, (_, _, sender) in enumerate(bodies):
        assert outcome.records[index].get("sender") == sender
        assert senders_in(archived(outcome, index)) == ([sender] if sender else [])
    if keep_lines:  # a body without a claim stays the line it came as, plus the sender
        assert outcome.lines[0] == bodies[0][0][:-1] + b',"id":"m0","sender":"mallory"}\n'


@pytest.mark.parametrize("keep_lines", [False, True])
def test_a_batch_line_carries_its_messages_sender_never_its_own(keep_lines: bool) -> None:
    """Lines of a batch message that name a sender of their own get the message's
    user_id instead, line by line, as the lines without one do."""
    lines = [
        _line("one", "r1"),
        _line("two", "r2")[:-1] + b',"sender":"guest"}',
        _line("three", "r3"),
    ]
    outcome = classify_pending(
        [batch_delivery(1, lines, user_id="mallory")],
        only_err_and_worse,
        DedupWindow(10),
        keep_lines=keep_lines,
    )
    assert [r["sender"] for r in outcome.records] == ["mallory"] * 3
    assert [senders_in(archived(outcome, i)) for i in range(3)] == [["mallory"]] * 3
