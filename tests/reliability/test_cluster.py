"""A 3-node RabbitMQ cluster with quorum queues: nodes die while records stream.

The handler gets all three URLs; the sink daemon's config lists them too. While the
app logs numbered records, the node the handler is connected to is killed -9 (and
restarted), then the node leading the sink's quorum queue. After a drain, the sink's
file must hold every record exactly once (lost = 0, duplicated = 0 after the sink's
message_id dedup, unexpected = 0). The confirm gaps are printed and recorded as
test properties (figures in docs/cluster.md), never asserted on time.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from logrouter import RabbitHandler
from tests.helpers.broker import wait_for as _wait_for
from tests.helpers.growing import DistinctTokens
from tests.helpers.rabbit_nodes import RabbitNode
from tests.helpers.sinks import ROOT, logrouter, sink_env, tokens, write_config

#: minutes-long scenarios: scheduled first (tests/conftest.py), beside the rest
pytestmark = pytest.mark.slow(minutes=3)

DEADLINE = 120.0


def wait_for(predicate: Any, what: str, timeout: float = DEADLINE) -> None:
    _wait_for(predicate, what, timeout)


# ---------------------------------------------------------------- the cluster


@pytest.fixture
def cluster(rabbit_cluster: list[RabbitNode]) -> list[RabbitNode]:
    """The session's three-node cluster (tests/helpers/rabbit_nodes.py), every node running
    at the start and end of each test (the tests kill nodes)."""
    return rabbit_cluster


def live(nodes: list[RabbitNode]) -> RabbitNode:
    for node in nodes:
        if node.is_running():
            return node
    raise AssertionError("no node of the cluster is running")


def ctl_json(nodes: list[RabbitNode], *args: str) -> list[dict[str, Any]]:
    """``rabbitmqctl ARGS --formatter json`` on a running node, parsed."""
    out = live(nodes).rabbitmqctl(*args, "--formatter", "json", "-q")
    start = out.find("[")
    return list(json.loads(out[start:])) if start >= 0 else []


def queue_info(nodes: list[RabbitNode], queue: str) -> dict[str, Any]:
    for row in ctl_json(nodes, "list_queues", "name", "type", "leader", "members", "online",
                        "arguments"):  # fmt: skip
        if row["name"] == queue:
            return row
    raise AssertionError(f"queue {queue} not found")


def node_of_connection(nodes: list[RabbitNode], connection_name: str) -> RabbitNode | None:
    """The node a client connection (by its connection_name property) is attached to."""
    for row in ctl_json(nodes, "list_connections", "port", "client_properties"):
        props = {item[0]: item[2] for item in row.get("client_properties", [])}
        if props.get("connection_name") == connection_name:
            for node in nodes:
                if node.port == row["port"]:
                    return node
    return None


def by_name(nodes: list[RabbitNode], name: str) -> RabbitNode:
    return next(node for node in nodes if node.name == name)


def all_urls(nodes: list[RabbitNode]) -> str:
    return " ".join(node.url for node in nodes)


# ---------------------------------------------------------------- measurement


class Monitor(threading.Thread):
    """Samples the handler's confirmed count and the sink file's size every 5 ms."""

    def __init__(self, handler: RabbitHandler, output: Path) -> None:
        super().__init__(daemon=True, name="cluster-monitor")
        self.handler, self.output = handler, output
        self.samples: list[tuple[float, int, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.005):
            try:
                size = self.output.stat().st_size
            except OSError:
                size = 0
            self.samples.append((time.monotonic(), self.handler.stats["confirmed"], size))

    def gap(self, since: float, column: int, window: float = 30.0) -> float:
        """Longest pause in progress of ``column`` (1 confirms, 2 file size) that ends
        after ``since`` and began before ``since + window``."""
        points = [self.samples[0][0]] if self.samples else []
        for prev, cur in zip(self.samples, self.samples[1:], strict=False):
            if cur[column] != prev[column]:
                points.append(cur[0])
        best = 0.0
        for start, end in itertools.pairwise(points):
            if end > since and start < since + window:
                best = max(best, end - start)
        return best


class Streamer(threading.Thread):
    """Logs ``rec-N`` records, about 1,000 a second, until stopped."""

    def __init__(self, log: logging.Logger) -> None:
        super().__init__(daemon=True, name="cluster-streamer")
        self.log = log
        self.count = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for _ in range(10):
                self.log.info("rec-%d", self.count)
                self.count += 1
            time.sleep(0.01)


# ---------------------------------------------------------------- tests


@pytest.fixture
def sink_setup(cluster: list[RabbitNode], tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A routing config on the cluster (all three URLs): one file sink on a quorum queue."""
    tag = uuid.uuid4().hex[:6]
    sink, exchange = f"q_{tag}", f"qlogs.{tag}"
    out = tmp_path / "out"
    config = write_config(
        tmp_path / "routing.toml",
        all_urls(cluster),
        exchange,
        {
            sink: {
                "type": "file",
                "match": "*.*",
                "path": f"{out}/{{facility}}.log",
                "format": "{msg}",
                "queue_type": "quorum",
                "delivery_limit": 5,
            }
        },
    )
    # logrouter's own queues (unrouted, rejected, topology) quorum too: the sink's
    # topology declaration must survive the loss of any one node.
    text = config.read_text()
    config.write_text(text.replace("[broker]\n", '[broker]\nqueue_type = "quorum"\n', 1))
    yield {
        "config": config,
        "sink": sink,
        "queue": f"logrouter.{sink}",
        "exchange": exchange,
        "out": out,
        "env": sink_env(tmp_path / "state"),
        "tmp": tmp_path,
    }


