"""``logrouter tail``: run as a subprocess against the real broker."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pika
import pytest

from logrouter import batchwire, wire
from logrouter.commands.tail import format_record, use_color
from logrouter.connection import BrokerSettings

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 20.0


class Tail:
    """A ``logrouter tail`` subprocess whose stderr lines are read by a thread."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "LOGROUTER_CONFIG": "/nonexistent/routing.toml", "NO_COLOR": "1"}
        env.pop("LOGROUTER_URL", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "logrouter", "tail", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr_lines: queue.Queue[str] = queue.Queue()
        self._stderr: list[str] = []
        self._stdout: list[str] = []
        assert self.proc.stderr is not None and self.proc.stdout is not None
        self._pumps = [
            threading.Thread(target=self._pump, args=(self.proc.stderr, True), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stdout, False), daemon=True),
        ]
        for pump in self._pumps:
            pump.start()

    def _pump(self, stream: IO[str], is_stderr: bool) -> None:
        for line in stream:
            if is_stderr:
                self._stderr.append(line)
                self.stderr_lines.put(line)
            else:
                self._stdout.append(line)

    def wait_ready(self) -> None:
        """Block until tail says its queue is bound (or fail at the deadline)."""
        while True:
            try:
                line = self.stderr_lines.get(timeout=DEADLINE)
            except queue.Empty:
                self.proc.kill()
                pytest.fail("tail did not report ready")
            if "Ctrl-C to stop" in line:
                return

    def finish(self) -> tuple[int, str, str]:
        """Wait for exit (bounded); return the exit code, stdout and stderr."""
        try:
            self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail("tail did not exit")
        for pump in self._pumps:
            pump.join(DEADLINE)
        return self.proc.returncode, "".join(self._stdout), "".join(self._stderr)


@pytest.fixture
def exchange(broker_settings: BrokerSettings, amqp_url: str) -> Iterator[str]:
    """A topic exchange unique to the test (deleted by the broker_settings fixture)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        connection.channel().exchange_declare(broker_settings.exchange, "topic")
    finally:
        connection.close()
    yield broker_settings.exchange


def publish(amqp_url: str, exchange: str, records: list[tuple[str, str]]) -> None:
    """Publish (routing key, msg) records in the wire format."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for index, (key, msg) in enumerate(records):
            facility, severity = key.split(".")
            body = {"ts": wire.format_ts(1.0), "facility": facility, "severity": severity}
            body["msg"] = msg
            channel.basic_publish(
                exchange,
                key,
                wire.encode(body),
                pika.BasicProperties(message_id=f"m{index}", content_type=wire.CONTENT_TYPE),
            )
    finally:
        connection.close()


def test_tail_prints_matching_records_as_json_and_exits_after_count(
    amqp_url: str, exchange: str
) -> None:
    """tail --json --count 3 prints exactly the 3 selected records, in order, and exits 0."""
    tail = Tail("*.err", "--json", "--count", "3", "--url", amqp_url, "--exchange", exchange)
    tail.wait_ready()
    publish(
        amqp_url,
        exchange,
        [
            ("auth.info", "not selected"),
            ("auth.err", "first"),
            ("kern.debug", "not selected either"),
            ("kern.crit", "second"),
            ("mail.emerg", "third"),
            ("mail.err", "past the count"),
        ],
    )
    code, out, err = tail.finish()
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["facility"], r["severity"], r["msg"]) for r in records] == [
        ("auth", "err", "first"),
        ("kern", "crit", "second"),
        ("mail", "emerg", "third"),
    ]
    assert records[0]["id"] == "m1"


def test_tail_filters_by_host_and_app_including_syslog_headers(
    amqp_url: str, exchange: str
) -> None:
    """--host/--app keep only matching records; a syslog-ng message whose host and program
    are only in its AMQP headers (empty body) counts by those headers."""
    tail = Tail(
        "*.*", "--json", "--count", "2", "--host", "web-2", "--app", "sshd", "--app", "cron",
        "--url", amqp_url, "--exchange", exchange,
    )  # fmt: skip
    tail.wait_ready()
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for host, app, msg in (
            ("web-1", "sshd", "other host"),
            ("web-2", "nginx", "other app"),
            ("web-2", "sshd", "first"),
        ):
            body = {"ts": wire.format_ts(1.0), "host": host, "app": app, "msg": msg}
            channel.basic_publish(exchange, "auth.info", wire.encode(body))
        headers = {"HOST": "web-2", "PROGRAM": "cron", "PID": "7", "MESSAGE": "second"}
        channel.basic_publish(exchange, "cron.info", b"", pika.BasicProperties(headers=headers))
    finally:
        connection.close()
    code, out, err = tail.finish()
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["host"], r["app"], r["msg"]) for r in records] == [
        ("web-2", "sshd", "first"),
        ("web-2", "cron", "second"),
    ]
    assert records[1]["pid"] == 7


