"""The AMQP request/reply control protocol: pure parts, then round trips on the real broker."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pika
import pytest

from logrouter import cli, control, log
from logrouter.connection import BrokerSettings, login
from tests.helpers.control import Responder

# --------------------------------------------------------------------------- pure parts


def test_parse_request_reads_command_and_sink() -> None:
    """A JSON object with reply_to gives the command, the sink and the correlation id."""
    req = control.parse_request(
        b'{"command": "status", "sink": "errors"}', control.DIRECT_REPLY_TO, "c1"
    )
    assert (req.command, req.sink, req.reply_to, req.correlation_id) == (
        "status",
        "errors",
        control.DIRECT_REPLY_TO,
        "c1",
    )


@pytest.mark.parametrize(
    ("body", "reply_to", "why"),
    [
        (b"not json", control.DIRECT_REPLY_TO, "not JSON"),
        (b"[1, 2]", control.DIRECT_REPLY_TO, "not an object"),
        (b"\xff\xfe", control.DIRECT_REPLY_TO, "not JSON"),
        (b'{"command": "status"}', None, "no reply_to"),
        (b'{"command": "status"}', "", "no reply_to"),
    ],
)
def test_parse_request_rejects_malformed(body: bytes, reply_to: str | None, why: str) -> None:
    """Non-JSON, non-object or reply_to-less requests are malformed, and the error says why."""
    with pytest.raises(control.MalformedRequest, match=why):
        control.parse_request(body, reply_to, None)


def test_build_reply_adds_identity_to_handler_result() -> None:
    """A known command answers ok with the sink, instance, host and pid beside the result."""
    req = control.parse_request(b'{"command": "status"}', control.DIRECT_REPLY_TO, "c")
    ident = control.Identity(sink="errors", instance="a", host="h1", pid=42)
    reply = control.build_reply(req, ident, {"status": lambda _: {"state": "running"}})
    assert reply == {
        "ok": True,
        "state": "running",
        "command": "status",
        "sink": "errors",
        "instance": "a",
        "host": "h1",
        "pid": 42,
    }


def test_build_reply_unknown_command() -> None:
    """An unknown command gets an error reply naming it."""
    req = control.parse_request(b'{"command": "explode"}', control.DIRECT_REPLY_TO, "c")
    reply = control.build_reply(req, control.Identity("s", "i"), {"status": lambda _: {}})
    assert reply["ok"] is False
    assert reply["error"] == "unknown command 'explode'"
    assert reply["sink"] == "s"


def test_build_reply_handler_failure_is_an_error_reply() -> None:
    """A handler that raises produces an error reply instead of crashing the sink."""

    def boom(_: dict[str, Any]) -> Mapping[str, Any]:
        raise RuntimeError("disk on fire")

    req = control.parse_request(b'{"command": "reload"}', control.DIRECT_REPLY_TO, "c")
    reply = control.build_reply(req, control.Identity("s", "i"), {"reload": boom})
    assert reply["ok"] is False
    assert "disk on fire" in reply["error"]


def test_build_reply_redacts_every_string() -> None:
    """Passwords inside any string of a reply (nested, keys too) are hidden."""
    secret = "amqp://guest:s3cret@broker:5672/%2F"
    req = control.parse_request(b'{"command": "status"}', control.DIRECT_REPLY_TO, "c")
    reply = control.build_reply(
        req,
        control.Identity("s", "i"),
        {"status": lambda _: {"last_error": f"lost {secret}", "nested": {secret: [secret]}}},
    )
    text = json.dumps(reply)
    assert "s3cret" not in text
    assert "guest:***@broker" in reply["last_error"]


def test_missing_sinks_keeps_expected_order() -> None:
    """Expected sinks with no reply are listed in the order given."""
    replies = [{"sink": "b"}, {"sink": "b"}]
    assert control.missing_sinks(["a", "b", "c"], replies) == ["a", "c"]


def test_routing_keys() -> None:
    """One sink is addressed as sink.<name>, a broadcast as all."""
    assert control.routing_key_for("errors") == "sink.errors"
    assert control.routing_key_for(None) == "all"
    assert control.control_exchange("logs") == "logs.control"


# --------------------------------------------------------------------------- real broker


@pytest.fixture
def exchange(amqp_url: str, unique_name: Callable[[str], str]) -> Iterator[str]:
    """A unique log exchange name; its control exchange is deleted afterwards."""
    name = unique_name("logs")
    yield name
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        connection.channel().exchange_delete(control.control_exchange(name))
    finally:
        connection.close()


@pytest.fixture
def responders() -> Iterator[list[Responder]]:
    """Responders started by a test, all stopped at the end."""
    started: list[Responder] = []
    yield started
    for responder in started:
        responder.close()


def status_handler(state: str) -> control.Handler:
    def handle(_: dict[str, Any]) -> Mapping[str, Any]:
        return {"state": state, "counters": {"written": 7}}

    return handle


def ask(amqp_url: str, exchange: str, command: str, **options: Any) -> control.ControlResult:
    settings = BrokerSettings.from_url(amqp_url, exchange=exchange)
    return control.request_with_settings(settings, command, **options)


def test_broadcast_reaches_every_instance_of_a_sink(
    amqp_url: str, exchange: str, responders: list[Responder]
) -> None:
    """Two competing instances of one sink both answer a broadcast status request."""
    for instance in ("i1", "i2"):
        responders.append(
            Responder(
                amqp_url, exchange, "archive", instance, {"status": status_handler("running")}
            )
        )
    responders.append(
        Responder(amqp_url, exchange, "errors", "e1", {"status": status_handler("running")})
    )
    result = ask(amqp_url, exchange, "status", expected=["archive", "errors"], timeout=5)
    answered = sorted((r["sink"], r["instance"]) for r in result.replies)
    assert answered == [("archive", "i1"), ("archive", "i2"), ("errors", "e1")]
    assert result.missing == []
    assert all(r["ok"] and r["counters"] == {"written": 7} for r in result.replies)


def test_request_to_one_sink_reaches_only_its_instances(
    amqp_url: str, exchange: str, responders: list[Responder]
) -> None:
    """A request addressed to one sink is answered by its instances, not by other sinks."""
    responders.append(
        Responder(amqp_url, exchange, "archive", "a1", {"status": status_handler("x")})
    )
    responders.append(
        Responder(amqp_url, exchange, "errors", "e1", {"status": status_handler("x")})
    )
    result = ask(amqp_url, exchange, "status", sink="errors", timeout=5)
    assert [(r["sink"], r["instance"]) for r in result.replies] == [("errors", "e1")]


def test_unknown_command_gets_error_reply(
    amqp_url: str, exchange: str, responders: list[Responder]
) -> None:
    """An unknown command is answered with ok=false and the command's name."""
    responders.append(
        Responder(amqp_url, exchange, "errors", "e1", {"status": status_handler("x")})
    )
    result = ask(amqp_url, exchange, "frobnicate", expected=["errors"], timeout=5)
    assert len(result.replies) == 1
    assert result.replies[0]["ok"] is False
    assert result.replies[0]["error"] == "unknown command 'frobnicate'"


