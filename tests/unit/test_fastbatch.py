"""fastbatch.whole_batch: a batch message taken whole gives exactly what the per-line
path gives (records, archive lines, keys, rejects, counts, sources), on handler
batches and on anything a publisher can put in a batch body."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logrouter import batchwire, wire
from logrouter.sinks import batch as batch_module
from logrouter.sinks.archive import partition_of, record_line
from logrouter.sinks.batch import Delivery, Outcome, classify_pending
from logrouter.sinks.dedup import DedupWindow

ARRIVAL = 1_700_000_000.0


def record(n: int, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "v": 1,
        "ts": f"2024-05-01T1{n % 3}:00:00.{n:06d}Z",
        "host": "web1",
        "app": "billing",
        "pid": 42,
        "facility": "auth",
        "severity": "err",
        "msg": f"login {n}",
        "src": {"file": "a.py", "line": n},
        "fields": {},
    }
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


def line(n: int, record_id: str | None = None, **changes: Any) -> bytes:
    body = wire.encode(record(n, **changes))
    return batchwire.record_line(body, record_id or f"r{n}")


def message(tag: int, body: bytes, user: str = "alice", app_id: str | None = "billing") -> Delivery:
    props = SimpleNamespace(
        message_id=f"b{tag}+1",
        content_type=batchwire.CONTENT_TYPE,
        headers=batchwire.headers(body.count(b"\n")),
        timestamp=1_600_000_000,
        app_id=app_id,
        user_id=user,
    )
    return Delivery(tag, "auth.err", body, props, arrival=ARRIVAL)


def signed(body: bytes, user: str = "alice") -> bytes:
    """A batch body as the archive writes it: each line with its message's sender last."""
    return body.replace(b"}\n", b',"sender":"' + user.encode() + b'"}\n')


def both(
    pending: list[Delivery], monkeypatch: pytest.MonkeyPatch, **options: Any
) -> tuple[Outcome, Outcome]:
    """(whole_batch enabled, per-line path only) on the same deliveries."""
    window = DedupWindow(10, [("alice", "billing", "r5")])
    options.setdefault("max_record_bytes", 1000)
    whole = classify_pending(pending, lambda f, s: s != "debug", window, **options)
    with monkeypatch.context() as patch:
        patch.setattr(batch_module, "whole_batch", lambda *args: False)
        per_line = classify_pending(pending, lambda f, s: s != "debug", window, **options)
    return whole, per_line


def assert_same(whole: Outcome, per_line: Outcome, *, keep_lines: bool) -> None:
    if keep_lines:  # the archive: each record's line (what it writes) and its ts (partition)
        assert whole.lines == per_line.lines
        # the partition each record goes to (records of one known hour may share a ts)
        assert [partition_of(r["ts"], "hour", ARRIVAL) for r in whole.records] == [
            partition_of(r["ts"], "hour", ARRIVAL) for r in per_line.records
        ]
        for index, text in enumerate(per_line.lines):  # a line not kept is re-encoded
            if text is None:
                assert whole.records[index] == per_line.records[index]
    else:
        assert whole.records == per_line.records
    assert whole.keys == per_line.keys
    assert [(d, r) for d, r in whole.rejected] == [(d, r) for d, r in per_line.rejected]
    assert (whole.duplicates, whole.filtered, whole.suppressed) == (
        per_line.duplicates,
        per_line.filtered,
        per_line.suppressed,
    )
    sources = [whole.source(i) for i in range(len(whole.records))]
    assert sources == [per_line.source(i) for i in range(len(per_line.records))]


