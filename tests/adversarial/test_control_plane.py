"""Attacks on the control plane (issue 13 item 4), as a second broker user would try them.

A ``ControlService`` answers for sink ``errors`` on the shared broker (logged in
as the test's own user, the default ``allow_users``); a hostile user made by
``make_attacker`` sends requests with ``reply_to`` a queue of its own, floods
the service with malformed bodies, and forges replies to ``logrouter reload``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

from logrouter import cli, control
from logrouter.connection import BrokerSettings, login
from logrouter.sinks.service import ControlService
from tests.adversarial.attackers import OWN_QUEUES, Attacker, publish_as
from tests.helpers.broker import queue_depth

DEADLINE = 20.0
HOSTILE = "FORGED\x1b[2J\x9b31m\u202eevil"


class Sink:
    """What the control service calls: counts reloads, answers a fixed status."""

    def __init__(self, reload_answer: dict[str, Any]) -> None:
        self.reloads = 0
        self.reload_answer = reload_answer

    def status(self, _name: str) -> Any:
        return {"state": "running", "config_version": "abc", "bindings": [], "uptime": 1.0}

    def reload(self, _name: str) -> Any:
        self.reloads += 1
        return dict(self.reload_answer)


@pytest.fixture
def broker(amqp_url: str, unique_name: Callable[[str], str]) -> Iterator[BrokerSettings]:
    """Settings with a unique log exchange; its control exchange is deleted afterwards."""
    settings = BrokerSettings.from_url(amqp_url, exchange=unique_name("logs"))
    yield settings
    connection = settings.connect()
    try:
        connection.channel().exchange_delete(control.control_exchange(settings.exchange))
    finally:
        connection.close()


def start_service(broker: BrokerSettings, sink: Sink) -> Iterator[ControlService]:
    service = ControlService(broker, lambda: {"errors": "e1"}, sink.status, sink.reload)
    service.start()
    try:
        deadline = time.monotonic() + DEADLINE
        while not control.request_with_settings(broker, "status", sink="errors", timeout=1).replies:
            if time.monotonic() > deadline:
                pytest.fail("the control service never answered its own login")
        yield service
    finally:
        service.stop()


@pytest.fixture
def sink() -> Sink:
    return Sink({"outcome": "applied", "config_version": "abc"})


@pytest.fixture
def service(broker: BrokerSettings, sink: Sink) -> Iterator[ControlService]:
    """A running control service answering for sink ``errors`` (instance ``e1``)."""
    yield from start_service(broker, sink)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_requests_from_another_user_are_dropped_counted_and_never_answered(
    broker: BrokerSettings, service: ControlService, sink: Sink, attacker: Attacker
) -> None:
    """reload/status from a non-allowed login, reply_to its own queue: nothing runs, nothing
    lands in its queue, its direct reply-to gets nothing; status shows the refused count."""
    inbox = f"attacker-inbox-{attacker.user}"
    connection = pika.BlockingConnection(pika.URLParameters(attacker.url))
    try:
        connection.channel().queue_declare(inbox, auto_delete=False)
    finally:
        connection.close()
    exchange = control.control_exchange(broker.exchange)
    for command in (b'{"command": "reload"}', b'{"command": "status"}'):
        publish_as(attacker.url, exchange, "all", [command], reply_to=inbox, correlation_id="x")
        publish_as(
            attacker.url,
            exchange,
            "sink.errors",
            [command],
            reply_to=inbox,
            user_id=attacker.user,
        )
    # the attacker asking the way the client does (direct reply-to, its own user_id)
    replies = ask_directly(attacker, exchange)
    wait_for(lambda: service.counters.refused >= 5, "5 refused requests")
    assert replies == []
    result = control.request_with_settings(broker, "status", sink="errors", timeout=3)
    assert [reply["control"]["refused"] for reply in result.replies] == [5]
    assert sink.reloads == 0
    assert queue_depth(attacker.url, inbox) == 0


def ask_directly(attacker: Attacker, exchange: str) -> list[bytes]:
    """A reload request as ``attacker`` with direct reply-to; what came back within 2 s."""
    connection = pika.BlockingConnection(pika.URLParameters(attacker.url))
    replies: list[bytes] = []
    try:
        channel = connection.channel()
        channel.basic_consume(
            control.DIRECT_REPLY_TO, lambda *args: replies.append(args[3]), auto_ack=True
        )
        channel.basic_publish(
            exchange,
            "sink.errors",
            b'{"command": "reload", "sink": "errors"}',
            pika.BasicProperties(
                reply_to=control.DIRECT_REPLY_TO, correlation_id="c", user_id=attacker.user
            ),
        )
        connection.process_data_events(time_limit=2)
    finally:
        connection.close()
    return replies


def test_a_forged_user_id_is_refused_by_the_broker(
    broker: BrokerSettings, service: ControlService, attacker: Attacker
) -> None:
    """The attacker cannot claim the sink's login as user_id: RabbitMQ closes its channel."""
    exchange = control.control_exchange(broker.exchange)
    with pytest.raises(pika.exceptions.AMQPError):
        publish_as(
            attacker.url,
            exchange,
            "all",
            [b'{"command": "reload"}'],
            reply_to=control.DIRECT_REPLY_TO + ".gone",
            user_id=login(broker.urls[0]),
        )


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b'{"command":' + b"[" * 5000,
        b"\xff\xfe\x00" * 1000,
        b"{" * 8 * 1024 * 1024,
    ],
    ids=["brackets-100k", "deep-object", "not-utf8", "8MiB"],
)
def test_hostile_bodies_from_an_allowed_login_never_stop_the_service(
    broker: BrokerSettings, service: ControlService, body: bytes
) -> None:
    """Huge, deep and non-UTF-8 requests are counted malformed; the service answers next."""
    exchange = control.control_exchange(broker.exchange)
    publish_as(
        broker.urls[0],
        exchange,
        "all",
        [body],
        reply_to=control.DIRECT_REPLY_TO + ".gone",  # passes the reply_to check
        user_id=login(broker.urls[0]),
    )
    wait_for(lambda: service.counters.malformed >= 1, "the malformed request to be counted")
    result = control.request_with_settings(broker, "status", sink="errors", timeout=3)
    assert [reply["state"] for reply in result.replies] == ["running"]
    assert result.replies[0]["control"]["malformed"] == 1
    assert service._thread.is_alive()


