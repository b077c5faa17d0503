"""Live routing config (issue 5): edits apply by themselves, broken edits are refused.

Each test runs a real `logrouter run` process against the broker and edits its
config the way an operator does (editor-style atomic rename saves).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pytest

from logrouter import RabbitHandler
from tests.helpers.broker import wait_for as _wait_for
from tests.helpers.growing import line_count

#: about 1 minute of this suite's work: scheduled early (tests/conftest.py)
pytestmark = pytest.mark.slow(minutes=1)

DEADLINE = 20.0


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    _wait_for(predicate, what, timeout)


class Daemon:
    """A `logrouter run CONFIG` process with its own state dir and output dir."""

    def __init__(self, tmp: Path, url: str, exchange: str) -> None:
        self.tmp = tmp
        self.url = url
        self.exchange = exchange
        self.config = tmp / "routing.toml"
        self.out = tmp / "out"
        self.log = tmp / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.tag = uuid.uuid4().hex[:6]

    def sink(self, name: str) -> str:
        return f"t{self.tag}-{name}"

    def write(self, sinks: dict[str, str], *, broken: bool = False) -> None:
        """Save a config with one file sink per (name -> match), atomically like an editor."""
        lines = [
            "[broker]",
            f'url = "{self.url}"',
            f'exchange = "{self.exchange}"',
            "",
        ]
        for name, match in sinks.items():
            lines += [
                f"[sinks.{self.sink(name)}]",
                'type = "file"',
                f'match = "{match}"',
                f'path = "out/{name}.log"',
                "batch_interval = 0.05",
                "",
            ]
        if broken:
            lines += [f"[sinks.{self.sink('broken')}]", 'type = "fiel"', 'match = "*.*"', ""]
        tmp = self.config.with_name(f".routing.toml.{uuid.uuid4().hex[:6]}")
        tmp.write_text("\n".join(lines))
        os.replace(tmp, self.config)

    def start(self) -> None:
        env = dict(os.environ, LOGROUTER_STATE_DIR=str(self.tmp / "state"))
        env.pop("LOGROUTER_URL", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "logrouter", "run", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
            env=env,
        )

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return -9
        return self.process.returncode

    def lines(self, name: str) -> list[str]:
        path = self.out / f"{name}.log"
        return path.read_text().splitlines() if path.exists() else []

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "logrouter", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture
def daemon(tmp_path: Path, amqp_url: str, unique_name: Callable[[str], str]) -> Iterator[Daemon]:
    exchange = unique_name("reload")
    d = Daemon(tmp_path, amqp_url, exchange)
    yield d
    if d.process is not None:
        d.stop()
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    for sink in ("a", "b", "steady", "flip", "extra"):
        channel.queue_delete(f"logrouter.{d.sink(sink)}")
    channel.queue_delete(f"{exchange}.unrouted")
    for name in (exchange, f"{exchange}.unrouted", f"{exchange}.control"):
        channel.exchange_delete(name)
    connection.close()


def publish(url: str, exchange: str, key: str, text: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish(
        exchange,
        key,
        text.encode(),
        pika.BasicProperties(delivery_mode=2, message_id=uuid.uuid4().hex),
    )
    connection.close()


def probe_until_written(d: Daemon, key: str, sink: str, what: str) -> None:
    """Publish probes on ``key`` until one shows up in ``sink``'s file."""
    token = uuid.uuid4().hex

    def landed() -> bool:
        try:
            publish(d.url, d.exchange, key, f"probe {token}")
        except pika.exceptions.ChannelClosedByBroker:  # exchange not declared yet
            time.sleep(0.2)
            return False
        time.sleep(0.2)
        return any(token in line for line in d.lines(sink))

    wait_for(landed, what)


