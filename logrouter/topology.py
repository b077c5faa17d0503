"""Declare the broker topology idempotently and reconcile sink bindings as a diff.

What is declared (see docs/topology.md):

- the topic exchange (``logs``), durable, with ``alternate-exchange`` = ``<exchange>.unrouted``;
- ``<exchange>.unrouted``: a fanout exchange and a bounded durable queue of the same name;
- ``logrouter.rejected``: a fanout exchange and a durable queue that sink queues dead-letter to;
- one durable queue per sink, classic or quorum, bound with exactly its compiled bindings.

AMQP cannot list bindings, so the bindings this module applied are recorded in the broker
itself: one persistent JSON message in the durable queue ``logrouter.topology`` (max length 1).
Read-modify-write of that record happens under a lock, the exclusive queue
``logrouter.topology.lock`` (a second connection declaring it gets RESOURCE_LOCKED).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exchange_type import ExchangeType

from logrouter import log
from logrouter.backoff import Backoff
from logrouter.connection import DEFAULT_EXCHANGE, BrokerSettings, connection_login
from logrouter.errors import LogrouterError

if TYPE_CHECKING:
    from logrouter.config import SinkConfig

REJECTED_QUEUE = "logrouter.rejected"
UNROUTED_QUEUE = f"{DEFAULT_EXCHANGE}.unrouted"
STATE_QUEUE = "logrouter.topology"
UNROUTED_MAX_LENGTH = 100_000
#: Byte bounds of logrouter's own queues (x-max-length-bytes, overflow drop-head: the
#: newest are kept), so a flood of big or hostile messages cannot fill the broker's disk.
UNROUTED_MAX_BYTES = 256 * 1024 * 1024
REJECTED_MAX_BYTES = 1024 * 1024 * 1024
BOUNDED_ARGUMENTS = ("x-max-length-bytes", "x-overflow")
LOCK_TIMEOUT = 15.0
STATE_VERSION = 1
QUEUE_TYPES = ("classic", "quorum")

_PRECONDITION_FAILED = 406
_RESOURCE_LOCKED = 405
_INEQUIVALENT = re.compile(r"inequivalent arg '([^']+)'")
_RECEIVED = re.compile(r"received (?:the value )?('[^']*'|\S+).*current is ('[^']*'|\S+)")


class TopologyError(LogrouterError, RuntimeError):
    """The topology cannot be declared as asked; ``str(e)`` says what and how to fix it.

    ``diffs`` holds what was applied anyway (other queues) when one queue failed.
    """

    def __init__(self, message: str, diffs: list[BindingDiff] | None = None) -> None:
        super().__init__(message)
        self.diffs: list[BindingDiff] = diffs or []


@dataclass(frozen=True)
class TopologyNames:
    """Every name the topology uses; tests pass unique ones."""

    exchange: str = DEFAULT_EXCHANGE
    rejected: str = REJECTED_QUEUE  # fanout exchange and queue of the same name
    state: str = STATE_QUEUE  # durable queue holding the record of applied bindings
    queue_type: str = "classic"  # of the queues above: "quorum" on a cluster

    @classmethod
    def for_broker(cls, broker: BrokerSettings) -> TopologyNames:
        """The names and queue type a config's ``[broker]`` section gives."""
        return cls(exchange=broker.exchange, queue_type=broker.queue_type)

    def queue_arguments(self, **arguments: Any) -> dict[str, Any]:
        """x-arguments of one of logrouter's own queues."""
        return {"x-queue-type": self.queue_type, **arguments}

    @property
    def unrouted(self) -> str:
        """The alternate exchange (fanout) and its bounded queue."""
        return f"{self.exchange}.unrouted"

    @property
    def lock(self) -> str:
        """The exclusive queue that serialises read-modify-write of the record."""
        return f"{self.state}.lock"


@dataclass(frozen=True)
class QueueSpec:
    """One sink queue as it should be: name, bindings, type."""

    name: str  # logrouter.<sink>
    bindings: frozenset[str]
    queue_type: str = "classic"  # or "quorum"
    delivery_limit: int = 5

    def arguments(self, rejected: str) -> dict[str, Any]:
        """The x-arguments of ``queue.declare`` for this queue."""
        if self.queue_type not in QUEUE_TYPES:
            raise TopologyError(
                f"queue {self.name!r}: queue_type {self.queue_type!r} "
                f"(allowed: {', '.join(QUEUE_TYPES)})"
            )
        args: dict[str, Any] = {
            "x-queue-type": self.queue_type,
            "x-dead-letter-exchange": rejected,
        }
        if self.queue_type == "quorum":
            args["x-delivery-limit"] = self.delivery_limit
        return args


