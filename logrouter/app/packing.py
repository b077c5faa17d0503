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

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from operator import add, itemgetter
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
#: True when an item's body and id are vouched for (see ``batchwire.encode_records``).
Checked = Callable[[T], bool]


_KEY, _ID, _BODY = itemgetter(0), itemgetter(1), itemgetter(3)  # of what ``fields`` gives
#: Bytes a batch line adds to a body besides the id: ,"id":"" and the newline (the
#: body's closing brace moves after the id).
_EXTRA = 9


def pack(
    items: Sequence[T],
    fields: Fields[T],
    *,
    max_records: int = DEFAULT_MAX_RECORDS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    checked: Checked[T] | None = None,
) -> list[Packet[T]]:
    """Group ``items`` (in logging order) into packets; a lone record stays a plain message.

    A record whose body alone exceeds ``max_bytes``, or that cannot be a batch
    line, goes alone. Never drops or reorders records of one key; every item is
    in exactly one packet. The I/O thread runs this for every record with the GIL
    held: per record, C loops (map, accumulate, bisect, join) do the work. A batch
    of records all ``checked`` skips the checks that each can be a batch line.
    """
    if not items:
        return []
    max_records = max(1, max_records)
    described = list(map(fields, items))
    keys = list(map(_KEY, described))
    vouched = None if checked is None else list(map(checked, items))
    if keys.count(keys[0]) == len(keys):  # the busy app's usual case: one key
        packed = _pack_group(list(items), described, vouched, keys[0], max_records, max_bytes)
        return [p for _, p in packed]
    groups: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        group = groups.get(key)
        if group is None:
            groups[key] = [index]
        else:
            group.append(index)
    packets: list[tuple[int, Packet[T]]] = []
    for key, group in groups.items():
        members = [items[i] for i in group]
        mine = None if vouched is None else [vouched[i] for i in group]
        chunks = _pack_group(
            members, [described[i] for i in group], mine, key, max_records, max_bytes
        )
        packets += [(group[first], packet) for first, packet in chunks]
    packets.sort(key=lambda pair: pair[0])  # in the order of their first record
    return [packet for _, packet in packets]


def _pack_group(
    items: list[T],
    described: list[tuple[str, str, int, bytes]],
    vouched: list[bool] | None,
    key: str,
    max_records: int,
    max_bytes: int,
) -> list[tuple[int, Packet[T]]]:
    """(index of its first record, packet) of one key's records: chunks of at most
    ``max_records`` records and ``max_bytes`` of lines (a first record always fits)."""
    count = len(items)
    if count == 1:
        return [(0, _single(items[0], described[0]))]
    bodies = list(map(_BODY, described))
    ids = list(map(_ID, described))
    # size[k]: bytes of the first k lines (exact for our ids: body + _EXTRA + id)
    lines = map(add, map(len, bodies), map(_EXTRA.__add__, map(len, ids)))
    size = list(accumulate(lines, initial=0))
    out: list[tuple[int, Packet[T]]] = []
    start = 0
    while start < count:
        end = min(start + max_records, bisect_right(size, size[start] + max_bytes) - 1)
        end = max(end, start + 1)
        chunk = slice(start, end)
        checked = vouched is not None and all(vouched[chunk])
        batch = _batch(
            items[chunk], described[chunk], bodies[chunk], ids[chunk], checked, max_bytes
        )
        for first, packet in batch:
            out.append((start + first, packet))
        start = end
    return out


def _single(item: T, entry: tuple[str, str, int, bytes]) -> Packet[T]:
    key, message_id, timestamp, body = entry
    return Packet(key, [item], body, message_id, timestamp, False)


def _batch(
    items: list[T],
    described: list[tuple[str, str, int, bytes]],
    bodies: list[bytes],
    ids: list[str],
    checked: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[tuple[int, Packet[T]]]:
    """(index of its first record, packet) for one chunk of one key: one batch (a lone
    record: a plain one). A body that cannot be a batch line (not one compact JSON
    object: not from our encoder) goes alone, its neighbours still batched. A batch
    that escaping made longer than ``max_bytes`` (each raw U+2028 takes 6 bytes, not
    3) is cut in two."""
    if len(items) == 1:
        return [(0, _single(items[0], described[0]))]

    def run(start: int, end: int) -> list[tuple[int, Packet[T]]]:
        part = slice(start, end)
        chunk = _batch(items[part], described[part], bodies[part], ids[part], checked, max_bytes)
        return [(start + at, packet) for at, packet in chunk] if start < end else []

    try:
        body = batchwire.encode_records(bodies, ids, checked=checked)
    except ValueError:
        out: list[tuple[int, Packet[T]]] = []
        start = 0
        for index, line in enumerate(bodies):
            if not batchwire.linable(line):
                out += run(start, index)
                out.append((index, _single(items[index], described[index])))
                start = index + 1
        return out + run(start, len(items))
    if len(body) > max_bytes:
        half = len(items) // 2
        return run(0, half) + run(half, len(items))
    first = described[0]
    packet = Packet(
        first[0],
        items,
        body,
        batchwire.batch_message_id(first[1], len(items)),
        first[2],
        True,
    )
    return [(0, packet)]
