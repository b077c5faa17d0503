"""A hostile publisher plants the headers that name a sender (issue 13 follow-up).

``x-logrouter-user-id`` and ``x-logrouter-original-user`` name the login that sent a
message in ``logrouter.rejected``. The attacker sets them to another login on messages
a sink rejects (sent with no user_id, and with its own) and on one the broker
dead-letters there. ``logrouter rejected show`` must name the attacker (or nobody) as
the sender and never the forged login.
"""

from __future__ import annotations

import uuid
from typing import Any

import pika
import pytest

from logrouter import cli, topology
from logrouter.connection import login
from logrouter.sinks.rejects import ORIGINAL_USER_HEADER, USER_HEADER
from tests.adversarial.attackers import Attacker, publish_as
from tests.helpers.broker import wait_for
from tests.helpers.sinks import declare, name, run_burst, write_config

#: a record nested deeper than the decoder allows: every sink rejects it
DEEP = b'{"facility": "app", "severity": "err", "msg": ' + b"[" * 2000


def show(capsys: pytest.CaptureFixture[str], config: Any, ident: str) -> tuple[int, str]:
    code = cli.main(["rejected", "show", ident, "--config", str(config)])
    return code, capsys.readouterr().out


def held_ids(url: str) -> set[str]:
    """The message ids in logrouter.rejected now (all put back)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    ids: set[str] = set()
    try:
        channel = connection.channel()
        while (got := channel.basic_get(topology.REJECTED_QUEUE, auto_ack=False))[0] is not None:
            ids.add(str(got[1].message_id))
    finally:
        connection.close()
    return ids


def drop(url: str, ids: set[str]) -> None:
    """Ack the messages with these ids in logrouter.rejected; the others go back."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        while True:
            method, props, _ = channel.basic_get(topology.REJECTED_QUEUE, auto_ack=False)
            if method is None:
                return
            if props.message_id in ids:
                channel.basic_ack(method.delivery_tag)
    finally:
        connection.close()


def test_forged_user_headers_never_show_as_another_login(
    sinkenv: dict[str, Any],
    attacker: Attacker,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Forged user headers on messages a sink rejects or the broker dead-letters: `rejected
    show` says the sink published the copy, names the attacker (or nobody) as the sender,
    and the forged login appears nowhere in its output; a message the attacker's own queue
    dead-letters into logrouter.rejected is not the config's exchange's to show."""
    tag = sinkenv["tag"]
    forged = f"admin-{uuid.uuid4().hex[:8]}"
    planted = {USER_HEADER: forged, ORIGINAL_USER_HEADER: forged}
    anon, own, dead = f"anon-{tag}", f"own-{tag}", f"dead-{tag}"
    sink = name(sinkenv, "forged")
    config = write_config(
        sinkenv["tmp"] / "routing.toml",
        sinkenv["url"],
        sinkenv["exchange"],
        {sink: {"type": "file", "match": "*.*", "path": str(sinkenv["tmp"] / "out.log")}},
    )
    declare(config)
    try:
        exchange = sinkenv["exchange"]
        publish_as(attacker.url, exchange, "app.err", [DEEP], message_id=anon, headers=planted)
        publish_as(
            attacker.url,
            exchange,
            "app.err",
            [DEEP],
            message_id=own,
            headers=planted,
            user_id=attacker.user,
        )
        result = run_burst(["sink", sink, str(config)], sinkenv["env"])
        assert result.returncode == 0, result.stderr[-3000:]
        # an attacker's queue dead-letters what expires to logrouter.rejected
        connection = pika.BlockingConnection(pika.URLParameters(attacker.url))
        try:
            channel = connection.channel()
            expiring = f"attacker-{tag}"
            channel.queue_declare(
                expiring,
                exclusive=True,
                arguments={"x-dead-letter-exchange": topology.REJECTED_QUEUE, "x-message-ttl": 0},
            )
            props = pika.BasicProperties(message_id=dead, headers=planted, user_id=attacker.user)
            channel.basic_publish("", expiring, b"{}", props)
            wait_for(lambda: dead in held_ids(sinkenv["url"]), "the dead-lettered message")
        finally:
            connection.close()

        sink_login = login(sinkenv["url"])
        for ident, sender, publisher in (
            (anon, "-", sink_login),
            (own, attacker.user, sink_login),
        ):
            code, out = show(capsys, config, ident)
            assert code == 0, ident
            assert f"sent by: {sender}\n" in out, out
            assert f"user_id: {publisher}\n" in out, out
            assert forged not in out, out
        # dead-lettered from the attacker's own queue, not one of the config's sink queues:
        # not this exchange's to list, show or replay (whatever exchange its x-death names)
        code, out = show(capsys, config, dead)
        assert code == 1 and forged not in out
    finally:
        drop(sinkenv["url"], {anon, own, dead})