def setup_topology(setup: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        logrouter("setup", str(setup["config"])),
        cwd=ROOT,
        env=setup["env"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_quorum_queue_declared_with_delivery_limit_and_dead_lettering(
    cluster: list[RabbitNode], sink_setup: dict[str, Any]
) -> None:
    """`logrouter setup` on a cluster declares the sink's queue as a quorum queue with
    members on all three nodes, x-delivery-limit and x-dead-letter-exchange."""
    result = setup_topology(sink_setup)
    assert result.returncode == 0, result.stderr
    info = queue_info(cluster, sink_setup["queue"])
    assert info["type"] == "quorum"
    assert sorted(info["members"]) == sorted(node.name for node in cluster)
    arguments = {name: value for name, _type, value in info["arguments"]}
    assert arguments["x-delivery-limit"] == 5
    assert arguments["x-dead-letter-exchange"] == "logrouter.rejected"
    assert "guest:guest" not in result.stdout + result.stderr


def test_kill_handler_node_then_queue_leader_while_streaming(
    cluster: list[RabbitNode],
    sink_setup: dict[str, Any],
    record_property: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """While ~1,000 records/s stream: kill -9 the node the handler is connected to
    (restart it), then the node leading the quorum queue. The handler and the sink fail
    over through their URL lists; after the drain the sink's file holds every record once
    (lost 0, duplicated 0, unexpected 0) and the handler dropped nothing."""
    result = setup_topology(sink_setup)
    assert result.returncode == 0, result.stderr
    log_path = sink_setup["tmp"] / "sink.log"
    with open(log_path, "ab") as err:
        sink = subprocess.Popen(
            logrouter("sink", sink_setup["sink"], str(sink_setup["config"]), "--no-watch"),
            cwd=ROOT,
            env=sink_setup["env"],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    handler = RabbitHandler(
        url=all_urls(cluster),
        exchange=sink_setup["exchange"],
        facility="cluster",
        app="clusterapp",
        spool=str(sink_setup["tmp"] / "spool.sqlite"),
        reconnect_max=1,
        flush_timeout=30,
    )
    log = logging.getLogger(f"clusterapp.{uuid.uuid4().hex[:6]}")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(handler)
    output = sink_setup["out"] / "cluster.log"
    monitor, streamer = Monitor(handler, output), Streamer(log)
    figures: dict[str, float | int | str] = {}
    try:
        monitor.start()
        streamer.start()
        wait_for(lambda: handler.stats["confirmed"] > 2000, "the first confirms")
        wait_for(lambda: output.exists() and output.stat().st_size > 0, "the sink's first write")

        # 1. the node the handler is connected to
        victim = None

        def found() -> bool:
            nonlocal victim
            victim = node_of_connection(cluster, "logrouter-handler")
            return victim is not None

        wait_for(found, "the handler's connection in list_connections")
        assert victim is not None
        figures["handler_node"] = victim.name
        t_kill1 = time.monotonic()
        victim.kill()
        confirmed = handler.stats["confirmed"]
        wait_for(lambda: handler.stats["confirmed"] > confirmed + 2000, "confirms after kill 1")
        victim.start()
        wait_for(
            lambda: victim.name in queue_info(cluster, sink_setup["queue"])["online"],
            "the restarted node back in the quorum queue",
        )

        # 2. the node leading the quorum queue
        leader = by_name(cluster, queue_info(cluster, sink_setup["queue"])["leader"])
        figures["leader_node"] = leader.name
        t_kill2 = time.monotonic()
        leader.kill()
        confirmed = handler.stats["confirmed"]
        wait_for(lambda: handler.stats["confirmed"] > confirmed + 2000, "confirms after kill 2")
        written = output.stat().st_size
        wait_for(lambda: output.stat().st_size > written + 10_000, "sink writes after kill 2")
        streamer.stop.set()
        streamer.join(10)
        handler.flush()
        total = streamer.count

        drained = DistinctTokens(output.parent, output.name)
        wait_for(lambda: drained.count() >= total, f"all {total} records in the sink's file")
        leader.start()
    finally:
        streamer.stop.set()
        monitor.stop.set()
        log.removeHandler(handler)
        handler.close()
        sink.send_signal(signal.SIGTERM)
        try:
            sink.wait(30)
        except subprocess.TimeoutExpired:
            sink.kill()
            sink.wait(5)
        for node in cluster:
            if not node.is_running():
                with contextlib.suppress(Exception):
                    node.start()
    counts = tokens(output.read_text().splitlines())
    lost = set(range(total)) - set(counts)
    duplicated = {n: c for n, c in counts.items() if c > 1}
    unexpected = set(counts) - set(range(total))
    figures.update(
        records=total,
        lost=len(lost),
        duplicated=len(duplicated),
        unexpected=len(unexpected),
        handler_gap_kill_handler_node_s=round(monitor.gap(t_kill1, 1), 3),
        sink_gap_kill_handler_node_s=round(monitor.gap(t_kill1, 2), 3),
        handler_gap_kill_leader_s=round(monitor.gap(t_kill2, 1), 3),
        sink_gap_kill_leader_s=round(monitor.gap(t_kill2, 2), 3),
        handler_connections=handler._publisher.connections if handler._publisher else 0,
    )
    for key, value in figures.items():
        record_property(key, value)
    with capsys.disabled():
        print(f"\ncluster failover: {json.dumps(figures)}")
    assert handler.dropped == 0
    assert (len(lost), len(duplicated), len(unexpected)) == (0, 0, 0), (
        f"lost {sorted(lost)[:20]}, duplicated {sorted(duplicated)[:20]}, "
        f"unexpected {sorted(unexpected)[:20]}\n{log_path.read_text()[-3000:]}"
    )
    sink_log = log_path.read_text()
    assert "guest:guest" not in sink_log
