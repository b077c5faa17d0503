"""Query filters: selector, time, fields, grep, and the raw-line prefilter agreeing with them."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logrouter.record_filter import FieldError, RecordFilter, parse_field, record_key
from logrouter.selector import compile_selector
from logrouter.severity import SEVERITIES
from logrouter.sinks.archive import body_line, record_line


def rec(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ts": "2026-11-30T12:00:00.000000Z",
        "app": "billing",
        "facility": "auth",
        "severity": "err",
        "msg": "payment failed",
        "fields": {"order": 42, "user": "bob", "ok": False},
        "id": "m1",
    }
    base.update(kw)
    return base


def check(query: RecordFilter, record: dict[str, Any]) -> bool:
    """What the reader does: prefilter on the archived line, then the full test."""
    line = record_line(record).rstrip(b"\n")
    full = query.wants(record, record_key(record))
    if not query.wants_line(line):
        assert not full, "the prefilter dropped a record the filter wants"
    return full


def test_selector_and_prefilter() -> None:
    """'*.err' keeps err and worse; the raw prefilter drops the rest without decoding."""
    query = RecordFilter(selector=compile_selector("*.err"))
    assert check(query, rec(severity="crit"))
    assert not check(query, rec(severity="info"))
    assert not query.wants_line(record_line(rec(severity="info")).rstrip())


def test_prefilter_never_decides_on_lines_it_cannot_read_exactly() -> None:
    """Spaced JSON, a nested 'severity' key or escapes: the prefilter passes the line on."""
    query = RecordFilter(selector=compile_selector("*.err"))
    spaced = json.dumps(rec(severity="err")).encode()
    assert query.wants_line(spaced)
    nested = record_line(rec(severity="err", fields={"severity": "debug"})).rstrip()
    assert query.wants_line(nested)
    assert check(query, rec(severity="err", fields={"severity": "debug"}))


def test_negated_facility_selector() -> None:
    """'*.info;mail.none' keeps auth.info and drops every mail record."""
    query = RecordFilter(selector=compile_selector("*.info;mail.none"))
    assert check(query, rec(severity="info"))
    assert not check(query, rec(facility="mail", severity="err"))


def test_time_range_is_half_open() -> None:
    """--since is inclusive, --until exclusive; other ts spellings compare by instant."""
    query = RecordFilter(
        since=datetime(2026, 11, 30, 12, tzinfo=UTC), until=datetime(2026, 11, 30, 13, tzinfo=UTC)
    )
    assert check(query, rec(ts="2026-11-30T12:00:00.000000Z"))
    assert check(query, rec(ts="2026-11-30T14:59:59+02:00"))
    assert not check(query, rec(ts="2026-11-30T13:00:00.000000Z"))
    assert not check(query, rec(ts="2026-11-30T11:59:59.999999Z"))


@pytest.mark.parametrize(
    ("token", "wanted"),
    [
        ("app=billing", True),
        ("app=shop", False),
        ("fields.order=42", True),
        ("fields.order=43", False),
        ("fields.ok=false", True),
        ("fields.missing=x", False),
        ("msg=payment failed", True),
    ],
)
def test_fields(token: str, wanted: bool) -> None:
    """--field KEY=VALUE addresses top-level keys and fields.*; numbers compare as text."""
    assert check(RecordFilter(fields=(parse_field(token),)), rec()) is wanted


@pytest.mark.parametrize("token", ["app", "=x", "fields..order=1"])
def test_bad_field_names_the_token(token: str) -> None:
    """A field that is not KEY=VALUE is refused, quoting it."""
    with pytest.raises(FieldError, match=re.escape(repr(token))):
        parse_field(token)


def test_grep_matches_the_message_even_through_json_escapes() -> None:
    """--grep searches msg as decoded: a literal after a quote or newline still matches."""
    query = RecordFilter(grep=re.compile("failed"))
    assert check(query, rec())
    assert check(query, rec(msg='a "quoted"\nline failed'))
    assert not check(query, rec(msg="all good"))
    assert check(RecordFilter(grep=re.compile(r'd"\n')), rec(msg='quote d"\n'))


# --- counting a member off its raw bytes ---------------------------------------------

COUNT_SELECTORS = [
    "*.*",
    "*.err",
    "*.=err",
    "*.=emerg",
    "*.!=debug",
    "auth,mail.*",
    "*.info;mail.none",
]
_text = st.sampled_from(["", "ok", "a {b}"]) | st.text(
    alphabet=st.sampled_from('ab{}[]":,\\/ \u00e9\u2028\nseverityfacilityerr')
)
_KEYS = ["severity", "facility", 'x"severity', 'x"facility', "x"]
_value = st.one_of(_text, st.integers(), st.none(), st.sampled_from(sorted(SEVERITIES)))


@st.composite
def archived_lines(draw: st.DrawFn) -> bytes:
    """One line as the archive writer writes it: a completed record re-encoded, or a
    foreign body kept as it came (any spacing and key order, repeated or escaped keys)."""
    record = rec(
        facility=draw(st.sampled_from(["auth", "mail", "kern"])),
        severity=draw(st.sampled_from(SEVERITIES)),
        msg=draw(_text),
        fields=draw(st.dictionaries(st.sampled_from(_KEYS) | _text, _value, max_size=2)),
    )
    form = draw(st.sampled_from(["writer", "spaced", "repeated", "escaped", "sorted"]))
    if form == "writer":
        return record_line(record)
    body = json.dumps(
        record,
        sort_keys=form == "sorted",
        ensure_ascii=draw(st.booleans()),
        separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])),
    )
    if form == "repeated":
        body = '{"severity":"err",' + body[1:]  # the later key wins
    elif form == "escaped":
        other = "debug" if record["severity"] != "debug" else "emerg"  # the one decoded
        body = body[:-1] + ',"sev\\u0065rity":"' + other + '"}'
    line = body_line(body.encode(), None)
    assert line is not None
    return line


def decoded_count(query: RecordFilter, member: bytes) -> int:
    """What decoding every line and testing it in full counts."""
    records = [orjson.loads(line) for line in member.splitlines() if line]
    return sum(query.wants(r, record_key(r)) for r in records)


@settings(max_examples=200, deadline=None)
@given(st.lists(archived_lines(), min_size=1, max_size=4), st.sampled_from(COUNT_SELECTORS))
def test_raw_count_is_exact_or_declines(lines: list[bytes], selector: str) -> None:
    """count_raw on a member of any lines the writer may write answers the decoded count or
    None (then the reader decodes), and the raw prefilter keeps every wanted line: nested,
    spaced, repeated and escaped keys never miscount nor drop a record."""
    query = RecordFilter(selector=compile_selector(selector))
    member = b"".join(lines)
    counted = query.count_raw(member)
    assert counted is None or counted == decoded_count(query, member)
    wanted = [line.rstrip(b"\n") for line in lines if decoded_count(query, line)]
    assert not Counter(wanted) - Counter(query.candidates(member))


@pytest.mark.parametrize("selector", COUNT_SELECTORS)
def test_raw_count_decides_members_of_plain_records(selector: str) -> None:
    """A member of the handler's records (compact, no escapes) is counted without decoding."""
    records = [
        rec(facility=f, severity=s, msg=f"m{n}", id=str(n))
        for n, (f, s) in enumerate((f, s) for f in ("auth", "mail", "kern") for s in SEVERITIES)
    ]
    member = b"".join(record_line(r) for r in records)
    query = RecordFilter(selector=compile_selector(selector))
    assert query.count_raw(member) == decoded_count(query, member)
    assert (
        RecordFilter(selector=query.selector, fields=(parse_field("app=x"),)).count_raw(member)
        is None
    )