@dataclass
class BindingDiff:
    """What reconciling one queue changed (empty sets: nothing)."""

    queue: str
    added: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    deleted: bool = False  # the queue itself was pruned

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.deleted)


def queue_spec(sink: SinkConfig) -> QueueSpec:
    """The queue a configured sink needs."""
    return QueueSpec(
        name=sink.queue,
        bindings=frozenset(sink.selector.bindings),
        queue_type=sink.queue_type,
        delivery_limit=sink.delivery_limit,
    )


#: What names the topology: an exchange name, explicit names, or a config's broker settings.
Target = str | TopologyNames | BrokerSettings


def _names(exchange: Target) -> TopologyNames:
    if isinstance(exchange, TopologyNames):
        return exchange
    if isinstance(exchange, BrokerSettings):
        return TopologyNames.for_broker(exchange)
    return TopologyNames(exchange=exchange)


# --- errors -------------------------------------------------------------------------------


def describe_mismatch(kind: str, name: str, exc: pika.exceptions.ChannelClosedByBroker) -> str:
    """A clear, one-line explanation of a 406 on declaring ``kind`` ``name``."""
    text = str(exc.reply_text)
    arg = _INEQUIVALENT.search(text)
    if not arg:
        return f"{kind} {name!r}: the broker refused the declaration: {text}"
    values = _RECEIVED.search(text)
    detail = f" (wanted {values.group(1)}, the broker has {values.group(2)})" if values else ""
    fix = (
        f"drain and delete it (rabbitmqctl delete_queue {name}), then run setup again"
        if kind == "queue"
        else f"delete it (rabbitmqadmin delete exchange name={name}), then run setup again"
    )
    return (
        f"{kind} {name!r} already exists with a different {arg.group(1)!r}{detail}; "
        f"it cannot be changed in place: {fix}"
    )


class _Session:
    """A connection and a channel that is reopened after the broker closes it."""

    def __init__(self, connection: BlockingConnection, channel: BlockingChannel | None = None):
        self.connection = connection
        self.channel = channel if channel is not None and channel.is_open else connection.channel()

    def reopen(self) -> BlockingChannel:
        if not self.channel.is_open:
            self.channel = self.connection.channel()
        return self.channel


# --- declarations -------------------------------------------------------------------------


def _declare_exchanges(session: _Session, names: TopologyNames) -> None:
    ch = session.channel
    current = ("exchange", names.unrouted)
    try:
        ch.exchange_declare(names.unrouted, ExchangeType("fanout"), durable=True)
        current = ("queue", names.unrouted)
        ch = _declare_bounded(
            session,
            names.unrouted,
            names.queue_arguments(
                **{
                    "x-max-length": UNROUTED_MAX_LENGTH,
                    "x-max-length-bytes": UNROUTED_MAX_BYTES,
                    "x-overflow": "drop-head",
                }
            ),
        )
        ch.queue_bind(names.unrouted, names.unrouted, routing_key="")
        current = ("exchange", names.rejected)
        ch.exchange_declare(names.rejected, ExchangeType("fanout"), durable=True)
        current = ("queue", names.rejected)
        ch = _declare_bounded(
            session,
            names.rejected,
            names.queue_arguments(
                **{"x-max-length-bytes": REJECTED_MAX_BYTES, "x-overflow": "drop-head"}
            ),
        )
        ch.queue_bind(names.rejected, names.rejected, routing_key="")
        current = ("exchange", names.exchange)
        ch.exchange_declare(
            names.exchange,
            ExchangeType("topic"),
            durable=True,
            arguments={"alternate-exchange": names.unrouted},
        )
    except pika.exceptions.ChannelClosedByBroker as exc:
        session.reopen()
        if exc.reply_code != _PRECONDITION_FAILED:
            raise
        raise TopologyError(describe_mismatch(*current, exc)) from None


def _declare_bounded(session: _Session, name: str, arguments: dict[str, Any]) -> BlockingChannel:
    """Declare one of logrouter's own queues with its byte bound; the channel to go on with.

    A queue made by an older logrouter (without the bound) cannot be changed in
    place: it is kept as it is, and a warning says how to bound it. The attempt
    runs on a channel of its own, so the session's channel stays open either way.
    """
    probe = session.connection.channel()
    try:
        probe.queue_declare(name, durable=True, arguments=arguments)
    except pika.exceptions.ChannelClosedByBroker as exc:
        arg = _INEQUIVALENT.search(str(exc.reply_text))
        if (
            exc.reply_code != _PRECONDITION_FAILED
            or not arg
            or arg.group(1) not in (BOUNDED_ARGUMENTS)
        ):
            raise
        legacy = {k: v for k, v in arguments.items() if k not in BOUNDED_ARGUMENTS}
        if "x-max-length" in legacy:
            legacy["x-overflow"] = arguments["x-overflow"]
        session.channel.queue_declare(name, durable=True, arguments=legacy)
        log.get_logger("topology").warning(
            "queue has no byte bound (made by an older logrouter)",
            queue=name,
            fix=f"drain and delete it (rabbitmqctl delete_queue {name}), then run setup again",
            wanted=f"x-max-length-bytes={arguments['x-max-length-bytes']}",
        )
    finally:
        if probe.is_open:
            probe.close()
    return session.channel