def test_malformed_requests_are_dropped_and_server_keeps_answering(
    amqp_url: str, exchange: str, responders: list[Responder]
) -> None:
    """Non-JSON and reply_to-less requests are dropped; the server still answers the next one."""
    responder = Responder(amqp_url, exchange, "errors", "e1", {"status": status_handler("ok")})
    responders.append(responder)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        name = control.control_exchange(exchange)
        user = login(amqp_url)
        props = pika.BasicProperties(
            reply_to=control.DIRECT_REPLY_TO, correlation_id="x", user_id=user
        )
        channel.basic_consume(control.DIRECT_REPLY_TO, lambda *a: None, auto_ack=True)
        channel.basic_publish(name, "all", b"\x00not json", props)
        no_reply_to = pika.BasicProperties(user_id=user)
        channel.basic_publish(name, "all", b'{"command": "status"}', no_reply_to)
    finally:
        connection.close()
    result = ask(amqp_url, exchange, "status", expected=["errors"], timeout=5)
    assert [r["state"] for r in result.replies] == ["ok"]
    assert responder.server is not None and responder.server.counters.malformed == 2


def test_silent_sink_is_listed_missing_and_client_returns(
    amqp_url: str, exchange: str, responders: list[Responder]
) -> None:
    """A wedged sink that never answers does not hang the client; it is reported missing."""
    responders.append(
        Responder(amqp_url, exchange, "errors", "e1", {"status": status_handler("ok")})
    )
    responders.append(
        Responder(
            amqp_url, exchange, "archive", "a1", {"status": status_handler("ok")}, serve=False
        )
    )
    outcome: list[control.ControlResult] = []
    worker = threading.Thread(
        target=lambda: outcome.append(
            ask(amqp_url, exchange, "status", expected=["errors", "archive", "console"], timeout=1)
        ),
        daemon=True,
    )
    worker.start()
    worker.join(30)  # deadline only against a hang; the request itself is bounded by timeout=1
    assert not worker.is_alive(), "control client hung"
    [result] = outcome
    assert [r["sink"] for r in result.replies] == ["errors"]
    assert result.missing == ["archive", "console"]


