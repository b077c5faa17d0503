"""diagnostics: the handler's own stderr lines, drops summed and rate-limited."""

from __future__ import annotations

import pytest

from logrouter.app.diagnostics import REPORT_INTERVAL, DropReport


def test_a_burst_of_drops_is_reported_once_summed_then_rate_limited(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Drops wait a second to be summed, then one line; the next at most 30 s later."""
    drops = DropReport()
    drops.check(3, 100.0, spool_off=True)
    assert capsys.readouterr().err == ""  # summing the burst
    drops.check(5, 101.0, spool_off=True)
    assert capsys.readouterr().err == (
        "logrouter handler: dropped 5 records (buffer full, spool off)\n"
    )
    drops.check(7, 110.0, spool_off=False)
    drops.check(7, 112.0, spool_off=False)
    assert capsys.readouterr().err == ""  # within the interval
    drops.check(9, 101.0 + REPORT_INTERVAL, spool_off=False)
    assert capsys.readouterr().err == (
        "logrouter handler: dropped 4 records (buffer full, spool full or unusable)\n"
    )
