"""fastpack: a backlog of frozen records packs into the very packets the general way
(encode each record, then ``packing.pack``) makes, and defers encoding until needed."""

from __future__ import annotations

import logging
import math
import types
from typing import Any
from unittest import mock

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from logrouter import batchwire
from logrouter.app.encoder import Captured, Encoder, Frozen, freeze
from logrouter.app.fastpack import Deferred, pack_backlog, pack_encoded, quoted


def _encoder(**kw: Any) -> Encoder:
    options: dict[str, Any] = {
        "host": "h%st",
        "app": "billing",
        "facility": "user",
        "facilities": {"pay": "auth"},
        "max_message": 400,
        "run": 3,
        "id_prefix": "ab12",
    }
    options.update(kw)
    return Encoder(**options)


def _record(
    name: str = "app.web",
    message: str = "user %s in",
    args: tuple[Any, ...] = ("bob",),
    *,
    level: int = logging.INFO,
    line: int = 12,
    created: float | None = None,
    **extra: Any,
) -> logging.LogRecord:
    record = logging.LogRecord(name, level, "/srv/a%d.py", line, message, args, None, "handle")
    if created is not None:
        record.created = created
    record.__dict__.update(extra)
    return record


def _shape(packets: list[Any]) -> list[tuple[Any, ...]]:
    return [(p.routing_key, p.body, p.message_id, p.timestamp, p.batch, len(p)) for p in packets]


def _both(
    encoder: Encoder, frozen: list[Frozen], max_records: int, max_bytes: int
) -> tuple[list[Any], list[Any]]:
    """(fastpack's packets, the general way's) for one backlog. The clock stands still:
    a record that cannot be rendered goes out as an err record timed when it is encoded."""
    with mock.patch("logrouter.app.encoder.time", types.SimpleNamespace(time=lambda: 1e9)):
        fast = pack_backlog(encoder, list(frozen), max_records=max_records, max_bytes=max_bytes)
        general = pack_encoded(
            encoder.encode_many(frozen), max_records=max_records, max_bytes=max_bytes
        )
    return fast, general


def test_a_busy_apps_backlog_packs_as_the_general_way() -> None:
    """The usual backlog (plain records of a few kinds and two keys) gives the same
    packets, bodies byte for byte, and each batch's records encode to the general
    way's records (ids and bodies) when they are needed."""
    encoder = _encoder()
    frozen = [
        freeze(seq, _record("pay.api" if seq % 5 == 0 else "app.web", args=(seq,), line=seq % 3))
        for seq in range(1, 1201)
    ]
    fast, general = _both(encoder, frozen, 100, 12_000)
    assert _shape(fast) == _shape(general)
    assert {p.routing_key for p in fast} == {"user.info", "auth.info"}
    assert sum(map(len, fast)) == 1200 and all(p.batch for p in fast)
    assert all(isinstance(p.items, Deferred) for p in fast)
    for mine, theirs in zip(fast, general, strict=True):
        assert list(mine.items) == list(theirs.items)


def test_records_the_fast_way_does_not_build_keep_their_place() -> None:
    """Extras, a traceback, a dict message, a message too long to send whole, lone
    surrogates, times it cannot write and a lone record of its key go the general way,
    in order within their key; the packets are still the general way's."""
    encoder = _encoder()
    odd: list[Frozen] = [
        freeze(10, _record(order=7)),
        freeze(11, _record(message={"event": "e"}, args=())),  # type: ignore[arg-type]
        freeze(12, _record(message="x" * 500, args=())),
        freeze(13, _record(message="lone \udcff", args=())),
        freeze(14, _record(created=-1.5)),
        freeze(15, _record(created=1_700_000_000.9999996)),
        freeze(16, _record(created=math.nan)),
        freeze(17, _record(created=2.6e11)),
        freeze(18, _record(level=logging.ERROR)),
        Captured(19, _record(), "frozen message", "Traceback: here"),
    ]
    frozen = [freeze(seq, _record(args=(seq,))) for seq in range(1, 10)]
    frozen[4:4] = odd
    fast, general = _both(encoder, frozen, 6, 5000)
    assert _shape(fast) == _shape(general)
    lines = [
        record_id
        for p in fast
        for record_id in (
            [line.id for line in batchwire.split_batch(p.body, p.routing_key)]
            if p.batch
            else [p.message_id]
        )
    ]
    assert sorted(lines) == sorted(f"ab12{seq:x}" for seq in [*range(1, 10), *range(10, 20)])


