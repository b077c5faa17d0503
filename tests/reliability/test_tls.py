"""amqps end to end: handler, sink daemon and CLI against a private node with a TLS listener.

A test CA is made with openssl in the test; the node gets a server certificate for
``localhost`` (and, in one test, a second node gets one for a wrong name). Every
client verifies the server (``?cacertfile=``); a wrong CA or a wrong name is refused
with a clear error and never downgraded to plain AMQP. Passwords never reach output.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from logrouter import RabbitHandler
from logrouter.connection import BrokerSettings, BrokerUnavailable
from tests.helpers.broker import wait_for as _wait_for
from tests.helpers.rabbit_nodes import RabbitNode, free_port, short_dir, started_node
from tests.helpers.sinks import ROOT, logrouter, sink_env, write_config
from tests.reliability import tls_ca

#: about 1 minute of this suite's work: scheduled early (tests/conftest.py)
pytestmark = pytest.mark.slow(minutes=1)

USER = "tlsuser"
PASSWORD = "Tls-s3cret-Pw-4f9a"  # distinctive: asserted absent from every output
DEADLINE = 60.0


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    _wait_for(predicate, what, timeout)


VERIFY_FAILED = "certificate verify failed"


class TLSNode:
    """A started private node with a plain and an amqps listener, a CA and a user."""

    def __init__(
        self, node: RabbitNode, ssl_port: int, ca: tls_ca.CertificateAuthority, certs: Path
    ) -> None:
        self.node = node
        self.ssl_port = ssl_port
        self.ca = ca
        self.certs = certs

    def url(self, host: str = "localhost", **query: str) -> str:
        """An amqps URL for the TLS user; ``cacertfile`` defaults to the node's CA."""
        query.setdefault("cacertfile", str(self.ca.cert))
        q = "&".join(f"{k}={v}" for k, v in query.items() if v)
        return f"amqps://{USER}:{PASSWORD}@{host}:{self.ssl_port}/%2F" + (f"?{q}" if q else "")

    def connections(self) -> list[list[str]]:
        """``rabbitmqctl list_connections user ssl peer_cert_subject peer_port`` rows."""
        out = self.node.rabbitmqctl(
            "list_connections",
            "-q",
            "--no-table-headers",
            *("user", "ssl", "peer_cert_subject", "peer_port"),
        )
        return [line.split("\t") for line in out.splitlines() if line.strip()]


@contextlib.contextmanager
def tls_node(
    ca: tls_ca.CertificateAuthority, server: tls_ca.Issued, certs: Path, prefix: str
) -> Iterator[TLSNode]:
    """A private node whose amqps listener presents ``server``; a user with a password."""
    port = free_port()
    with started_node(prefix, config=tls_ca.node_tls_config(port, ca, server)) as node:
        node.rabbitmqctl("add_user", USER, PASSWORD)
        node.rabbitmqctl("set_permissions", "-p", "/", USER, ".*", ".*", ".*")
        yield TLSNode(node, port, ca, certs)


@pytest.fixture(scope="module")
def certs() -> Iterator[Path]:
    """A short temp dir holding the test CAs and certificates (removed afterwards)."""
    directory = short_dir("lrtls-")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def ca(certs: Path) -> tls_ca.CertificateAuthority:
    return tls_ca.make_ca(certs / "ca", "logrouter test CA")


@pytest.fixture(scope="module")
def other_ca(certs: Path) -> tls_ca.CertificateAuthority:
    """A CA that signed nothing the node presents."""
    return tls_ca.make_ca(certs / "other", "unrelated CA")


@pytest.fixture(scope="module")
def tls(ca: tls_ca.CertificateAuthority, certs: Path) -> Iterator[TLSNode]:
    """One node for the module: amqps on a free port with a certificate for localhost."""
    server = tls_ca.issue(ca, certs / "srv", "localhost", dns=("localhost",), ips=("127.0.0.1",))
    with tls_node(ca, server, certs, "lrtls") as node:
        yield node


def declare_route(url: str, exchange: str, queue: str) -> None:
    """Exchange + queue bound to everything, declared over ``url`` (any scheme)."""
    connection = BrokerSettings.from_url(url).connect()
    try:
        channel = connection.channel()
        channel.exchange_declare(exchange, "topic", durable=True)
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, exchange, "#")
    finally:
        connection.close()


