"""What ``replay`` publishes: archived records as messages, one each or packed in batches.

A replayed record keeps its archived line as body (less the ``sender`` its sink
added: the sink it is replayed into names the replayer there), its id as
``message_id`` and its app as ``app_id``; the message gets the header ``x-logrouter-replay`` (the
run's start time). With batches (``--batch auto``), records of one routing key
and one app share a batch message (``batchwire``: one line per record, each
with its own id), so a sink dedups every record under the same key as if it had
come alone: (replayer, app, id). A record whose id is not a string goes alone
(in a batch it would get an id made from the message's, another one on a
resumed run).

``Packer.round`` reads entries in archive order until a group is full, a
round's worth is read, ``ROUND_SECONDS`` have passed or the entries end, and
returns the round's messages. Every record of a round comes before its newest
one, so only the round's last message completes the round's cursor.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import pika

from logrouter import batchwire, wire
from logrouter.archive_reader import Entry
from logrouter.sinks.archive import without_sender
from logrouter.sinks.dedup import REPLAY_HEADER

#: a batch message holds at most this many records / body bytes (the handler's defaults)
BATCH_RECORDS = 500
BATCH_BYTES = 120_000
#: records read into one round at most, and how long a round may take to read
ROUND_RECORDS = 10_000
ROUND_SECONDS = 0.25


@dataclass(frozen=True)
class Outgoing:
    """One message to publish: its records' routing key, body, properties and count."""

    routing_key: str
    body: bytes
    properties: pika.BasicProperties
    records: int


def _routing_key(entry: Entry) -> str:
    return f"{entry.record.get('facility')}.{entry.record.get('severity')}"


def _timestamp(entry: Entry) -> int | None:
    return int(datetime.fromisoformat(entry.key[0]).timestamp()) if entry.key[0] else None


def _text(value: object) -> str | None:
    return str(value) if value is not None else None


def _body(entry: Entry) -> bytes:
    """The archived line without the sender its sink added: the sink replaying it into
    sets its own (the replayer's login), and takes a line naming none as it is."""
    return without_sender(entry.line, entry.record.get(wire.SENDER))


def single(entry: Entry, run_id: str) -> Outgoing:
    """One record as a message of its own (what a plain topic consumer reads)."""
    record = entry.record
    props = pika.BasicProperties(
        content_type=wire.CONTENT_TYPE,
        content_encoding="utf-8",
        delivery_mode=2,
        message_id=_text(record.get("id")),
        timestamp=_timestamp(entry),
        app_id=_text(record.get("app")),
        headers={REPLAY_HEADER: run_id},
    )
    return Outgoing(_routing_key(entry), _body(entry), props, 1)


def batch(entries: list[Entry], run_id: str) -> Outgoing:
    """Records of one routing key and app (each with a string id) as one batch message."""
    first = entries[0]
    props = pika.BasicProperties(
        content_type=batchwire.CONTENT_TYPE,
        content_encoding="utf-8",
        delivery_mode=2,
        message_id=batchwire.batch_message_id(first.record["id"], len(entries)),
        timestamp=_timestamp(first),
        app_id=_text(first.record.get("app")),
        headers={REPLAY_HEADER: run_id, **batchwire.headers(len(entries))},
    )
    body = batchwire.encode_batch([_body(entry) for entry in entries])
    return Outgoing(_routing_key(first), body, props, len(entries))


@dataclass
class _Group:
    entries: list[Entry] = field(default_factory=list)
    size: int = 0


class Packer:
    """Reads rounds of entries and turns them into messages (batches or one per record)."""

    def __init__(self, run_id: str, *, batches: bool, rate: float | None = None) -> None:
        self.run_id = run_id
        self.batches = batches
        #: with --rate, a message holds at most a tenth of a second's records, and a round
        #: (so the cursor moves at least that often) ROUND_SECONDS' worth
        self.max_records = max(1, min(BATCH_RECORDS, int(rate / 10))) if rate else BATCH_RECORDS
        paced = max(1, min(ROUND_RECORDS, int(rate * ROUND_SECONDS))) if rate else ROUND_RECORDS
        self.round_records = paced if batches else 1
        #: the newest entry of the last round read
        self.last: Entry | None = None

    def round(self, source: Iterator[Entry]) -> list[Outgoing]:
        """The messages of the next round from ``source`` (empty once it is exhausted)."""
        if not self.batches:
            entry = next(source, None)
            if entry is None:
                return []
            self.last = entry
            return [single(entry, self.run_id)]
        groups: dict[tuple[str, str | None], _Group] = {}
        alone: list[Outgoing] = []
        deadline = time.monotonic() + ROUND_SECONDS
        for read, entry in enumerate(source, 1):
            self.last = entry
            record = entry.record
            ident = record.get("id")
            if not isinstance(ident, str) or not ident:
                alone.append(single(entry, self.run_id))
            else:
                key = (_routing_key(entry), _text(record.get("app")))  # the app_id it gets
                group = groups.setdefault(key, _Group())
                group.entries.append(entry)
                group.size += len(entry.line) + 1
                if len(group.entries) >= self.max_records or group.size >= BATCH_BYTES:
                    break
            if read >= self.round_records or (read % 256 == 0 and time.monotonic() > deadline):
                break
        return [batch(g.entries, self.run_id) for g in groups.values()] + alone
