"""Batching and per-batch bookkeeping of the consumer loop (pure).

Deliveries are collected into a ``Batch`` until it is full or its interval has
passed; ``classify`` then decides for each delivery what happens to it: written,
dropped as a duplicate, dropped because the sink's selector does not want it,
or rejected to ``logrouter.rejected`` (with the reason). The whole batch is
acked with one ``multiple=True`` ack once the written part is safe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from logrouter import wire
from logrouter.sinks.dedup import DedupWindow


@dataclass(frozen=True)
class Delivery:
    """One message as it came off the queue."""

    tag: int
    routing_key: str
    body: bytes
    properties: Any  # pika.BasicProperties (kept untyped: pika has no stubs we rely on)
    redelivered: bool = False
    arrival: float = 0.0

    @property
    def message_id(self) -> str | None:
        value = getattr(self.properties, "message_id", None)
        return value if isinstance(value, str) and value else None


class Batch:
    """Deliveries waiting to be written; full at ``size``, due ``interval`` s after the first."""

    def __init__(self, size: int, interval: float) -> None:
        self.size = max(1, size)
        self.interval = max(0.0, interval)
        self.items: list[Delivery] = []
        self.started: float | None = None

    def __len__(self) -> int:
        return len(self.items)

    def add(self, delivery: Delivery, now: float) -> None:
        if self.started is None:
            self.started = now
        self.items.append(delivery)

    @property
    def full(self) -> bool:
        return len(self.items) >= self.size

    def due(self, now: float) -> bool:
        """Full, or non-empty and older than the interval."""
        return self.full or (self.started is not None and now - self.started >= self.interval)

    def time_left(self, now: float, default: float) -> float:
        """Seconds until due (at most ``default``; 0 when already due)."""
        if self.started is None:
            return default
        return max(0.0, min(default, self.started + self.interval - now))

    @property
    def last_tag(self) -> int:
        return self.items[-1].tag

    def take(self) -> list[Delivery]:
        items, self.items, self.started = self.items, [], None
        return items


@dataclass
class Outcome:
    """What to do with one batch."""

    records: list[dict[str, Any]] = field(default_factory=list)
    #: message ids to remember once the batch is committed (written and rejected ones)
    ids: list[str] = field(default_factory=list)
    rejected: list[tuple[Delivery, str]] = field(default_factory=list)
    duplicates: int = 0
    filtered: int = 0


Decoder = Callable[[Delivery], dict[str, Any]]


def decode_delivery(delivery: Delivery) -> dict[str, Any]:
    """``wire.decode`` with the delivery's properties (raises UndecodableMessage)."""
    props = delivery.properties
    timestamp = getattr(props, "timestamp", None)
    app_id = getattr(props, "app_id", None)
    return wire.decode(
        delivery.body,
        delivery.routing_key,
        timestamp=float(timestamp) if isinstance(timestamp, int | float) else None,
        message_id=delivery.message_id,
        app_id=app_id if isinstance(app_id, str) else None,
        arrival=delivery.arrival or None,
    )


def classify(
    deliveries: list[Delivery],
    matches: Callable[[str, str], bool],
    dedup: DedupWindow,
    decoder: Decoder = decode_delivery,
) -> Outcome:
    """Split a batch into records to write, duplicates, filtered and rejected ones.

    ``dedup`` is only read: ids enter the window when the batch is committed, so
    a batch that fails to be written is not mistaken for duplicates when it is
    redelivered. Duplicates inside the batch itself are dropped too.
    """
    outcome = Outcome()
    in_batch: set[str] = set()
    for delivery in deliveries:
        message_id = delivery.message_id
        if message_id is not None and (message_id in dedup or message_id in in_batch):
            outcome.duplicates += 1
            continue
        try:
            record = decoder(delivery)
        except Exception as exc:  # a sink never crashes on input
            reason = str(exc) if isinstance(exc, wire.UndecodableMessage) else repr(exc)
            outcome.rejected.append((delivery, reason))
        else:
            if not matches(str(record["facility"]), str(record["severity"])):
                outcome.filtered += 1
                continue
            outcome.records.append(record)
        if message_id is not None:
            in_batch.add(message_id)
            outcome.ids.append(message_id)
    return outcome