ODD_LINES = [
    b"{broken",
    b"",
    b"  ",
    b"[1, 2]",
    b"{}",
    b'{"msg": "no id", "facility": "auth", "severity": "err", "ts": "x"}',
    line(1, facility="Auth"),  # completed: the facility is normalised
    line(2, severity="error"),  # an alias
    line(3, msg=5),
    line(4, ts=None),
    line(5),  # in the dedup window
    line(6, app=None),  # the app_id fills it in
    line(7, severity="debug"),  # filtered
    line(8, msg="x" * 2000),  # over max_record_bytes
    line(9, host="\u2028"),  # a separator to escape
    line(10, fields={"rate_limit_summary": True, "suppressed": 7}),
    line(12, host="caf\u00e9"),
    b'{"id":"r13","facility":"auth","severity":"err","ts":"t","msg":"m","x":"\xff"}',
    b'{"id":"r14","facility":"auth","severity":"err","ts":"t","msg":"m"} {"id":"r15"}',
    b'{"id":"r16","facility":"auth","severity":"err","ts":"t","msg":"m","d":'
    + b"[" * 3000
    + b"]" * 3000
    + b"}",
    line(17) + b"\r",
    line(18, record_id="r19"),
    line(19),  # the same id as the line before: a duplicate inside the batch
    b" " + line(20),  # text around a record: the line is not the record as it came
    line(21) + b" ",
    line(22) + line(23),  # two records on one line
    b"}" + line(24),
    line(25)[:-1] + b"\r}",  # a CR between tokens
    b"{",  # a line of one brace: framed at its start only
    line(26)[:-1],  # a record cut before its closing brace
    line(27, sender="mallory"),  # a sender of its own: the message's replaces it
    line(28, sender="alice"),  # even the true one (the line is encoded again)
    b'{"id":"r29","facility":"auth","severity":"err","ts":"t","msg":"m","\\u0073ender":"x"}',
    b'{"id":"r30","facility":"auth","severity":"err","ts":"t","msg":"m","sender":null}',
]


