"""The reference the consumer's inlined batch path is checked against (tests only).

``classify`` is ``batch.classify_pending`` written the plain way, with
``wire.decode``: the property tests assert both agree. ``add``, ``take`` and
``time_left`` are the object-per-delivery views of a ``Batch`` the tests use.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Any

from logrouter import wire
from logrouter.sinks.batch import Batch, Delivery, Outcome
from logrouter.sinks.dedup import DedupKey, dedup_key

Decoder = Callable[[Delivery], dict[str, Any]]


def decode_delivery(delivery: Delivery) -> dict[str, Any]:
    """``wire.decode`` with the delivery's properties (raises UndecodableMessage)."""
    props = delivery.properties
    timestamp = getattr(props, "timestamp", None)
    app_id = getattr(props, "app_id", None)
    headers = getattr(props, "headers", None)
    return wire.decode(
        delivery.body,
        delivery.routing_key,
        timestamp=float(timestamp) if isinstance(timestamp, int | float) else None,
        message_id=delivery.message_id,
        app_id=app_id if isinstance(app_id, str) else None,
        arrival=delivery.arrival or None,
        headers=headers if isinstance(headers, dict) else None,
    )


def classify(
    deliveries: list[Delivery],
    matches: Callable[[str, str], bool],
    dedup: Container[DedupKey],
    decoder: Decoder = decode_delivery,
    max_record_bytes: int = 0,
) -> Outcome:
    """Split a batch into records to write, duplicates, filtered and rejected ones."""
    outcome = Outcome()
    in_batch: set[DedupKey] = set()
    for delivery in deliveries:
        key = dedup_key(delivery.properties)
        if key is not None and (key in dedup or key in in_batch):
            outcome.duplicates += 1
            continue
        if max_record_bytes and len(delivery.body) > max_record_bytes:
            outcome.rejected.append(
                (delivery, f"record of {len(delivery.body)} bytes exceeds max_record_bytes")
            )
            continue
        try:
            record = decoder(delivery)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, wire.UndecodableMessage) else repr(exc)
            outcome.rejected.append((delivery, reason))
            continue
        if not matches(str(record["facility"]), str(record["severity"])):
            outcome.filtered += 1
            continue
        outcome.records.append(record)
        outcome.sources.append(delivery)
        outcome.keys.append(key)
        if key is not None:
            in_batch.add(key)
    return outcome


def add(batch: Batch, delivery: Delivery, now: float) -> None:
    """``batch.append`` (kept as the tests' spelling)."""
    batch.append(delivery, now)


def take(batch: Batch) -> list[Delivery]:
    """The deliveries of the batch, handed over."""
    return batch.take_pending()


def time_left(batch: Batch, now: float, default: float) -> float:
    """Seconds until the batch is due (at most ``default``; 0 when already due)."""
    if batch.started is None:
        return default
    return max(0.0, min(default, batch.started + batch.interval - now))
