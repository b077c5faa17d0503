"""Rejected copies: what a sink publishes to ``logrouter.rejected``, and its headers.

A message the sink cannot write (undecodable, too large, refused by its target)
is not lost: a copy goes to ``logrouter.rejected`` on a confirmed channel with
the reason in a header, and ``logrouter rejected`` reads it back. The header
names are this module's vocabulary; the sink and the ``rejected`` command both
import them from here.

The copy's ``user_id`` is the sink's login; the sender's (validated by the
broker, or none) goes in ``x-logrouter-user-id``. Headers in
``SINK_OWNED_HEADERS`` are the sink's alone: a sender's are dropped, so none
can pass itself off as another login.

The lines of one batch message that are rejected in one commit are one copy
(``rejected_copies``), not one per line: a batch of 99,999 junk lines must not
become 99,999 confirmed publishes and log lines. One line alone is a
single-record message named by its record's id (``x-logrouter-batch`` names its
batch); two or more are a batch message of those lines (same content type, its
``x-logrouter-records`` their count, its ``message_id`` the batch's), so that
``rejected replay`` sends them back as a batch, and its ``x-logrouter-reason``
says the count and the first few distinct reasons with their line numbers in
the copy's body, bounded in size (``group_reason``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from typing import Any, NamedTuple

import pika
import pika.exceptions
import pika.spec

from logrouter import batchwire, topology, wire
from logrouter.connection import describe_error
from logrouter.sinks.batch import Delivery

REASON_HEADER = "x-logrouter-reason"
#: On a rejected line of a batch, or a copy of several: the message_id of the batch
#: they came from.
BATCH_HEADER = "x-logrouter-batch"
SINK_HEADER = "x-logrouter-sink"
#: The exchange the sink consumes from: ``logrouter.rejected`` is one queue for every
#: exchange of the broker, and ``rejected replay`` must not send one's into another.
EXCHANGE_HEADER = "x-logrouter-exchange"
ROUTING_KEY_HEADER = "x-logrouter-routing-key"
#: On a rejected copy: the broker-validated user_id of the message the sink rejected.
USER_HEADER = "x-logrouter-user-id"
#: Set by ``logrouter rejected replay``: the user_id of the message before it was rejected.
ORIGINAL_USER_HEADER = "x-logrouter-original-user"
#: On a rejected line whose record id cannot be the copy's ``message_id`` (an AMQP short
#: string: 255 bytes at most): that id; the ``message_id`` stays the batch's.
RECORD_ID_HEADER = "x-logrouter-record-id"
#: On a copy whose sender's properties could not be sent again: why, and the copy
#: carries only the sink's own headers.
PROPERTIES_HEADER = "x-logrouter-properties-dropped"
#: Headers whose value on a rejected copy is the sink's word: a sender's are dropped.
SINK_OWNED_HEADERS = (
    REASON_HEADER,
    BATCH_HEADER,
    SINK_HEADER,
    EXCHANGE_HEADER,
    ROUTING_KEY_HEADER,
    USER_HEADER,
    ORIGINAL_USER_HEADER,
    RECORD_ID_HEADER,
    PROPERTIES_HEADER,
)
#: A content header frame's payload before the properties: class, weight, body size.
_HEADER_FIXED = 12
#: An AMQP short string (message_id, ...) holds this many bytes at most.
SHORTSTR_BYTES = 255
#: While rejected copies are awaited, the connection is run this long between checks.
CONFIRM_SLICE = 0.05
#: Rejected copies not confirmed within this long: the connection counts as lost.
CONFIRM_TIMEOUT = 60.0
#: Headers the broker sets when it dead-letters a message: on a sink's copy they can only
#: be the sender's own (a forged x-death made a copy read as dead-lettered elsewhere).
BROKER_DEATH_HEADERS = (
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
)
#: Distinct reasons the x-logrouter-reason of a copy of several lines names, at most.
GROUP_REASONS = 5
#: Characters of one reason kept in that header (a longer one is cut, marked "...").
REASON_CHARS = 200
#: How ``batchwire.split_batch`` names a line in its reasons: its number in the batch.
_LINE_NUMBER = re.compile(r"line [0-9]+: ")


class RejectedCopy(NamedTuple):
    """One message for ``logrouter.rejected``.

    ``delivery`` is the rejected message, or one line of a batch (``line``), or, for
    ``records`` > 1, the batch message with ``body`` the rejected lines (one per
    line). ``reason`` is its ``x-logrouter-reason``; ``first_reason`` the first
    line's (what the sink's log names).
    """

    delivery: Delivery
    reason: str
    first_reason: str
    records: int = 1

    @property
    def grouped(self) -> bool:
        """Whether the copy holds several lines of one batch message."""
        return self.records > 1

    def log_fields(self) -> dict[str, Any]:
        """What the sink's "message rejected" line says of the copy: ``message_id`` is
        what ``logrouter rejected show`` finds it by (a lone batch line's own id),
        ``batch`` the batch it came from, ``user_id`` the broker-validated sender."""
        delivery = self.delivery
        props = delivery.properties
        message_id = getattr(props, "message_id", None)
        return {
            "routing_key": delivery.routing_key,
            "reason": self.first_reason,
            "records": self.records,
            "message_id": delivery.record_id if delivery.line else message_id,
            "batch": message_id if delivery.line or self.grouped else None,
            "user_id": getattr(props, "user_id", None),
        }


def _cut(text: str) -> str:
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3] + "..."


def group_reason(reasons: Sequence[str]) -> tuple[str, str]:
    """The ``x-logrouter-reason`` of a copy of ``len(reasons)`` lines, the line
    numbered n in its body rejected for ``reasons[n - 1]``, and its first line's
    reason (pure).

    Lines are named by their number in the copy (a reason's own ``line N:`` of the
    original batch is replaced); the same reason is named once, at its first line,
    with how many more lines it covers; at most ``GROUP_REASONS`` reasons of
    ``REASON_CHARS`` each, then a count of the rest: about 1.5 KB whatever the lines.
    """
    seen: dict[str, list[int]] = {}  # reason -> [its first line, its lines]
    for number, reason in enumerate(reasons, 1):
        found = _LINE_NUMBER.match(reason)
        text = reason[found.end() :] if found else reason
        entry = seen.get(text)
        if entry is None:
            seen[text] = [number, 1]
        else:
            entry[1] += 1
    parts: list[str] = []
    shown = 0
    for text, (first, count) in islice(seen.items(), GROUP_REASONS):
        more = f" (+{count - 1} more line{'s' if count > 2 else ''})" if count > 1 else ""
        parts.append(f"line {first}: {_cut(text)}{more}")
        shown += count
    if len(seen) > GROUP_REASONS:
        others = len(seen) - GROUP_REASONS
        plural = "s" if others > 1 else ""
        parts.append(f"{len(reasons) - shown} more lines for {others} other reason{plural}")
    first_text, (first_line, _count) = next(iter(seen.items()))
    return (
        f"{len(reasons)} records rejected: " + "; ".join(parts),
        f"line {first_line}: {_cut(first_text)}",
    )


def rejected_copies(rejected: Iterable[tuple[Delivery, str]]) -> list[RejectedCopy]:
    """The copies of ``(delivery, reason)`` pairs: the lines of each batch message
    grouped into one copy (see the module docstring), the rest one copy each, in the
    order of their first pair (pure)."""
    order: list[list[tuple[Delivery, str]]] = []
    lines_of: dict[int, list[tuple[Delivery, str]]] = {}  # by delivery tag: one message
    for pair in rejected:
        delivery = pair[0]
        if not delivery.line:
            order.append([pair])
            continue
        group = lines_of.get(delivery.tag)
        if group is None:
            group = lines_of[delivery.tag] = []
            order.append(group)
        group.append(pair)
    return [_copy(group) for group in order]


def _copy(group: list[tuple[Delivery, str]]) -> RejectedCopy:
    if len(group) == 1:
        delivery, reason = group[0]
        return RejectedCopy(delivery, reason, reason)
    reason, first_reason = group_reason([reason for _, reason in group])
    body = batchwire.encode_batch([delivery.body for delivery, _ in group])
    batch = group[0][0]._replace(body=body, record_id=None, line=False)
    return RejectedCopy(batch, reason, first_reason, len(group))


def rejected_properties(
    delivery: Delivery,
    reason: str,
    *,
    sink: str,
    sink_login: str | None,
    exchange: str = "",
    records: int = 1,
) -> Any:
    """The properties of the rejected copy of ``delivery`` (see the module docstring).

    One line of a batch is rejected alone, as a single-record message whose
    ``message_id`` is the record's and whose ``x-logrouter-batch`` names the batch.
    ``records`` > 1: ``delivery`` is a batch message whose body is that many rejected
    lines of it (``RejectedCopy.grouped``).
    """
    props = delivery.properties or pika.BasicProperties()
    headers = {
        key: value
        for key, value in (getattr(props, "headers", None) or {}).items()
        if key not in SINK_OWNED_HEADERS and key not in BROKER_DEATH_HEADERS
    }
    headers[REASON_HEADER] = reason
    headers[SINK_HEADER] = sink
    headers[EXCHANGE_HEADER] = exchange
    headers[ROUTING_KEY_HEADER] = delivery.routing_key
    user_id = getattr(props, "user_id", None)
    if isinstance(user_id, str):  # the broker checked it is the sender's login
        headers[USER_HEADER] = user_id
    content_type, message_id = props.content_type, props.message_id
    if delivery.line:
        headers.pop(batchwire.RECORDS_HEADER, None)
        headers[BATCH_HEADER] = message_id
        content_type, record_id = wire.CONTENT_TYPE, delivery.record_id
        if record_id is None or _fits_shortstr(record_id):
            message_id = record_id
        else:  # its own id, any length; a lone surrogate (the json module's) escaped
            headers[RECORD_ID_HEADER] = _sendable(record_id)
    elif records > 1:
        headers.update(batchwire.headers(records))
        headers[BATCH_HEADER] = message_id
        content_type = batchwire.CONTENT_TYPE
    return pika.BasicProperties(
        content_type=content_type,
        content_encoding=props.content_encoding,
        headers=headers,
        delivery_mode=2,
        message_id=message_id,
        timestamp=props.timestamp,
        app_id=props.app_id,
        type=props.type,
        user_id=sink_login,
    )


def publish_rejected(
    publish: Callable[..., None],
    rejected: Iterable[tuple[Delivery, str]],
    *,
    sink: str,
    sink_login: str | None,
    exchange: str,
    on_rejected: Callable[[RejectedCopy], None],
    max_header: int = 131_064,
) -> None:
    """Publish the copies of the ``(delivery, reason)`` pairs (``rejected_copies``) to
    ``logrouter.rejected`` with ``publish`` (a ``basic_publish``; mandatory);
    ``on_rejected(copy)`` after each. The caller awaits their confirms
    (``Confirmations``). ``max_header``: the most a content header frame's payload may
    hold (``frames.frame_payload_max``): a copy whose sender's headers, with the sink's,
    would not fit goes with the sink's own (the broker closed the connection on it)."""
    for copy in rejected_copies(rejected):
        delivery = copy.delivery
        reason = _sendable(copy.reason)
        try:
            properties = rejected_properties(
                delivery,
                reason,
                sink=sink,
                sink_login=sink_login,
                exchange=exchange,
                records=copy.records,
            )
            encoded = sum(map(len, properties.encode()))  # as pika does: raising midway is worse
            if encoded + _HEADER_FIXED > max_header:
                raise ValueError(f"properties of {encoded} bytes exceed a frame")
        except Exception as exc:  # a sender's value pika decoded but cannot encode again
            why = _sendable(describe_error(exc))
            properties = _sinks_own(delivery, reason, why, sink, sink_login, exchange, copy.records)
        publish(
            topology.REJECTED_QUEUE, delivery.routing_key, delivery.body, properties, mandatory=True
        )
        on_rejected(copy)


def _sinks_own(
    delivery: Delivery,
    reason: str,
    why: str,
    sink: str,
    sink_login: str | None,
    exchange: str,
    records: int,
) -> Any:
    """The properties of a copy with the sink's own values only (text it made sendable):
    a message must never fail to be rejected, or its batch would be redelivered forever.
    The sender's ``message_id`` is kept when it can be sent again."""
    headers = {
        REASON_HEADER: reason,
        SINK_HEADER: _sendable(sink),
        EXCHANGE_HEADER: _sendable(exchange),
        ROUTING_KEY_HEADER: _sendable(
            delivery.routing_key
            if isinstance(delivery.routing_key, str)
            else bytes(delivery.routing_key).decode("utf-8", "backslashreplace")
        ),
        PROPERTIES_HEADER: why[:REASON_CHARS],
    }
    user_id = getattr(delivery.properties, "user_id", None)
    if isinstance(user_id, str):
        headers[USER_HEADER] = _sendable(user_id)
    message_id = getattr(delivery.properties, "message_id", None)
    if delivery.line:
        message_id = delivery.record_id
    if not (isinstance(message_id, str) and _fits_shortstr(message_id)):
        message_id = None
    content_type = None  # a single message's own: not known to be sendable
    if delivery.line:
        content_type = wire.CONTENT_TYPE
    elif batchwire.is_batch(getattr(delivery.properties, "content_type", None)):
        content_type = batchwire.CONTENT_TYPE
        headers.update(batchwire.headers(records))
    return pika.BasicProperties(
        content_type=content_type,
        headers=headers,
        delivery_mode=2,
        message_id=message_id,
        user_id=sink_login,
    )


def _fits_shortstr(text: str) -> bool:
    """Whether ``text`` can be an AMQP short string (a message_id): valid UTF-8 of at
    most 255 bytes."""
    try:
        return len(text.encode()) <= SHORTSTR_BYTES
    except UnicodeEncodeError:  # a lone surrogate
        return False


def _sendable(text: str) -> str:
    """``text`` as pika can encode it: a lone surrogate escaped (``\\ud800``)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text


class Confirmations:
    """The publisher confirms of a sink's reject channel, streamed
    (``frames.streaming_confirms``): a commit's copies are all published, then awaited
    together, not one round trip each (a flood of junk messages would make a sink
    write nothing else for ~2 ms per message)."""

    def __init__(self, on_settled: Callable[[], None] = lambda: None) -> None:
        #: called when nothing is left unconfirmed or one was refused: ends the wait's
        #: ``process`` now (pika's only returns early for consumer deliveries)
        self.on_settled = on_settled
        #: delivery tags given out on the channel (the broker numbers publishes from 1)
        self.sent = 0
        self.unconfirmed: set[int] = set()
        self.failure: pika.exceptions.AMQPError | None = None

    def published(self, count: int) -> None:
        """``count`` more publishes on the channel."""
        self.unconfirmed.update(range(self.sent + 1, self.sent + count + 1))
        self.sent += count

    def on_confirm(self, frame: Any) -> None:
        """A ``Basic.Ack`` or ``Basic.Nack`` frame of the channel."""
        method = frame.method
        tag = method.delivery_tag
        if method.multiple:
            self.unconfirmed = {number for number in self.unconfirmed if number > tag}
        else:
            self.unconfirmed.discard(tag)
        if isinstance(method, pika.spec.Basic.Nack):
            self.failure = pika.exceptions.NackError([])
        if not self.unconfirmed or self.failure is not None:
            self.on_settled()

    def on_close(self, _channel: Any, reason: Any) -> None:
        """The broker closed the channel (``logrouter.rejected`` deleted, ...): no confirm
        comes any more."""
        self.failure = (
            reason
            if isinstance(reason, pika.exceptions.AMQPError)
            else pika.exceptions.ChannelClosed(0, str(reason))
        )
        self.on_settled()

    def on_return(self, *_returned: Any) -> None:
        """A copy came back unroutable (``logrouter.rejected`` is gone)."""
        self.failure = pika.exceptions.UnroutableError([])
        self.on_settled()

    def wait(self, process: Callable[[float], None], timeout: float) -> None:
        """Run ``process(seconds)`` (the connection) until every publish is confirmed;
        raise ``NackError``/``UnroutableError`` when one was refused, ``AMQPError``
        after ``timeout`` s (the batch is then not acked: redelivered)."""
        deadline = time.monotonic() + timeout
        while self.unconfirmed and self.failure is None:
            if time.monotonic() > deadline:
                raise pika.exceptions.AMQPError(
                    f"{len(self.unconfirmed)} rejected copies not confirmed within {timeout:.0f} s"
                )
            process(CONFIRM_SLICE)
        failure, self.failure = self.failure, None
        if failure is not None:
            raise failure
