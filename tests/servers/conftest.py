"""Fixtures of the real-server tests: a route to count records on, and process trees.

- ``route``: the exchange as ``logrouter setup`` declares it (unique per test; the handler
  declares nothing) and a queue bound to ``#``; deleted afterwards.
- ``servers``: a factory starting commands in their own process group, with the broker URL,
  the exchange, and ``XDG_CACHE_HOME`` in tmp_path (default spools private to the test);
  every group is SIGKILLed at teardown whatever happened.

Helpers (Route, Server, load, ...) live in realserver.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pytest

from logrouter import topology
from logrouter.connection import BrokerSettings
from tests.servers.realserver import APPS, Route, Server


@pytest.fixture
def route(
    amqp_url: str, broker_settings: BrokerSettings, unique_name: Callable[[str], str]
) -> Iterator[Route]:
    """The exchange as ``logrouter setup`` declares it, a queue on ``#``; deleted afterwards."""
    names = topology.TopologyNames(exchange=broker_settings.exchange, rejected=unique_name("rej"))
    queue = unique_name("servers")
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        topology.declare_exchange(ch, names)
        ch.queue_declare(queue)
        ch.queue_bind(queue, names.exchange, "#")
    finally:
        conn.close()
    yield Route(amqp_url, names.exchange, queue)
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        for name in (queue, names.unrouted, names.rejected):
            ch.queue_delete(name)
        ch.exchange_delete(names.rejected)
    finally:
        conn.close()


@pytest.fixture
def servers(route: Route, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Factory ``servers(name, argv, cwd=APPS, **env)``; every group is SIGKILLed afterwards."""
    started: list[Server] = []
    base_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(APPS), str(APPS / "djproj")]),
        "LR_TEST_URL": route.url,
        "LR_TEST_EXCHANGE": route.exchange,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "PYTHONUNBUFFERED": "1",
    }

    def start(name: str, argv: list[str], cwd: Path = APPS, **env: str) -> Server:
        server = Server(name, argv, {**base_env, **env}, cwd, tmp_path)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill_group()