def test_saved_edit_changes_the_live_bindings(daemon: Daemon) -> None:
    """An editor save that changes `match` re-binds the running sink: new keys arrive,
    old ones no longer do."""
    daemon.write({"a": "alpha.*"})
    daemon.start()
    probe_until_written(daemon, "alpha.info", "a", "the first routing to be live")

    daemon.write({"a": "beta.*"})
    probe_until_written(daemon, "beta.info", "a", "the edited routing to be live")
    publish(daemon.url, daemon.exchange, "alpha.info", "must not arrive")
    publish(daemon.url, daemon.exchange, "beta.err", "marker after")
    wait_for(lambda: any("marker after" in x for x in daemon.lines("a")), "the marker")
    assert not any("must not arrive" in line for line in daemon.lines("a"))


def test_broken_edit_is_refused_and_old_routing_keeps_working(daemon: Daemon) -> None:
    """A broken save changes nothing: records still flow under the old routing, the
    daemon logs the file, line and key, and `logrouter reload` reports `refused`."""
    daemon.write({"a": "alpha.*"})
    daemon.start()
    probe_until_written(daemon, "alpha.info", "a", "the routing to be live")

    daemon.write({"a": "alpha.*"}, broken=True)
    wait_for(lambda: "config refused" in daemon.log.read_text(), "the refusal in the log")
    publish(daemon.url, daemon.exchange, "alpha.err", "after the broken edit")
    wait_for(
        lambda: any("after the broken edit" in x for x in daemon.lines("a")),
        "a record under the old routing",
    )
    log_text = daemon.log.read_text()
    assert "routing.toml:" in log_text and "type" in log_text and "fiel" in log_text

    reply = daemon.cli("reload", "--config", str(daemon.config))
    assert reply.returncode == 1, reply.stdout + reply.stderr
    assert "refused" in reply.stdout
    assert f"sinks.{daemon.sink('broken')}.type" in reply.stdout

    daemon.write({"a": "alpha.*"})
    applied = daemon.cli("reload", "--config", str(daemon.config))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "refused" not in applied.stdout


def test_stats_shows_live_counters_of_each_sink(daemon: Daemon) -> None:
    """`logrouter stats` lists each running sink with its state and written count."""
    daemon.write({"a": "alpha.*", "b": "beta.*"})
    daemon.start()
    probe_until_written(daemon, "alpha.info", "a", "sink a")
    probe_until_written(daemon, "beta.info", "b", "sink b")
    result = daemon.cli("stats", str(daemon.config))
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "running" in line]
    assert any(daemon.sink("a") in row for row in rows)
    assert any(daemon.sink("b") in row for row in rows)
    assert "no answer" not in result.stdout


def test_sighup_rereads_the_config(daemon: Daemon) -> None:
    """SIGHUP re-reads the config even when the file watch is off."""
    daemon.write({"a": "alpha.*"})
    env = dict(os.environ, LOGROUTER_STATE_DIR=str(daemon.tmp / "state"))
    daemon.process = subprocess.Popen(
        [sys.executable, "-m", "logrouter", "run", str(daemon.config), "--no-watch"],
        stdout=subprocess.DEVNULL,
        stderr=daemon.log.open("wb"),
        env=env,
    )
    probe_until_written(daemon, "alpha.info", "a", "the routing to be live")
    daemon.write({"a": "gamma.*"})
    time.sleep(0.5)
    daemon.process.send_signal(signal.SIGHUP)
    probe_until_written(daemon, "gamma.info", "a", "the routing after SIGHUP")