def test_tail_shows_each_record_of_a_batch(amqp_url: str, exchange: str) -> None:
    """A batch message shows as its records, one line each; a bad line is reported, not shown."""
    tail = Tail("auth.*", "--json", "--count", "3", "--url", amqp_url, "--exchange", exchange)
    tail.wait_ready()
    lines = [
        batchwire.record_line(
            wire.encode({"ts": wire.format_ts(1.0), "msg": f"batched {n}"}), f"r{n}"
        )
        for n in range(3)
    ]
    lines.insert(1, b"{not a record")
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        connection.channel().basic_publish(
            exchange,
            "auth.info",
            batchwire.encode_batch(lines),
            pika.BasicProperties(
                message_id="r0+4",
                content_type=batchwire.CONTENT_TYPE,
                headers=batchwire.headers(len(lines)),
            ),
        )
    finally:
        connection.close()
    code, out, err = tail.finish()
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["msg"], r["id"], r["severity"]) for r in records] == [
        (f"batched {n}", f"r{n}", "info") for n in range(3)
    ]
    assert "skipped a record of a batch: line 2: not a JSON object" in err


def test_tail_rechecks_records_against_the_selector(amqp_url: str, exchange: str) -> None:
    """Where bindings are a superset (mail excluded from *.err), excluded records are not shown."""
    tail = Tail(
        "*.err;mail.none", "--json", "--count", "2", "--url", amqp_url, "--exchange", exchange
    )
    tail.wait_ready()
    publish(amqp_url, exchange, [("mail.err", "hidden"), ("auth.err", "a"), ("cron.alert", "b")])
    code, out, err = tail.finish()
    assert code == 0, err
    assert [json.loads(line)["msg"] for line in out.splitlines()] == ["a", "b"]


def test_tail_console_lines(amqp_url: str, exchange: str) -> None:
    """Without --json each record is a readable console line with severity, facility and msg."""
    tail = Tail("auth.*", "--count", "1", "--url", amqp_url, "--exchange", exchange)
    tail.wait_ready()
    publish(amqp_url, exchange, [("auth.warning", "disk almost full")])
    code, out, err = tail.finish()
    assert code == 0, err
    [line] = out.splitlines()
    assert "warning" in line and "auth" in line and "disk almost full" in line
    assert "\x1b[" not in line  # not a terminal: no colour


def test_tail_exits_0_on_sigint_and_removes_its_queue(amqp_url: str, exchange: str) -> None:
    """Ctrl-C (SIGINT) ends tail with exit 0; its temporary queue is gone afterwards."""
    tail = Tail("*.*", "--url", amqp_url, "--exchange", exchange)
    tail.wait_ready()
    publish(amqp_url, exchange, [("user.info", "seen before ctrl-c")])
    tail.proc.send_signal(signal.SIGINT)
    code, _, err = tail.finish()
    assert code == 0, err
    assert "Traceback" not in err
    # the exclusive queue went with the connection: a publish now reaches no queue
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        with pytest.raises(pika.exceptions.UnroutableError):
            channel.basic_publish(exchange, "user.info", b"x", mandatory=True)
    finally:
        connection.close()


def test_bad_selector_is_usage_error_naming_the_word() -> None:
    """An unknown severity in the selector exits 2 and the message names the word."""
    tail = Tail("*.eror", "--url", "amqp://guest:guest@127.0.0.1:1/%2F")
    code, out, err = tail.finish()
    assert code == 2
    assert "eror" in err
    assert out == ""


def test_broker_down_exits_1_without_password() -> None:
    """No broker at the URL: exit 1 and a message that hides the password."""
    tail = Tail("*.*", "--url", "amqp://guest:s3cret@127.0.0.1:1/%2F")
    code, _, err = tail.finish()
    assert code == 1
    assert "cannot reach the broker" in err
    assert "s3cret" not in err and "guest:***@" in err


def test_missing_exchange_is_explained(amqp_url: str, broker_settings: BrokerSettings) -> None:
    """Tailing an exchange that does not exist exits 1 and suggests logrouter setup."""
    tail = Tail("*.*", "--url", amqp_url, "--exchange", broker_settings.exchange)
    code, _, err = tail.finish()
    assert code == 1
    assert "does not exist" in err and "logrouter setup" in err


def test_format_record_json_and_color_rules() -> None:
    """--json prints the decoded record as one JSON line; colour needs a tty and no NO_COLOR."""
    record = {"facility": "auth", "severity": "err", "msg": "x", "ts": wire.format_ts(0)}
    assert json.loads(format_record(record, as_json=True, color=False)) == record

    class Tty:
        def isatty(self) -> bool:
            return True

    assert use_color(Tty(), {}) is True
    assert use_color(Tty(), {"NO_COLOR": "1"}) is False
    assert use_color(object(), {}) is False
