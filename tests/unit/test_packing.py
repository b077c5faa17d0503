"""Adaptive batching: encoded records grouped into AMQP messages by routing key (pure)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logrouter import batchwire
from logrouter.app.packing import pack, parse_mode

Item = tuple[str, str, int, bytes]


def _item(key: str, n: int, size: int = 0) -> Item:
    body = json.dumps({"msg": f"r{n}", "pad": "x" * size}, separators=(",", ":")).encode()
    return (key, f"id{n}", 1000 + n, body)


def _fields(item: Item) -> Item:
    return item


def _records(packet_body: bytes, key: str) -> list[str]:
    return [
        r.record["msg"] for r in batchwire.split_batch(packet_body, key) if r.record is not None
    ]


def test_a_lone_record_is_a_plain_message() -> None:
    """One record waiting: sent as it is, the same body and id as with batch=off."""
    item = _item("a.info", 1)
    (packet,) = pack([item], _fields)
    assert not packet.batch and packet.body == item[3] and packet.message_id == "id1"
    assert packet.items == [item] and packet.timestamp == 1001


def test_records_of_one_key_share_a_batch() -> None:
    """A backlog of one key becomes one batch message with every record, in order."""
    items = [_item("a.info", n) for n in range(5)]
    (packet,) = pack(items, _fields)
    assert packet.batch and packet.items == items and packet.message_id == "id0+5"
    assert packet.timestamp == 1000 and packet.routing_key == "a.info"
    assert _records(packet.body, "a.info") == [f"r{n}" for n in range(5)]
    assert [r.id for r in batchwire.split_batch(packet.body, "a.info")] == [
        f"id{n}" for n in range(5)
    ]


def test_keys_are_separate_and_messages_follow_first_records() -> None:
    """Interleaved keys give one message per key, ordered by each key's first record."""
    items = [_item("b.err", 0), _item("a.info", 1), _item("b.err", 2), _item("c.info", 3)]
    packets = pack(items, _fields)
    assert [p.routing_key for p in packets] == ["b.err", "a.info", "c.info"]
    assert [len(p) for p in packets] == [2, 1, 1]
    assert [p.batch for p in packets] == [True, False, False]
    assert _records(packets[0].body, "b.err") == ["r0", "r2"]


def test_limits_split_batches_without_losing_or_reordering() -> None:
    """max_records and max_bytes cut a backlog into several batches; all records kept."""
    items = [_item("a.info", n, size=100) for n in range(23)]
    by_count = pack(items, _fields, max_records=10)
    assert [len(p) for p in by_count] == [10, 10, 3]
    by_size = pack(items, _fields, max_bytes=700)
    assert all(len(p.body) <= 700 for p in by_size if p.batch)
    for packets in (by_count, by_size):
        assert [i for p in packets for i in p.items] == items
        got = [m for p in packets for m in _records(p.body, "a.info")]
        assert got == [f"r{n}" for n in range(23)]


@pytest.mark.parametrize("checked", [False, True])
def test_escaped_line_separators_keep_batches_within_max_bytes(checked: bool) -> None:
    """Records holding raw U+2028 (3 bytes, escaped to 6 in a batch line): every batch
    body stays within max_bytes, every record kept, in order, its text unchanged."""
    items = []
    for n in range(40):
        body = json.dumps({"msg": f"r{n}" + "\u2028" * 100}, ensure_ascii=False)
        items.append(("a.info", f"id{n}", 1000 + n, body.encode()))
    packets = pack(items, _fields, max_bytes=2000, checked=lambda _: checked)
    assert [len(p.body) for p in packets if len(p.body) > 2000] == []
    assert any(p.batch for p in packets)
    assert [i for p in packets for i in p.items] == items
    got = [m for p in packets for m in _records(p.body, "a.info")]
    assert got == [f"r{n}" + "\u2028" * 100 for n in range(40)]


