"""Foreign publishers' messages (wire.fill_from_headers, wire.parse_syslog_date): what a
syslog daemon gives lands in the record, in the order body, headers, key/properties."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logrouter import wire
from logrouter.sinks.batch import Batch, Delivery, classify_pending
from logrouter.sinks.dedup import DedupWindow
from tests.unit.batch_reference import classify

#: 2026-11-30T13:00:00Z, the "now" the legacy dates below are read at
NOW = datetime(2026, 11, 30, 13, 0, tzinfo=UTC).timestamp()

#: What Debian's syslog-ng 3.38 amqp() sent for `logger -p auth.err -t prog --id=123 "hello"`
#: (captured live; its default body is empty, so this is a header-only message).
SYSLOG_NG_HEADERS = {
    "DATE": "Nov 30 12:20:06.553551",
    "FACILITY": "auth",
    "HOST": "web-1",
    "HOST_FROM": "web-1",
    "LEGACY_MSGHDR": "prog[123]: ",
    "MESSAGE": "hello",
    "PID": "123",
    "PRIORITY": "err",
    "PROGRAM": "prog",
    "SEQNUM": "1",
    "SOURCE": "s_logrouter",
    "SOURCEIP": "127.0.0.1",
}


def test_header_only_message_takes_everything_from_syslog_ng_headers() -> None:
    """An empty body with syslog-ng's headers decodes to host, app, pid, original time,
    facility, severity and the message from the headers, not the arrival time."""
    record = wire.decode(b"", "auth.err", arrival=NOW, headers=SYSLOG_NG_HEADERS)
    assert record["host"] == "web-1"
    assert record["app"] == "prog"
    assert record["pid"] == 123
    assert record["ts"] == "2026-11-30T12:20:06.553551Z"
    assert (record["facility"], record["severity"]) == ("auth", "err")
    assert record["msg"] == "hello"


def test_text_body_is_the_message_and_headers_fill_the_rest() -> None:
    """A text body stays the msg (MESSAGE is not used); headers give host, app, pid, ts."""
    record = wire.decode(b"the body text\n", "auth.err", arrival=NOW, headers=SYSLOG_NG_HEADERS)
    assert record["msg"] == "the body text"
    assert (record["host"], record["app"], record["pid"]) == ("web-1", "prog", 123)
    assert record["ts"] == "2026-11-30T12:20:06.553551Z"


def test_json_body_wins_over_headers_and_headers_fill_only_what_it_lacks() -> None:
    """Keys the JSON body has are kept as they are; a key it lacks comes from the headers."""
    body = {"ts": "2026-11-30T12:00:00.000001Z", "host": "db-2", "msg": "from body", "pid": 7}
    record = wire.decode(
        wire.encode(body), "auth.err", timestamp=NOW, app_id="props-app", headers=SYSLOG_NG_HEADERS
    )
    assert (record["ts"], record["host"], record["msg"], record["pid"]) == (
        "2026-11-30T12:00:00.000001Z",
        "db-2",
        "from body",
        7,
    )
    assert record["app"] == "prog"  # the header, ahead of the app_id property


def test_without_usable_headers_the_key_and_properties_decide() -> None:
    """Bogus or unrelated headers are ignored: facility/severity from the routing key,
    app from app_id, time from the timestamp property."""
    headers: dict[str, Any] = {
        "DATE": "yesterday-ish",
        "PID": "not-a-pid",
        "PRIORITY": "loud",
        "HOST": "   ",
        "PROGRAM": {"nested": "table"},
        "x-logrouter-reason": "kept from a replay",
    }
    record = wire.decode(b"text", "mail.warning", timestamp=NOW, app_id="postfix", headers=headers)
    assert (record["facility"], record["severity"]) == ("mail", "warning")
    assert record["app"] == "postfix"
    assert record["ts"] == wire.format_ts(NOW)
    assert "pid" not in record and "host" not in record


def test_headers_give_facility_and_severity_when_the_key_does_not() -> None:
    """A publisher with a fixed routing key ("syslog.all"-style) still lands with the
    facility and severity of its headers; names are matched case-insensitively."""
    record = wire.decode(
        b"x", "syslog", arrival=NOW, headers={"facility": "local3", "priority": "warn"}
    )
    assert (record["facility"], record["severity"]) == ("local3", "warning")


@pytest.mark.parametrize(
    ("priority", "facility", "severity"),
    [("3", None, "err"), ("86", "authpriv", "info"), (b"165", "local4", "notice")],
)
def test_numeric_priority_header(priority: Any, facility: str | None, severity: str) -> None:
    """PRIORITY as a number: 0-7 is the severity code, larger is a PRI (facility*8+severity)."""
    record: dict[str, Any] = {}
    assert wire.fill_from_headers(record, {"PRIORITY": priority}, NOW)
    assert record.get("severity") == severity
    assert record.get("facility") == facility


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Nov 30 12:20:06", "2026-11-30T12:20:06.000000Z"),
        ("Nov  3 12:20:06.5", "2026-11-03T12:20:06.500000Z"),
        ("Dec 31 23:59:59.000000", "2025-12-31T23:59:59.000000Z"),  # last year's, not next month
        ("2026-11-30T13:20:06.553551+01:00", "2026-11-30T12:20:06.553551Z"),
        ("2026-11-30T12:20:06Z", "2026-11-30T12:20:06.000000Z"),
        ("2026-11-30T12:20:06", "2026-11-30T12:20:06.000000Z"),  # no zone: UTC
        (b"2026-11-30T12:20:06.1+00:00", "2026-11-30T12:20:06.100000Z"),
        (1764505206, "2025-11-30T12:20:06.000000Z"),
        (datetime(2026, 11, 30, 12, 20, 6, tzinfo=UTC), "2026-11-30T12:20:06.000000Z"),
    ],
)
def test_parse_syslog_date_forms(value: Any, expected: str) -> None:
    """syslog-ng's legacy DATE (with or without fraction), ISO 8601, epoch and datetime
    all become our ts text."""
    assert wire.parse_syslog_date(value, NOW) == expected


@pytest.mark.parametrize(
    "value",
    ["", "Feb 30 10:00:00", "Nov 30 25:00:00", "tomorrow", "9" * 400, -5, 1e300, None, [1], True],
)
def test_parse_syslog_date_refuses_bogus_values(value: Any) -> None:
    """A date that is no date gives None (the caller falls back), never an exception."""
    assert wire.parse_syslog_date(value, NOW) is None


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["DATE", "HOST", "PROGRAM", "PID", "PRIORITY", "FACILITY", "MESSAGE", "x"]),
        st.one_of(
            st.none(),
            st.text(max_size=30),
            st.binary(max_size=30),
            st.integers(),
            st.floats(),
            st.booleans(),
            st.lists(st.integers(), max_size=2),
        ),
        max_size=8,
    ),
    st.binary(max_size=30),
)
def test_any_headers_never_crash_and_the_batch_path_agrees(
    headers: dict[str, Any], body: bytes
) -> None:
    """Property: whatever the headers hold, decoding never raises anything but
    UndecodableMessage, and the consumer's inlined path gives the same records."""
    props = SimpleNamespace(
        message_id="m1", timestamp=None, app_id=None, user_id=None, headers=headers
    )
    items = [Delivery(1, "user.info", body, props, arrival=NOW)]
    slow = classify(items, lambda f, s: True, DedupWindow(3))
    batch = Batch(1, 1.0)
    batch.append(items[0], 0.0)
    quick = classify_pending(batch.take_pending(), lambda f, s: True, DedupWindow(3))
    assert not slow.rejected and not quick.rejected
    assert json.dumps(quick.records, sort_keys=True) == json.dumps(slow.records, sort_keys=True)
    assert quick.records[0]["facility"] and quick.records[0]["severity"] in wire.RANK


def test_non_ascii_digits_in_headers_are_ignored_not_a_crash() -> None:
    """A PID or PRIORITY of digits Python calls digits but int() refuses (superscripts)
    is left out; the record still decodes (Hypothesis found PID='¹')."""
    record = wire.decode(b"hi", "auth.err", arrival=NOW, headers={"PID": "¹", "PRIORITY": "²"})
    assert "pid" not in record or record["pid"] is None
    assert (record["facility"], record["severity"], record["msg"]) == ("auth", "err", "hi")
