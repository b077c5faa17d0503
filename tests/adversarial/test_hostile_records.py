"""Hostile record content (issue 13 items 6 and 7): terminal controls and 100,000-deep JSON.

A hostile publisher (a second broker user) sends a record full of ESC, C1 and
bidi characters, a JSON body nested 100,000 deep, and a ``[`` x 100,000 body,
around a legitimate record. File and console sinks and ``logrouter tail``
(plain and ``--json``) must write the legitimate record exactly once, escape
every control, reject the deep body with its reason, and go on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pika
import pytest

from tests.adversarial.attackers import Attacker, publish_as
from tests.helpers.sinks import (
    ROOT,
    archive_records,
    declare,
    message,
    name,
    publish,
    run_burst,
    write_config,
)

HOSTILE = "ok \x1b[2J\x1b]0;title\x07 \x9b31m \x85 \u202eevil\u202c \u2066x\u2069 \x7f end"
RAW = set("\x1b\x07\x9b\x85\u202e\u202c\u2066\u2069\x7f")
DEEP = b'{"facility": "app", "severity": "err", "msg": ' + b"[" * 100_000
FLOOD = b"[" * 100_000


def hostile_record() -> bytes:
    return json.dumps(
        {
            "facility": "app",
            "severity": "err",
            "msg": HOSTILE,
            "host": "h\x9b2J",
            "app": "a\u202eb",
            "logger": "l\x1bc",
        }
    ).encode()


def attack(attacker: Attacker, exchange: str) -> None:
    """What the hostile publisher sends: deep JSON, a bracket flood, a control-laden record."""
    for body in (DEEP, FLOOD, hostile_record()):
        publish_as(attacker.url, exchange, "app.err", [body], user_id=attacker.user)


def test_sinks_escape_controls_and_reject_deep_json(
    sinkenv: dict[str, Any],
    attacker: Attacker,
) -> None:
    """File and console sinks: the legitimate record once, the hostile text escaped (no raw
    control byte in the file or on stdout), the deep body rejected with its reason."""
    out = sinkenv["tmp"] / "out"
    file_sink, console_sink = name(sinkenv, "hostfile"), name(sinkenv, "hostcon")
    config = write_config(
        sinkenv["tmp"] / "routing.toml",
        sinkenv["url"],
        sinkenv["exchange"],
        {
            file_sink: {"type": "file", "match": "*.*", "path": f"{out}/{{facility}}.log"},
            console_sink: {"type": "console", "match": "*.*", "stream": "stdout"},
        },
    )
    declare(config)
    attack(attacker, sinkenv["exchange"])
    publish(sinkenv["url"], sinkenv["exchange"], [message("app", "err", "rec-1")])
    result = run_burst(["run", str(config)], sinkenv["env"])
    assert result.returncode == 0, result.stderr[-2000:]
    text = (out / "app.log").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert sum("rec-1" in line for line in lines) == 1
    assert len(lines) == 3  # rec-1, the flood as text, the hostile record: nothing else
    assert not RAW & set(text)
    assert "ok \\x1b[2J\\x1b]0;title\\x07 \\x9b31m \\x85 \\u202eevil\\u202c" in text
    console = result.stdout
    assert sum("rec-1" in line for line in console.splitlines()) == 1
    assert not RAW & set(console)
    rejected = [
        json.loads(line)
        for line in result.stderr.splitlines()
        if line.startswith("{") and "message rejected" in line
    ]
    assert len(rejected) == 2  # the deep body, once per sink
    assert all("nested deeper" in entry["reason"] for entry in rejected)


def test_a_record_decoders_take_but_no_encoder_writes_is_rejected_alone(
    sinkenv: dict[str, Any], attacker: Attacker
) -> None:
    """A record nested 1,000 deep (the decoder takes up to 1,024; json.dumps stops near
    1,000) and with no ts, so the archive writes it encoded again: the archive sink
    rejects that record with its reason, archives the legitimate ones and exits (it used
    to fail the whole batch on every redelivery, wedged for good)."""
    archive = sinkenv["tmp"] / "archive"
    sink = name(sinkenv, "deeparch")
    config = write_config(
        sinkenv["tmp"] / "routing.toml",
        sinkenv["url"],
        sinkenv["exchange"],
        {sink: {"type": "archive", "match": "*.*", "dir": str(archive)}},
    )
    declare(config)
    publish(sinkenv["url"], sinkenv["exchange"], [message("app", "err", "rec-1")])
    deep = b'{"msg": "deep", "fields": {"x": ' + b"[" * 1000 + b"]" * 1000 + b"}}"
    publish_as(attacker.url, sinkenv["exchange"], "app.err", [deep], user_id=attacker.user)
    publish(sinkenv["url"], sinkenv["exchange"], [message("app", "err", "rec-2")])
    result = run_burst(["sink", sink, str(config)], sinkenv["env"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert [r["msg"] for r in archive_records(archive)] == ["rec-1", "rec-2"]
    rejected = [
        json.loads(line)
        for line in result.stderr.splitlines()
        if line.startswith("{") and "message rejected" in line
    ]
    assert [entry["reason"] for entry in rejected] == ["record nested too deep to write as JSON"]
    assert rejected[0]["user_id"] == attacker.user  # the log says who sent it


def _tail(exchange: str, url: str, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "LOGROUTER_URL"}
    env.update(LOGROUTER_CONFIG="/nonexistent/routing.toml", NO_COLOR="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "logrouter", "tail", "app.*", "--url", url]
    proc = subprocess.Popen(
        [*command, "--exchange", exchange, "--count", "3", *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "Ctrl-C to stop" in line:
            return proc
    proc.kill()
    pytest.fail("tail did not report ready")


@pytest.mark.parametrize("mode", ["plain", "json"])
def test_tail_escapes_controls_and_goes_on_after_deep_json(
    mode: str,
    amqp_url: str,
    broker_settings: Any,
    attacker: Attacker,
) -> None:
    """tail: the deep body is reported rejected (stderr) and tail goes on; the hostile
    record is shown escaped (``--json``: \\u escapes, still the same JSON); rec-1 shown."""
    exchange = broker_settings.exchange
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    connection.channel().exchange_declare(exchange, "topic")
    connection.close()
    proc = _tail(exchange, amqp_url, *(["--json"] if mode == "json" else []))
    attack(attacker, exchange)
    publish(amqp_url, exchange, [message("app", "err", "rec-1")])
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("tail did not exit after 3 records")
    assert proc.returncode == 0, err
    assert "rejected a message (routing key 'app.err'): JSON body nested deeper" in err
    assert not RAW & set(out + err)
    lines = out.splitlines()
    assert len(lines) == 3
    assert sum("rec-1" in line for line in lines) == 1
    if mode == "json":
        records = [json.loads(line) for line in lines]
        assert [r["msg"] for r in records][1:] == [HOSTILE, "rec-1"]
        assert records[0]["msg"] == "[" * 100_000
    else:
        assert "\\x1b[2J\\x1b]0;title\\x07 \\x9b31m \\x85 \\u202eevil\\u202c" in out
