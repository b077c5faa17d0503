"""Topology against the real broker: declaration, binding reconciliation, prune, errors.

What the broker holds is read back with ``rabbitmqctl`` (we run on the broker's machine)
and proven with probe messages.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
import pytest

from logrouter.connection import BrokerSettings, BrokerUnavailable
from logrouter.topology import (
    REJECTED_QUEUE,
    STATE_QUEUE,
    UNROUTED_QUEUE,
    BindingDiff,
    QueueSpec,
    State,
    TopologyError,
    TopologyNames,
    declare_exchange,
    declare_queue,
    recorded_bindings,
    setup,
)
from tests.helpers.broker import broker_bindings, broker_queue

RABBITMQCTL_TIMEOUT = 30


def live_bindings(channel: Any, exchange: Any, queue: str) -> frozenset[str]:
    """The bindings logrouter recorded for ``queue`` (empty when it never reconciled it)."""
    return recorded_bindings(channel, exchange, queue) or frozenset()


@dataclass
class Broker:
    """A connection for probes, and the names one test uses (all unique)."""

    settings: BrokerSettings
    names: TopologyNames
    connection: pika.BlockingConnection
    queues: list[str] = field(default_factory=list)
    tag: Callable[[str], str] = str

    @property
    def channel(self) -> pika.adapters.blocking_connection.BlockingChannel:
        if not hasattr(self, "_channel") or not self._channel.is_open:
            self._channel = self.connection.channel()
        return self._channel

    def queue(self, sink: str) -> str:
        name = self.tag(sink)
        self.queues.append(name)
        return name

    def publish(self, key: str, body: str) -> None:
        """Publish a probe to the exchange, confirmed."""
        channel = self.connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(self.names.exchange, key, body.encode())
        channel.close()

    def drain(self, queue: str, deadline: float = 5.0) -> list[str]:
        """Bodies waiting in ``queue`` (acked); waits up to ``deadline`` for the first."""
        end = time.monotonic() + deadline
        bodies: list[str] = []
        while True:
            method, _props, body = self.channel.basic_get(queue, auto_ack=True)
            if method is not None:
                bodies.append(body.decode())
                continue
            if bodies or time.monotonic() >= end:
                return bodies
            self.connection.sleep(0.05)


@pytest.fixture
def broker(
    broker_settings: BrokerSettings, amqp_url: str, unique_name: Callable[[str], str]
) -> Iterator[Broker]:
    """Unique names for exchange, rejected and state; everything created is deleted after."""
    names = TopologyNames(
        exchange=broker_settings.exchange,
        rejected=unique_name("rejected"),
        state=unique_name("topology"),
    )
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    b = Broker(broker_settings, names, connection, tag=unique_name)
    yield b
    channel = connection.channel()
    for queue in [*b.queues, names.unrouted, names.rejected, names.state, names.lock]:
        channel.queue_delete(queue)
    channel.exchange_delete(names.rejected)
    connection.close()


def diffs_by_queue(diffs: list[BindingDiff]) -> dict[str, tuple[set[str], set[str]]]:
    return {d.queue: (d.added, d.removed) for d in diffs}


# --- pure units ---------------------------------------------------------------------------


def test_default_names_follow_the_design() -> None:
    """Exchange "logs" uses AE + queue "logs.unrouted", "logrouter.rejected", state queue."""
    names = TopologyNames()
    assert (names.exchange, names.unrouted, names.rejected) == (
        "logs",
        "logs.unrouted",
        "logrouter.rejected",
    )
    assert (UNROUTED_QUEUE, REJECTED_QUEUE, STATE_QUEUE) == (
        "logs.unrouted",
        "logrouter.rejected",
        "logrouter.topology",
    )
    assert names.lock == "logrouter.topology.lock"


def test_queue_arguments_per_type() -> None:
    """Classic queues dead-letter to rejected; quorum queues also get x-delivery-limit."""
    classic = QueueSpec("q", frozenset({"#"}))
    quorum = QueueSpec("q", frozenset({"#"}), queue_type="quorum", delivery_limit=7)
    assert classic.arguments("rej") == {"x-queue-type": "classic", "x-dead-letter-exchange": "rej"}
    assert quorum.arguments("rej") == {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "rej",
        "x-delivery-limit": 7,
    }
    with pytest.raises(TopologyError, match="queue_type 'stream'"):
        QueueSpec("q", frozenset(), queue_type="stream").arguments("rej")


def test_state_record_round_trips_and_rejects_foreign_bodies() -> None:
    """The record survives JSON; a body that is not a record is refused, not misread."""
    state = State({"q": ("logs", frozenset({"a.*", "*.err"}))}, seq=3)
    again = State.from_json(state.to_json())
    assert again == state
    assert json.loads(state.to_json())["queues"]["q"]["bindings"] == ["*.err", "a.*"]
    for body in (b"not json", b"[]", b'{"version": 99}'):
        with pytest.raises(ValueError):
            State.from_json(body)


# --- against the broker -------------------------------------------------------------------


def test_setup_declares_exactly_the_bindings(broker: Broker) -> None:
    """After setup the broker's binding list for each queue is exactly its spec."""
    errors, archive = broker.queue("errors"), broker.queue("archive")
    specs = [
        QueueSpec(errors, frozenset({"*.err", "*.crit", "*.alert", "*.emerg"})),
        QueueSpec(archive, frozenset({"#"})),
    ]
    diffs = setup(broker.settings, specs, names=broker.names)
    assert diffs_by_queue(diffs) == {
        errors: ({"*.err", "*.crit", "*.alert", "*.emerg"}, set()),
        archive: ({"#"}, set()),
    }
    ex = broker.names.exchange
    assert broker_bindings(errors) == {(ex, k) for k in ("*.err", "*.crit", "*.alert", "*.emerg")}
    assert broker_bindings(archive) == {(ex, "#")}
    assert broker_bindings(broker.names.unrouted) == {(broker.names.unrouted, "")}
    assert broker_bindings(broker.names.rejected) == {(broker.names.rejected, "")}
    qtype, args = broker_queue(errors) or ("", "")
    assert qtype == "classic"
    assert f'{{"x-dead-letter-exchange","{broker.names.rejected}"}}' in args


