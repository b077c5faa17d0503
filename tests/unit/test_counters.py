"""One counters schema: what a sink counts reaches status replies, metrics and stats."""

from __future__ import annotations

from dataclasses import fields

from logrouter import control, metrics
from logrouter.commands import stats
from logrouter.counters import COUNTER_NAMES, COUNTERS, SinkCounters


def test_sink_counters_fields_are_the_schema() -> None:
    """SinkCounters counts exactly the counters of the schema (plus state and last error)."""
    names = {f.name for f in fields(SinkCounters)} - {"state", "last_error"}
    assert names == set(COUNTER_NAMES)


def test_filtered_and_write_errors_reach_status() -> None:
    """A status reply carries every counter, filtered and write_errors included."""
    counters = SinkCounters(written=4, filtered=2, write_errors=1, state="running")
    status = control.sink_status(counters, config_version="v", bindings=["#"], uptime=1.0)
    assert status["counters"]["filtered"] == 2
    assert status["counters"]["write_errors"] == 1
    assert set(status["counters"]) == set(COUNTER_NAMES)


def test_every_counter_is_a_metric() -> None:
    """The metrics text has one sample per counter of the schema, with its value."""
    counters = SinkCounters(received=3, filtered=2, write_errors=1)
    text = metrics.render({"errors": counters})
    for spec in COUNTERS:
        value = getattr(counters, spec.name)
        assert f'{spec.metric}{{sink="errors"}} {value}\n' in text


def test_stats_columns_come_from_the_schema() -> None:
    """Each counter with a column appears in the stats header, in schema order."""
    columns = [spec.column for spec in COUNTERS if spec.column]
    header = list(stats.HEADER)
    assert [c for c in header if c in columns] == columns