def test_separators_and_percent_signs_are_written_as_the_general_way_writes_them() -> None:
    """U+2028 escaped in a batch, ``%`` in a host, a path, a logger name and a message
    taken as text; a batch the escapes make too long is cut as the general way cuts it."""
    encoder = _encoder()
    frozen = [
        freeze(seq, _record("app.%d", message="caf\u00e9 \u2028\u2029 %s %%", args=(seq,)))
        for seq in range(1, 40)
    ]
    for max_bytes in (100_000, 2_000, 700):
        fast, general = _both(encoder, frozen, 500, max_bytes)
        assert _shape(fast) == _shape(general)
        assert all(len(p.body) <= max_bytes for p in fast if p.batch)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["app.web", "pay.x", "app.%s"]),
            st.sampled_from([logging.INFO, logging.WARNING, logging.ERROR]),
            st.text(max_size=30) | st.just("x" * 150),
            st.floats(allow_nan=True, allow_infinity=True) | st.floats(min_value=0, max_value=4e9),
            st.booleans(),
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(1, 20),
    st.integers(1, 4000),
    st.integers(0, 2**40),
)
def test_any_backlog_packs_as_the_general_way(
    specs: list[tuple[str, int, str, float, bool]], max_records: int, max_bytes: int, first: int
) -> None:
    """Whatever the records (names, levels, messages, times, extras) and limits, and
    wherever the ids' hex digits grow, the packets are the general way's."""
    encoder = _encoder(max_message=400)
    frozen: list[Frozen] = []
    for offset, (name, level, message, created, extra) in enumerate(specs):
        record = _record(name, message, (), level=level, created=created)
        if extra:
            record.order = offset
        frozen.append(freeze(first + offset * 4099, record))
    fast, general = _both(encoder, frozen, max_records, max_bytes)
    assert _shape(fast) == _shape(general)


def test_quoted_is_orjson_for_every_code_point() -> None:
    """The JSON string of any text (lone surrogates aside) is what orjson writes: the
    fast way quotes with the stdlib's C encoder, the general way with orjson."""
    for start in range(0, 0x110000, 0x8000):
        text = "".join(
            chr(c) for c in range(start, min(start + 0x8000, 0x110000)) if not 0xD800 <= c < 0xE000
        )
        assert quoted(text).encode() == orjson.dumps(text)


def test_a_batch_is_encoded_only_when_the_broker_does_not_take_it() -> None:
    """A packet's records stay frozen while it is in flight and when it is confirmed;
    a nack or a lost connection encodes them, to the general way's records."""
    encoder = _encoder()
    frozen = [freeze(seq, _record(args=(seq,))) for seq in range(1, 6)]
    (packet,) = pack_backlog(encoder, frozen, max_records=10, max_bytes=100_000)
    records = packet.items
    assert isinstance(records, Deferred) and len(records) == 5
    assert records._encoded is None
    assert [r.message_id for r in records] == [f"ab12{seq:x}" for seq in range(1, 6)]
    assert list(records) == encoder.encode_many(frozen)


def test_a_general_way_line_with_separators_is_sized_as_the_general_way_sizes_it() -> None:
    """A record with extras whose line has U+2028 escaped is sized before the escapes,
    as ``packing.pack`` sizes it, so that every max_bytes cuts the batches alike (it
    was sized after them: [3, 1] against [2, 2] at one size, found by review)."""
    encoder = _encoder()
    frozen = [freeze(16, _record(f="\u2028" * 20)), *(freeze(s, _record()) for s in (17, 18, 19))]
    raw = sum(len(r.body) + 9 + len(r.message_id) for r in encoder.encode_many(frozen))
    for max_bytes in range(raw - 100, raw + 100):
        fast, general = _both(encoder, frozen, 10, max_bytes)
        assert _shape(fast) == _shape(general), max_bytes
