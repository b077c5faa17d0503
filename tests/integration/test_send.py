"""``logrouter send``: one record from the shell, confirmed, with honest exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.helpers.handler import collect, declare, delete
from tests.helpers.rabbit_nodes import free_port

ROOT = Path(__file__).resolve().parents[2]


def send(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {
        k: v for k, v in os.environ.items() if k not in ("LOGROUTER_URL", "LOGROUTER_CONFIG")
    }
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "logrouter", "send", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_send_publishes_one_confirmed_record(
    amqp_url: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """A sent record arrives as schema-v1 JSON under its two-word key; exit 0."""
    exchange, queue = unique_name("logs"), unique_name("q")
    declare(amqp_url, exchange, queue)
    try:
        done = send(
            "Auth.error",
            "login",
            "failed",
            "--url",
            amqp_url,
            "--exchange",
            exchange,
            "--config",
            str(tmp_path / "none.toml"),
        )
        assert done.returncode == 0, done.stderr
        [(mid, key, body)] = collect(amqp_url, queue, 1)
        assert key == "auth.err" and body["msg"] == "login failed" and body["v"] == 1
        assert body["app"] == "logrouter-send" and body["level"] == "ERROR" and mid
    finally:
        delete(amqp_url, exchange, queue)


def test_send_url_from_environment(
    amqp_url: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """Without --url, $LOGROUTER_URL is used."""
    exchange, queue = unique_name("logs"), unique_name("q")
    declare(amqp_url, exchange, queue)
    try:
        done = send(
            "cron.info",
            "tick",
            "--exchange",
            exchange,
            "--config",
            str(tmp_path / "none.toml"),
            env={"LOGROUTER_URL": amqp_url},
        )
        assert done.returncode == 0, done.stderr
        assert [b["msg"] for _, _, b in collect(amqp_url, queue, 1)] == ["tick"]
    finally:
        delete(amqp_url, exchange, queue)


def test_send_broker_down_exits_1_without_password(tmp_path: Path) -> None:
    """Broker unreachable: exit 1, a clear message, the password hidden."""
    url = f"amqp://guest:s3cret@127.0.0.1:{free_port()}/%2F"
    done = send("user.info", "hello", "--url", url, "--config", str(tmp_path / "none.toml"))
    assert done.returncode == 1
    assert "not sent" in done.stderr and "s3cret" not in done.stderr + done.stdout


def test_send_missing_exchange_exits_1(amqp_url: str, unique_name: Callable[[str], str]) -> None:
    """Publishing to an exchange that does not exist is not confirmed: exit 1."""
    done = send("user.info", "hello", "--url", amqp_url, "--exchange", unique_name("nope"))
    assert done.returncode == 1
    assert "not confirmed" in done.stderr and "guest:guest" not in done.stderr


def test_send_bad_key_exits_2(amqp_url: str) -> None:
    """A key that is not FACILITY.SEVERITY, or an unknown severity, is a usage error."""
    for key in ("nodot", "a.b.c", "user.loud", ".info"):
        done = send(key, "x", "--url", amqp_url)
        assert done.returncode == 2, key
        assert "severity" in done.stderr.lower() or "FACILITY.SEVERITY" in done.stderr
