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
    described = [fields(item) for item in items]
    groups: dict[str, list[int]] = {}
    for index, entry in enumerate(described):
        group = groups.get(entry[0])
        if group is None:
            groups[entry[0]] = [index]
        else:
            group.append(index)
    packets: list[tuple[int, Packet[T]]] = []
    for key, group in groups.items():
        if len(group) == 1:
            packets.append(_single(items, described, group[0]))
            continue
        chunk: list[int] = []
        size = 0
        for index in group:
            entry = described[index]
            length = len(entry[3]) + len(entry[1]) + 8  # ,"id":"..." and the newline
            if chunk and (len(chunk) >= max_records or size + length > max_bytes):
                packets += _batch(items, described, key, chunk)
                chunk, size = [], 0
            chunk.append(index)
            size += length
        if chunk:
            packets += _batch(items, described, key, chunk)
    if len(groups) > 1:
        packets.sort(key=lambda pair: pair[0])  # in the order of their first record
    return [packet for _, packet in packets]


def _single(
    items: Sequence[T], described: list[tuple[str, str, int, bytes]], index: int
) -> tuple[int, Packet[T]]:
    key, message_id, timestamp, body = described[index]
    return index, Packet(key, [items[index]], body, message_id, timestamp, False)


def _batch(
    items: Sequence[T], described: list[tuple[str, str, int, bytes]], key: str, chunk: list[int]
) -> list[tuple[int, Packet[T]]]:
    """One batch packet of ``chunk`` (a lone record: a plain one). A body that cannot be
    a batch line (not one compact JSON object: not from our encoder) goes alone."""
    if len(chunk) == 1:
        return [_single(items, described, chunk[0])]
    try:
        body = batchwire.encode_records([(described[i][3], described[i][1]) for i in chunk])
    except ValueError:
        out: list[tuple[int, Packet[T]]] = []
        run: list[int] = []
        for index in chunk:
            if batchwire.linable(described[index][3]):
                run.append(index)
                continue
            if run:
                out += _batch(items, described, key, run)
                run = []
            out.append(_single(items, described, index))
        if run:
            out += _batch(items, described, key, run)
        return out
    first = described[chunk[0]]
    packet = Packet(
        key,
        [items[i] for i in chunk],
        body,
        batchwire.batch_message_id(first[1], len(chunk)),
        first[2],
        True,
    )
    return [(chunk[0], packet)]
