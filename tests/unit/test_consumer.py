"""Pure parts of the consumer loop (consumer.py): backoff."""

from __future__ import annotations

from logrouter.sinks.consumer import Backoff


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    """Retry delays grow 0.5, 1, 2 ... up to the cap, and start over after success."""
    backoff = Backoff(first=0.5, cap=3.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next() == 0.5
