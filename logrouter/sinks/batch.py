"""Batching and per-batch bookkeeping of the consumer loop (pure).

Deliveries are collected into a ``Batch`` until it is full or its interval has
passed; ``classify_pending`` then decides for each delivery what happens to it:
written, dropped as a duplicate, dropped because the sink's selector does not
want it, or rejected to ``logrouter.rejected`` (with the reason). The whole
batch is acked with one ``multiple=True`` ack once the written part is safe.

Duplicates are recognised by ``dedup.dedup_key`` (user_id, app_id,
message_id); only written records' keys are remembered, so a rejected
message's forged id never suppresses a later valid one.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from logrouter import wire
from logrouter.batchwire import MAX_LINES, is_batch, split_batch
from logrouter.sinks.archive import body_line, unspliced, with_sender
from logrouter.sinks.dedup import DedupKey, dedup_user
from logrouter.sinks.fastbatch import Classifying, note_count, suppressed_in, whole_batch
from logrouter.total_decoding import undecodable

#: a batch body longer than this has its lines counted (the MAX_LINES cap) before any
#: split, so that a hostile one never becomes millions of lines in memory; a shorter one
#: (a handler's, ~128 KiB at most) is counted by the split that whole_batch makes anyway
SPLIT_UNCOUNTED = 1 << 20


class Delivery(NamedTuple):
    """One message as it came off the queue (or one line of a batch message).

    A line of a batch (``logrouter.batchwire``) is a Delivery of its own when it
    must be rejected alone: ``line`` is True, ``body`` is the line, ``record_id``
    its record's id (if any), ``properties`` still the batch message's.
    """

    tag: int
    routing_key: str
    body: bytes
    properties: Any  # pika.BasicProperties (kept untyped: pika has no stubs we rely on)
    redelivered: bool = False
    arrival: float = 0.0
    record_id: str | None = None
    line: bool = False

    @property
    def message_id(self) -> str | None:
        value = getattr(self.properties, "message_id", None)
        return value if isinstance(value, str) and value else None


#: A commit takes up to this many records of what is in hand (or ``batch_size`` when
#: larger): deliveries read while a commit waited for its fsync make big group
#: commits in a drain (fewer fsyncs and acks), and this bounds what one decodes.
SLICE_RECORDS = 50_000


class Batch:
    """Deliveries waiting to be written; full at ``size`` records, due ``interval`` s after
    the first.

    Deliveries keep arriving while a commit waits for its fsync, so many batches' worth
    can be in hand: ``take_slice`` hands over the oldest ``slice_records`` of them (or
    ``size`` when larger; whole deliveries, at least one) and the rest wait for the next
    commit, so that no commit decodes, writes and journals without bound.
    """

    def __init__(self, size: int, interval: float, slice_records: int = SLICE_RECORDS) -> None:
        self.size = max(1, size)
        self.interval = max(0.0, interval)
        self.slice_records = slice_records
        self.pending: list[Delivery] = []
        #: per pending delivery: the records it carries
        self.counts: list[int] = []
        self.started: float | None = None
        #: records in hand: a batch message counts as the lines it holds
        self.records = 0

    def __len__(self) -> int:
        return len(self.pending)

    def append(self, delivery: Delivery, now: float, records: int = 1) -> None:
        """Add one delivery (``now``: monotonic time, starts the interval of a new batch).

        ``records``: how many records the delivery carries (a batch message's
        lines), so that ``size`` bounds records, not messages.
        """
        if self.started is None:
            self.started = now
        self.pending.append(delivery)
        self.counts.append(records)
        self.records += records

    @property
    def full(self) -> bool:
        return self.records >= self.size

    def due(self, now: float) -> bool:
        """Full, or non-empty and older than the interval."""
        return self.full or (self.started is not None and now - self.started >= self.interval)

    @property
    def last_tag(self) -> int:
        return self.pending[-1].tag

    def take_slice(self) -> list[Delivery]:
        """Hand over the oldest deliveries holding up to ``slice_records`` records (at
        least one delivery); the rest stay in hand, as old as the batch was (so due)."""
        counts = self.counts
        taken = records = 0
        limit = max(self.size, self.slice_records)
        for count in counts:
            if taken and records + count > limit:
                break
            taken += 1
            records += count
        if taken == len(counts):
            return self.take_pending()
        pending, self.pending = self.pending[:taken], self.pending[taken:]
        del counts[:taken]
        self.records -= records
        return pending

    def take_pending(self) -> list[Delivery]:
        """Hand over every delivery in hand and start an empty batch."""
        pending, self.pending, self.started = self.pending, [], None
        self.counts = []
        self.records = 0
        return pending


@dataclass
class Outcome:
    """What to do with one batch: per record written, its source and its dedup key."""

    #: dicts, but for the ``rows`` (``fastbatch.row_type``) of a writer with ``row_keys``
    records: list[dict[str, Any]] = field(default_factory=list)
    #: per record: the delivery it came from (to reject it if its target refuses it)
    sources: list[Delivery] = field(default_factory=list)
    #: per record: its dedup key (None without message_id)
    keys: list[DedupKey | None] = field(default_factory=list)
    rejected: list[tuple[Delivery, str]] = field(default_factory=list)
    duplicates: int = 0
    filtered: int = 0
    #: with ``keep_lines``: per record, its JSON line when the body already is the
    #: record (an archive writes it as is), else None
    lines: list[bytes | None] = field(default_factory=list)
    #: records apps suppressed (``rate_limit``), as the summary records among these say
    suppressed: int = 0
    #: how many of ``records`` are rows (``fastbatch.row_type``), not dicts: with
    #: ``row_keys``, the records of a batch message the writer renders from its keys
    rows: int = 0
    #: batch messages whose lines are not the count they declare, and what is wrong
    #: (their records are written; the sink says so: records may be missing)
    miscounted: list[tuple[Delivery, str]] = field(default_factory=list)

    def source(self, index: int) -> Delivery:
        """The delivery record ``index`` came from, to reject it alone: a line of a batch
        message is a ``Delivery`` of that line (built here, only when one is rejected)."""
        source = self.sources[index]
        if source.line or not is_batch(getattr(source.properties, "content_type", None)):
            return source
        line = (self.lines[index] or b"").rstrip(b"\n")
        sender = wire.message_sender(source.properties)
        if sender is not None:
            line = unspliced(line, sender)  # the line as it came (fastbatch added it)
        key = self.keys[index]
        return source._replace(body=line, record_id=key[2] if key else None, line=True)

    def committed_keys(self, refused: Iterable[int] = ()) -> list[DedupKey]:
        """Keys to remember once written: every record's but the ``refused`` ones'."""
        skip = set(refused)
        if not skip:
            return [key for key in self.keys if key is not None]
        return [key for index, key in enumerate(self.keys) if key is not None and index not in skip]


def _timestamp(props: Any) -> float | None:
    value = getattr(props, "timestamp", None)
    return float(value) if isinstance(value, int | float) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def classify_pending(
    pending: list[Delivery],
    matches: Callable[[str, str], bool],
    dedup: Container[DedupKey],
    *,
    keep_lines: bool = False,
    max_record_bytes: int = 0,
    row_keys: tuple[str, ...] | None = None,
) -> Outcome:
    """Decode a batch (``wire.decode`` inlined) and split it (see the module docstring).

    ``dedup`` is only read: keys enter the window when the batch is committed, so
    a batch that fails to be written is not mistaken for duplicates when it is
    redelivered. Duplicates inside the batch itself are dropped too. A body over
    ``max_record_bytes`` (0: no limit) is rejected. With ``keep_lines``,
    ``outcome.lines`` holds the JSON line of each record whose body already is
    that record (see ``archive.body_line``). With ``row_keys`` (a writer's
    ``row_keys``), the records of a batch message may be rows (``outcome.rows``).
    """
    outcome = Outcome()
    records = outcome.records
    lines = outcome.lines
    sources = outcome.sources
    keys = outcome.keys
    batch = Classifying(matches, dedup, keep_lines, max_record_bytes, row_keys=row_keys)
    in_batch = batch.in_batch
    selects = batch.selects
    loads = orjson.loads
    complete = wire.complete
    parse_slow = wire.parse_object_slow
    parse_padded = wire.parse_object
    decode_error = orjson.JSONDecodeError
    for delivery in pending:
        props = delivery.properties
        if getattr(props, "headers", None) and (why := undecodable(props)) is not None:
            outcome.rejected.append((delivery, why))  # its headers as bytes, in the copy
            continue
        if is_batch(getattr(props, "content_type", None)):
            _classify_lines(delivery, outcome, batch)
            continue
        message_id = _text(getattr(props, "message_id", None))
        app_id = _text(getattr(props, "app_id", None))
        key: DedupKey | None = None
        if message_id is not None:
            key = (dedup_user(props), app_id or "", message_id)
            if key in dedup or key in in_batch:
                outcome.duplicates += 1
                continue
        body = delivery.body
        if max_record_bytes and len(body) > max_record_bytes:
            outcome.rejected.append(
                (delivery, f"record of {len(body)} bytes exceeds max_record_bytes")
            )
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
                padded = parse_padded(body) if body[:1] != b"{" else None  # BOM, spaces
                record = padded or {"msg": body.decode("utf-8", "replace").rstrip("\r\n")}
            headers = getattr(props, "headers", None)  # syslog-ng: HOST, PROGRAM, PID, DATE...
            if isinstance(headers, dict) and wire.fill_from_headers(
                record, headers, delivery.arrival or None
            ):
                exact = False
            state = complete(
                record,
                delivery.routing_key,
                None if isinstance(record.get("ts"), str) else _timestamp(props),
                message_id,
                None if isinstance(record.get("app"), str) else app_id,
                delivery.arrival or None,
            )
        except Exception as exc:  # a sink never crashes on input
            reason = str(exc) if isinstance(exc, wire.UndecodableMessage) else repr(exc)
            outcome.rejected.append((delivery, reason))
            continue
        if not selects(record["facility"], record["severity"]):
            outcome.filtered += 1
            continue
        sender = wire.message_sender(props)
        claimed = wire.set_sender(record, sender)  # a body's own "sender" is never kept
        records.append(record)
        sources.append(delivery)
        keys.append(key)
        if key is not None:
            in_batch.add(key)
        lines.append(
            body_line(body, message_id if state == wire.ID_ADDED else None, sender)
            if keep_lines and exact and state != wire.CHANGED and not claimed
            else None
        )
        outcome.suppressed += suppressed_in((record,))
    return outcome


def _rejected_over_max_lines(delivery: Delivery, outcome: Outcome) -> bool:
    """Reject a batch of more than MAX_LINES lines whole; True when it was."""
    body = delivery.body
    if len(body) > MAX_LINES and body.count(b"\n") > MAX_LINES:  # no count for a short one
        outcome.rejected.append((delivery, f"batch of more than {MAX_LINES:,} records"))
        return True
    return False


def _classify_lines(delivery: Delivery, outcome: Outcome, batch: Classifying) -> None:
    """``classify_pending`` for one batch message: every line is a record of its own.

    Dedup, the selector, the size cap and rejection apply per record; a line
    that is not a record is rejected alone (a ``Delivery`` of that line).
    """
    props = delivery.properties
    body = delivery.body
    # a handler's batch is split by whole_batch uncounted (it declines one over MAX_LINES)
    counted_first = len(body) > SPLIT_UNCOUNTED
    if counted_first and _rejected_over_max_lines(delivery, outcome):
        return
    app_id = _text(getattr(props, "app_id", None))
    user = dedup_user(props)
    sender = wire.message_sender(props)
    if whole_batch(delivery, outcome, batch, user, sender):
        return
    if not counted_first and _rejected_over_max_lines(delivery, outcome):
        return
    dedup, in_batch, max_record_bytes = batch.dedup, batch.in_batch, batch.max_record_bytes
    items = split_batch(
        delivery.body,
        delivery.routing_key,
        message_id=_text(getattr(props, "message_id", None)),
        timestamp=_timestamp(props),
        app_id=app_id,
        arrival=delivery.arrival or None,
        max_line_bytes=max_record_bytes,
    )
    note_count(delivery, len(items), outcome)
    for item in items:
        key: DedupKey | None = None
        if item.id is not None:
            key = (user, app_id or "", item.id)
            if key in dedup or key in in_batch:
                outcome.duplicates += 1
                continue
        source = Delivery(
            delivery.tag,
            delivery.routing_key,
            item.line,
            props,
            delivery.redelivered,
            delivery.arrival,
            item.id,
            True,
        )
        record = item.record
        if record is None:
            outcome.rejected.append((source, item.reason or "not a record"))
            continue
        if not batch.selects(record["facility"], record["severity"]):
            outcome.filtered += 1
            continue
        claimed = wire.set_sender(record, sender)  # a line's own "sender" is never kept
        outcome.records.append(record)
        outcome.sources.append(source)
        outcome.keys.append(key)
        if key is not None:
            in_batch.add(key)
        outcome.lines.append(
            with_sender(item.line, sender)
            if batch.keep_lines and item.exact and not claimed
            else None
        )
        outcome.suppressed += suppressed_in((record,))