def test_setup_twice_changes_nothing(broker: Broker) -> None:
    """A second run reports empty diffs and leaves the broker's bindings as they were."""
    queue = broker.queue("console")
    specs = [QueueSpec(queue, frozenset({"*.info"}))]
    setup(broker.settings, specs, names=broker.names)
    before = broker_bindings(queue)
    second = setup(broker.settings, specs, names=broker.names)
    assert [d.changed for d in second] == [False]
    assert diffs_by_queue(second) == {queue: (set(), set())}
    assert broker_bindings(queue) == before == {(broker.names.exchange, "*.info")}


def test_changed_bindings_apply_exactly_the_diff(broker: Broker) -> None:
    """Editing a spec binds what is new and unbinds what is gone, nothing else."""
    queue = broker.queue("auth")
    setup(broker.settings, [QueueSpec(queue, frozenset({"auth.*", "*.err"}))], names=broker.names)
    diffs = setup(
        broker.settings, [QueueSpec(queue, frozenset({"*.err", "mail.*"}))], names=broker.names
    )
    assert diffs_by_queue(diffs) == {queue: ({"mail.*"}, {"auth.*"})}
    ex = broker.names.exchange
    assert broker_bindings(queue) == {(ex, "*.err"), (ex, "mail.*")}
    broker.publish("auth.info", "gone")
    broker.publish("mail.info", "new")
    broker.publish("kern.err", "kept")
    assert sorted(broker.drain(queue)) == ["kept", "new"]
    assert broker.drain(broker.names.unrouted) == ["gone"]