def test_a_ts_that_is_no_time_or_past_utc_gives_the_default_key() -> None:
    """A canonical-looking ts that is no time (letters for digits, month 13) and one UTC
    cannot hold (year 1 at +01:00) key as the default (the file's partition start), so
    query -f and replay, which parse every key, never meet one (they stopped with a
    traceback)."""
    for ts in (
        "2026-12-01T05:59:59.zzzzzzZ",
        "2026-13-01T05:59:59.000000Z",
        "2026-02-31T05:59:59.000000Z",
        "0001-01-01T00:00:00+01:00",
    ):
        assert record_key({"ts": ts}, "DEFAULT") == "DEFAULT", ts
    assert record_key({"ts": "2026-12-01T05:59:59.000001Z"}) == "2026-12-01T05:59:59.000001Z"
    assert record_key({"ts": "2026-12-01T06:59:59+01:00"}) == "2026-12-01T05:59:59.000000Z"


def test_a_key_before_year_1000_sorts_before_later_ones() -> None:
    """Year 999 keys as 0999-..., so it sorts before 2026 (strftime's %Y gave 999-...,
    after every later year)."""
    assert record_key({"ts": "0999-01-01T00:00:00Z"}) == "0999-01-01T00:00:00.000000Z"
    assert record_key({"ts": "0999-01-01T00:00:00Z"}) < record_key({"ts": "2026-01-01T00:00:00Z"})