# --------------------------------------------------------------------------- logrouter reload


def reload_handler(result: Mapping[str, Any]) -> control.Handler:
    def handle(_: dict[str, Any]) -> Mapping[str, Any]:
        return result

    return handle


APPLIED: control.ReloadResult = {"outcome": "applied", "config_version": "a1b2c3d4e5f6"}
REFUSED: control.ReloadResult = {
    "outcome": "refused",
    "config_version": "0123456789ab",
    "reason": "the new config does not validate",
    "issues": ["routing.toml:12: sinks.errors.match: unknown severity 'eror'"],
}


@pytest.fixture
def reload_config(tmp_path: Any, exchange: str) -> Any:
    """A config naming two sinks, errors and archive, on the test's exchange."""
    path = tmp_path / "routing.toml"
    path.write_text(
        f'[broker]\nexchange = "{exchange}"\n\n'
        f'[sinks.errors]\ntype = "file"\nmatch = "*.err"\npath = "{tmp_path}/e.log"\n\n'
        f'[sinks.archive]\ntype = "archive"\nmatch = "*.*"\ndir = "{tmp_path}/arch"\n'
    )
    return path


@pytest.fixture(autouse=True)
def daemon_logs_to_stderr() -> None:
    """In-test responders log like a sink daemon: to stderr, never into stdout."""
    log.configure(json=True)


