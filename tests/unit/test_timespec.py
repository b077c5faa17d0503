"""Time specs as journalctl takes them, in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from logrouter.timespec import TimeSpecError, parse_time, ts_key

NOW = datetime(2026, 11, 30, 12, 34, 56, 789000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-30T12:00:00Z", datetime(2026, 11, 30, 12, tzinfo=UTC)),
        ("2026-11-30T14:00:00+02:00", datetime(2026, 11, 30, 12, tzinfo=UTC)),
        ("2026-11-30 12:00", datetime(2026, 11, 30, 12, tzinfo=UTC)),
        ("2026-11-30 12:00:30.5", datetime(2026, 11, 30, 12, 0, 30, 500000, tzinfo=UTC)),
        ("2026-11-29", datetime(2026, 11, 29, tzinfo=UTC)),
        ("today", datetime(2026, 11, 30, tzinfo=UTC)),
        ("yesterday", datetime(2026, 11, 29, tzinfo=UTC)),
        ("tomorrow", datetime(2026, 12, 1, tzinfo=UTC)),
        ("now", NOW),
        ("-2h", datetime(2026, 11, 30, 10, 34, 56, 789000, tzinfo=UTC)),
        ("-1h30m", datetime(2026, 11, 30, 11, 4, 56, 789000, tzinfo=UTC)),
        ("+1d", datetime(2026, 12, 1, 12, 34, 56, 789000, tzinfo=UTC)),
        ("-90s", datetime(2026, 11, 30, 12, 33, 26, 789000, tzinfo=UTC)),
    ],
)
def test_accepted_spellings(text: str, expected: datetime) -> None:
    """Each journalctl-style spelling gives the UTC instant it names."""
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "-2x", "soon", "2026-13-01", "12:00", "2026-11-30 25:00"])
def test_bad_time_names_the_token(text: str) -> None:
    """A time that cannot be read raises an error quoting the token and the accepted forms."""
    with pytest.raises(TimeSpecError) as info:
        parse_time(text, NOW)
    assert info.value.token == text
    assert repr(text) in str(info.value)
    assert "today" in str(info.value)


def test_ts_key_sorts_like_the_archive() -> None:
    """The canonical key is the archive's own ts spelling (microseconds, Z)."""
    assert ts_key(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == "2026-01-02T03:04:05.000006Z"
