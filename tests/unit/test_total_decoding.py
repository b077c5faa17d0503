"""logrouter.total_decoding: message properties that pika cannot decode become a marker,
never a raise (one hostile message stopped every consumer of its queue)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from decimal import Decimal

import pika
import pika.spec

from logrouter import total_decoding
from logrouter.total_decoding import RAW_HEADERS_HEADER, UNDECODABLE_HEADER, undecodable

HEADERS_ONLY = struct.pack(">H", pika.spec.BasicProperties.FLAG_HEADERS)
WITH_ID = struct.pack(
    ">H", pika.spec.BasicProperties.FLAG_HEADERS | pika.spec.BasicProperties.FLAG_MESSAGE_ID
)


def table(entries: bytes) -> bytes:
    return struct.pack(">I", len(entries)) + entries


def decode(encoded: bytes) -> pika.spec.BasicProperties:
    total_decoding.install()
    return pika.spec.BasicProperties().decode(encoded)


def test_a_table_pika_cannot_decode_becomes_the_marker_and_the_rest_decodes() -> None:
    """A timestamp beyond year 9999, an unknown field type, tables nested 5,000 deep:
    each headers table becomes the marker (why, and its bytes), and the properties after
    it (message_id) are decoded as ever."""
    nested = _nested(5000)
    for entries in (b"\x01kT" + struct.pack(">Q", 2**62), b"\x01kZ\x00", nested):
        raw = table(entries)
        props = decode(WITH_ID + raw + b"\x02m1")
        assert props.message_id == "m1"
        assert props.headers[RAW_HEADERS_HEADER] == entries
        assert props.headers[UNDECODABLE_HEADER]
        assert (undecodable(props) or "").startswith("AMQP headers undecodable (")


def _nested(depth: int) -> bytes:
    """Entries of a table holding ``depth`` tables, each inside the last."""
    inner = b""
    for _ in range(depth):
        inner = b"\x01kF" + table(inner)
    return inner


def test_tables_pika_decodes_are_decoded_exactly_as_before() -> None:
    """Every value type pika writes comes back as pika gives it, with no marker."""
    headers = {
        "s": "text",
        "i": 7,
        "big": 2**40,
        "b": True,
        "d": Decimal("1.5"),
        "t": datetime(2026, 12, 1, tzinfo=UTC),
        "x": b"\x00\xff",
        "f": {"nested": [1, "two", None]},
        "n": None,
    }
    encoded = b"".join(pika.spec.BasicProperties(headers=headers, message_id="m").encode())
    props = decode(encoded)
    assert props.headers == headers and props.message_id == "m"
    assert undecodable(props) is None


def test_properties_it_still_cannot_decode_become_the_marker_alone() -> None:
    """Properties cut short (a message_id flagged, not there): the marker alone, no
    raise; a sink rejects the message for it."""
    props = decode(WITH_ID + table(b""))
    assert props.message_id is None
    assert props.headers[UNDECODABLE_HEADER].startswith("properties: ")
    assert undecodable(props) is not None
