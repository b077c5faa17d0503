"""Request/reply control of running sinks over AMQP (RabbitMQ's RPC mode; no open ports).

Topology: a durable topic exchange ``<exchange>.control``. Every running sink
instance consumes from its own exclusive, auto-delete, server-named queue bound
with ``sink.<name>`` and ``all``. A client publishes one request::

    {"command": "status" | "reload", "sink": "<name>" | null}

to key ``sink.<name>`` (one sink, every instance of it) or ``all`` with
``reply_to`` = RabbitMQ's direct reply-to pseudo queue and a fresh
``correlation_id``; it collects every reply until its deadline and reports
which expected sinks did not answer.

A reply is ``{"ok": true, "command", "sink", "instance", "host", "pid", ...}``
plus the handler's result, or ``{"ok": false, "error": "unknown command 'x'", ...}``.
Every string of a reply goes through ``connection.redact``: no password leaves.

Who may ask: any broker user can publish to the control exchange, so a sink
answers only requests whose ``user_id`` (which RabbitMQ checks against the
publishing connection's login) is in ``[control] allow_users`` (default: the
sink's own login), whose ``reply_to`` is a direct reply-to address (so a reply
never lands in a queue of someone's choosing), and whose body is a JSON object
of at most ``MAX_REQUEST_BYTES``. Anything else is dropped and counted
(``refused`` / ``malformed``, shown by ``status``); nothing a request holds can
raise out of the consumer callback. Every request and reply carries the
sender's ``user_id``; the client keeps only replies with its ``correlation_id``
from a trusted login and counts the rest as ``ignored``.

``ControlServer`` attaches to a channel (a ``basic_consume`` callback served by
that connection's ``process_data_events``); ``sinks.service.ControlService``
runs it on a connection and thread of its own. ``request`` is the client used
by ``logrouter stats`` and ``logrouter reload``.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, TypedDict

import pika
import pika.spec

from logrouter import log, wire
from logrouter.connection import BrokerSettings, connection_login, redact, redact_all
from logrouter.counters import counter_values
from logrouter.errors import LogrouterError

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
BROADCAST_KEY = "all"
CONTENT_TYPE = "application/json"
COMMANDS = ("status", "reload")
#: A request is a few keys; anything bigger is not one of ours.
MAX_REQUEST_BYTES = 64 * 1024
#: A reply holds a status or a reload's issues; bigger ones are not read.
MAX_REPLY_BYTES = 1024 * 1024

Handler = Callable[[dict[str, Any]], Mapping[str, Any]]


def _log() -> Any:
    """The component logger, bound at use time (after the daemon configured logging)."""
    return log.get_logger("control")


# --------------------------------------------------------------------------- contracts


#: Monotonic counters of one sink instance since it started, keyed by
#: ``counters.COUNTER_NAMES`` (the one schema).
Counters = dict[str, int]


class SinkStatus(TypedDict):
    """What a sink's ``status`` handler returns (merged into its reply)."""

    state: str  # "starting" | "running" | "reconnecting" | "backing-off" | "stopping"
    config_version: str  # RoutingConfig.digest of the config in force
    bindings: list[str]  # binding keys in force on the sink's queue
    counters: Counters
    last_error: str | None
    uptime: float  # seconds since the instance started
    queue: NotRequired[str]
    unacked: NotRequired[int]  # deliveries held, not yet acked


class ReloadResult(TypedDict):
    """What a sink's ``reload`` handler returns (merged into its reply).

    ``issues`` are ``str(ConfigIssue)`` lines ("routing.toml:12: sinks.errors.match:
    unknown severity 'eror' ...") when the reload was refused.
    """

    outcome: Literal["applied", "unchanged", "refused"]
    config_version: str  # the version in force after the attempt
    reason: NotRequired[str]
    issues: NotRequired[list[str]]


def sink_status(
    counters: Any,
    *,
    config_version: str,
    bindings: Iterable[str],
    uptime: float,
    queue: str | None = None,
    unacked: int | None = None,
) -> SinkStatus:
    """A ``SinkStatus`` from a counters object (``counters.SinkCounters``-like: the
    attributes ``counters.COUNTER_NAMES``, ``state`` and ``last_error``).
    """
    status: SinkStatus = {
        "state": str(getattr(counters, "state", "unknown")),
        "config_version": config_version,
        "bindings": sorted(bindings),
        "counters": counter_values(counters),
        "last_error": _optional_str(getattr(counters, "last_error", None)),
        "uptime": round(uptime, 3),
    }
    if queue is not None:
        status["queue"] = queue
    if unacked is not None:
        status["unacked"] = unacked
    return status


