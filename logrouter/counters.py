"""The one schema of a sink's live counters.

``COUNTERS`` lists each counter once: the attribute of ``SinkCounters`` (what a
sink increments), the key in a ``status`` reply's ``counters`` (control), the
Prometheus metric (metrics) and the ``stats`` column, if it has one. Add a
counter here and it reaches all four.

``ControlCounters`` are the control service's (one per process, not per sink):
``status`` replies carry them under ``control``, and the metrics endpoint exports
them as ``CONTROL_METRIC`` with one ``outcome`` label per field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class CounterSpec:
    name: str  # SinkCounters attribute, key in status replies
    metric: str  # Prometheus counter name
    help: str  # Prometheus HELP text
    column: str | None  # `logrouter stats` column header; None = not in the table


COUNTERS: tuple[CounterSpec, ...] = (
    CounterSpec(
        "received",
        "logrouter_records_received_total",
        "Deliveries taken from the sink's queue.",
        "RECEIVED",
    ),
    CounterSpec(
        "written",
        "logrouter_records_written_total",
        "Records written to the sink's output.",
        "WRITTEN",
    ),
    CounterSpec(
        "acked", "logrouter_records_acked_total", "Deliveries acknowledged to the broker.", "ACKED"
    ),
    CounterSpec(
        "rejected",
        "logrouter_records_rejected_total",
        "Records rejected to logrouter.rejected (each rejected line of a batch counts one).",
        "REJECTED",
    ),
    CounterSpec(
        "duplicates",
        "logrouter_duplicates_dropped_total",
        "Redelivered duplicates dropped by message_id.",
        "DUPS",
    ),
    CounterSpec(
        "reconnects", "logrouter_reconnects_total", "Broker connections re-established.", "RECONN"
    ),
    CounterSpec(
        "filtered",
        "logrouter_records_filtered_total",
        "Records acked but not selected on re-check.",
        None,
    ),
    CounterSpec(
        "write_errors",
        "logrouter_write_errors_total",
        "Failed write/flush attempts (retried).",
        None,
    ),
    CounterSpec(
        "suppressed",
        "logrouter_records_suppressed_total",
        "Records apps suppressed (rate_limit), as their summary records report.",
        "SUPPRESSED",
    ),
    CounterSpec(
        "expired",
        "logrouter_files_expired_total",
        "Files deleted by keep (retention).",
        None,
    ),
)
COUNTER_NAMES: tuple[str, ...] = tuple(spec.name for spec in COUNTERS)
#: The counters ``logrouter stats`` shows, in column order.
TABLE_COUNTERS: tuple[CounterSpec, ...] = tuple(spec for spec in COUNTERS if spec.column)


@dataclass
class SinkCounters:
    """Live counters of one sink instance (the fields are ``COUNTER_NAMES``), its state
    and last error."""

    received: int = 0
    written: int = 0
    acked: int = 0
    rejected: int = 0
    duplicates: int = 0
    filtered: int = 0
    #: records apps suppressed by rate_limit, from the summary records written
    suppressed: int = 0
    reconnects: int = 0
    write_errors: int = 0
    expired: int = 0  # files deleted by ``keep`` (retention)
    last_error: str | None = None
    state: str = "starting"

    def snapshot(self) -> dict[str, Any]:
        return asdict(self)


def counter_values(source: Any) -> dict[str, int]:
    """``{name: value}`` for every counter of a ``SinkCounters``-like object (0 when absent)."""
    return {name: int(getattr(source, name, 0) or 0) for name in COUNTER_NAMES}


CONTROL_METRIC = "logrouter_control_requests_total"
CONTROL_HELP = (
    "Control requests by outcome: answered, refused (login not in [control] allow_users), "
    "malformed."
)


@dataclass
class ControlCounters:
    """What a control service did since it started (``status``, metrics)."""

    answered: int = 0
    refused: int = 0  # user_id not in [control] allow_users
    malformed: int = 0  # bad reply_to, too big, not a JSON object, or failed to answer

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