def declare_exchange(channel: BlockingChannel, exchange: Target) -> None:
    """Declare the topic exchange, its alternate exchange + unrouted queue, and rejected.

    Idempotent. Raises ``TopologyError`` naming the exchange or queue when one exists with
    other arguments (the channel is then closed by the broker: open a new one).
    """
    _declare_exchanges(_Session(channel.connection, channel), _names(exchange))


def _declare_sink_queue(session: _Session, names: TopologyNames, spec: QueueSpec) -> None:
    try:
        session.channel.queue_declare(
            spec.name, durable=True, arguments=spec.arguments(names.rejected)
        )
    except pika.exceptions.ChannelClosedByBroker as exc:
        session.reopen()
        if exc.reply_code != _PRECONDITION_FAILED:
            raise
        raise TopologyError(describe_mismatch("queue", spec.name, exc)) from None


# --- the record of applied bindings --------------------------------------------------------


@dataclass
class State:
    """The record: per queue, the exchange it is bound to and the bindings applied."""

    queues: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)
    seq: int = 0

    def to_json(self) -> bytes:
        body = {
            "version": STATE_VERSION,
            "seq": self.seq,
            "queues": {
                name: {"exchange": exchange, "bindings": sorted(bindings)}
                for name, (exchange, bindings) in sorted(self.queues.items())
            },
        }
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_json(cls, body: bytes | str) -> State:
        data = json.loads(body)
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError("not a logrouter topology record")
        queues = {
            str(name): (str(entry["exchange"]), frozenset(str(b) for b in entry["bindings"]))
            for name, entry in data["queues"].items()
        }
        return cls(queues=queues, seq=int(data.get("seq", 0)))


def _declare_state_queue(channel: BlockingChannel, names: TopologyNames) -> None:
    channel.queue_declare(
        names.state,
        durable=True,
        arguments=names.queue_arguments(**{"x-max-length": 1, "x-overflow": "drop-head"}),
    )


def _read_state(channel: BlockingChannel, names: TopologyNames) -> State:
    """The newest record; every message read is requeued (call under the lock)."""
    best = State()
    tags: list[int] = []
    try:
        for _ in range(10):  # x-max-length 1 keeps one; tolerate a few after a crash
            method, props, body = channel.basic_get(names.state, auto_ack=False)
            if method is None or method.delivery_tag is None:
                break
            tags.append(method.delivery_tag)
            writer = getattr(props, "user_id", None)
            if writer is not None and writer != connection_login(channel.connection):
                continue  # published by another login: not a record logrouter wrote
            try:
                state = State.from_json(body or b"")
            except Exception:  # any body (too deep, not JSON ...) is just not a record
                continue
            if state.seq >= best.seq:
                best = state
    finally:
        if tags:
            channel.basic_nack(delivery_tag=max(tags), multiple=True, requeue=True)
    return best


def _write_state(channel: BlockingChannel, names: TopologyNames, state: State) -> None:
    """Publish the record, persistent, with a publisher confirm (call under the lock)."""
    state.seq += 1
    channel.basic_publish(
        exchange="",
        routing_key=names.state,
        body=state.to_json(),
        properties=pika.BasicProperties(
            content_type="application/json",
            delivery_mode=2,
            user_id=connection_login(channel.connection),
        ),
        mandatory=True,
    )


@contextmanager
def _locked(
    connection: BlockingConnection, names: TopologyNames, timeout: float = LOCK_TIMEOUT
) -> Iterator[BlockingChannel]:
    """Hold the topology lock; yields a channel in confirm mode for the record."""
    deadline = time.monotonic() + timeout
    backoff = Backoff(first=0.05, cap=0.5)
    while True:
        channel = connection.channel()
        try:
            channel.queue_declare(names.lock, exclusive=True, auto_delete=True)
            break
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != _RESOURCE_LOCKED:
                raise
            if time.monotonic() >= deadline:
                raise TopologyError(
                    f"another logrouter holds the topology lock (queue {names.lock!r}) "
                    f"for more than {timeout:g}s; try again later"
                ) from None
            connection.sleep(backoff.next())
    try:
        channel.confirm_delivery()
        _declare_state_queue(channel, names)
        yield channel
    finally:
        if channel.is_open:
            channel.queue_delete(names.lock)
            channel.close()