def test_a_record_larger_than_max_bytes_goes_alone() -> None:
    """A huge record is one plain message; its neighbours still share batches."""
    items = [_item("a.info", 0), _item("a.info", 1, size=5000), _item("a.info", 2)]
    packets = pack(items, _fields, max_bytes=1000)
    assert [(len(p), p.batch) for p in packets] == [(1, False), (1, False), (1, False)]
    assert [p.items for p in packets] == [[i] for i in items]


def test_a_body_that_cannot_be_a_line_goes_alone() -> None:
    """A body that is not a one-line JSON object is sent alone, the others batched."""
    odd = ("a.info", "odd", 5, b"not json")
    items = [_item("a.info", 0), _item("a.info", 1), odd, _item("a.info", 3), _item("a.info", 4)]
    packets = pack(items, _fields)
    assert [(len(p), p.batch) for p in packets] == [(2, True), (1, False), (2, True)]
    assert packets[1].body == b"not json"


def _greedy(items: list[Item], max_records: int, max_bytes: int) -> list[list[Item]]:
    """The packing rule spelled out: per key in logging order, a record joins its key's
    open chunk unless that holds max_records records or would pass max_bytes of lines."""
    chunks: dict[str, list[list[Item]]] = {}
    for item in items:
        line = len(item[3]) + len(item[1]) + 9
        open_chunks = chunks.setdefault(item[0], [])
        last = open_chunks[-1] if open_chunks else None
        if (
            last
            and len(last) < max_records
            and sum(len(i[3]) + len(i[1]) + 9 for i in last) + line <= max_bytes
        ):
            last.append(item)
        else:
            open_chunks.append([item])
    every = [chunk for key_chunks in chunks.values() for chunk in key_chunks]
    return sorted(every, key=lambda chunk: items.index(chunk[0]))


@given(
    st.lists(
        st.tuples(st.sampled_from(["a.info", "b.err", "c.debug"]), st.integers(0, 300)), max_size=40
    ),
    st.integers(1, 6),
    st.integers(50, 900),
)
def test_packets_follow_the_greedy_rule_in_logging_order(
    spec: list[tuple[str, int]], max_records: int, max_bytes: int
) -> None:
    """Whatever the mix of keys and sizes: each packet is the chunk the greedy rule makes,
    packets come in the order of their first record, and a batch never passes the limits."""
    items = [_item(key, n, size) for n, (key, size) in enumerate(spec)]
    packets = pack(items, _fields, max_records=max_records, max_bytes=max_bytes)
    assert [p.items for p in packets] == _greedy(items, max_records, max_bytes)
    for packet in packets:
        assert packet.batch == (len(packet) > 1)
        if packet.batch:
            assert len(packet.body) <= max_bytes and len(packet) <= max_records
            assert _records(packet.body, packet.routing_key) == [
                i[3] and json.loads(i[3])["msg"] for i in packet.items
            ]


@given(
    st.lists(st.tuples(st.sampled_from(["a.info", "b.err"]), st.booleans()), max_size=30),
    st.integers(1, 6),
)
def test_records_vouched_for_give_the_same_packets(
    spec: list[tuple[str, bool]], max_records: int
) -> None:
    """Records vouched for as batch lines (the encoder's plain records), mixed with
    others: the same packets, byte for byte, as when every line is checked."""
    items = [_item(key, n) for n, (key, _) in enumerate(spec)]
    vouched = {item[1] for item, (_, ok) in zip(items, spec, strict=True) if ok}
    fast = pack(items, _fields, max_records=max_records, checked=lambda i: i[1] in vouched)
    assert fast == pack(items, _fields, max_records=max_records)


@pytest.mark.parametrize(
    ("value", "mode"),
    [(None, "off"), ("", "off"), ("off", "off"), ("AUTO", "auto"), (True, "auto"), (False, "off")],
)
def test_parse_mode(value: object, mode: str) -> None:
    """The batch option takes dictConfig strings (and booleans)."""
    assert parse_mode(value) == mode  # type: ignore[arg-type]


def test_parse_mode_refuses_other_words() -> None:
    """A typo is a ValueError naming the option and the allowed words."""
    with pytest.raises(ValueError, match="batch: 'on' is not one of off, auto"):
        parse_mode("on")