@pytest.mark.parametrize("keep_lines", [False, True])
def test_a_handler_batch_is_taken_whole_with_the_same_outcome(
    keep_lines: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler's batches (all records new, ours, selected) give the per-line outcome,
    each line kept as its archive line; a duplicate message after them is dropped."""
    first = message(1, batchwire.encode_batch([line(n) for n in range(20, 40)]))
    second = message(2, batchwire.encode_batch([line(n) for n in range(40, 45)]), user="bob")
    again = message(3, first.body)
    whole, per_line = both([first, second, again], monkeypatch, keep_lines=keep_lines)
    assert_same(whole, per_line, keep_lines=keep_lines)
    assert len(whole.records) == 25 and whole.duplicates == 20
    if keep_lines:
        assert b"".join(text or b"" for text in whole.lines) == signed(first.body) + signed(
            second.body, "bob"
        )


@pytest.mark.parametrize("odd", ODD_LINES)
@pytest.mark.parametrize("keep_lines", [False, True])
def test_one_odd_line_gives_the_per_line_outcome(
    odd: bytes, keep_lines: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch with one odd line among good ones: the same outcome as line by line."""
    body = line(30) + b"\n" + odd + b"\n" + line(31) + b"\n"
    whole, per_line = both([message(1, body)], monkeypatch, keep_lines=keep_lines)
    assert_same(whole, per_line, keep_lines=keep_lines)


@pytest.mark.parametrize("odd", ODD_LINES)
@pytest.mark.parametrize("keep_lines", [False, True])
def test_a_message_without_app_id_gives_the_per_line_outcome(
    odd: bytes, keep_lines: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an app_id nothing fills a record's app in: records with no app, a null or
    a number there, and one odd line, give the same outcome as line by line."""
    body = b"\n".join([line(30, app=None), odd, line(31, app=5), line(32)]) + b"\n"
    whole, per_line = both([message(1, body, app_id=None)], monkeypatch, keep_lines=keep_lines)
    assert_same(whole, per_line, keep_lines=keep_lines)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, len(ODD_LINES) + 5), min_size=1, max_size=8),
    st.booleans(),
    st.sampled_from([b"\n", b"\r\n", b"\n\n"]),
)
def test_any_batch_body_gives_the_per_line_outcome(
    picks: list[int], keep_lines: bool, end: bytes
) -> None:
    """Property: any mix of good and odd lines, any line ends: the same outcome."""
    lines = [ODD_LINES[i] if i < len(ODD_LINES) else line(50 + i) for i in picks]
    body = end.join(lines) + end
    with pytest.MonkeyPatch.context() as monkeypatch:
        whole, per_line = both([message(1, body)], monkeypatch, keep_lines=keep_lines)
    assert_same(whole, per_line, keep_lines=keep_lines)


def test_a_refused_record_of_a_whole_batch_is_rejected_as_its_line() -> None:
    """The source of a record taken whole is its line: what a refused record's reject holds."""
    lines = [line(1), line(2)]
    outcome = classify_pending(
        [message(4, batchwire.encode_batch(lines))], lambda f, s: True, DedupWindow(10)
    )
    source = outcome.source(1)
    assert (source.body, source.record_id, source.line, source.tag) == (lines[1], "r2", True, 4)
    assert json.loads(source.body)["msg"] == "login 2"


def test_an_integer_beyond_64_bits_keeps_its_value() -> None:
    """Taken whole, a record's integer beyond 64 bits is JSON's integer (the per-line
    decoder, orjson, would make a float of it); the archive line is the line as it came
    (plus the sender)."""
    big = 123456789012345678901234567890
    body = batchwire.encode_batch([line(1, big=big), line(2)])
    for keep_lines in (False, True):
        outcome = classify_pending(
            [message(1, body)], lambda f, s: True, DedupWindow(10), keep_lines=keep_lines
        )
        assert b"".join(text or b"" for text in outcome.lines) == signed(body)
    assert outcome.duplicates == 0 and json.loads(outcome.lines[0] or b"")["big"] == big
    plain = classify_pending([message(1, body)], lambda f, s: True, DedupWindow(10))
    assert plain.records[0]["big"] == big


@pytest.mark.parametrize("keep_lines", [False, True])
def test_a_body_without_its_last_newline_gives_the_per_line_outcome(
    keep_lines: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch body whose last line has no "\\n" (or ends with a blank line): the same
    outcome as line by line, every record written."""
    lines = [line(n) for n in range(60, 64)]
    for body in (b"\n".join(lines), b"\n".join(lines) + b"\n\n"):
        whole, per_line = both([message(1, body)], monkeypatch, keep_lines=keep_lines)
        assert_same(whole, per_line, keep_lines=keep_lines)
        assert len(whole.records) == 4


@pytest.mark.parametrize("keep_lines", [False, True])
def test_a_batch_taken_whole_gives_each_record_the_messages_sender(keep_lines: bool) -> None:
    """A handler batch taken whole: each record (and its archive line) names the message's
    user_id as sender, once; one line claiming a sender, even spelled with an escape,
    still gets the user_id, never its claim."""
    good = [line(n) for n in range(1, 4)]
    claim = b'{"id":"r9","facility":"auth","severity":"err","ts":"t","msg":"m","\\u0073ender":"x"}'
    for body in (good, [*good, claim]):
        outcome = classify_pending(
            [message(1, batchwire.encode_batch(body), user="mallory")],
            lambda f, s: True,
            DedupWindow(10),
            keep_lines=keep_lines,
        )
        assert len(outcome.records) == len(body)
        if keep_lines:
            written = [
                text or record_line(outcome.records[i]) for i, text in enumerate(outcome.lines)
            ]
            pairs = [json.loads(text, object_pairs_hook=lambda items: items) for text in written]
            assert [[v for k, v in p if k == "sender"] for p in pairs] == [["mallory"]] * len(body)
            assert outcome.lines[0] == signed(good[0] + b"\n", "mallory")
        else:
            assert [r["sender"] for r in outcome.records] == ["mallory"] * len(body)
