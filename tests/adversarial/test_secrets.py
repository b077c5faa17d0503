"""Secrets never print (issue 13 item 5): a password in every URL spelling, searched for in
ALL output (stdout and stderr) of every command, the sink daemon's JSON logs included.

The URLs carry a wrong password for the real broker, so each command fails to log in
(or, for ``check``, just prints the config) and reports the URLs: the password must
appear nowhere, whatever its spelling: ``AMQP://`` (case), a raw ``@`` or ``%40`` in
it, a ``:`` in it, a raw ``/`` (which makes the URL's port unparsable), several URLs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from logrouter import RabbitHandler

ROOT = Path(__file__).resolve().parents[2]
SECRET = "S3cret"
URLS = " ".join(
    [
        "AMQP://guest:S3cret@PW@127.0.0.1:5672/%2F",
        "Amqps://guest:S3cret%40PW@127.0.0.1:1/%2F",
        "amqp://guest:S3cret:PW@127.0.0.1:5672/%2F",
    ]
)
BAD_PORT_URL = "amqp://guest:S3cret/PW@127.0.0.1/%2F"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config whose [broker] url lists the three spellings; one file sink."""
    path = tmp_path / "routing.toml"
    path.write_text(
        f'[broker]\nurl = "{URLS}"\nexchange = "test.secrets"\n\n'
        f'[sinks.errors]\ntype = "file"\nmatch = "*.err"\npath = "{tmp_path}/e.log"\n'
    )
    return path


def run(*args: str, timeout: float = 60) -> tuple[int, str]:
    """Run ``logrouter args``; exit code and stdout + stderr together."""
    env = {k: v for k, v in os.environ.items() if k not in ("LOGROUTER_URL", "NOTIFY_SOCKET")}
    env.update(PYTHONPATH=str(ROOT), LOGROUTER_STATE_DIR=os.devnull)
    result = subprocess.run(
        [sys.executable, "-m", "logrouter", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (["check", "{config}"], 0),
        (["setup", "{config}"], 69),
        (["stats", "{config}", "--timeout", "1"], 1),
        (["reload", "--config", "{config}", "--timeout", "1"], 1),
        (["tail", "--config", "{config}", "--count", "1"], 1),
        (["send", "--config", "{config}", "auth.err", "hello", "--timeout", "3"], 1),
    ],
    ids=["check", "setup", "stats", "reload", "tail", "send"],
)
def test_no_command_prints_the_password(command: list[str], code: int, config: Path) -> None:
    """Each command, failing to log in with every URL: all its output names the hosts and
    says why, and never holds the password."""
    exit_code, output = run(*(part.format(config=config) for part in command))
    assert SECRET not in output, output
    assert "guest:***@127.0.0.1" in output, output
    if code:
        assert exit_code != 0, output
    else:
        assert exit_code == 0, output


def test_a_url_with_a_raw_slash_in_the_password(config: Path) -> None:
    """A raw '/' makes urlsplit read part of the password as the port: not echoed."""
    exit_code, output = run("check", str(config), "--url", BAD_PORT_URL)
    assert exit_code == 78
    assert "bad port" in output
    assert SECRET not in output and "PW" not in output.replace("%2F", ""), output


def test_the_sink_daemons_json_logs_never_hold_the_password(config: Path) -> None:
    """A sink retrying the broker logs each failure (JSON on stderr): no password in any."""
    env = {k: v for k, v in os.environ.items() if k not in ("LOGROUTER_URL", "NOTIFY_SOCKET")}
    env.update(PYTHONPATH=str(ROOT), LOGROUTER_STATE_DIR=str(config.parent / "state"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "logrouter", "sink", "errors", str(config), "--no-watch"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if sum("guest:***@" in entry for entry in seen) >= 3:
                break
    finally:
        proc.kill()
        out, rest = proc.communicate(timeout=30)
    output = "".join(seen) + out + rest
    assert sum("guest:***@" in entry for entry in seen) >= 3, output
    assert SECRET not in output, output


def test_the_handler_repr_hides_the_password() -> None:
    """repr(RabbitHandler) names the brokers without the password (never connects here)."""
    handler = RabbitHandler(url=URLS, exchange="test.secrets")
    try:
        text = repr(handler)
    finally:
        handler.close()
    assert "guest:***@127.0.0.1" in text
    assert SECRET not in text
