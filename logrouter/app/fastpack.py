"""``batch="auto"``: a backlog of frozen records -> AMQP packets, most of it in C loops.

The general way (``Encoder.encode_many``, then ``packing.pack``) builds each record's
body, then each batch from the bodies: about 2 µs a record in the I/O thread, which
shares the GIL with the app. Plain records (``encoder.freeze``) of one kind differ
only in their time, message and id, so ``pack_backlog`` builds a batch of them with
one %-format (the encoder's ``line_form`` of each kind) over lists made by ``map``:
byte for byte the batch the general way makes, at well under half its cost.

Whatever this way does not vouch for goes the general way, in order within its
routing key: a record with extras, traceback, stack or a dict message, a kind with
no form (lone surrogates in a name), a message too long to send whole, a time
before 1970 or not a time, lone surrogates in a message, a lone record of its key
(a plain message), and a batch longer than ``max_bytes`` once its separators are
escaped.

A packet built here carries its records as a ``Deferred``: the frozen records, encoded
only if the broker nacks them or the connection goes before it confirms (then the
encoder gives the same ids and bodies again). Runs in the I/O thread only.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import accumulate, repeat
from operator import add, floordiv, itemgetter, mul, sub
from typing import Any, cast, overload

from logrouter import batchwire
from logrouter.app.encoder import Encoded, Encoder, Frozen, Plain
from logrouter.app.packing import Packet, pack

#: What ``packing.pack`` needs of an ``Encoded``: (routing_key, message_id, timestamp, body).
ENCODED_FIELDS = itemgetter(2, 3, 4, 5)
#: An ``Encoded``'s ``checked``.
ENCODED_CHECKED = itemgetter(7)

_KIND = itemgetter(slice(3, None))  # of a plain frozen record
_SEQ, _MESSAGE, _CREATED = itemgetter(0), itemgetter(1), itemgetter(2)
_KEY, _TEMPLATE, _FIXED = itemgetter(0), itemgetter(1), itemgetter(2)  # of a line form
#: A form for a position the fast way does not build (replaced before use).
_UNUSED = ("", b"", 0)
#: Times from here on (year 10000) are not in the fast way's format.
_NO_TIME_AFTER = 253402300800.0
_MISSING: Any = object()
#: A str as a JSON string: what orjson.dumps gives of it, for every code point but lone
#: surrogates (tested), at a twentieth of its cost when the results are kept (orjson
#: sizes a buffer per call: 2 µs each in a list of 2,000, 55 ns each in a loop).
quoted: Callable[[str], str] = json.encoder.encode_basestring
_FIRST = itemgetter(0)  # of (position, packet)


class Deferred(Sequence[Encoded]):
    """The records of a packet ``pack_backlog`` built, encoded on first use: frozen
    records (encoded again the same way) and records the general way encoded."""

    __slots__ = ("_encoded", "encoder", "records")

    def __init__(self, encoder: Encoder, records: list[Frozen | Encoded]) -> None:
        self.encoder = encoder
        self.records = records
        self._encoded: list[Encoded] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def encoded(self) -> list[Encoded]:
        if self._encoded is None:
            encode = self.encoder.encode
            self._encoded = [
                record if type(record) is Encoded else encode(record)  # type: ignore[arg-type]
                for record in self.records
            ]
        return self._encoded

    @overload
    def __getitem__(self, index: int) -> Encoded: ...
    @overload
    def __getitem__(self, index: slice) -> list[Encoded]: ...
    def __getitem__(self, index: int | slice) -> Encoded | list[Encoded]:
        return self.encoded()[index]

    def __iter__(self) -> Iterator[Encoded]:
        return iter(self.encoded())


def pack_encoded(
    items: Sequence[Encoded], *, max_records: int, max_bytes: int
) -> list[Packet[Any]]:
    """The general way: encoded records packed (``packing.pack``)."""
    return pack(
        items,
        ENCODED_FIELDS,
        max_records=max_records,
        max_bytes=max_bytes,
        checked=ENCODED_CHECKED,
    )


def pack_backlog(
    encoder: Encoder, frozen: list[Frozen], *, max_records: int, max_bytes: int
) -> list[Packet[Any]]:
    """Packets for ``frozen`` (the outbox's oldest records, in logging order): the
    packets ``pack_encoded(encoder.encode_many(frozen))`` makes; never raises."""
    if not frozen:
        return []
    max_records, max_bytes = max(1, max_records), max(1, max_bytes)
    try:
        lines = _Lines.plain(encoder, frozen) or _Lines.mixed(encoder, frozen)
        return lines.packets(max_records, max_bytes)
    except Exception:  # a value none of the checks foresaw: the general way decides
        records = encoder.encode_many(frozen)
        return pack_encoded(records, max_records=max_records, max_bytes=max_bytes)


class _Lines:
    """What the batch lines of a backlog are made of, by position in it.

    A record the fast way builds has a ``form`` (key, template, fixed size) and the
    template's values; one the general way encoded has its whole line as its
    template (``%`` doubled) and no values, and its ``Encoded`` in ``encoded``.
    """

    def __init__(
        self,
        encoder: Encoder,
        frozen: list[Frozen],
        forms: list[tuple[str, bytes, int]],
        seconds: list[int],
        micros: list[int],
        bodies: list[bytes],
        encoded: dict[int, Encoded] | None = None,
    ) -> None:
        self.encoder = encoder
        self.frozen = frozen
        self.forms = forms
        self.seconds = seconds
        self.micros = micros
        self.bodies = bodies
        self.encoded = encoded or {}
        self.seqs = list(map(_SEQ, frozen))
        texts = {second: encoder.second_text(second) for second in set(seconds)}
        self.texts = list(map(texts.__getitem__, seconds))
        # hex digits of each id: (bits + 3) // 4, at least one
        seqs = self.seqs
        low, high = len(f"{min(seqs):x}"), len(f"{max(seqs):x}")
        if low == high:  # the usual backlog: every id as long
            digits: Iterable[int] = repeat(low)
        else:  # hex digits of each: (bits + 3) // 4, at least one
            quads = map(floordiv, map(add, map(int.bit_length, seqs), repeat(3)), repeat(4))
            digits = map(max, quads, repeat(1))
        sizes = map(add, map(add, map(_FIXED, forms), map(len, bodies)), digits)
        self.sizes = list(sizes)
        for position, record in self.encoded.items():  # its line is all fixed
            self.sizes[position] = forms[position][2]
            self.seconds[position] = record.timestamp

    @classmethod
    def plain(cls, encoder: Encoder, frozen: list[Frozen]) -> _Lines | None:
        """The usual backlog, every record for the fast way; else None."""
        if list(map(type, frozen)).count(tuple) != len(frozen):
            return None
        kinds = list(map(_KIND, frozen))
        forms = list(map(encoder.line_forms.get, kinds, repeat(_MISSING)))
        if _MISSING in forms:
            forms = [
                form if form is not _MISSING else encoder.line_form(kind)
                for kind, form in zip(kinds, forms, strict=True)
            ]
        messages = list(map(_MESSAGE, frozen))
        created = list(map(_CREATED, frozen))
        if (
            None in forms
            or max(map(len, messages)) > encoder.max_message // 4
            or not min(created) >= 0
            or not max(created) < _NO_TIME_AFTER
        ):
            return None
        seconds = list(map(int, created))
        micros = list(map(round, map(mul, map(sub, created, seconds), repeat(1e6))))
        if max(micros) >= 1_000_000:
            return None
        try:
            bodies = list(map(str.encode, map(quoted, messages)))
        except UnicodeEncodeError:  # lone surrogates: one by one
            return None
        return cls(encoder, frozen, forms, seconds, micros, bodies)  # type: ignore[arg-type]

    @classmethod
    def mixed(cls, encoder: Encoder, frozen: list[Frozen]) -> _Lines:
        """A backlog with records the fast way does not build: one look per record."""
        count = len(frozen)
        forms: list[tuple[str, bytes, int]] = [_UNUSED] * count
        seconds, micros, bodies = [0] * count, [0] * count, [b""] * count
        general: list[int] = []
        max_chars = encoder.max_message // 4
        for position, item in enumerate(frozen):
            if type(item) is not tuple:  # a Captured record
                general.append(position)
                continue
            plain = cast(Plain, item)
            form = encoder.line_form(plain[3:])
            message, created = plain[1], plain[2]
            if form is None or len(message) > max_chars or not 0 <= created < _NO_TIME_AFTER:
                general.append(position)
                continue
            second = int(created)
            micro = round((created - second) * 1e6)
            try:
                body = quoted(message).encode()
            except UnicodeEncodeError:
                general.append(position)
                continue
            if micro >= 1_000_000:
                general.append(position)
                continue
            forms[position], seconds[position] = form, second
            micros[position], bodies[position] = micro, body
        encoded = dict(zip(general, encoder.encode_many([frozen[i] for i in general]), strict=True))
        for position, record in encoded.items():
            try:
                line = batchwire.record_line(record.body, record.message_id) + b"\n"
            except ValueError:  # not a batch line: it goes alone
                forms[position] = (record.routing_key, b"", 0)
            else:  # sized as packing.pack sizes it: before its separators are escaped
                size = len(record.body) + len(b',"id":""\n') + len(record.message_id)
                forms[position] = (record.routing_key, line.replace(b"%", b"%%"), size)
        return cls(encoder, frozen, forms, seconds, micros, bodies, encoded)

    def packets(self, max_records: int, max_bytes: int) -> list[Packet[Any]]:
        """Packets of every record, by key, in the order of their first record."""
        keys = list(map(_KEY, self.forms))
        if keys.count(keys[0]) == len(keys):
            everyone = list(range(len(keys)))
            return [p for _, p in self._group(everyone, keys[0], max_records, max_bytes)]
        groups: dict[str, list[int]] = {}
        for position, key in enumerate(keys):
            groups.setdefault(key, []).append(position)
        out: list[tuple[int, Packet[Any]]] = []
        for key, members in groups.items():
            out += self._group(members, key, max_records, max_bytes)
        out.sort(key=_FIRST)
        return [packet for _, packet in out]

    def _group(
        self, members: list[int], key: str, max_records: int, max_bytes: int
    ) -> list[tuple[int, Packet[Any]]]:
        """(position of its first record, packet) for the records of one key, in
        chunks of at most ``max_records`` records and ``max_bytes`` of lines (a
        first record always fits); a record that cannot be a line goes alone."""
        out: list[tuple[int, Packet[Any]]] = []
        alone = [i for i in members if not self.forms[i][1]] if self.encoded else []
        if alone:
            start = 0
            for index, position in enumerate(members):
                if position in alone:
                    out += self._group(members[start:index], key, max_records, max_bytes)
                    out.append((position, self._single(position)))
                    start = index + 1
            return out + self._group(members[start:], key, max_records, max_bytes)
        size = list(accumulate(map(self.sizes.__getitem__, members), initial=0))
        start, count = 0, len(members)
        while start < count:
            end = min(start + max_records, bisect_right(size, size[start] + max_bytes) - 1)
            end = max(end, start + 1)
            out += self._batch(members[start:end], key, max_records, max_bytes)
            start = end
        return out

    def _batch(
        self, chunk: list[int], key: str, max_records: int, max_bytes: int
    ) -> list[tuple[int, Packet[Any]]]:
        """The packet of ``chunk`` (positions of records of one key, in order)."""
        first = chunk[0]
        if len(chunk) == 1:
            return [(first, self._single(first))]
        forms = list(map(_TEMPLATE, map(self.forms.__getitem__, chunk)))
        same = forms.count(forms[0]) == len(forms)
        template = forms[0] * len(forms) if same else b"".join(forms)
        if chunk[-1] - chunk[0] + 1 == len(chunk) and not self.encoded:  # the usual chunk
            span = slice(chunk[0], chunk[-1] + 1)
            texts, micros = self.texts[span], self.micros[span]
            bodies, seqs = self.bodies[span], self.seqs[span]
        else:
            built = [i for i in chunk if i not in self.encoded]
            texts = list(map(self.texts.__getitem__, built))
            micros = list(map(self.micros.__getitem__, built))
            bodies = list(map(self.bodies.__getitem__, built))
            seqs = list(map(self.seqs.__getitem__, built))
        values: list[Any] = [None] * (4 * len(texts))
        values[0::4], values[1::4], values[2::4], values[3::4] = texts, micros, bodies, seqs
        body = template % tuple(values)
        if not body.isascii():
            body = batchwire.one_line(body)
        if len(body) > max_bytes:  # escaped separators grew it: cut the general way
            records = [self._record(i) for i in chunk]
            out: list[tuple[int, Packet[Any]]] = []
            offset = 0
            for packet in pack_encoded(records, max_records=max_records, max_bytes=max_bytes):
                out.append((chunk[offset], packet))
                offset += len(packet)
            return out
        if self.encoded:
            kept: list[Frozen | Encoded] = [self.encoded.get(i) or self.frozen[i] for i in chunk]
        elif chunk[-1] - chunk[0] + 1 == len(chunk):
            kept = self.frozen[chunk[0] : chunk[-1] + 1]  # type: ignore[assignment]
        else:
            kept = list(map(self.frozen.__getitem__, chunk))
        packet = Packet(
            key,
            Deferred(self.encoder, kept),  # type: ignore[arg-type]  # a Sequence, read as a list
            body,
            batchwire.batch_message_id(self._record_id(first), len(chunk)),
            self.seconds[first],
            True,
        )
        return [(first, packet)]

    def _record(self, position: int) -> Encoded:
        made = self.encoded.get(position)
        return made if made is not None else self.encoder.encode(self.frozen[position])

    def _record_id(self, position: int) -> str:
        made = self.encoded.get(position)
        return made.message_id if made is not None else self.encoder.record_id(self.seqs[position])

    def _single(self, position: int) -> Packet[Any]:
        """A lone record: a plain message, as with ``batch="off"``."""
        (packet,) = pack_encoded([self._record(position)], max_records=1, max_bytes=1)
        return packet