def test_added_sink_starts_and_removed_sink_stops(daemon: Daemon) -> None:
    """A sink added to the config starts writing; a removed one stops consuming."""
    daemon.write({"a": "alpha.*"})
    daemon.start()
    probe_until_written(daemon, "alpha.info", "a", "sink a")
    daemon.write({"a": "alpha.*", "b": "beta.*"})
    probe_until_written(daemon, "beta.info", "b", "the added sink b")
    daemon.write({"a": "alpha.*"})
    queue_b = f"logrouter.{daemon.sink('b')}"

    def consumers_of_b() -> int:
        connection = pika.BlockingConnection(pika.URLParameters(daemon.url))
        frame = connection.channel().queue_declare(queue_b, passive=True)
        connection.close()
        return int(frame.method.consumer_count)

    wait_for(lambda: consumers_of_b() == 0, "sink b to stop consuming")
    assert "sink removed from the config" in daemon.log.read_text()
    publish(daemon.url, daemon.exchange, "beta.info", "queued for removed b")
    publish(daemon.url, daemon.exchange, "alpha.info", "marker for a")
    wait_for(lambda: any("marker for a" in x for x in daemon.lines("a")), "the marker in a")
    assert not any("queued for removed b" in x for x in daemon.lines("b"))
    connection = pika.BlockingConnection(pika.URLParameters(daemon.url))
    frame = connection.channel().queue_declare(queue_b, passive=True)
    connection.close()
    assert frame.method.message_count >= 1  # kept on the broker until setup --prune


def test_reload_under_load_loses_and_duplicates_nothing(daemon: Daemon) -> None:
    """5,000 records/s flow while the config is rewritten 100 times (alternating
    bindings, a sink added and removed, one broken edit in ten): every record of the
    sink whose selector stays in force is written exactly once."""
    versions = []
    for i in range(100):
        sinks = {"steady": "steady.*", "flip": "fa.*" if i % 2 else "fb.*"}
        if i % 3 == 0:
            sinks["extra"] = "steady.err"
        versions.append((sinks, i % 10 == 9))
    daemon.write({"steady": "steady.*", "flip": "fb.*"})
    daemon.start()
    probe_until_written(daemon, "steady.notice", "steady", "the steady sink")

    handler = RabbitHandler(
        url=daemon.url, exchange=daemon.exchange, facility="steady", flush_timeout=120
    )
    logger = logging.getLogger(f"reload-load-{daemon.tag}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    stop = threading.Event()
    sent: list[int] = []

    def produce() -> None:
        seq = 0
        start = time.monotonic()
        while not stop.is_set():
            for _ in range(50):
                seq += 1
                logger.info("load %d", seq)
            sent.append(seq)
            lag = start + seq / 5000 - time.monotonic()
            if lag > 0:
                time.sleep(lag)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        for sinks, broken in versions:
            daemon.write(sinks, broken=broken)
            time.sleep(0.15)
    finally:
        stop.set()
        producer.join(10)
        handler.flush()
        handler.close()
        logger.removeHandler(handler)
    total = sent[-1]
    assert total >= 50_000 * 0.3  # the producer really ran under load

    steady = line_count(daemon.out, "steady.log")
    try:
        wait_for(
            lambda: steady.reaches(total), f"{total} load records in the steady file", timeout=120
        )
    except AssertionError as exc:
        connection = pika.BlockingConnection(pika.URLParameters(daemon.url))
        depth = connection.channel().queue_declare(
            f"logrouter.{daemon.sink('steady')}", passive=True
        )
        connection.close()
        raise AssertionError(
            f"{exc}: written {len(daemon.lines('steady'))}, queued "
            f"{depth.method.message_count}, handler {handler.stats}, "
            f"daemon log tail {daemon.log.read_text()[-2000:]}"
        ) from None
    time.sleep(1.0)  # anything extra (a duplicate) would land now
    seen: dict[int, int] = {}
    for line in daemon.lines("steady"):
        if " load " in line:
            number = int(line.rsplit(" load ", 1)[1])
            seen[number] = seen.get(number, 0) + 1
    missing = [n for n in range(1, total + 1) if n not in seen]
    duplicated = [n for n, count in seen.items() if count > 1]
    assert missing == [] and duplicated == [], (len(missing), len(duplicated))
    assert daemon.process is not None and daemon.process.poll() is None
    # Saves coalesce: the broken last save may have been read instead of the one before
    # it. A valid save after the storm must still take effect (no change swallowed).
    daemon.write({"steady": "steady.*", "flip": "fc.*"})
    probe_until_written(daemon, "fc.info", "flip", "the routing saved after the storm")
    assert "config refused" in daemon.log.read_text()
