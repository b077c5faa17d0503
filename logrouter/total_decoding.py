"""pika's decoding of message properties, made total for consumers.

pika raises while it decodes a content header whose headers table holds a value
it cannot represent: a timestamp beyond year 9999 (``datetime`` overflows), an
unknown field type, tables nested deeper than Python's recursion limit. The
broker passes such a message on as it came, and the raise surfaces from
``process_data_events`` as a lost connection: the consumer reconnects, gets the
same message again, and never gets past it. Any broker user could so stop every
sink and ``tail`` on a queue with one message.

``install()`` (idempotent; called where logrouter connects to consume) wraps
``BasicProperties.decode``: when pika raises, the properties are decoded again
with the headers table emptied (found by the lengths before it), and the headers
become ``{UNDECODABLE_HEADER: why, RAW_HEADERS_HEADER: the table's bytes}``;
properties that still do not decode become that marker alone. A sink rejects a
message whose headers carry the marker (``logrouter.rejected`` keeps its body and
those raw bytes); nothing else changes: properties pika decodes are decoded exactly
as before, at the cost of a ``try``.
"""

from __future__ import annotations

import struct
from typing import Any

import pika.spec

from logrouter.connection import describe_error

#: Header a decoded table holds instead of what could not be decoded (and why).
UNDECODABLE_HEADER = "x-logrouter-undecodable-headers"
#: The undecodable table's own bytes, kept for the rejected copy.
RAW_HEADERS_HEADER = "x-logrouter-raw-headers"

_LENGTH = struct.Struct(">I")
_FLAGS = struct.Struct(">H")
_installed = False


def install() -> None:
    """Make pika's properties decoding total in this process (once). Properties pika
    decodes cost what they cost before, plus a ``try``."""
    global _installed
    if _installed:
        return
    _installed = True
    decode_properties = pika.spec.BasicProperties.decode

    def total_decode(self: Any, encoded: bytes, offset: int = 0) -> Any:
        try:
            return decode_properties(self, encoded, offset)
        except Exception as exc:  # RecursionError too: tables nested too deep
            why = describe(exc)
        try:
            stripped = _without_headers(encoded, offset)
            if stripped is not None:
                decode_properties(self, stripped[0], offset)
                self.headers = {UNDECODABLE_HEADER: why, RAW_HEADERS_HEADER: stripped[1]}
                return self
        except Exception:  # not the headers table: the marker alone, below
            pass
        self.__init__(headers={UNDECODABLE_HEADER: f"properties: {why}"})
        return self

    pika.spec.BasicProperties.decode = total_decode  # type: ignore[method-assign]


def _without_headers(encoded: bytes, offset: int) -> tuple[bytes, bytes] | None:
    """``encoded`` properties with their headers table emptied, and that table's bytes;
    None without one. The two properties before it (content type and encoding, short
    strings) are skipped by their length; raises on properties cut short."""
    flags, at, word = 0, offset, 0
    while True:
        (partial,) = _FLAGS.unpack_from(encoded, at)
        at += 2
        flags |= partial << (word * 16)
        if not partial & 1:
            break
        word += 1
    if not flags & pika.spec.BasicProperties.FLAG_HEADERS:
        return None
    for flag in (
        pika.spec.BasicProperties.FLAG_CONTENT_TYPE,
        pika.spec.BasicProperties.FLAG_CONTENT_ENCODING,
    ):
        if flags & flag:
            at += 1 + encoded[at]
    (length,) = _LENGTH.unpack_from(encoded, at)
    end = at + 4 + length
    if end > len(encoded):
        raise ValueError("headers table longer than the properties")
    raw = bytes(encoded[at + 4 : end])
    return bytes(encoded[:at]) + b"\x00\x00\x00\x00" + bytes(encoded[end:]), raw


def describe(exc: BaseException) -> str:
    """``Type: message`` of a decoding error, at most 200 characters."""
    return describe_error(exc)[:200]


def undecodable(properties: Any) -> str | None:
    """Why a message's headers could not be decoded (None when they could)."""
    headers = getattr(properties, "headers", None)
    if not headers or UNDECODABLE_HEADER not in headers:
        return None
    return f"AMQP headers undecodable ({headers[UNDECODABLE_HEADER]})"
