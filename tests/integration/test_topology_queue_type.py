"""`[broker] queue_type`: logrouter's own queues and the sinks' default follow it.

On a cluster every queue must survive the loss of a node: with `queue_type =
"quorum"` the unrouted, rejected and topology-record queues are quorum queues too,
not classic queues living on whichever node declared them first.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import pika
import pytest

from logrouter import topology
from logrouter.config import parse_config
from logrouter.connection import BrokerSettings

CONFIG = """\
[broker]
url = "amqp://guest:guest@localhost:5672/%2F"
queue_type = "quorum"

[sinks.errors]
type = "file"
match = "*.err"
path = "/tmp/x/{facility}.log"

[sinks.console]
type = "console"
match = "*.=info"
queue_type = "classic"
"""


def test_broker_queue_type_is_the_sinks_default() -> None:
    """A sink without queue_type takes [broker] queue_type; its own key still wins."""
    config = parse_config(CONFIG)
    assert config.broker.queue_type == "quorum"
    assert config.sinks["errors"].queue_type == "quorum"
    assert config.sinks["console"].queue_type == "classic"


def test_bad_broker_queue_type_names_the_key() -> None:
    """An unknown [broker] queue_type is a config error naming the key and the choices."""
    with pytest.raises(Exception) as caught:
        parse_config(CONFIG.replace('queue_type = "quorum"', 'queue_type = "stream"', 1))
    text = str(caught.value)
    assert "broker.queue_type" in text and "classic" in text and "quorum" in text


@pytest.fixture
def names(amqp_url: str, unique_name: Callable[[str], str]) -> Iterator[topology.TopologyNames]:
    names = topology.TopologyNames(
        exchange=unique_name("qt"),
        rejected=unique_name("qt-rejected"),
        state=unique_name("qt-state"),
        queue_type="quorum",
    )
    yield names
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    for queue in (names.unrouted, names.rejected, names.state):
        channel.queue_delete(queue)
    for exchange in (names.exchange, names.unrouted, names.rejected):
        channel.exchange_delete(exchange)
    connection.close()


def test_own_queues_are_quorum_when_asked(amqp_url: str, names: topology.TopologyNames) -> None:
    """setup with queue_type quorum declares unrouted, rejected and the record as quorum."""
    settings = BrokerSettings.from_url(amqp_url, exchange=names.exchange, queue_type="quorum")
    topology.setup(settings, [], names=names)
    listing = subprocess.run(
        ["rabbitmqctl", "list_queues", "-q", "--no-table-headers", "name", "type"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    types = dict(line.split("\t")[:2] for line in listing.splitlines() if "\t" in line)
    assert types[names.unrouted] == "quorum"
    assert types[names.rejected] == "quorum"
    assert types[names.state] == "quorum"


def test_queue_deleted_by_hand_is_bound_again(amqp_url: str, names: topology.TopologyNames) -> None:
    """A sink queue an operator deleted by hand gets all its bindings back on the next
    declaration, although the record still lists them as applied."""
    settings = BrokerSettings.from_url(amqp_url, exchange=names.exchange, queue_type="quorum")
    spec = topology.QueueSpec(name=f"{names.exchange}.sink", bindings=frozenset({"*.err"}))
    topology.setup(settings, [spec], names=names)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.queue_delete(spec.name)
        topology.setup(settings, [spec], names=names)
        channel.confirm_delivery()
        channel.basic_publish(names.exchange, "auth.err", b"after re-creation")
        _method, _props, body = channel.basic_get(spec.name, auto_ack=True)
        assert body == b"after re-creation"
    finally:
        connection.channel().queue_delete(spec.name)
        connection.close()
