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
A malformed request (not a JSON object, or no ``reply_to``) is dropped and logged.

``ControlServer`` attaches to the sink's own BlockingConnection channel (a
``basic_consume`` callback served by the sink's ``process_data_events`` loop,
no extra thread). ``request`` is the client used by ``logrouter stats`` and
``logrouter reload``.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, TypedDict

import pika
import pika.spec

from logrouter import log
from logrouter.connection import BrokerSettings, redact
from logrouter.counters import counter_values
from logrouter.errors import LogrouterError

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
BROADCAST_KEY = "all"
CONTENT_TYPE = "application/json"
COMMANDS = ("status", "reload")

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
    """A request that cannot be answered at all (dropped and logged)."""


@dataclass(frozen=True)
class ControlRequest:
    command: str
    sink: str | None
    reply_to: str
    correlation_id: str | None
    payload: dict[str, Any] = field(default_factory=dict)


def parse_request(body: bytes, reply_to: str | None, correlation_id: str | None) -> ControlRequest:
    """A request from a message, or ``MalformedRequest`` saying why it cannot be answered."""
    if not reply_to:
        raise MalformedRequest("request has no reply_to")
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedRequest(f"request body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise MalformedRequest(f"request body is a JSON {type(payload).__name__}, not an object")
    command = payload.get("command")
    sink = payload.get("sink")
    return ControlRequest(
        command=command if isinstance(command, str) else repr(command),
        sink=sink if isinstance(sink, str) else None,
        reply_to=reply_to,
        correlation_id=correlation_id,
        payload=payload,
    )


def redact_all(value: Any) -> Any:
    """``value`` with every string (keys included) passed through ``redact``."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact(str(k)): redact_all(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_all(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(repr(value))


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


class ControlServer:
    """Answers control requests for one sink instance on the sink's own channel.

    Construction declares the control exchange, an exclusive auto-delete queue
    bound with ``sink.<name>`` and ``all``, and a ``basic_consume`` callback;
    replies are sent from inside the channel's ``process_data_events``. After a
    reconnect, make a new ``ControlServer`` on the new channel.
    """

    def __init__(
        self,
        channel: Any,
        exchange: str,
        sink_name: str,
        instance: str,
        handlers: Mapping[str, Handler],
    ) -> None:
        self.channel = channel
        self.identity = Identity(sink=sink_name, instance=instance)
        self.handlers = dict(handlers)
        self.exchange = declare_control_exchange(channel, exchange)
        frame = channel.queue_declare(queue="", exclusive=True, auto_delete=True)
        self.queue: str = frame.method.queue
        for key in (routing_key_for(sink_name), BROADCAST_KEY):
            channel.queue_bind(queue=self.queue, exchange=self.exchange, routing_key=key)
        self.consumer_tag: str = channel.basic_consume(
            queue=self.queue, on_message_callback=self._on_message, auto_ack=True
        )
        self.answered = 0
        self.dropped = 0

    def _on_message(
        self,
        channel: Any,
        method: pika.spec.Basic.Deliver,
        properties: pika.spec.BasicProperties,
        body: bytes,
    ) -> None:
        try:
            request = parse_request(body, properties.reply_to, properties.correlation_id)
        except MalformedRequest as exc:
            self.dropped += 1
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
                    correlation_id=request.correlation_id, content_type=CONTENT_TYPE
                ),
                body=json.dumps(reply, default=repr).encode("utf-8"),
            )
        except Exception as exc:
            # The sink's channel error handling owns channel failures; log and go on.
            _log().warning(
                "control reply not sent", error=redact(str(exc)), sink=self.identity.sink
            )
            return
        self.answered += 1
        _log().debug("control request answered", command=request.command, ok=reply["ok"])

    def close(self) -> None:
        """Stop answering (the queue goes away with the consumer)."""
        if self.channel.is_open:
            self.channel.basic_cancel(self.consumer_tag)


# --------------------------------------------------------------------------- client


@dataclass
class ControlResult:
    """Replies collected for one request, and the expected sinks that did not answer."""

    replies: list[dict[str, Any]]
    missing: list[str]

    def by_sink(self) -> dict[str, list[dict[str, Any]]]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for reply in self.replies:
            grouped.setdefault(str(reply.get("sink")), []).append(reply)
        return grouped


def missing_sinks(expected: Iterable[str], replies: Iterable[Mapping[str, Any]]) -> list[str]:
    """Expected sink names that no reply came from, in the given order."""
    answered = {reply.get("sink") for reply in replies}
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
) -> ControlResult:
    """Send ``command`` to one sink (every instance) or all, collect replies.

    Returns at ``timeout`` at the latest; earlier, ``settle`` seconds after every
    expected sink answered (other instances of the same sink answer within that
    window). With nothing expected it waits the whole timeout.
    """
    expected = list(expected) if sink is None else [sink]
    channel = connection.channel()
    try:
        name = declare_control_exchange(channel, exchange)
        correlation_id = uuid.uuid4().hex
        replies: list[dict[str, Any]] = []

        def on_reply(_ch: Any, _m: Any, properties: pika.spec.BasicProperties, body: bytes) -> None:
            if properties.correlation_id != correlation_id:
                return
            try:
                reply = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                return
            if isinstance(reply, dict):
                replies.append(reply)

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
            ),
            body=json.dumps(message).encode("utf-8"),
        )
        deadline = time.monotonic() + timeout
        settling = False
        while (now := time.monotonic()) < deadline:
            if expected and not settling and not missing_sinks(expected, replies):
                deadline = min(deadline, now + settle)
                settling = True
            connection.process_data_events(time_limit=min(0.1, max(0.0, deadline - now)))
        return ControlResult(replies=replies, missing=missing_sinks(expected, replies))
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