def test_unroutable_record_lands_in_unrouted_queue(broker: Broker) -> None:
    """A key no binding matches goes through the alternate exchange to <exchange>.unrouted."""
    queue = broker.queue("errors")
    setup(broker.settings, [QueueSpec(queue, frozenset({"*.err"}))], names=broker.names)
    broker.publish("app.debug", "nobody wants me")
    assert broker.drain(broker.names.unrouted) == ["nobody wants me"]
    assert broker.drain(queue, deadline=0.2) == []
    _qtype, args = broker_queue(broker.names.unrouted) or ("", "")
    assert '{"x-max-length",100000}' in args
    assert '{"x-overflow","drop-head"}' in args


def test_quorum_queue_gets_delivery_limit(broker: Broker) -> None:
    """queue_type quorum declares a quorum queue with x-delivery-limit and dead-lettering."""
    queue = broker.queue("cluster")
    spec = QueueSpec(queue, frozenset({"#"}), queue_type="quorum", delivery_limit=9)
    setup(broker.settings, [spec], names=broker.names)
    qtype, args = broker_queue(queue) or ("", "")
    assert qtype == "quorum"
    assert '{"x-delivery-limit",9}' in args
    assert f'{{"x-dead-letter-exchange","{broker.names.rejected}"}}' in args
    assert setup(broker.settings, [spec], names=broker.names)[0].changed is False


def test_removed_sink_queue_is_kept_until_prune(broker: Broker) -> None:
    """Without --prune a dropped sink's queue stays; prune deletes it and nothing unknown."""
    keep, old = broker.queue("keep"), broker.queue("old")
    stranger = broker.queue("stranger")
    broker.channel.queue_declare(stranger, durable=True)
    spec_keep = QueueSpec(keep, frozenset({"#"}))
    setup(broker.settings, [spec_keep, QueueSpec(old, frozenset({"*.err"}))], names=broker.names)

    assert setup(broker.settings, [spec_keep], names=broker.names)[0].changed is False
    assert broker_queue(old) is not None

    diffs = setup(broker.settings, [spec_keep], prune=True, names=broker.names)
    pruned = [d for d in diffs if d.deleted]
    assert [(d.queue, d.removed) for d in pruned] == [(old, {"*.err"})]
    assert broker_queue(old) is None
    assert broker_queue(keep) is not None
    assert broker_queue(stranger) is not None
    assert setup(broker.settings, [spec_keep], prune=True, names=broker.names)[0].changed is False


def test_queue_with_other_arguments_is_a_clear_error(broker: Broker) -> None:
    """A queue that exists with other arguments is named with the argument; others proceed."""
    clash, fine = broker.queue("clash"), broker.queue("fine")
    broker.channel.queue_declare(
        clash,
        durable=True,
        arguments={"x-queue-type": "quorum", "x-dead-letter-exchange": broker.names.rejected},
    )
    specs = [QueueSpec(clash, frozenset({"#"})), QueueSpec(fine, frozenset({"*.info"}))]
    with pytest.raises(TopologyError) as caught:
        setup(broker.settings, specs, names=broker.names)
    message = str(caught.value)
    assert repr(clash) in message
    assert "'x-queue-type' (wanted 'classic', the broker has 'quorum')" in message
    assert "Traceback" not in message and "ChannelClosed" not in message
    assert diffs_by_queue(caught.value.diffs) == {fine: ({"*.info"}, set())}
    assert broker_bindings(fine) == {(broker.names.exchange, "*.info")}


def test_exchange_of_other_type_is_a_clear_error(broker: Broker) -> None:
    """An exchange declared elsewhere with another type is reported by name and argument."""
    broker.channel.exchange_declare(broker.names.exchange, "fanout")
    with pytest.raises(TopologyError, match=rf"exchange '{broker.names.exchange}'.*'type'"):
        setup(broker.settings, [], names=broker.names)


