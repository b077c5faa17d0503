"""``logrouter rejected list|show ID|replay|purge``: the queues of records routed aside.

``--queue rejected`` (default) is ``logrouter.rejected`` (what sinks could not
handle, with the reason in ``x-logrouter-reason``, or dead-lettered by the
broker with ``x-death``); ``--queue unrouted`` is ``<exchange>.unrouted``
(what no binding matched). ``--reason TEXT`` and ``--since T`` select messages.

Reading never loses a message: messages are fetched with ``basic.get``
without auto-ack; list/show leave them unacked and closing the channel puts
them back. ``replay`` publishes each selected message to the exchange with its
routing key (publisher confirms, ``x-logrouter-replay`` header) and acks it
only once the broker confirmed it, so a replay killed at any point leaves each
message in the queue or delivered (possibly both, which the sinks' dedup
absorbs), never neither. ``purge`` acks the selected messages; it needs ``--yes``.
Only the messages present when the command started are looked at (a replayed
unrouted message that is still unroutable comes back behind them).

A batch message here (a sink's copy of the rejected lines of one batch, or a
batch dead-lettered or rejected whole) is listed with its record count and
shown line by line; replayed, it goes back as the batch it is (its
``x-logrouter-records`` kept), and the sinks take its lines one by one again.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pika
import pika.exceptions

from logrouter import batchwire, exitcodes
from logrouter.commands.common import (
    broker_failure,
    close_quietly,
    connect_as,
    resolve_target,
)
from logrouter.connection import connection_login, describe_error, redact
from logrouter.render import escape
from logrouter.sinks.dedup import REPLAY_HEADER
from logrouter.sinks.rejects import (
    BATCH_HEADER,
    BROKER_DEATH_HEADERS,
    EXCHANGE_HEADER,
    ORIGINAL_USER_HEADER,
    REASON_HEADER,
    RECORD_ID_HEADER,
    ROUTING_KEY_HEADER,
    SINK_OWNED_HEADERS,
    USER_HEADER,
)
from logrouter.timespec import TimeSpecError, parse_time
from logrouter.topology import REJECTED_QUEUE

#: headers describing the rejection, not the record: dropped on replay (the sink's
#: own, but the batch's id, which says where the record came from; the broker's)
_REJECTION_HEADERS = (
    *(header for header in SINK_OWNED_HEADERS if header != BATCH_HEADER),
    *BROKER_DEATH_HEADERS,
)
PREVIEW = 60
CONFIRM_TIMEOUT = 30.0


@dataclass(frozen=True)
class Held:
    """One fetched, unacked message."""

    position: int
    tag: int
    routing_key: str
    properties: Any
    body: bytes
    #: read from logrouter.rejected (where only sinks publish), not from an unrouted
    #: queue (where every header is the sender's)
    from_sinks: bool = True

    @property
    def reason(self) -> str:
        """Why the message is here (``reason_of``); in an unrouted queue, that (any
        header there, ``x-death`` too, is the sender's)."""
        if not self.from_sinks:
            return "unrouted (no binding matched)"
        return reason_of(self.properties, self.sink_copy)

    @property
    def died_in(self) -> str | None:
        """The queue the broker dead-lettered it from (``x-death``, in logrouter.rejected);
        None for a sink's copy or an unrouted message."""
        if not self.from_sinks:
            return None
        death = _first_death(self.properties.headers or {})
        if death is None:
            return None
        queue = death.get("queue")
        return _text(queue) if queue is not None else ""

    @property
    def sink_copy(self) -> bool:
        """Whether a sink published this copy, so its ``x-logrouter-*`` headers are the
        sink's word: read from logrouter.rejected and not dead-lettered there by the
        broker (``x-death``: then every header is still the sender's)."""
        return self.from_sinks and "x-death" not in (self.properties.headers or {})

    @property
    def ident(self) -> str:
        """The message id, or ``#N`` (its position) when it has none."""
        return str(self.properties.message_id or f"#{self.position}")

    def named(self, ident: str) -> bool:
        """Whether ``ident`` names this message: its ``ident``, or in a copy of a batch's
        lines, one line's own ``id`` (a record id, as an app or archive names it)."""
        if self.ident == ident:
            return True
        headers = getattr(self.properties, "headers", None) or {}
        if headers.get(RECORD_ID_HEADER) == ident:  # a line whose id was too long for one
            return True
        if self.records is None or ident.encode("utf-8", "surrogateescape") not in self.body:
            return False
        return any(_line_id(line) == ident for _number, line in batch_lines(self.body))

    @property
    def records(self) -> int | None:
        """The records of a batch message (its non-blank lines); None for a single one."""
        if not batchwire.is_batch(getattr(self.properties, "content_type", None)):
            return None
        return len(batch_lines(self.body))


# --------------------------------------------------------------------------- pure


def reason_of(properties: Any, sink_copy: bool = True) -> str:
    """Why the message is here: a sink's reason header (``sink_copy``: see
    ``Held.sink_copy``), else the broker's x-death reason."""
    headers = properties.headers or {}
    reason = headers.get(REASON_HEADER) if sink_copy and "x-death" not in headers else None
    if reason is not None:
        return _text(reason)
    death = _first_death(headers)
    if death is not None:
        return f"{_text(death.get('reason'))} in {_text(death.get('queue'))}"
    return "-"


def _first_death(headers: dict[str, Any]) -> dict[str, Any] | None:
    """The broker's newest ``x-death`` entry of a dead-lettered message, if any."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return deaths[0]
    return None


def time_of(properties: Any) -> datetime | None:
    """When the message was published (the timestamp property), if known and a time
    (a sender's 2**62 is none)."""
    stamp = properties.timestamp
    if not isinstance(stamp, int | float):
        return None
    try:
        return datetime.fromtimestamp(stamp, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def sender_of(properties: Any, sink_copy: bool = True) -> str | None:
    """The broker-validated login that sent the message before it came here (None: none).

    A message the broker dead-lettered (``x-death``) or routed to an unrouted queue
    (not ``sink_copy``) keeps its sender's properties, so its ``user_id``; a sink's
    copy is stamped with the sink's login and names the sender in
    ``x-logrouter-user-id``, which the sink sets (never the sender's own).
    """
    headers = properties.headers or {}
    trusted = sink_copy and "x-death" not in headers
    sender = headers.get(USER_HEADER) if trusted else properties.user_id
    return _text(sender) if sender else None


def exchange_of(properties: Any, sink_copy: bool = True) -> str | None:
    """The exchange a sink's copy says the message was published to (None: unknown, a
    copy by a sink older than the header, or no sink's copy: a sender's own header is
    never taken for it, nor an ``x-death`` entry it could have planted)."""
    headers = properties.headers or {}
    trusted = sink_copy and "x-death" not in headers
    exchange = headers.get(EXCHANGE_HEADER) if trusted else None
    return _text(exchange) if exchange else None


def original_key(held: Held) -> str:
    """The routing key the message was first published with."""
    headers = held.properties.headers or {} if held.sink_copy else {}
    return _text(headers.get(ROUTING_KEY_HEADER) or held.routing_key)


def batch_lines(body: bytes) -> list[tuple[int, bytes]]:
    """The lines of a batch body that are records (or rejected as not one): the
    non-blank ones, each with its number (from 1, blank lines counted) as a sink's
    reasons number them (``batchwire.split_batch``)."""
    return [
        (number, line) for number, line in enumerate(body.split(b"\n"), 1) if line.strip(b" \t\r")
    ]


def _line_id(line: bytes) -> str | None:
    """The ``id`` of a batch line that is a JSON object with one (else None)."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    own = record.get("id") if isinstance(record, dict) else None
    return own if isinstance(own, str) else None


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "-" if value is None else str(value)


def selected(
    held: Held,
    reason: str | None,
    since: datetime | None,
    exchange: str | None = None,
    queues: frozenset[str] | None = None,
) -> bool:
    """Whether ``--reason`` (substring, any case), ``--since`` and ``exchange`` select the
    message: a sink's copy from that exchange (or from where is unknown: a copy older
    than the header), a dead-lettered message only when it died in one of ``queues``
    (the config's sink queues; the exchange an ``x-death`` names can be the sender's
    before RabbitMQ 3.13, the queue cannot)."""
    if exchange is not None:
        died_in = held.died_in
        if died_in is not None:
            if queues is None or died_in not in queues:
                return False
        elif exchange_of(held.properties, held.sink_copy) not in (exchange, None):
            return False
    if reason is not None and reason.lower() not in held.reason.lower():
        return False
    if since is not None:
        when = time_of(held.properties)
        return when is not None and when >= since
    return True


def list_line(held: Held) -> str:
    """TIME  KEY  SIZE  ID  REASON  PREVIEW, every value escaped onto one line; the
    SIZE of a batch message says its records too (``1234B/20 records``)."""
    when = time_of(held.properties)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else "-"
    preview = escape(held.body[: PREVIEW * 4].decode("utf-8", "replace"))[:PREVIEW]
    records = held.records
    size = f"{len(held.body)}B" if records is None else f"{len(held.body)}B/{records} records"
    return "  ".join(
        (
            stamp,
            escape(original_key(held)),
            size,
            escape(held.ident),
            escape(held.reason),
            preview,
        )
    )


def show_text(held: Held) -> str:
    """One message in full: routing key, sender, properties, headers, body; all escaped.

    The sender is ``sender_of`` and the reason ``reason_of``; the user headers a sender
    could have planted on a dead-lettered message are not listed, and a sink's header
    on a message no sink published is marked as the sender's. A batch's body is shown line by line,
    numbered as the reason names its lines.
    """
    props = held.properties
    lines = [f"routing key: {escape(original_key(held))}"]
    lines.append(f"sent by: {escape(sender_of(props, held.sink_copy) or '-')}")
    for name in ("message_id", "app_id", "user_id", "content_type", "timestamp"):
        value = getattr(props, name, None)
        if value is not None:
            lines.append(f"{name}: {escape(str(value))}")
    lines.append(f"reason: {escape(held.reason)}")
    for key, value in sorted((props.headers or {}).items(), key=lambda item: str(item[0])):
        if key in (USER_HEADER, ORIGINAL_USER_HEADER):
            continue
        whose = " (set by the sender)" if key in SINK_OWNED_HEADERS and not held.sink_copy else ""
        lines.append(f"header {escape(str(key))}{whose}: {escape(_text(value))}")
    records = held.records
    if records is None:
        lines.append(f"body ({len(held.body)} bytes):")
        lines.append(escape(held.body.decode("utf-8", "replace")))
        return "\n".join(lines)
    lines.append(f"body ({len(held.body)} bytes, {records} records):")
    for number, line in batch_lines(held.body):
        lines.append(f"line {number}: {escape(line.decode('utf-8', 'replace'))}")
    return "\n".join(lines)


def replay_properties(held: Held, login: str | None = None) -> pika.BasicProperties:
    """The message's properties for re-publishing: rejection headers out, replay mark in,
    ``user_id`` the replayer's ``login`` (the broker checks it; sinks key dedup by it)."""
    props = held.properties
    headers = {k: v for k, v in (props.headers or {}).items() if k not in _REJECTION_HEADERS}
    headers[REPLAY_HEADER] = "rejected"
    sender = sender_of(props, held.sink_copy)
    if sender is not None:
        headers[ORIGINAL_USER_HEADER] = sender
    return pika.BasicProperties(
        content_type=props.content_type,
        content_encoding=props.content_encoding,
        headers=headers,
        delivery_mode=2,
        message_id=props.message_id,
        timestamp=props.timestamp,
        app_id=props.app_id,
        type=props.type,
        user_id=login,
    )


# --------------------------------------------------------------------------- I/O


def fetch(channel: Any, queue: str) -> Iterator[Held]:
    """The messages present now, fetched unacked one by one."""
    count = channel.queue_declare(queue=queue, passive=True).method.message_count
    for position in range(1, count + 1):
        method, properties, body = channel.basic_get(queue=queue, auto_ack=False)
        if method is None:
            return
        yield Held(
            position,
            method.delivery_tag,
            method.routing_key,
            properties,
            body,
            from_sinks=queue == REJECTED_QUEUE,
        )


def _err(message: str) -> None:
    print(f"logrouter rejected: {redact(message)}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        since = parse_time(args.since, datetime.now(UTC)) if args.since else None
    except TimeSpecError as exc:
        _err(str(exc))
        return exitcodes.USAGE
    if args.action == "show" and not args.id:
        _err("show needs a message ID (from `logrouter rejected list`)")
        return exitcodes.USAGE
    if args.action == "purge" and not args.yes:
        _err("purge deletes messages for good: add --yes")
        return exitcodes.USAGE
    settings, config = resolve_target(args.config, args.url, args.exchange)
    queues = frozenset(sink.queue for sink in config.sinks.values()) if config else None
    queue = REJECTED_QUEUE if args.queue == "rejected" else f"{settings.exchange}.unrouted"
    connection = connect_as(settings, "logrouter-rejected", _err)
    if connection is None:
        return exitcodes.RUNTIME
    try:
        channel = connection.channel()
        # logrouter.rejected holds every exchange's: only this one's are ours
        mine = settings.exchange if queue == REJECTED_QUEUE else None
        wanted = (h for h in fetch(channel, queue) if selected(h, args.reason, since, mine, queues))
        if args.action == "list":
            return _list(wanted)
        if args.action == "show":
            return _show(wanted, args.id)
        if args.action == "purge":
            return _purge(channel, wanted, queue)
        return _replay(connection, channel, wanted, settings.exchange)
    except pika.exceptions.AMQPError as exc:
        missing = f"queue {queue!r} does not exist on {settings.describe()}"
        _err(broker_failure(exc, missing))
        return exitcodes.RUNTIME
    finally:
        close_quietly(connection)  # unacked messages go back to the queue


def _list(wanted: Iterator[Held]) -> int:
    shown = 0
    for held in wanted:
        print(list_line(held), flush=False)
        shown += 1
    print(f"{shown} message(s)", file=sys.stderr)
    return exitcodes.OK if shown else exitcodes.NO_MATCH


def _show(wanted: Iterator[Held], ident: str) -> int:
    for held in wanted:
        if held.named(ident):
            print(show_text(held))
            return exitcodes.OK
    _err(f"no message {ident!r} in the queue (see `logrouter rejected list`)")
    return exitcodes.NO_MATCH


def _purge(channel: Any, wanted: Iterator[Held], queue: str) -> int:
    purged = 0
    for held in wanted:
        channel.basic_ack(held.tag)
        purged += 1
    print(f"purged {purged} message(s) from {queue}", file=sys.stderr)
    return exitcodes.OK if purged else exitcodes.NO_MATCH  # as list and replay


def _replay(connection: Any, channel: Any, wanted: Iterator[Held], exchange: str) -> int:
    publisher = connection.channel()
    publisher.confirm_delivery()
    login = connection_login(connection)
    replayed = 0
    for held in wanted:
        try:
            publisher.basic_publish(
                exchange, original_key(held), held.body, replay_properties(held, login)
            )
        except (pika.exceptions.NackError, pika.exceptions.UnroutableError) as exc:
            _err(f"message {held.ident!r} not confirmed ({describe_error(exc)}); left in the queue")
            continue
        channel.basic_ack(held.tag)  # only after the confirm
        replayed += 1
    print(f"replayed {replayed} message(s) to exchange {exchange!r}", file=sys.stderr)
    return exitcodes.OK if replayed else exitcodes.NO_MATCH
