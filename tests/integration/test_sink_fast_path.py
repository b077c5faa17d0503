"""The sink's delivery fast path (sinks/deliveries.py) against a real broker: a consumer
gets the same deliveries with it as through pika alone, and a sink installs it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pika
import pytest

from logrouter import log
from logrouter.config import load_config
from logrouter.sinks.deliveries import DeliveryFastPath
from logrouter.sinks.link import BrokerLink
from tests.helpers.properties import EVERYTHING, RECORD
from tests.helpers.sinks import name, write_config


def _messages() -> list[tuple[bytes, Any]]:
    """Bodies and properties: a record, an empty body, a headers table, every property,
    a body in several frames, bytes that are not UTF-8."""
    messages = [(b'{"id":"r%d","msg":"hello"}' % i, RECORD) for i in range(200)]
    messages += [
        (b"", RECORD),
        (b"with headers", EVERYTHING),
        (b"\xff\xfe\x00", pika.BasicProperties()),
    ]
    messages.append((b"x" * 400_000, RECORD))  # several body frames (frame_max 128 KiB)
    messages += [(b'{"id":"t%d"}' % i, EVERYTHING) for i in range(50)]
    return messages


def _consume(url: str, queue: str, count: int, fast: bool) -> tuple[list[tuple[Any, ...]], int]:
    """The queue's first ``count`` deliveries as a consumer sees them; how many the fast
    path took."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        path = DeliveryFastPath(connection, channel)
        if fast:
            assert path.install()
        channel.basic_qos(prefetch_count=100)
        got: list[tuple[Any, ...]] = []

        def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
            fields = dict(vars(method))
            fields.pop("consumer_tag")  # differs between the two consumers
            got.append((type(method), fields, type(properties), vars(properties), body))
            ch.basic_ack(method.delivery_tag)

        channel.basic_consume(queue, on_message)
        while len(got) < count:
            connection.process_data_events(time_limit=1)
        return got, path.fast
    finally:
        connection.close()


@pytest.mark.timeout(120)
def test_fast_path_delivers_what_pika_delivers(
    amqp_url: str, unique_name: Callable[[str], str]
) -> None:
    """The same messages consumed from two queues, with and without the fast path: the
    consumer gets equal methods, properties and bodies in the same order, and the fast
    path took most of them."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    queues = [unique_name("fast.pika"), unique_name("fast.ours")]
    exchange = unique_name("fast.fanout")
    messages = _messages()
    try:
        channel.exchange_declare(exchange, "fanout")
        for queue in queues:
            channel.queue_declare(queue)
            channel.queue_bind(queue, exchange)
        for body, properties in messages:
            channel.basic_publish(exchange, "billing.info", body, properties)
        pikas, _ = _consume(amqp_url, queues[0], len(messages), fast=False)
        ours, taken = _consume(amqp_url, queues[1], len(messages), fast=True)
        assert ours == pikas
        assert [got[4] for got in ours] == [body for body, _props in messages]
        assert taken > len(messages) // 2
    finally:
        for queue in queues:
            channel.queue_delete(queue)
        channel.exchange_delete(exchange)
        connection.close()


@pytest.mark.parametrize(
    ("argument", "key", "fast"), [(True, True, True), (False, True, False), (True, False, False)]
)
def test_sink_link_installs_fast_path(
    sinkenv: dict[str, Any], argument: bool, key: bool, fast: bool
) -> None:
    """A sink's broker link takes deliveries through the fast path, unless told not to by
    its constructor (``fast_deliveries=False``) or the sink's config key."""
    sink = name(sinkenv, "fast")
    options: dict[str, Any] = {
        "type": "file",
        "match": "*.*",
        "path": str(sinkenv["tmp"] / "out.log"),
    }
    if not key:
        options["fast_deliveries"] = False
    path = write_config(
        sinkenv["tmp"] / "routing.toml", sinkenv["url"], sinkenv["exchange"], {sink: options}
    )
    config = load_config(path, env={})
    link = BrokerLink(config.broker, log.get_logger("test"), fast_deliveries=argument)
    try:
        link.open(config.sinks[sink])
        assert link.fast is fast
    finally:
        link.close()
