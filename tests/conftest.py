"""Shared fixtures: a real broker for every run, unique names per test.

``amqp_url`` finds a broker in this order (never skips): ``$LOGROUTER_TEST_URL``;
a broker answering on 127.0.0.1:5672; a RabbitMQ testcontainer when a Docker
engine answers; a private rabbitmq-server node started for the session
(tests/helpers/rabbit_nodes.py). None of these: the run fails saying how to get one.

Private nodes for fault tests: fixtures ``private_node`` and ``rabbit_cluster``
(from tests/helpers/rabbit_nodes.py; import it as ``tests.helpers.rabbit_nodes``).
tests/ is a package: shared helpers live in tests/helpers/.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pika.exceptions
import pytest

from logrouter import topology
from logrouter.connection import BrokerSettings
from logrouter.sinks.rejects import EXCHANGE_HEADER
from tests.helpers import rabbit_nodes

#: Fixtures shared by several test modules (``sinkenv``; ``route``, ``make_logger``).
pytest_plugins = ["tests.helpers.sinks", "tests.helpers.handler"]
private_node = rabbit_nodes.private_node
session_node = rabbit_nodes.session_node
rabbit_cluster = rabbit_nodes.rabbit_cluster
session_cluster = rabbit_nodes.session_cluster

__all__ = ["private_node", "rabbit_cluster", "session_cluster", "session_node"]

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


def _minutes(item: pytest.Item) -> float:
    marker = item.get_closest_marker("slow")
    return float(marker.kwargs.get("minutes", 1)) if marker is not None else 0.0


#: Test files that share a session fixture too costly to start twice: xdist runs each
#: group on one worker (``--dist loadfile``, Makefile), so one cluster serves them all.
SHARED_WORKER = {
    "tests/reliability/test_cluster.py": "three-node cluster",
    "tests/reliability/test_handler_cluster.py": "three-node cluster",
    "tests/integration/test_rabbit_nodes.py": "three-node cluster",
}


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile`` with the files of a ``SHARED_WORKER`` group as one unit of work."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFixtureScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return SHARED_WORKER.get(path, path)

    return SharedFixtureScheduling(config, log)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Before any test runs (in the controller, or a serial run): drop the copies earlier
    runs left in logrouter.rejected for their own ``test.*`` exchanges, now deleted. Several tests
    read that shared queue whole, and thousands of old copies (a run killed midway, a
    purge that missed what another reader held) made each take 15 s."""
    if hasattr(session.config, "workerinput"):
        return
    url = os.environ.get("LOGROUTER_TEST_URL") or LOCAL_URL
    if url == LOCAL_URL and not _answers("127.0.0.1", 5672):
        return  # the amqp_url fixture says how to get a broker
    with contextlib.suppress(pika.exceptions.AMQPError, OSError):
        _drop_test_copies(url)


def _drop_test_copies(url: str) -> None:
    """Ack the copies of ``test.*`` exchanges that no longer exist (a run still going on
    the same broker keeps its exchanges, and so its copies)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    gone: dict[str, bool] = {}

    def exchange_gone(name: str) -> bool:
        if name not in gone:
            probe = connection.channel()
            try:
                probe.exchange_declare(name, passive=True)
                gone[name] = False
                probe.close()
            except pika.exceptions.ChannelClosedByBroker:
                gone[name] = True  # 404: the broker closed the probe channel
        return gone[name]

    try:
        channel = connection.channel()
        ready = channel.queue_declare(topology.REJECTED_QUEUE, passive=True).method.message_count
        for _ in range(ready):
            method, props, _body = channel.basic_get(topology.REJECTED_QUEUE, auto_ack=False)
            if method is None:
                break
            exchange = (props.headers or {}).get(EXCHANGE_HEADER)
            ours = isinstance(exchange, str) and exchange.startswith("test.")
            if ours and exchange_gone(exchange):
                channel.basic_ack(method.delivery_tag)
    finally:
        connection.close()  # the others go back


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest modules first (``slow(minutes=N)``, most minutes first): xdist workers
    take whole files in this order (``--no-loadscope-reorder``, Makefile), so the
    minutes-long fault scenarios run beside the rest instead of alone at the end."""
    items.sort(key=lambda item: -_minutes(item))


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