def test_unreachable_broker_message_hides_password() -> None:
    """No broker at the URL: BrokerUnavailable, whose message names the URL without password."""
    settings = BrokerSettings.from_url("amqp://admin:s3cr3t-pw@127.0.0.1:1/%2F", connect_timeout=2)
    with pytest.raises(BrokerUnavailable) as caught:
        setup(settings, [QueueSpec("never", frozenset({"#"}))])
    assert "s3cr3t-pw" not in str(caught.value)
    assert "admin:***@127.0.0.1:1" in str(caught.value)


def test_declare_queue_on_a_channel_and_read_back(broker: Broker) -> None:
    """declare_exchange + declare_queue (what sinks call) reconcile and record bindings."""
    queue = broker.queue("sink")
    channel = broker.connection.channel()
    declare_exchange(channel, broker.names)
    diff = declare_queue(channel, broker.names, QueueSpec(queue, frozenset({"a.*", "b.*"})))
    assert (diff.added, diff.removed) == ({"a.*", "b.*"}, set())
    diff = declare_queue(channel, broker.names, QueueSpec(queue, frozenset({"b.*"})))
    assert (diff.added, diff.removed) == (set(), {"a.*"})
    assert live_bindings(channel, broker.names, queue) == {"b.*"}
    assert live_bindings(channel, broker.names, broker.tag("unknown")) == frozenset()
    assert broker_bindings(queue) == {(broker.names.exchange, "b.*")}


def test_concurrent_setups_lose_no_update(broker: Broker) -> None:
    """Setups running at once are serialised by the lock: every queue ends up recorded."""
    queues = [broker.queue(f"par{i}") for i in range(4)]
    failures: list[BaseException] = []

    def run(queue: str) -> None:
        try:
            setup(
                broker.settings, [QueueSpec(queue, frozenset({f"{queue}.*"}))], names=broker.names
            )
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(q,)) for q in queues]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures
    channel = broker.connection.channel()
    for queue in queues:
        assert live_bindings(channel, broker.names, queue) == {f"{queue}.*"}


def test_unknown_queue_history_binds_the_full_set(broker: Broker) -> None:
    """A queue with no record gets the whole set bound; bindings not ours are left alone."""
    queue = broker.queue("legacy")
    channel = broker.connection.channel()
    declare_exchange(channel, broker.names)
    spec = QueueSpec(queue, frozenset({"*.err"}))
    channel.queue_declare(queue, durable=True, arguments=spec.arguments(broker.names.rejected))
    channel.queue_bind(queue, broker.names.exchange, "by.hand")
    diffs = setup(broker.settings, [spec], names=broker.names)
    assert diffs_by_queue(diffs) == {queue: ({"*.err"}, set())}
    ex = broker.names.exchange
    assert broker_bindings(queue) == {(ex, "*.err"), (ex, "by.hand")}


def test_corrupt_record_is_treated_as_unknown(broker: Broker) -> None:
    """A foreign message in the state queue does not break setup; the record is rewritten."""
    queue = broker.queue("corrupt")
    channel = broker.connection.channel()
    channel.queue_declare(
        broker.names.state, durable=True, arguments={"x-max-length": 1, "x-overflow": "drop-head"}
    )
    channel.basic_publish("", broker.names.state, b"garbage")
    diffs = setup(broker.settings, [QueueSpec(queue, frozenset({"#"}))], names=broker.names)
    assert diffs_by_queue(diffs) == {queue: ({"#"}, set())}
    assert live_bindings(channel, broker.names, queue) == {"#"}


def test_setup_gives_up_on_a_held_lock_with_a_clear_error(broker: Broker) -> None:
    """While another connection holds the lock, setup waits, then fails naming the lock."""
    broker.channel.queue_declare(broker.names.lock, exclusive=True, auto_delete=True)
    with pytest.raises(TopologyError, match=rf"holds the topology lock.*{broker.names.lock}"):
        setup(broker.settings, [], names=broker.names, lock_timeout=0.5)
    broker.channel.queue_delete(broker.names.lock)
    assert setup(broker.settings, [], names=broker.names) == []
