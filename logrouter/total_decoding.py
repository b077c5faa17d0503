"""pika's decoding of message properties, made total for consumers.

pika raises while it decodes a content header whose headers table holds a value
it cannot represent: a timestamp beyond year 9999 (``datetime`` overflows), an
unknown field type, tables nested deeper than Python's recursion limit. The
broker passes such a message on as it came, and the raise surfaces from
``process_data_events`` as a lost connection: the consumer reconnects, gets the
same message again, and never gets past it. Any broker user could so stop every
sink and ``tail`` on a queue with one message.

``install()`` (idempotent; called where logrouter connects to consume) wraps
``pika.data.decode_table`` so that a headers table pika cannot decode (or a
table nested in it) becomes
``{UNDECODABLE_HEADER: why, RAW_HEADERS_HEADER: its bytes}``, skipped by its
length prefix, and ``BasicProperties.decode`` so that properties it still cannot
decode become that marker alone. A sink rejects a message whose headers carry
the marker (``logrouter.rejected`` keeps its body and those raw bytes); nothing
else changes: a table pika decodes is decoded exactly as before.
"""

from __future__ import annotations

import struct
import threading
from typing import Any

import pika.data
import pika.spec

#: Header a decoded table holds instead of what could not be decoded (and why).
UNDECODABLE_HEADER = "x-logrouter-undecodable-headers"
#: The undecodable table's own bytes, kept for the rejected copy.
RAW_HEADERS_HEADER = "x-logrouter-raw-headers"

_LENGTH = struct.Struct(">I")
_installed = False
#: per thread: inside a headers table (its nested tables raise to it, so the marker
#: replaces the whole headers table, where a sink looks for it)
_nesting = threading.local()


def install() -> None:
    """Make pika's properties decoding total in this process (once)."""
    global _installed
    if _installed:
        return
    _installed = True
    decode_table = pika.data.decode_table
    decode_properties = pika.spec.BasicProperties.decode

    def total_decode_table(encoded: bytes, offset: int) -> tuple[dict[str, Any], int]:
        table: tuple[dict[str, Any], int]
        if getattr(_nesting, "inside", False):  # a nested table: the outermost one catches
            table = decode_table(encoded, offset)
            return table
        _nesting.inside = True
        try:
            table = decode_table(encoded, offset)
            return table
        except Exception as exc:  # RecursionError too: deep nesting
            (length,) = _LENGTH.unpack_from(encoded, offset)
            raw = bytes(encoded[offset + 4 : offset + 4 + length])
            return {UNDECODABLE_HEADER: describe(exc), RAW_HEADERS_HEADER: raw}, (
                offset + 4 + length
            )
        finally:
            _nesting.inside = False

    def total_decode(self: Any, encoded: bytes, offset: int = 0) -> Any:
        try:
            return decode_properties(self, encoded, offset)
        except Exception as exc:
            self.__init__(headers={UNDECODABLE_HEADER: f"properties: {describe(exc)}"})
            return self

    pika.data.decode_table = total_decode_table
    pika.spec.BasicProperties.decode = total_decode  # type: ignore[method-assign]


def describe(exc: BaseException) -> str:
    """``Type: message`` of a decoding error, at most 200 characters."""
    return f"{type(exc).__name__}: {exc}"[:200]


def undecodable(properties: Any) -> str | None:
    """Why a message's headers could not be decoded (None when they could)."""
    headers = getattr(properties, "headers", None)
    if not headers or UNDECODABLE_HEADER not in headers:
        return None
    return f"AMQP headers undecodable ({headers[UNDECODABLE_HEADER]})"
