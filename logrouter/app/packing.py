"""Adaptive batching on the app side: encoded records -> AMQP messages (pure).

With ``batch="auto"`` the I/O thread hands ``pack`` whatever records wait
(its backlog); records of one routing key become one batch message
(``logrouter.batchwire``) of at most ``max_records`` records and ``max_bytes``
of body, and a record with no company goes alone as a plain single-record
message, exactly as with ``batch="off"``. So a quiet app sends each record at
once and unchanged, and a busy one sends a fraction of the messages.

Records keep their order within a routing key (the only order a queue can
keep: different keys may go to different queues); messages come out in the
order of their first record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from logrouter import batchwire

T = TypeVar("T")

#: Defaults of the handler options ``batch_records`` and ``batch_bytes``: a batch
#: body stays within one AMQP frame of the broker's default frame_max (128 KiB).
DEFAULT_MAX_RECORDS = 500
DEFAULT_MAX_BYTES = 120_000
BATCH_MODES = ("off", "auto")


def parse_mode(value: str | bool | None) -> str:
    """The handler option ``batch`` ("off" | "auto"; dictConfig strings). Raises ValueError."""
    if value is None or value is False or value == "":
        return "off"
    if value is True:
        return "auto"
    mode = str(value).strip().lower()
    if mode not in BATCH_MODES:
        raise ValueError(f"batch: {value!r} is not one of {', '.join(BATCH_MODES)}")
    return mode


@dataclass(frozen=True, slots=True)
class Packet(Generic[T]):
    """One AMQP message to publish: a single record, or a batch of records of one key."""

    routing_key: str
    items: list[T]
    body: bytes
    message_id: str
    timestamp: int
    batch: bool

    def __len__(self) -> int:
        return len(self.items)


#: What the packer needs of an item: (routing_key, message_id, timestamp, body).
Fields = Callable[[T], tuple[str, str, int, bytes]]


def pack(
    items: Sequence[T],
    fields: Fields[T],
    *,
    max_records: int = DEFAULT_MAX_RECORDS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[Packet[T]]:
    """Group ``items`` (in logging order) into packets; a lone record stays a plain message.

    A record whose body alone exceeds ``max_bytes``, or that cannot be a batch
    line, goes alone. Never drops or reorders records of one key; every item is
    in exactly one packet.
    """
    max_records = max(1, max_records)
    groups: dict[str, list[_Entry[T]]] = {}
    for index, item in enumerate(items):
        key, message_id, timestamp, body = fields(item)
        entry = (index, item, message_id, timestamp, body)
        group = groups.get(key)
        if group is None:
            groups[key] = [entry]
        else:
            group.append(entry)
    packets: list[tuple[int, Packet[T]]] = []
    for key, group in groups.items():
        if len(group) == 1:
            packets.append(_single(key, group[0]))
            continue
        chunk: list[_Entry[T]] = []
        lines: list[bytes] = []
        size = 0
        for entry in group:
            try:
                line = batchwire.record_line(entry[4], entry[2])
            except ValueError:  # not a one-line JSON object: it cannot share a message
                if chunk:
                    packets.append(_batch(key, chunk, lines))
                    chunk, lines, size = [], [], 0
                packets.append(_single(key, entry))
                continue
            if chunk and (len(chunk) >= max_records or size + len(line) + 1 > max_bytes):
                packets.append(_batch(key, chunk, lines))
                chunk, lines, size = [], [], 0
            chunk.append(entry)
            lines.append(line)
            size += len(line) + 1
        if chunk:
            packets.append(_batch(key, chunk, lines))
    if len(groups) > 1:
        packets.sort(key=lambda pair: pair[0])  # in the order of their first record
    return [packet for _, packet in packets]


#: (position in the input, item, message_id, timestamp, body)
_Entry = tuple[int, T, str, int, bytes]


def _single(key: str, entry: _Entry[T]) -> tuple[int, Packet[T]]:
    index, item, message_id, timestamp, body = entry
    return index, Packet(key, [item], body, message_id, timestamp, False)


def _batch(key: str, chunk: list[_Entry[T]], lines: list[bytes]) -> tuple[int, Packet[T]]:
    if len(chunk) == 1:
        return _single(key, chunk[0])
    first = chunk[0]
    packet = Packet(
        key,
        [entry[1] for entry in chunk],
        batchwire.encode_batch(lines),
        batchwire.batch_message_id(first[2], len(chunk)),
        first[3],
        True,
    )
    return first[0], packet
