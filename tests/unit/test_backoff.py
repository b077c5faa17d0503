"""backoff.Backoff: capped doubling, reset after a healthy period."""

from __future__ import annotations

import pytest

from logrouter.backoff import Backoff, delay


def test_delays_double_up_to_the_cap() -> None:
    """0.5, 1, 2, 4 ... never past the cap."""
    backoff = Backoff(first=0.5, cap=4.0)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_delay_for_a_counted_attempt_doubles_to_the_cap_with_jitter() -> None:
    """delay(n): first * 2**n capped, times [1 - jitter, 1] (the handler's reconnect pause)."""
    assert [delay(n, first=0.1, cap=0.5) for n in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    for n, plain in ((1, 0.2), (3, 0.5), (100, 0.5)):
        assert 0.5 * plain <= delay(n, first=0.1, cap=0.5, jitter=0.5) <= plain


def test_jitter_stays_within_its_band() -> None:
    """With jitter 0.2 each delay is in [0.8, 1] times the plain one."""
    backoff = Backoff(first=1.0, cap=8.0, jitter=0.2)
    for plain in (1.0, 2.0, 4.0, 8.0, 8.0):
        assert 0.8 * plain <= backoff.next() <= plain


def test_a_healthy_period_starts_the_delays_over() -> None:
    """Up for healthy_after seconds, then lost: the next delay is the first one again."""
    now = [0.0]
    backoff = Backoff(first=0.5, cap=30.0, healthy_after=60.0, clock=lambda: now[0])
    for _ in range(8):  # repeated quick failures push the delay to the cap
        backoff.up()
        now[0] += 1.0
        delay = backoff.failed()
    assert delay == 30.0
    backoff.up()
    now[0] += 61.0
    assert backoff.failed() == 0.5


def test_short_connections_keep_growing_the_delay() -> None:
    """Connected for less than healthy_after: no reset (an attacker cannot reset it)."""
    now = [0.0]
    backoff = Backoff(first=1.0, cap=30.0, healthy_after=60.0, clock=lambda: now[0])
    delays = []
    for _ in range(3):
        backoff.up()
        now[0] += 10.0
        delays.append(backoff.failed())
    assert delays == [1.0, 2.0, 4.0]


def test_bad_parameters_are_refused() -> None:
    """A cap below the first delay, or jitter outside 0..1, is a ValueError."""
    with pytest.raises(ValueError):
        Backoff(first=2.0, cap=1.0)
    with pytest.raises(ValueError):
        Backoff(jitter=1.5)
