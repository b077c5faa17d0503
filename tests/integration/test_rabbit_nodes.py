"""The private-node helper: real rabbitmq-server nodes that keep data, crash, alarm and cluster."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pika
import pytest

from tests.helpers import ROOT
from tests.helpers.rabbit_nodes import (
    SHARED_PORTS,
    RabbitNode,
    free_port,
    require_rabbitmq_server,
    short_dir,
)

#: about 1 minute of this suite's work: scheduled early (tests/conftest.py)
pytestmark = pytest.mark.slow(minutes=1)

BODY = b"survives restarts"


def _publish_persistent(url: str, queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True)
        channel.confirm_delivery()
        channel.basic_publish(
            "", queue, BODY, pika.BasicProperties(delivery_mode=2), mandatory=True
        )
    finally:
        connection.close()


def _get_one(url: str, queue: str) -> bytes | None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        _, _, body = channel.basic_get(queue, auto_ack=True)
        return body
    finally:
        connection.close()


def test_free_port_avoids_shared_broker_ports() -> None:
    """free_port() gives ports never 5672/25672/15672, low enough for RabbitMQ's derived ports."""
    ports = {free_port() for _ in range(20)}
    assert not ports & SHARED_PORTS
    assert all(1024 < port < 55000 for port in ports)


def test_node_files_follow_the_private_node_recipe(tmp_path: Path) -> None:
    """A node gets its own config (guest allowed remotely, own port), `[].` plugins and dirs."""
    node = RabbitNode("unit", tmp_path, port=41001, dist_port=41002, config="heartbeat = 5")
    assert node.name == "unit@localhost"
    assert node.url == "amqp://guest:guest@127.0.0.1:41001/%2F"
    assert (tmp_path / "enabled_plugins").read_text() == "[].\n"
    config = (tmp_path / "rabbitmq.conf").read_text()
    assert "loopback_users = none" in config
    assert "heartbeat = 5" in config
    env = node.env()
    assert env["RABBITMQ_CONF_ENV_FILE"] == "/dev/null"
    assert env["RABBITMQ_NODE_PORT"] == "41001"
    assert env["RABBITMQ_DIST_PORT"] == "41002"
    with pytest.raises(ValueError, match="shared broker"):
        RabbitNode("bad", tmp_path / "bad", port=5672)


@pytest.mark.broker
def test_persistent_message_survives_graceful_restart(private_node: RabbitNode) -> None:
    """A persistent message in a durable queue is still there after stop + start."""
    _publish_persistent(private_node.url, "durable.q")
    private_node.restart()
    assert _get_one(private_node.url, "durable.q") == BODY


@pytest.mark.broker
def test_persistent_message_survives_kill_9(private_node: RabbitNode) -> None:
    """A confirmed persistent message survives kill -9 of the node and a fresh start."""
    _publish_persistent(private_node.url, "durable.q")
    private_node.kill()
    assert not private_node.is_running()
    private_node.start()
    assert _get_one(private_node.url, "durable.q") == BODY


@pytest.mark.broker
def test_memory_alarm_blocks_publishers_until_cleared(private_node: RabbitNode) -> None:
    """set_memory_alarm(True) makes the broker block a publishing connection; False unblocks it."""
    events: list[str] = []
    connection = pika.BlockingConnection(pika.URLParameters(private_node.url))
    try:
        connection.add_on_connection_blocked_callback(lambda *_: events.append("blocked"))
        connection.add_on_connection_unblocked_callback(lambda *_: events.append("unblocked"))
        channel = connection.channel()
        private_node.set_memory_alarm(True)
        channel.basic_publish("", "nowhere", b"x")  # the broker blocks on the first publish
        deadline = time.monotonic() + 30
        while "blocked" not in events and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.2)
        assert events == ["blocked"]
        private_node.set_memory_alarm(False)
        deadline = time.monotonic() + 30
        while "unblocked" not in events and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.2)
        assert events == ["blocked", "unblocked"]
    finally:
        private_node.set_memory_alarm(False)
        connection.close()


@pytest.mark.broker
def test_three_node_cluster_runs_a_quorum_queue(rabbit_cluster: list[RabbitNode]) -> None:
    """The 3 nodes form one cluster, and a quorum queue declared on it has a member on each."""
    first = rabbit_cluster[0]
    status = json.loads(first.rabbitmqctl("cluster_status", "--formatter", "json"))
    assert sorted(status["running_nodes"]) == sorted(node.name for node in rabbit_cluster)

    connection = pika.BlockingConnection(pika.URLParameters(first.url))
    try:
        channel = connection.channel()
        channel.queue_declare("qq", durable=True, arguments={"x-queue-type": "quorum"})
    finally:
        connection.close()
    queues = json.loads(
        first.rabbitmqctl("list_queues", "name", "type", "members", "--formatter", "json")
    )
    (qq,) = [queue for queue in queues if queue["name"] == "qq"]
    assert qq["type"] == "quorum"
    assert sorted(qq["members"]) == sorted(node.name for node in rabbit_cluster)


@pytest.mark.broker
def test_node_dies_with_a_killed_test_process(tmp_path: Path) -> None:
    """A node whose owning Python process is killed -9 (no cleanup ran) is killed too."""
    require_rabbitmq_server()
    base = short_dir()
    script = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from tests.helpers.rabbit_nodes import RabbitNode, unique_node_name\n"
        f"node = RabbitNode(unique_node_name(), __import__('pathlib').Path({str(base)!r}))\n"
        "node.start()\n"
        "print(node.pid(), flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "LOGROUTER_RABBIT_HOME": str(tmp_path / "home")}  # no leaked temp dir
    owner = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert owner.stdout is not None
        beam = int(owner.stdout.readline())
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(timeout=10)
        deadline = time.monotonic() + 30
        while _alive(beam) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(beam)
    finally:
        owner.kill()
        owner.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
