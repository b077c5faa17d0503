"""The batch wire format: many records of one routing key in one AMQP message (pure).

One record per message caps a whole fleet at the broker's message rate; a
batch carries many records of one routing key, one JSON object per line, each
with its own ``id`` so that dedup, the crash journal and rejection stay per
record. The content type tells a batch from a single record; a header gives the
record count. docs/wire-format.md ("Batches") documents it.

Writers: ``record_line`` (one record's body plus its id, as one line) and
``encode_batch``. Readers: ``is_batch`` and ``split_batch``, which never raises:
a line that is not a record is one bad ``BatchRecord`` with the reason, the
other lines are records.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from itertools import chain, repeat
from operator import itemgetter
from typing import Any, NamedTuple

import orjson

from logrouter import wire

#: Content type of a batch message (a single record stays ``application/json``).
CONTENT_TYPE = "application/vnd.logrouter.batch+jsonl"
#: AMQP header with the number of records (lines) in a batch.
RECORDS_HEADER = "x-logrouter-records"
#: Lines a reader takes from one batch message, at most (a sink rejects a larger one
#: whole: one message must not become an unbounded sink batch and journal entry).
MAX_LINES = 100_000

#: Line separators that ``str.splitlines`` honours inside a UTF-8 line: escaped so
#: that one record stays one line for every reader (the archive's too).
_SEPARATORS = (
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
    (b"\xc2\x85", b"\\u0085"),
)


def _quoted(text: str) -> bytes:
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return b'"' + text.encode("ascii") + b'"'
    return json.dumps(text).encode("ascii")


def has_separator(body: bytes) -> bool:
    """True when ``body`` holds a Unicode line separator (raw, not escaped)."""
    return not body.isascii() and any(raw in body for raw, _ in _SEPARATORS)


def line_count(body: bytes) -> int:
    """The records a batch body can hold, at most: its lines (at least 1, at most
    ``MAX_LINES``; a longer one is rejected whole, unsplit). One C pass over the bytes."""
    lines = body.count(b"\n") + (not body.endswith(b"\n"))
    return max(1, min(lines, MAX_LINES))


def one_line(body: bytes) -> bytes:
    """``body`` (compact JSON) with the Unicode line separators escaped (pure)."""
    if has_separator(body):
        for raw, escaped in _SEPARATORS:
            body = body.replace(raw, escaped)
    return body


def record_line(body: bytes, record_id: str) -> bytes:
    """A record's line in a batch: its JSON object body with ``"id"`` added (pure).

    ``body`` is what ``wire.encode`` made of one record (compact JSON, no raw
    newline). Raises ``ValueError`` when it is not a one-line JSON object.
    """
    body = body.rstrip(b" \t\r\n")
    if body[:1] != b"{" or body[-1:] != b"}" or b"\n" in body:
        raise ValueError("a batch line must be a one-line JSON object")
    separator = b"" if body == b"{}" else b","
    return one_line(body[:-1] + separator + b'"id":' + _quoted(record_id) + b"}")


def encode_batch(lines: Sequence[bytes]) -> bytes:
    """The batch body: the lines, each ended by ``\\n`` (pure)."""
    return b"\n".join(lines) + b"\n" if lines else b""


def linable(body: bytes) -> bool:
    """True when ``body`` can be a batch line: a one-line compact JSON object."""
    return body[:1] == b"{" and body[-1:] == b"}" and b"\n" not in body


def encode_records(bodies: Sequence[bytes], ids: Sequence[str], *, checked: bool = False) -> bytes:
    """``encode_batch([record_line(body, id) ...])`` of the pairs, faster (pure; the
    packer's hot path).

    Every body must pass ``linable`` (else ``ValueError``). Our records (hex ids,
    bodies from the encoder) take one pass of C loops over the whole batch;
    anything else goes line by line. ``checked``: the caller vouches that every body
    is a one-line compact JSON object longer than ``{}`` and every id ASCII letters
    and digits (the encoder's plain records), so that pass skips its checks.
    """
    count = len(bodies)
    if not count:
        return b""
    try:
        if (checked and len(ids) == count) or (
            len(ids) == count
            and (joined_ids := "".join(ids)).isascii()
            and joined_ids.isalnum()
            and min(map(len, bodies)) > 2
            and bytes(map(_FIRST, bodies)).count(b"{") == count
            and bytes(map(_LAST, bodies)).count(b"}") == count
            and not any(map(bytes.__contains__, bodies, repeat(10, count)))  # memchr of "\n"
        ):
            # one %-format for the whole batch: "%.*b" takes each body but its closing
            # brace (no slice per body), its id follows
            heads = map(_MINUS_ONE, map(len, bodies))
            id_bytes = "\n".join(ids).encode("ascii").split(b"\n")
            args = tuple(chain.from_iterable(zip(heads, bodies, id_bytes, strict=True)))
            out = (_LINE * count) % args
            # the separators' bytes are never ASCII: escaping the whole body is
            # escaping each line
            return out if out.isascii() else one_line(out)
    except (TypeError, ValueError):  # not bytes and str: line by line
        pass
    return _encode_records_slowly(bodies, ids)


_MINUS_ONE = (-1).__add__
_FIRST, _LAST = itemgetter(0), itemgetter(-1)
_LINE = b'%.*b,"id":"%b"}\n'


def _encode_records_slowly(bodies: Sequence[bytes], ids: Sequence[str]) -> bytes:
    parts: list[bytes] = []
    append = parts.append
    for body, record_id in zip(bodies, ids, strict=True):
        if body[:1] != b"{" or body[-1:] != b"}" or b"\n" in body:
            raise ValueError("a batch line must be a one-line JSON object")
        if not body.isascii() and has_separator(body):
            body = one_line(body)
        if len(body) > 2 and record_id.isascii() and record_id.isalnum():  # ours: hex ids
            append(b'%b,"id":"%b"}\n' % (body[:-1], record_id.encode("ascii")))
        else:
            append(record_line(body, record_id) + b"\n")
    return b"".join(parts)


def batch_message_id(first_id: str, count: int) -> str:
    """``message_id`` of a batch message: its first record's id, ``+``, the count."""
    return f"{first_id}+{count}"


def headers(count: int) -> dict[str, Any]:
    """The AMQP headers of a batch of ``count`` records."""
    return {RECORDS_HEADER: count}


def is_batch(content_type: str | None) -> bool:
    """True when a message with this content type is a batch (parameters ignored); False
    for one pika gives as bytes (not UTF-8: not ours)."""
    if not content_type or not isinstance(content_type, str):
        return False
    return content_type.partition(";")[0].strip().lower() == CONTENT_TYPE


def declared_count(message_headers: Mapping[str, Any] | None) -> int | None:
    """The record count a batch's headers declare, or None (absent or not a count)."""
    if not message_headers:
        return None
    value = message_headers.get(RECORDS_HEADER)
    if isinstance(value, bool) or not isinstance(value, int | str | bytes):
        return None
    try:
        count = int(value)
    except ValueError:
        return None
    return count if count >= 0 else None


class BatchRecord(NamedTuple):
    """One line of a batch: a record, or why the line is not one.

    ``position`` is the line's place among the non-blank lines (0-based);
    ``id`` is the record's own ``id`` or, when the line has none, the batch's
    ``message_id`` with ``/index`` (stable across redeliveries, so dedup works);
    None when neither exists. ``line`` is the line as it came (ends stripped).
    ``exact``: ``line`` is exactly the decoded record as one compact JSON line,
    so a writer of JSON lines (the archive) may write it without re-encoding.
    """

    position: int
    id: str | None
    record: dict[str, Any] | None
    line: bytes
    reason: str | None = None
    exact: bool = False


def split_batch(
    body: bytes,
    routing_key: str,
    *,
    message_id: str | None = None,
    timestamp: float | None = None,
    app_id: str | None = None,
    arrival: float | None = None,
    max_line_bytes: int = 0,
) -> list[BatchRecord]:
    """The records of a batch body, in order; never raises (pure).

    Each record is completed as ``wire.decode`` completes a single message
    (facility and severity from the routing key when the line lacks them, time
    from ``timestamp`` or ``arrival``, ``app`` from ``app_id``). A line that is
    not a JSON object, or names no facility and severity where the routing key
    does not either, is a ``BatchRecord`` with ``record=None`` and the reason.
    Blank lines are not records; reasons name the line by its number in the body.
    A line longer than ``max_line_bytes`` (0: no limit) is a bad one too, unparsed.
    """
    out: list[BatchRecord] = []
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    complete = wire.complete
    index = 0
    for number, raw in enumerate(body.split(b"\n"), 1):
        line = raw if raw[-1:] == b"}" and raw[:1] == b"{" else raw.strip(b" \t\r")
        if not line:
            continue
        exact = False
        parsed: Any = None
        if max_line_bytes and len(line) > max_line_bytes:  # refused before any parse
            fallback_id = f"{message_id}/{index}" if message_id else None
            why = f"record of {len(line)} bytes exceeds max_record_bytes"
            out.append(BatchRecord(index, fallback_id, None, line, f"line {number}: {why}"))
            index += 1
            continue
        if line[:1] == b"{":
            try:
                parsed = loads(line)
                exact = True
            except decode_error:
                try:
                    parsed = wire.parse_object_slow(line)
                except wire.UndecodableMessage as exc:  # nested too deep for any decoder
                    parsed = exc
        if not isinstance(parsed, dict) or not parsed:
            why = (
                str(parsed) if isinstance(parsed, wire.UndecodableMessage) else "not a JSON object"
            )
            fallback_id = f"{message_id}/{index}" if message_id else None
            out.append(BatchRecord(index, fallback_id, None, line, f"line {number}: {why}"))
            index += 1
            continue
        record: dict[str, Any] = parsed
        own_id = record.get("id")
        if isinstance(own_id, str) and own_id:
            record_id: str | None = own_id
        else:
            record_id = f"{message_id}/{index}" if message_id else None
        if record_id is not own_id:
            exact = False
            if record_id is None:
                record.pop("id", None)
            else:
                record["id"] = record_id
        try:
            state = complete(record, routing_key, timestamp, None, app_id, arrival)
        except Exception as exc:  # a reader never crashes on input
            reason = str(exc) if isinstance(exc, wire.UndecodableMessage) else repr(exc)
            out.append(BatchRecord(index, record_id, None, line, f"line {number}: {reason}"))
        else:
            exact = exact and state == wire.UNCHANGED and not has_separator(line)
            out.append(BatchRecord(index, record_id, record, line, None, exact))
        index += 1
    return out


def decode_message(
    body: bytes,
    routing_key: str,
    *,
    content_type: str | None = None,
    message_id: str | None = None,
    timestamp: float | None = None,
    app_id: str | None = None,
    arrival: float | None = None,
    headers: Mapping[Any, Any] | None = None,
    user_id: str | None = None,
) -> list[BatchRecord]:
    """Any message as its records: each line of a batch, or the one record of a single
    message (``wire.decode``, foreign publishers' ``headers`` included); never raises
    (pure). Each record's ``sender`` is ``user_id`` (the broker-validated login; none
    without one), never what the body says (``wire.set_sender``). A reader of live
    messages (tail, query --follow) calls this and prints each ``record``, or reports
    its ``reason``."""
    sender = wire.login_or_none(user_id)
    if is_batch(content_type):
        items = split_batch(
            body,
            routing_key,
            message_id=message_id,
            timestamp=timestamp,
            app_id=app_id,
            arrival=arrival,
        )
        for item in items:
            if item.record is not None:
                wire.set_sender(item.record, sender)
        return items
    try:
        record = wire.decode(
            body,
            routing_key,
            timestamp=timestamp,
            message_id=message_id,
            app_id=app_id,
            arrival=arrival,
            headers=headers,
        )
    except Exception as exc:  # a reader never crashes on input
        reason = str(exc) if isinstance(exc, wire.UndecodableMessage) else repr(exc)
        return [BatchRecord(0, message_id, None, body, reason)]
    wire.set_sender(record, sender)
    return [BatchRecord(0, message_id, record, body)]


def count_problem(declared: int | None, found: int) -> str | None:
    """What is wrong when a batch holds another number of lines than it declares."""
    if declared is None or declared == found:
        return None
    return f"batch declares {declared} records ({RECORDS_HEADER}) but holds {found} lines"