def drain(url: str, queue: str, count: int, timeout: float = DEADLINE) -> list[str]:
    """Consume ``msg`` of up to ``count`` records from ``queue`` (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    got: list[str] = []
    connection = BrokerSettings.from_url(url).connect()
    try:
        channel = connection.channel()
        for method, _props, body in channel.consume(queue, auto_ack=True, inactivity_timeout=0.2):
            if method is not None:
                got.append(json.loads(body)["msg"])
            if len(got) >= count or time.monotonic() > deadline:
                break
        channel.cancel()
    finally:
        connection.close()
    return got


def depth(url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m logrouter ARGS`` (bounded)."""
    return subprocess.run(
        logrouter(*args),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def no_password(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text, f"password leaked in output: {text!r}"


@pytest.fixture
def app_logger(tmp_path: Path) -> Iterator[Callable[..., tuple[logging.Logger, RabbitHandler]]]:
    """Factory: a fresh logger with a RabbitHandler; closed afterwards."""
    made: list[tuple[logging.Logger, RabbitHandler]] = []

    def make(**options: Any) -> tuple[logging.Logger, RabbitHandler]:
        options.setdefault("spool", str(tmp_path / f"spool-{len(made)}.sqlite"))
        options.setdefault("app", "tlsapp")
        options.setdefault("flush_timeout", 10)
        handler = RabbitHandler(**options)
        logger = logging.getLogger(f"tlsapp.{uuid.uuid4().hex[:8]}")
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(handler)
        made.append((logger, handler))
        return logger, handler

    yield make
    for logger, handler in made:
        logger.removeHandler(handler)
        handler.close()


# ------------------------------------------------------------------ pure


def test_amqps_url_always_has_tls_and_port_5671_by_default() -> None:
    """An amqps:// URL yields TLS parameters (never plain), on 5671 when no port is given,
    and verification on unless verify=verify_none."""
    params = next(BrokerSettings.from_url("amqps://u:p@broker.example/%2F").parameters())
    assert params.port == 5671
    assert params.ssl_options is not None
    assert params.ssl_options.server_hostname == "broker.example"
    context = params.ssl_options.context
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    loose = next(BrokerSettings.from_url("amqps://h:5999/?verify=verify_none").parameters())
    assert loose.port == 5999 and loose.ssl_options is not None
    assert loose.ssl_options.context.verify_mode == ssl.CERT_NONE


# ------------------------------------------------------------------ broker


def test_handler_delivers_over_amqps_with_verification(tls: TLSNode, app_logger: Any) -> None:
    """RabbitHandler with an amqps URL and the test CA delivers every record, over a
    TLS connection the broker lists as ssl=true for our user."""
    exchange, queue = f"tls.logs.{uuid.uuid4().hex[:6]}", f"tls.q.{uuid.uuid4().hex[:6]}"
    declare_route(tls.url(), exchange, queue)
    log, handler = app_logger(url=tls.url(), exchange=exchange)
    for i in range(500):
        log.info("tls record %d", i)
    handler.flush()
    rows = tls.connections()
    assert [USER, "true"] in [r[:2] for r in rows], rows
    got = drain(tls.node.url, queue, 500)
    assert sorted(got) == sorted(f"tls record {i}" for i in range(500))
    assert handler.dropped == 0
    assert PASSWORD not in repr(handler.settings)


def test_client_certificate_from_url_keys(
    tls: TLSNode, ca: tls_ca.CertificateAuthority, certs: Path
) -> None:
    """certfile= and keyfile= in the URL present a client certificate the broker verified
    (its peer_cert_subject is our client's CN)."""
    client = tls_ca.issue(ca, certs / "client", "lr-client", dns=("lr-client",))
    url = tls.url(certfile=str(client.cert), keyfile=str(client.key))
    connection = BrokerSettings.from_url(url).connect()
    try:
        rows = tls.connections()
        assert any(r[1] == "true" and "CN=lr-client" in r[2] for r in rows), rows
    finally:
        connection.close()


def test_cli_and_sink_daemon_over_amqps(tls: TLSNode, tmp_path: Path) -> None:
    """`logrouter setup`, `check --diff` and `send` connect over amqps with verification;
    a sink daemon configured with the amqps URL consumes and writes the records; no
    output shows the password."""
    tag = uuid.uuid4().hex[:6]
    exchange, sink = f"tls.logs.{tag}", f"tlssink_{tag}"
    out = tmp_path / "out"
    config = write_config(
        tmp_path / "routing.toml",
        tls.url(),
        exchange,
        {
            sink: {
                "type": "file",
                "match": "*.*",
                "path": f"{out}/{{facility}}.log",
                "format": "{msg}",
            }
        },
    )
    env = sink_env(tmp_path / "state")
    setup = cli("setup", str(config), env=env)
    assert setup.returncode == 0, setup.stderr
    diff = cli("check", str(config), "--diff", env=env)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    sent = [cli("send", "app.err", f"sent over tls {i}", "--config", str(config), env=env)
            for i in range(3)]  # fmt: skip
    for result in sent:
        assert result.returncode == 0, result.stderr
    burst = subprocess.run(
        logrouter("sink", sink, str(config), "--burst"),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert burst.returncode == 0, burst.stderr
    lines = (out / "app.log").read_text().splitlines()
    assert sorted(lines) == [f"sent over tls {i}" for i in range(3)]
    no_password(
        setup.stdout, setup.stderr, diff.stdout, diff.stderr, burst.stdout, burst.stderr,
        *(r.stdout + r.stderr for r in sent),
    )  # fmt: skip


def test_wrong_ca_is_refused_never_downgraded(
    tls: TLSNode,
    other_ca: tls_ca.CertificateAuthority,
    app_logger: Any,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """With a CA that did not sign the server (or the system store), every client refuses:
    BrokerSettings.connect, `logrouter send` (exit 1, 'certificate verify failed') and the
    handler (reports the error, keeps its records, never opens a connection to the
    broker, plain or TLS)."""
    exchange, queue = f"tls.logs.{uuid.uuid4().hex[:6]}", f"tls.q.{uuid.uuid4().hex[:6]}"
    declare_route(tls.node.url, exchange, queue)
    for url in (tls.url(cacertfile=str(other_ca.cert)), tls.url(cacertfile="")):
        with pytest.raises(BrokerUnavailable) as refused:
            BrokerSettings.from_url(url).connect()
        assert VERIFY_FAILED in str(refused.value)
        no_password(str(refused.value))
        sent = cli("send", "app.err", "must not arrive", "--url", url, "--exchange", exchange)
        assert sent.returncode == 1, sent.stderr
        assert VERIFY_FAILED in sent.stderr
        no_password(sent.stdout, sent.stderr)

    before = {tuple(r) for r in tls.connections()}  # earlier tests' connections may linger
    log, handler = app_logger(url=tls.url(cacertfile=str(other_ca.cert)), exchange=exchange)
    log.error("must not arrive either")
    seen: list[str] = []

    def reported() -> bool:
        seen.append(capfd.readouterr().err)
        return VERIFY_FAILED in "".join(seen)

    wait_for(reported, "the handler to report the certificate error")
    new = {tuple(r) for r in tls.connections()} - before
    assert not new, f"a client got in: {new}"
    assert depth(tls.node.url, queue) == 0
    assert handler.stats["confirmed"] == 0
    no_password(*seen)


def test_hostname_mismatch_is_refused(
    ca: tls_ca.CertificateAuthority, certs: Path, app_logger: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    """A server whose certificate (signed by the trusted CA) names another host is refused
    by BrokerSettings, `logrouter send` and the handler, with a hostname-mismatch error."""
    wrong = tls_ca.issue(
        ca, certs / "wrong", "wrong.example.invalid", dns=("wrong.example.invalid",)
    )
    with tls_node(ca, wrong, certs, "lrtlsw") as node:
        url = node.url()
        with pytest.raises(BrokerUnavailable) as refused:
            BrokerSettings.from_url(url).connect()
        message = str(refused.value)
        assert VERIFY_FAILED in message and "Hostname mismatch" in message, message
        no_password(message)
        sent = cli("send", "app.err", "must not arrive", "--url", url)
        assert sent.returncode == 1 and "Hostname mismatch" in sent.stderr, sent.stderr
        no_password(sent.stdout, sent.stderr)
        _log, handler = app_logger(url=url, exchange="logs")
        _log.error("must not arrive")
        seen: list[str] = []

        def reported() -> bool:
            seen.append(capfd.readouterr().err)
            return "Hostname mismatch" in "".join(seen)

        wait_for(reported, "the handler to report the hostname mismatch")
        assert not [r for r in node.connections() if r[0] == USER]
        assert handler.stats["confirmed"] == 0
        no_password(*seen)
