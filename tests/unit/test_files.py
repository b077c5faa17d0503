"""The record time the writers with files believe (files.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from logrouter.sinks.files import record_time

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "ts",
    [
        "9999-99-99T99:00:00Z",  # not a date
        "\u0662\u0660\u0662\u0664-01-01T00:00:00Z",  # Arabic-Indic digits pass isdigit()
        "2026-03-03T12:00:01Z",  # more than a day ahead
        "yesterday",
        None,
        20260301,
    ],
)
def test_an_unbelievable_record_time_is_the_arrival_time(ts: object) -> None:
    """ts that is not ASCII RFC 3339, not a real date, or more than a day in the future:
    the record's time is the arrival time."""
    assert record_time(ts, NOW) == datetime.fromtimestamp(NOW, UTC)


def test_a_valid_record_time_is_believed() -> None:
    """A real past time (any offset) and one a few hours ahead (clock skew) are kept, in UTC."""
    assert record_time("2020-02-29T23:30:00+02:00", NOW) == datetime(
        2020, 2, 29, 21, 30, tzinfo=UTC
    )
    assert record_time("2026-03-01T18:00:00Z", NOW).hour == 18


def test_a_time_utc_cannot_hold_is_the_arrival() -> None:
    """Year 1 at +01:00 is before year 1 in UTC (and 9999-12-31 at -01:00 after 9999):
    such a ts files the record by its arrival; it raised OverflowError, and the sink
    failed the batch on every redelivery."""
    now = 1_764_567_000.0
    arrival = datetime.fromtimestamp(now, UTC)
    for ts in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        assert record_time(ts, now) == arrival
