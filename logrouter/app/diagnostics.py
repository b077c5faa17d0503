"""The handler's own diagnostics: one line on stderr, never through logging.

``report`` writes a line; ``DropReport`` says how many records were dropped,
a burst summed for a second and then at most every ``REPORT_INTERVAL`` seconds.
"""

from __future__ import annotations

import contextlib
import sys

REPORT_INTERVAL = 30.0


def report(text: str) -> None:
    """The handler's own diagnostics: straight to stderr, never through logging."""
    with contextlib.suppress(Exception):
        sys.stderr.write(f"logrouter handler: {text}\n")
        sys.stderr.flush()


class DropReport:
    """Reports growth of a drop counter on stderr, rate-limited (see the module docstring)."""

    def __init__(self) -> None:
        self._last_report = -REPORT_INTERVAL
        self._reported = 0
        self._since: float | None = None  # first drop not reported yet

    def check(self, dropped: int, now: float, *, spool_off: bool) -> None:
        """Called periodically with the drop counter and the monotonic clock."""
        if dropped == self._reported:
            return
        if self._since is None:
            self._since = now
        if now - self._since < 1.0 or now - self._last_report < REPORT_INTERVAL:
            return
        self._last_report, self._since = now, None
        count, self._reported = dropped - self._reported, dropped
        reason = "spool off" if spool_off else "spool full or unusable"
        report(f"dropped {count} records (buffer full, {reason})")
