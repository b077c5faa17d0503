"""Shared fixtures: a real broker for every run, unique names per test.

``amqp_url`` finds a broker in this order (never skips): ``$LOGROUTER_TEST_URL``;
a broker answering on 127.0.0.1:5672; a RabbitMQ testcontainer when a Docker
engine answers; a private rabbitmq-server node started for the session
(tests/rabbit_nodes.py). None of these: the run fails saying how to get one.

Private nodes for fault tests: fixtures ``private_node`` and ``rabbit_cluster``
(from tests/rabbit_nodes.py, importable as ``rabbit_nodes`` or ``tests.rabbit_nodes``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from logrouter import RabbitHandler
from logrouter.connection import BrokerSettings

try:  # tests/ is on sys.path: pytest prepends the rootdir conftest's dir (no __init__.py)
    import rabbit_nodes
except ImportError:  # tests/ became a package
    from tests import rabbit_nodes  # type: ignore[no-redef]

# One module object under both names, so node bookkeeping is shared.
sys.modules.setdefault("tests.rabbit_nodes", rabbit_nodes)
sys.modules.setdefault("rabbit_nodes", rabbit_nodes)
private_node = rabbit_nodes.private_node
rabbit_cluster = rabbit_nodes.rabbit_cluster

__all__ = ["private_node", "rabbit_cluster"]

LOCAL_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
CONTAINER_IMAGE = "rabbitmq:3.10"
HOW_TO_GET_A_BROKER = (
    "No RabbitMQ for the tests. Do one of: "
    "set LOGROUTER_TEST_URL=amqp://user:pass@host:port/vhost; "
    "start one on 127.0.0.1:5672 "
    "(`rabbitmq-server -detached`, or `apt-get install rabbitmq-server`); "
    "run a Docker engine (a RabbitMQ testcontainer is started); "
    "or install rabbitmq-server so a private node can be started. "
    "`make broker` (.ci/ensure-broker) does the first that works."
)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _docker_answers() -> bool:
    """True when a Docker engine answers a ping within a few seconds."""
    if not (shutil.which("docker") or os.environ.get("DOCKER_HOST")):
        return False
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@contextlib.contextmanager
def _rabbit_container() -> Iterator[str]:
    try:
        from testcontainers.community.rabbitmq import RabbitMqContainer
    except ImportError:  # older testcontainers
        from testcontainers.rabbitmq import RabbitMqContainer

    container: Any = RabbitMqContainer(CONTAINER_IMAGE, port=5672)
    with container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(5672)
        yield f"amqp://guest:guest@{host}:{port}/%2F"


Received = tuple[str, str, dict[str, Any]]  # (message_id, routing_key, body)


def declare(url: str, exchange: str, queue: str, *, durable: bool = False) -> None:
    """Declare a topic exchange and a queue bound to every key."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.exchange_declare(exchange, "topic", durable=durable)
        ch.queue_declare(queue, durable=durable)
        ch.queue_bind(queue, exchange, "#")
    finally:
        conn.close()


def delete(url: str, exchange: str, queue: str) -> None:
    try:
        conn = pika.BlockingConnection(pika.URLParameters(url))
    except pika.exceptions.AMQPError:
        return
    try:
        ch = conn.channel()
        ch.queue_delete(queue)
        ch.exchange_delete(exchange)
    finally:
        conn.close()


def collect(url: str, queue: str, count: int, timeout: float = 30.0) -> list[Received]:
    """Consume until ``count`` distinct message_ids arrived or ``timeout`` passed (bounded).

    Redelivered duplicates (same message_id, at-least-once) are kept in the list.
    """
    deadline = time.monotonic() + timeout
    out: list[Received] = []
    seen: set[str] = set()
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=1000)
        for method, props, body in ch.consume(queue, auto_ack=True, inactivity_timeout=0.2):
            if method is not None:
                out.append((props.message_id, method.routing_key, json.loads(body)))
                seen.add(props.message_id)
            if len(seen) >= count or time.monotonic() > deadline:
                break
        ch.cancel()
    finally:
        conn.close()
    return out


@pytest.fixture
def route(
    amqp_url: str, broker_settings: BrokerSettings, unique_name: Callable[[str], str]
) -> Iterator[tuple[str, str, str]]:
    """(url, exchange, queue): a fresh exchange with one queue bound to ``#``."""
    queue = unique_name("q")
    declare(amqp_url, broker_settings.exchange, queue)
    yield amqp_url, broker_settings.exchange, queue
    delete(amqp_url, broker_settings.exchange, queue)


@pytest.fixture
def make_logger(
    tmp_path: Path, unique_name: Callable[[str], str]
) -> Iterator[Callable[..., tuple[logging.Logger, RabbitHandler]]]:
    """Factory: a fresh app logger with a RabbitHandler; handlers closed afterwards."""
    made: list[tuple[logging.Logger, RabbitHandler]] = []

    def make(**options: Any) -> tuple[logging.Logger, RabbitHandler]:
        options.setdefault("spool", str(tmp_path / "spool"))
        options.setdefault("app", "testapp")
        handler = RabbitHandler(**options)
        logger = logging.getLogger(unique_name("app"))
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(handler)
        made.append((logger, handler))
        return logger, handler

    yield make
    for logger, handler in made:
        logger.removeHandler(handler)
        handler.close()


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """An AMQP URL of a live broker (see HOW_TO_GET_A_BROKER for the order tried)."""
    if url := os.environ.get("LOGROUTER_TEST_URL"):
        yield url
        return
    if _answers("127.0.0.1", 5672):
        yield LOCAL_URL
        return
    if _docker_answers():
        with _rabbit_container() as url:
            yield url
        return
    if rabbit_nodes.available():
        with rabbit_nodes.started_node("lrsession") as node:
            yield node.url
        return
    pytest.fail(HOW_TO_GET_A_BROKER, pytrace=False)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Factory of names unique to this test run, e.g. ``unique_name("logs")``."""
    tag = uuid.uuid4().hex[:8]

    def make(prefix: str) -> str:
        return f"test.{prefix}.{tag}"

    return make


@pytest.fixture
def broker_settings(amqp_url: str, unique_name: Callable[[str], str]) -> Iterator[BrokerSettings]:
    """Settings with a unique exchange; the exchange and its AE are deleted afterwards."""
    settings = BrokerSettings.from_url(amqp_url, exchange=unique_name("logs"))
    yield settings
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for name in (settings.exchange, f"{settings.exchange}.unrouted"):
            channel.exchange_delete(name)
    finally:
        connection.close()
