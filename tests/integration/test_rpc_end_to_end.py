"""RPC (issue 8): `logrouter stats` and `logrouter reload` ask real sink processes.

tests/test_reload.py covers one `logrouter run` process (stats rows, applied and
refused reloads); here the sinks run as separate `logrouter sink` processes:
two competing instances of one sink both answer, and a sink that cannot answer
(SIGSTOP: alive on the broker, deaf to requests) is listed as not answering
while the command still returns within its timeout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pytest

from tests.helpers.broker import wait_for as _wait_for

DEADLINE = 20.0


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    _wait_for(predicate, what, timeout)


TIMEOUT = 4.0  # the CLI's --timeout for the sinks' answers (a reload applies bindings first)


class Fleet:
    """Sink processes `logrouter sink NAME CONFIG --no-watch` on a unique exchange."""

    def __init__(self, tmp: Path, url: str, exchange: str) -> None:
        self.tmp = tmp
        self.url = url
        self.exchange = exchange
        tag = uuid.uuid4().hex[:6]
        self.a = f"a{tag}"
        self.b = f"b{tag}"
        self.config = tmp / "routing.toml"
        self.procs: list[subprocess.Popen[bytes]] = []

    def write(self, match_a: str, *, broken: bool = False) -> None:
        """The config: sink a (file, ``match_a``) and sink b (file); optionally a bad key."""
        lines = ["[broker]", f'url = "{self.url}"', f'exchange = "{self.exchange}"', ""]
        lines += [f"[sinks.{self.a}]", 'type = "file"', f'match = "{match_a}"']
        lines += ['path = "out/a-{instance}.log"', ""]
        lines += [f"[sinks.{self.b}]", 'type = "file"', 'match = "beta.*"']
        lines += ['path = "out/b-{instance}.log"']
        if broken:
            lines += ["batch_size = -3"]
        self.config.write_text("\n".join(lines) + "\n")

    def start(self, sink: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ, LOGROUTER_STATE_DIR=str(self.tmp / "state"))
        env.pop("LOGROUTER_URL", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "logrouter", "sink", sink, str(self.config), "--no-watch"],
            stdout=subprocess.DEVNULL,
            stderr=(self.tmp / f"{sink}-{len(self.procs)}.log").open("wb"),
            env=env,
        )
        self.procs.append(proc)
        return proc

    def consumers(self, sink: str) -> int:
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            frame = connection.channel().queue_declare(f"logrouter.{sink}", passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return 0
        finally:
            if connection.is_open:
                connection.close()
        return int(frame.method.consumer_count)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the CLI; it must return well within a hard deadline (never hang)."""
        return subprocess.run(
            [sys.executable, "-m", "logrouter", *args, "--timeout", str(TIMEOUT)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT + 20,
        )


@pytest.fixture
def fleet(tmp_path: Path, amqp_url: str, unique_name: Callable[[str], str]) -> Iterator[Fleet]:
    f = Fleet(tmp_path, amqp_url, unique_name("rpc"))
    f.write("alpha.*")
    yield f
    for proc in f.procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    for sink in (f.a, f.b):
        channel.queue_delete(f"logrouter.{sink}")
    channel.queue_delete(f"{f.exchange}.unrouted")
    for name in (f.exchange, f"{f.exchange}.unrouted", f"{f.exchange}.control"):
        channel.exchange_delete(name)
    connection.close()


def start_two_a_and_a_deaf_b(fleet: Fleet) -> tuple[list[int], subprocess.Popen[bytes]]:
    """Two instances of sink a; sink b consuming, then frozen with SIGSTOP."""
    pair = [fleet.start(fleet.a), fleet.start(fleet.a)]
    b = fleet.start(fleet.b)
    wait_for(lambda: fleet.consumers(fleet.a) == 2, "two instances of sink a")
    wait_for(lambda: fleet.consumers(fleet.b) == 1, "sink b")
    b.send_signal(signal.SIGSTOP)
    return [proc.pid for proc in pair], b


def test_stats_lists_both_instances_and_a_deaf_sink_as_no_answer(fleet: Fleet) -> None:
    """stats shows a row of live counters for each of sink a's two instances (by pid)
    and 'no answer' for the frozen sink b, and returns within its timeout."""
    pids, _b = start_two_a_and_a_deaf_b(fleet)
    result = fleet.cli("stats", str(fleet.config))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = result.stdout.splitlines()
    for pid in pids:
        assert any(f":{pid}" in row and "running" in row for row in rows), (pid, result.stdout)
    b_rows = [row for row in rows if fleet.b in row]
    assert b_rows and all("no answer" in row for row in b_rows), result.stdout
    assert "guest:guest" not in result.stdout + result.stderr


def test_reload_after_edit_both_instances_apply_and_deaf_sink_is_listed(fleet: Fleet) -> None:
    """After a config edit, reload prints 'applied' from each instance of sink a and
    says sink b gave no answer within the timeout; the new binding is in force."""
    pids, _b = start_two_a_and_a_deaf_b(fleet)
    fleet.write("gamma.*")
    result = fleet.cli("reload", fleet.a, "--config", str(fleet.config))
    assert result.returncode == 0, result.stdout + result.stderr
    applied = [line for line in result.stdout.splitlines() if "applied" in line]
    assert len(applied) == 2, result.stdout
    for pid in pids:
        assert any(f":{pid}" in line for line in applied), (pid, result.stdout)

    everyone = fleet.cli("reload", "--config", str(fleet.config))
    assert f"{fleet.b}: no answer within {TIMEOUT:g}s" in everyone.stdout, everyone.stdout


def test_reload_after_broken_edit_each_instance_refuses_with_file_line_key(
    fleet: Fleet,
) -> None:
    """A broken edit: each instance of sink a answers 'refused' naming the file, the
    line and the key, and the command exits 1."""
    pids, _b = start_two_a_and_a_deaf_b(fleet)
    fleet.write("alpha.*", broken=True)
    result = fleet.cli("reload", fleet.a, "--config", str(fleet.config))
    assert result.returncode == 1, result.stdout + result.stderr
    refused = [line for line in result.stdout.splitlines() if "refused" in line]
    assert len(refused) == 2, result.stdout
    for pid in pids:
        assert any(f":{pid}" in line for line in refused), (pid, result.stdout)
    line = fleet.config.read_text().splitlines().index("batch_size = -3") + 1
    assert f"routing.toml:{line}: sinks.{fleet.b}.batch_size" in result.stdout, result.stdout