def _optional_str(value: Any) -> str | None:
    return None if value is None else redact(str(value))


def control_exchange(exchange: str) -> str:
    """Name of the control exchange belonging to the log exchange ``exchange``."""
    return f"{exchange}.control"


def routing_key_for(sink: str | None) -> str:
    """``sink.<name>`` for one sink, ``all`` for a broadcast."""
    return BROADCAST_KEY if sink is None else f"sink.{sink}"


def declare_control_exchange(channel: Any, exchange: str) -> str:
    """Declare ``<exchange>.control`` (topic, durable; idempotent); return its name."""
    name = control_exchange(exchange)
    channel.exchange_declare(exchange=name, exchange_type="topic", durable=True)
    return name


# --------------------------------------------------------------------------- pure parts


class MalformedRequest(LogrouterError, ValueError):
    """A request that cannot be answered at all (dropped, counted and logged)."""


class RefusedRequest(MalformedRequest):
    """A request from a login not in ``[control] allow_users`` (dropped and counted)."""


@dataclass(frozen=True)
class ControlRequest:
    command: str
    sink: str | None
    reply_to: str
    correlation_id: str | None
    payload: dict[str, Any] = field(default_factory=dict)
    user_id: str | None = None


def is_direct_reply_to(reply_to: str) -> bool:
    """Whether ``reply_to`` is a direct reply-to address (only its requester reads it)."""
    return reply_to == DIRECT_REPLY_TO or reply_to.startswith(DIRECT_REPLY_TO + ".")


