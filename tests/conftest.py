"""Shared fixtures: a real broker for every run, unique names per test."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator

import pika
import pytest

from logrouter.connection import BrokerSettings

LOCAL_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
HOW_TO_GET_A_BROKER = (
    "No RabbitMQ for the tests. Do one of: set LOGROUTER_TEST_URL=amqp://user:pass@host:port/vhost; "
    "start one on 127.0.0.1:5672 (`rabbitmq-server -detached`, or `apt-get install rabbitmq-server`); "
    "run a Docker engine (a RabbitMQ testcontainer is started); "
    "or install rabbitmq-server so a private node can be started."
)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """An AMQP URL of a live broker (see HOW_TO_GET_A_BROKER for the order tried)."""
    if url := os.environ.get("LOGROUTER_TEST_URL"):
        yield url
        return
    if _answers("127.0.0.1", 5672):
        yield LOCAL_URL
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
