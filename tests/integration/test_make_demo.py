"""`make demo` under /bin/sh (dash on Debian): a broker that answers means no Docker.

The recipe runs for real with make; the venv's python is a shim that runs the broker
check for real and only stands in for the demo itself, and `docker`/`docker-compose`
are shims that note they were called.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pika
import pytest

from tests.helpers import ROOT


def fake_tools(tmp: Path) -> tuple[Path, Path, dict[str, str]]:
    """A venv whose python runs ``-c`` for real and fakes ``-m``; docker shims; the env."""
    if shutil.which("make") is None:
        pytest.fail("`make` is needed: apt-get install make", pytrace=False)
    venv = tmp / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(
        f'#!/bin/sh\nif [ "$1" = "-m" ]; then echo "demo ran: $*"; exit 0; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    (venv / ".installed").touch()  # newer than pyproject.toml: make installs nothing
    marker = tmp / "docker-called"
    shims = tmp / "shims"
    shims.mkdir()
    for tool in ("docker", "docker-compose"):
        shim = shims / tool
        shim.write_text(f'#!/bin/sh\necho "{tool} $*" >> {marker}\nexit 1\n')
    for path in (python, shims / "docker", shims / "docker-compose"):
        path.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("LOGROUTER_URL", "MAKEFLAGS")}
    env["PATH"] = f"{shims}:{env['PATH']}"
    env["LOGROUTER_TEST_URL"] = "amqp://unused"  # .ci/ensure-broker: start nothing
    return venv, marker, env


def make_demo(venv: Path, env: dict[str, str], broker: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "make",
            "-C",
            str(ROOT),
            "demo",
            f"VENV={venv}",
            "SHELL=/bin/sh",
            f"DEMO_BROKER={broker}",
            "DEMO_WAIT=1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_make_demo_with_a_broker_answering_never_calls_docker(
    tmp_path: Path, amqp_url: str
) -> None:
    """With RabbitMQ answering, `make demo` under /bin/sh goes straight to the demo:
    exit 0, no Docker call, no "starting one with docker compose"."""
    venv, marker, env = fake_tools(tmp_path)
    params = pika.URLParameters(amqp_url)
    result = make_demo(venv, env, f"{params.host} {params.port}")
    assert result.returncode == 0, result.stderr
    assert "demo ran: -m logrouter.demo --full" in result.stdout
    assert "docker compose" not in result.stderr
    assert not marker.exists(), marker.read_text()


def test_make_demo_with_no_broker_answering_starts_one_with_docker(tmp_path: Path) -> None:
    """The same recipe with nothing listening on the broker address asks Docker compose
    for RabbitMQ (the check really distinguishes the two cases)."""
    venv, marker, env = fake_tools(tmp_path)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = make_demo(venv, env, f"127.0.0.1 {port}")
    assert "starting one with docker compose" in result.stderr
    assert "docker compose up -d --wait rabbitmq" in marker.read_text()
