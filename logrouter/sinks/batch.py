"""Batching and per-batch bookkeeping of the consumer loop (pure).

Deliveries are collected into a ``Batch`` until it is full or its interval has
passed; ``classify`` then decides for each delivery what happens to it: written,
dropped as a duplicate, dropped because the sink's selector does not want it,
or rejected to ``logrouter.rejected`` (with the reason). The whole batch is
acked with one ``multiple=True`` ack once the written part is safe.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

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


class Pending:
    """A taken batch as parallel lists (no object per delivery on the hot path)."""

    __slots__ = ("arrivals", "bodies", "keys", "props", "redelivered", "tags")

    def __init__(self) -> None:
        self.tags: list[int] = []
        self.keys: list[str] = []
        self.bodies: list[bytes] = []
        self.props: list[Any] = []
        self.redelivered: list[bool] = []
        self.arrivals: list[float] = []

    def __len__(self) -> int:
        return len(self.tags)

    def delivery(self, index: int) -> Delivery:
        """The ``index``-th delivery as an object (for rejects and tests)."""
        return Delivery(
            self.tags[index],
            self.keys[index],
            self.bodies[index],
            self.props[index],
            self.redelivered[index],
            self.arrivals[index],
        )

    def deliveries(self) -> list[Delivery]:
        return [self.delivery(i) for i in range(len(self.tags))]


class Batch:
    """Deliveries waiting to be written; full at ``size``, due ``interval`` s after the first."""

    def __init__(self, size: int, interval: float) -> None:
        self.size = max(1, size)
        self.interval = max(0.0, interval)
        self.pending = Pending()
        self.started: float | None = None

    def __len__(self) -> int:
        return len(self.pending.tags)

    @property
    def items(self) -> list[Delivery]:
        """The deliveries in hand, as objects (a copy; the loop uses ``len``)."""
        return self.pending.deliveries()

    def add(self, delivery: Delivery, now: float) -> None:
        self.append(
            delivery.tag,
            delivery.routing_key,
            delivery.body,
            delivery.properties,
            delivery.redelivered,
            delivery.arrival,
            now,
        )

    def append(
        self,
        tag: int,
        routing_key: str,
        body: bytes,
        properties: Any,
        redelivered: bool,
        arrival: float,
        now: float,
    ) -> None:
        """``add`` without building a ``Delivery`` (the consumer's per-message path)."""
        if self.started is None:
            self.started = now
        pending = self.pending
        pending.tags.append(tag)
        pending.keys.append(routing_key)
        pending.bodies.append(body)
        pending.props.append(properties)
        pending.redelivered.append(redelivered)
        pending.arrivals.append(arrival)

    @property
    def full(self) -> bool:
        return len(self.pending.tags) >= self.size

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
        return self.pending.tags[-1]

    def take_pending(self) -> Pending:
        """Hand over the batch (parallel lists) and start an empty one."""
        pending, self.pending, self.started = self.pending, Pending(), None
        return pending

    def take(self) -> list[Delivery]:
        return self.take_pending().deliveries()


@dataclass
class Outcome:
    """What to do with one batch."""

    records: list[dict[str, Any]] = field(default_factory=list)
    #: message ids to remember once the batch is committed (written and rejected ones)
    ids: list[str] = field(default_factory=list)
    rejected: list[tuple[Delivery, str]] = field(default_factory=list)
    duplicates: int = 0
    filtered: int = 0
    #: with ``keep_lines``: per record, its JSON line when the body already is the
    #: record (an archive writes it as is), else None
    lines: list[bytes | None] = field(default_factory=list)


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


def _timestamp(props: Any) -> float | None:
    value = getattr(props, "timestamp", None)
    return float(value) if isinstance(value, int | float) else None


def classify_pending(
    pending: Pending,
    matches: Callable[[str, str], bool],
    dedup: DedupWindow,
    *,
    keep_lines: bool = False,
) -> Outcome:
    """``classify`` with ``wire.decode`` inlined, on parallel lists (the consumer's path).

    Same outcome as ``classify(pending.deliveries(), matches, dedup)``; with
    ``keep_lines``, ``outcome.lines`` also holds the JSON line of each record
    whose body already is that record (see ``archive.body_line``).
    """
    outcome = Outcome()
    records = outcome.records
    ids = outcome.ids
    lines = outcome.lines
    in_batch: set[str] = set()
    loads = orjson.loads
    complete = wire.complete
    parse_slow = wire.parse_object_slow
    decode_error = orjson.JSONDecodeError
    keys = pending.keys
    props_list = pending.props
    arrivals = pending.arrivals
    cache: dict[tuple[str, str], bool] = {}
    for index, body in enumerate(pending.bodies):
        props = props_list[index]
        message_id = getattr(props, "message_id", None)
        if not (isinstance(message_id, str) and message_id):
            message_id = None
        elif message_id in dedup or message_id in in_batch:
            outcome.duplicates += 1
            continue
        exact = False
        record: dict[str, Any] | None = None
        try:
            if body[:1] == b"{":
                try:
                    parsed = loads(body)
                    exact = True
                except decode_error:
                    parsed = parse_slow(body)
                if isinstance(parsed, dict) and parsed:
                    record = parsed
            if record is None:
                exact = False
                record = {"msg": body.decode("utf-8", "replace").rstrip("\r\n")}
            headers = getattr(props, "headers", None)  # syslog-ng: HOST, PROGRAM, PID, DATE...
            if isinstance(headers, dict) and wire.fill_from_headers(
                record, headers, arrivals[index] or None
            ):
                exact = False
            app_id = None if isinstance(record.get("app"), str) else getattr(props, "app_id", None)
            state = complete(
                record,
                keys[index],
                None if isinstance(record.get("ts"), str) else _timestamp(props),
                message_id,
                app_id if isinstance(app_id, str) else None,
                arrivals[index] or None,
            )
        except Exception as exc:  # a sink never crashes on input
            reason = str(exc) if isinstance(exc, wire.UndecodableMessage) else repr(exc)
            outcome.rejected.append((pending.delivery(index), reason))
        else:
            pair = (record["facility"], record["severity"])
            wanted = cache.get(pair)
            if wanted is None:
                wanted = cache[pair] = matches(*pair)
            if not wanted:
                outcome.filtered += 1
                continue
            records.append(record)
            if keep_lines:
                lines.append(
                    body_line(body, message_id if state == wire.ID_ADDED else None)
                    if exact and state != wire.CHANGED
                    else None
                )
        if message_id is not None:
            in_batch.add(message_id)
            ids.append(message_id)
    return outcome


_ONE_LINE = (
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
    (b"\xc2\x85", b"\\u0085"),
)


def body_line(body: bytes, added_id: str | None) -> bytes | None:
    """The JSON line of a record that is its (valid UTF-8, compact enough) body (pure).

    ``added_id``: the ``id`` that decoding appended to it. None when the body
    cannot be one line as it is (a line break between tokens).
    """
    if b"\n" in body or b"\r" in body:
        return None
    if added_id is not None:
        body = body.rstrip(b" \t")
        if body[-1:] != b"}":
            return None
        if (
            added_id.isascii()
            and added_id.isprintable()
            and '"' not in added_id
            and "\\" not in added_id
        ):
            quoted = b'"' + added_id.encode("ascii") + b'"'
        else:
            quoted = json.dumps(added_id).encode("ascii")
        body = body[:-1] + b',"id":' + quoted + b"}"
    if not body.isascii():
        for raw, escaped in _ONE_LINE:
            if raw in body:
                body = body.replace(raw, escaped)
    return body + b"\n"