def parse_request(
    body: bytes,
    reply_to: str | None,
    correlation_id: str | None,
    *,
    user_id: str | None = None,
    allow_users: Collection[str] | None = None,
) -> ControlRequest:
    """A request from a message, or why it cannot be answered (total: raises only these).

    Raises ``RefusedRequest`` when ``allow_users`` is given and ``user_id`` is
    not in it, ``MalformedRequest`` when ``reply_to`` is missing or not a direct
    reply-to address, or the body is bigger than ``MAX_REQUEST_BYTES`` or not a
    JSON object.
    """
    if allow_users is not None and user_id not in allow_users:
        who = "no user_id" if user_id is None else f"user_id {_short(user_id)}"
        raise RefusedRequest(f"request from {who}, not in [control] allow_users")
    if not reply_to:
        raise MalformedRequest("request has no reply_to")
    if not is_direct_reply_to(reply_to):
        raise MalformedRequest(f"reply_to {_short(reply_to)} is not a direct reply-to address")
    if len(body) > MAX_REQUEST_BYTES:
        raise MalformedRequest(f"request body of {len(body)} bytes (at most {MAX_REQUEST_BYTES})")
    try:
        payload = wire.parse_json(body)
    except wire.UndecodableMessage as exc:
        raise MalformedRequest(f"request body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise MalformedRequest(f"request body is a JSON {type(payload).__name__}, not an object")
    command = payload.get("command")
    sink = payload.get("sink")
    return ControlRequest(
        command=command if isinstance(command, str) else _short(command),
        sink=sink if isinstance(sink, str) else None,
        reply_to=reply_to,
        correlation_id=correlation_id,
        payload=payload,
        user_id=user_id,
    )


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (for logs of hostile input)."""
    try:
        text = repr(value)
    except Exception:  # a repr that fails (e.g. too deep) still gives a log line
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Identity:
    """Who answers: the sink name and this instance of it."""

    sink: str
    instance: str
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    def fields(self) -> dict[str, Any]:
        return {"sink": self.sink, "instance": self.instance, "host": self.host, "pid": self.pid}


def build_reply(
    request: ControlRequest, identity: Identity, handlers: Mapping[str, Handler]
) -> dict[str, Any]:
    """The reply to ``request``: handler result, unknown-command error, or handler failure."""
    base: dict[str, Any] = {"command": request.command, **identity.fields()}
    handler = handlers.get(request.command)
    if handler is None:
        reply = {"ok": False, "error": f"unknown command {request.command!r}", **base}
    else:
        try:
            result = dict(handler(request.payload))
        except Exception as exc:  # a failing handler answers, never kills the sink
            reply = {"ok": False, "error": f"{request.command} failed: {type(exc).__name__}: {exc}"}
            reply.update(base)
        else:
            reply = {"ok": True, **result, **base}
    redacted: dict[str, Any] = redact_all(reply)
    return redacted


# --------------------------------------------------------------------------- server


@dataclass
class ControlCounters:
    """What a control service did since it started (shown by ``status``)."""

    answered: int = 0
    refused: int = 0  # user_id not in [control] allow_users
    malformed: int = 0  # bad reply_to, too big, not a JSON object, or failed to answer

    def as_dict(self) -> dict[str, int]:
        return {"answered": self.answered, "refused": self.refused, "malformed": self.malformed}


class ControlServer:
    """Answers control requests for one sink instance on a channel.

    Construction declares the control exchange, an exclusive auto-delete queue
    bound with ``sink.<name>`` and ``all``, and a ``basic_consume`` callback;
    replies are sent from inside the channel's ``process_data_events``. Only
    requests from ``allow_users`` are answered (see the module docstring);
    replies carry ``user_id`` (the channel's login). After a reconnect, make a
    new ``ControlServer`` on the new channel (``counters`` can be shared).
    """

    def __init__(
        self,
        channel: Any,
        exchange: str,
        sink_name: str,
        instance: str,
        handlers: Mapping[str, Handler],
        *,
        allow_users: Collection[str],
        user_id: str | None = None,
        counters: ControlCounters | None = None,
    ) -> None:
        self.channel = channel
        self.identity = Identity(sink=sink_name, instance=instance)
        self.handlers = dict(handlers)
        self.allow_users = frozenset(allow_users)
        self.user_id = user_id if user_id is not None else connection_login(channel.connection)
        self.counters = counters if counters is not None else ControlCounters()
        self.exchange = declare_control_exchange(channel, exchange)
        frame = channel.queue_declare(queue="", exclusive=True, auto_delete=True)
        self.queue: str = frame.method.queue
        for key in (routing_key_for(sink_name), BROADCAST_KEY):
            channel.queue_bind(queue=self.queue, exchange=self.exchange, routing_key=key)
        self.consumer_tag: str = channel.basic_consume(
            queue=self.queue, on_message_callback=self._on_message, auto_ack=True
        )

    def _on_message(
        self,
        channel: Any,
        method: pika.spec.Basic.Deliver,
        properties: pika.spec.BasicProperties,
        body: bytes,
    ) -> None:
        try:
            self._answer(channel, properties, body)
        except Exception as exc:  # nothing a request holds may end the control service
            self.counters.malformed += 1
            _log().warning(
                "control request failed", error=f"{type(exc).__name__}", sink=self.identity.sink
            )

    def _answer(self, channel: Any, properties: pika.spec.BasicProperties, body: bytes) -> None:
        try:
            request = parse_request(
                body,
                _str_or_none(properties.reply_to),
                _str_or_none(properties.correlation_id),
                user_id=_str_or_none(properties.user_id),
                allow_users=self.allow_users,
            )
        except RefusedRequest as exc:
            self.counters.refused += 1
            _log().warning("control request refused", reason=str(exc), sink=self.identity.sink)
            return
        except MalformedRequest as exc:
            self.counters.malformed += 1
            _log().warning("control request dropped", reason=str(exc), sink=self.identity.sink)
            return
        if request.sink is not None and request.sink != self.identity.sink:
            return  # addressed to another sink through a shared binding: not ours to answer
        reply = build_reply(request, self.identity, self.handlers)
        try:
            channel.basic_publish(
                exchange="",
                routing_key=request.reply_to,
                properties=pika.BasicProperties(
                    correlation_id=request.correlation_id,
                    content_type=CONTENT_TYPE,
                    user_id=self.user_id,
                ),
                body=json.dumps(reply, default=repr).encode("utf-8"),
            )
        except Exception as exc:
            # The sink's channel error handling owns channel failures; log and go on.
            _log().warning(
                "control reply not sent", error=redact(str(exc)), sink=self.identity.sink
            )
            return
        self.counters.answered += 1
        _log().debug(
            "control request answered",
            command=request.command,
            ok=reply["ok"],
            user_id=request.user_id,
        )

    def close(self) -> None:
        """Stop answering (the queue goes away with the consumer)."""
        if self.channel.is_open:
            self.channel.basic_cancel(self.consumer_tag)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# --------------------------------------------------------------------------- client


@dataclass
class ControlResult:
    """Replies collected for one request, the expected sinks that did not answer,
    and how many messages came back that were not a trusted reply (``ignored``)."""

    replies: list[dict[str, Any]]
    missing: list[str]
    ignored: int = 0

    def by_sink(self) -> dict[str, list[dict[str, Any]]]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for reply in self.replies:
            grouped.setdefault(str(reply.get("sink")), []).append(reply)
        return grouped


def parse_reply(
    body: bytes,
    properties: Any,
    correlation_id: str,
    trusted: Collection[str],
) -> dict[str, Any] | None:
    """The reply in a message, or None when it is not a trusted reply to our request.

    Trusted: our ``correlation_id``, a ``user_id`` in ``trusted`` (RabbitMQ vouches
    for it), at most ``MAX_REPLY_BYTES``, a JSON object. Total: never raises.
    """
    if getattr(properties, "correlation_id", None) != correlation_id:
        return None
    if getattr(properties, "user_id", None) not in trusted:
        return None
    if len(body) > MAX_REPLY_BYTES:
        return None
    try:
        reply = wire.parse_json(body)
    except wire.UndecodableMessage:
        return None
    return reply if isinstance(reply, dict) else None


def missing_sinks(expected: Iterable[str], replies: Iterable[Mapping[str, Any]]) -> list[str]:
    """Expected sink names that no reply came from, in the given order."""
    answered = {str(reply.get("sink")) for reply in replies}
    return [name for name in expected if name not in answered]


def request(
    connection: Any,
    exchange: str,
    command: str,
    *,
    sink: str | None = None,
    expected: Iterable[str] = (),
    timeout: float = 2.0,
    settle: float = 0.3,
    extra: Mapping[str, Any] | None = None,
    trusted: Collection[str] = (),
) -> ControlResult:
    """Send ``command`` to one sink (every instance) or all, collect replies.

    The request carries the connection's login as ``user_id``; replies are kept
    only from that login or one in ``trusted`` (see ``parse_reply``). Returns at
    ``timeout`` at the latest; earlier, ``settle`` seconds after every expected
    sink answered (other instances of the same sink answer within that window).
    With nothing expected it waits the whole timeout.
    """
    expected = list(expected) if sink is None else [sink]
    user_id = connection_login(connection)
    accepted = {*trusted, *([user_id] if user_id else [])}
    channel = connection.channel()
    try:
        name = declare_control_exchange(channel, exchange)
        correlation_id = uuid.uuid4().hex
        result = ControlResult(replies=[], missing=[])

        def on_reply(_ch: Any, _m: Any, properties: pika.spec.BasicProperties, body: bytes) -> None:
            reply = parse_reply(body, properties, correlation_id, accepted)
            if reply is None:
                result.ignored += 1
            else:
                result.replies.append(reply)

        channel.basic_consume(queue=DIRECT_REPLY_TO, on_message_callback=on_reply, auto_ack=True)
        message = {"command": command, "sink": sink, **(extra or {})}
        channel.basic_publish(
            exchange=name,
            routing_key=routing_key_for(sink),
            properties=pika.BasicProperties(
                reply_to=DIRECT_REPLY_TO,
                correlation_id=correlation_id,
                content_type=CONTENT_TYPE,
                expiration=str(max(1, int(timeout * 1000))),
                user_id=user_id,
            ),
            body=json.dumps(message).encode("utf-8"),
        )
        deadline = time.monotonic() + timeout
        settling = False
        while (now := time.monotonic()) < deadline:
            if expected and not settling and not missing_sinks(expected, result.replies):
                deadline = min(deadline, now + settle)
                settling = True
            connection.process_data_events(time_limit=min(0.1, max(0.0, deadline - now)))
        result.missing = missing_sinks(expected, result.replies)
        return result
    finally:
        if channel.is_open:
            channel.close()


def request_with_settings(
    settings: BrokerSettings,
    command: str,
    **options: Any,
) -> ControlResult:
    """``request`` on a fresh connection to ``settings`` (closed afterwards)."""
    connection = settings.with_name(f"logrouter-{command}").connect()
    try:
        return request(connection, settings.exchange, command, **options)
    finally:
        if connection.is_open:
            connection.close()