def test_reload_all_applied_exits_0(
    amqp_url: str,
    exchange: str,
    reload_config: Any,
    responders: list[Responder],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every instance applies the reload: each reply is printed, exit 0."""
    for sink, instance in (("errors", "e1"), ("archive", "a1"), ("archive", "a2")):
        responders.append(
            Responder(amqp_url, exchange, sink, instance, {"reload": reload_handler(APPLIED)})
        )
    code = cli.main(["reload", "--config", str(reload_config), "--url", amqp_url])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    assert all(": applied (config a1b2c3d4)" in line for line in lines)
    assert [line.split()[0] for line in lines] == ["archive", "archive", "errors"]


def test_reload_refused_prints_issue_and_exits_1(
    amqp_url: str,
    exchange: str,
    reload_config: Any,
    responders: list[Responder],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A refusal prints the reason with file, line and key, and the exit code is 1."""
    responders.append(
        Responder(amqp_url, exchange, "errors", "e1", {"reload": reload_handler(REFUSED)})
    )
    responders.append(
        Responder(amqp_url, exchange, "archive", "a1", {"reload": reload_handler(APPLIED)})
    )
    code = cli.main(["reload", "--config", str(reload_config), "--url", amqp_url])
    out, _ = capsys.readouterr()
    assert code == 1
    assert "refused: the new config does not validate" in out
    assert "routing.toml:12: sinks.errors.match: unknown severity 'eror'" in out
    assert "archive" in out and "applied" in out


def test_reload_one_sink_only(
    amqp_url: str,
    exchange: str,
    reload_config: Any,
    responders: list[Responder],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """reload SINK asks only that sink's instances."""
    responders.append(
        Responder(amqp_url, exchange, "errors", "e1", {"reload": reload_handler(APPLIED)})
    )
    responders.append(
        Responder(amqp_url, exchange, "archive", "a1", {"reload": reload_handler(REFUSED)})
    )
    code = cli.main(["reload", "errors", "--config", str(reload_config), "--url", amqp_url])
    out, _ = capsys.readouterr()
    assert code == 0
    assert out.startswith("errors ") and "archive" not in out


def test_reload_none_answered_exits_1(
    amqp_url: str, reload_config: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no running sink, reload lists each expected sink as not answering and exits 1."""
    code = cli.main(
        ["reload", "--config", str(reload_config), "--url", amqp_url, "--timeout", "0.5"]
    )
    out, err = capsys.readouterr()
    assert code == 1
    assert "errors: no answer" in out and "archive: no answer" in out
    assert "no running sink answered" in err


def test_reload_with_broken_config_still_asks_the_sinks(
    amqp_url: str,
    exchange: str,
    reload_config: Any,
    responders: list[Responder],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A config that does not validate does not stop reload: the sinks' refusal is shown."""
    text = reload_config.read_text().replace('match = "*.err"', 'match = "*.eror"')
    reload_config.write_text(text)
    responders.append(
        Responder(amqp_url, exchange, "errors", "e1", {"reload": reload_handler(REFUSED)})
    )
    code = cli.main(["reload", "--config", str(reload_config), "--url", amqp_url, "--timeout", "2"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "does not validate" in err and "eror" in err
    assert out.startswith("errors ") and "refused" in out
    assert "archive: no answer" in out


def test_reload_broker_down_exits_1_without_password(
    reload_config: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """No broker: exit 1 with a message that hides the password."""
    code = cli.main(
        ["reload", "--config", str(reload_config), "--url", "amqp://u:s3cret@127.0.0.1:1/%2F"]
    )
    _, err = capsys.readouterr()
    assert code == 1
    assert "cannot reach the broker" in err and "s3cret" not in err


def test_sink_status_from_counters_object() -> None:
    """sink_status turns a SinkCounters-like object into the status contract, password-free."""

    class Counters:
        received, written, acked, rejected, duplicates, reconnects = 9, 7, 8, 1, 1, 2
        state = "running"
        last_error = "connection to amqp://guest:pw@h/ lost"

    status = control.sink_status(
        Counters(), config_version="abc", bindings=["*.err", "*.crit"], uptime=3.14159, queue="q"
    )
    assert status == {
        "state": "running",
        "config_version": "abc",
        "bindings": ["*.crit", "*.err"],
        "counters": {
            "received": 9,
            "written": 7,
            "acked": 8,
            "rejected": 1,
            "duplicates": 1,
            "reconnects": 2,
            "filtered": 0,
            "write_errors": 0,
        },
        "last_error": "connection to amqp://guest:***@h/ lost",
        "uptime": 3.142,
        "queue": "q",
    }


def test_requests_from_logins_not_allowed_are_refused() -> None:
    """No user_id, or one not in allow_users: RefusedRequest naming it; allowed: parsed."""
    body = b'{"command": "status"}'
    for user in (None, "mallory"):
        with pytest.raises(control.RefusedRequest, match="not in \\[control\\] allow_users"):
            control.parse_request(
                body, control.DIRECT_REPLY_TO, "c", user_id=user, allow_users={"logrouter"}
            )
    req = control.parse_request(
        body, control.DIRECT_REPLY_TO, "c", user_id="logrouter", allow_users={"logrouter"}
    )
    assert (req.command, req.user_id) == ("status", "logrouter")


@pytest.mark.parametrize(
    ("body", "reply_to", "why"),
    [
        (b'{"command": "status"}', "attacker-inbox", "not a direct reply-to"),
        (b'{"command": "status"}', "amq.gen-abc", "not a direct reply-to"),
        (b"[" * 100_000, control.DIRECT_REPLY_TO, "bytes"),
        (b"[" * 1000, control.DIRECT_REPLY_TO, "nested deeper"),
        (b"\xff" * 10, control.DIRECT_REPLY_TO, "not UTF-8"),
        (b'{"command": "' + b"x" * 70_000 + b'"}', control.DIRECT_REPLY_TO, "bytes"),
    ],
)
def test_hostile_requests_are_malformed_never_an_exception(
    body: bytes, reply_to: str, why: str
) -> None:
    """Any reply_to but direct reply-to, huge, too deep or non-UTF-8 bodies: MalformedRequest."""
    with pytest.raises(control.MalformedRequest, match=why):
        control.parse_request(body, reply_to, "c", user_id="me", allow_users={"me"})


def test_parse_reply_keeps_only_trusted_replies() -> None:
    """A reply counts only with our correlation_id, a trusted user_id and a JSON object body."""
    good = b'{"ok": true, "sink": "errors"}'
    props = pika.BasicProperties(correlation_id="c1", user_id="logrouter")
    trusted = {"logrouter"}
    assert control.parse_reply(good, props, "c1", trusted) == {"ok": True, "sink": "errors"}
    forged = pika.BasicProperties(correlation_id="c1", user_id="mallory")
    unsigned = pika.BasicProperties(correlation_id="c1")
    other = pika.BasicProperties(correlation_id="c2", user_id="logrouter")
    for properties in (forged, unsigned, other):
        assert control.parse_reply(good, properties, "c1", trusted) is None
    for body in (b"[" * 100_000, b"\xff", b"[1]", b"{" + b" " * control.MAX_REPLY_BYTES + b"}"):
        assert control.parse_reply(body, props, "c1", trusted) is None
