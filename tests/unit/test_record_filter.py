"""Query filters: selector, time, fields, grep, and the raw-line prefilter agreeing with them."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from logrouter.record_filter import FieldError, RecordFilter, parse_field, record_key
from logrouter.selector import compile_selector
from logrouter.sinks.archive import record_line


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