# --- reconciliation -----------------------------------------------------------------------


def _reconcile(
    session: _Session, names: TopologyNames, spec: QueueSpec, state: State
) -> BindingDiff:
    """Declare ``spec``'s queue and apply the binding diff against the record."""
    _declare_sink_queue(session, names, spec)
    ch = session.channel
    recorded = state.queues.get(spec.name)
    if recorded is not None and recorded[0] != names.exchange:
        # The queue moved to another exchange: drop every binding to the old one.
        for key in sorted(recorded[1]):
            ch.queue_unbind(spec.name, recorded[0], routing_key=key)
        recorded = None
    old = recorded[1] if recorded is not None else frozenset()
    diff = BindingDiff(spec.name, added=set(spec.bindings - old), removed=set(old - spec.bindings))
    if recorded is None:  # unknown history: bind the whole set, record it
        diff.added = set(spec.bindings)
    # Bind the whole wanted set, not just the new keys: queue.bind is idempotent, and a
    # queue deleted and re-created by hand has lost the bindings the record remembers.
    # Bind before unbinding so a record matching old and new keys is never missed.
    for key in sorted(spec.bindings):
        ch.queue_bind(spec.name, names.exchange, routing_key=key)
    for key in sorted(diff.removed):
        ch.queue_unbind(spec.name, names.exchange, routing_key=key)
    state.queues[spec.name] = (names.exchange, spec.bindings)
    return diff


def declare_queue(channel: BlockingChannel, exchange: Target, spec: QueueSpec) -> BindingDiff:
    """Declare one sink queue and reconcile its bindings; returns what changed.

    Takes the topology lock for the read-modify-write of the record. Raises
    ``TopologyError`` when the queue exists with other arguments (the channel is then
    closed by the broker: open a new one).
    """
    names = _names(exchange)
    session = _Session(channel.connection, channel)
    with _locked(session.connection, names) as state_channel:
        state = _read_state(state_channel, names)
        before = state.queues.get(spec.name)
        diff = _reconcile(session, names, spec, state)
        if state.queues.get(spec.name) != before:
            _write_state(state_channel, names, state)
    return diff


def recorded_bindings(
    channel: BlockingChannel, exchange: Target, queue: str
) -> frozenset[str] | None:
    """The bindings of ``queue`` to ``exchange`` as applied by logrouter (from the record);
    None when logrouter has no record of the queue (it never reconciled it)."""
    names = _names(exchange)
    with _locked(channel.connection, names) as state_channel:
        recorded = _read_state(state_channel, names).queues.get(queue)
    if recorded is None or recorded[0] != names.exchange:
        return None
    return recorded[1]


def queue_exists(connection: BlockingConnection, queue: str) -> bool:
    """Whether ``queue`` exists (a passive declare on a throwaway channel)."""
    channel = connection.channel()
    try:
        channel.queue_declare(queue=queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return False
        raise
    channel.close()
    return True


def setup(
    settings: BrokerSettings,
    specs: Iterable[QueueSpec],
    *,
    prune: bool = False,
    names: TopologyNames | None = None,
    lock_timeout: float = LOCK_TIMEOUT,
) -> list[BindingDiff]:
    """Declare everything and reconcile each queue; with ``prune``, delete recorded queues
    (of this exchange) that are not in ``specs``. Returns one diff per queue, in order.

    Raises ``BrokerUnavailable`` when no broker answers, ``TopologyError`` when part of the
    topology cannot be declared (its ``diffs`` hold what was applied to the other queues).
    """
    names = names or TopologyNames.for_broker(settings)
    specs = list(specs)
    connection = settings.with_name("logrouter-setup").connect()
    try:
        session = _Session(connection)
        with _locked(connection, names, lock_timeout) as state_channel:
            state = _read_state(state_channel, names)
            before = dict(state.queues)
            _declare_exchanges(session, names)
            diffs: list[BindingDiff] = []
            errors: list[str] = []
            for spec in specs:
                try:
                    diffs.append(_reconcile(session, names, spec, state))
                except TopologyError as exc:
                    errors.append(str(exc))
            if prune:
                wanted = {spec.name for spec in specs}
                for queue, (exchange, bindings) in sorted(before.items()):
                    if exchange == names.exchange and queue not in wanted:
                        session.reopen().queue_delete(queue)
                        del state.queues[queue]
                        diffs.append(BindingDiff(queue, removed=set(bindings), deleted=True))
            if state.queues != before:
                _write_state(state_channel, names, state)
        if errors:
            raise TopologyError("\n".join(errors), diffs)
        return diffs
    finally:
        if connection.is_open:
            connection.close()