def _forger(sniffer: Attacker, exchange: str, stop: threading.Event) -> None:
    """Answer every control request it sniffs with a forged 'applied' (raw escapes)."""
    connection = pika.BlockingConnection(pika.URLParameters(sniffer.url))
    try:
        channel = connection.channel()
        queue = f"attacker-sniff-{sniffer.user}"
        channel.queue_declare(queue, exclusive=True)
        channel.queue_bind(queue, exchange, "#")
        while not stop.is_set():
            method, props, _body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                time.sleep(0.02)
                continue
            forged = (
                b'{"ok": true, "outcome": "applied", "sink": "errors", '
                b'"instance": "' + HOSTILE.encode("unicode_escape") + b'", "pid": 1}'
            )
            for user_id in (sniffer.user, None):
                channel.basic_publish(
                    "",
                    props.reply_to,
                    forged,
                    pika.BasicProperties(correlation_id=props.correlation_id, user_id=user_id),
                )
    finally:
        connection.close()


@pytest.fixture
def reload_config(tmp_path: Path, broker: BrokerSettings) -> Path:
    """A config naming sinks errors (answered) and ghost (never answers: the client waits)."""
    path = tmp_path / "routing.toml"
    path.write_text(
        f'[broker]\nurl = "{broker.urls[0]}"\nexchange = "{broker.exchange}"\n\n'
        f'[sinks.errors]\ntype = "file"\nmatch = "*.err"\npath = "{tmp_path}/e.log"\n\n'
        f'[sinks.ghost]\ntype = "file"\nmatch = "*.crit"\npath = "{tmp_path}/g.log"\n'
    )
    return path


def test_forged_replies_are_ignored_and_output_is_escaped(
    broker: BrokerSettings,
    make_attacker: Callable[..., Attacker],
    reload_config: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A user who can sniff requests forges 'applied' replies: `logrouter reload` ignores
    them (and says so); the real sink's refusal, holding raw escapes, is printed escaped."""
    monkeypatch.delenv("LOGROUTER_URL", raising=False)
    sink = Sink(
        {
            "outcome": "refused",
            "config_version": "abc",
            "reason": "bad \x1b]0;pwned\x07 key",
            "issues": ["routing.toml:3: x\x9b2J\u202eevil"],
        }
    )
    sniffer = make_attacker(configure=OWN_QUEUES, write=".*", read=".*")
    stop = threading.Event()
    for _ in start_service(broker, sink):
        thread = threading.Thread(
            target=_forger,
            args=(sniffer, control.control_exchange(broker.exchange), stop),
            daemon=True,
        )
        thread.start()
        time.sleep(0.5)  # let the sniffer bind before the request (not an assertion)
        try:
            code = cli.main(["reload", "--config", str(reload_config), "--timeout", "3"])
        finally:
            stop.set()
            thread.join(DEADLINE)
    out, err = capsys.readouterr()
    assert code == 1
    assert "FORGED" not in out + err
    assert "errors e1" in out or "errors " in out
    assert "refused: bad \\x1b]0;pwned\\x07 key" in out
    assert "x\\x9b2J\\u202eevil" in out
    assert not set("\x1b\x07\x9b\u202e") & set(out + err)
    assert "ignored 2 reply(ies) not from a trusted login" in err
    assert sink.reloads == 1
