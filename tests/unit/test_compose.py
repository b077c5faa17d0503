"""docker-compose.yml is valid for Docker Compose and runs every sink of config/routing.toml.

Only the compose file is checked (`config`): the Docker engine itself may be absent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOW_TO_GET_COMPOSE = (
    "Neither `docker-compose` nor the `docker compose` plugin is installed. "
    "Install one: `apt-get install docker-compose` (what `make tools` does as root), "
    "or Docker's compose plugin."
)


def _compose() -> list[str]:
    if tool := shutil.which("docker-compose"):
        return [tool]
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=30
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    pytest.fail(HOW_TO_GET_COMPOSE, pytrace=False)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_compose(), "-f", str(ROOT / "docker-compose.yml"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_file_is_valid() -> None:
    """`docker-compose config -q` accepts docker-compose.yml (exit 0, no complaint)."""
    result = _run("config", "-q")
    assert result.returncode == 0, result.stderr
    assert "ERROR" not in result.stderr


def test_compose_runs_broker_setup_and_one_service_per_sink() -> None:
    """Services are rabbitmq, setup, and exactly the sinks of config/routing.toml, each
    started as `logrouter sink NAME` with ./config mounted and LOGROUTER_URL at rabbitmq."""
    sinks = set(tomllib.loads((ROOT / "config" / "routing.toml").read_text())["sinks"])
    result = _run("config", "--services")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {"rabbitmq", "setup"} | sinks

    rendered = _run("config")
    assert rendered.returncode == 0, rendered.stderr
    for sink in sorted(sinks):
        command = re.compile(rf"-\s+sink\s*\n\s*-\s+{sink}\s*\n")
        assert command.search(rendered.stdout), f"no service runs `logrouter sink {sink}`"
    assert "LOGROUTER_URL: amqp://guest:guest@rabbitmq:5672/%2F" in rendered.stdout
    assert "target: /etc/logrouter" in rendered.stdout or ":/etc/logrouter:ro" in rendered.stdout
    assert "image: rabbitmq:3.10-management" in rendered.stdout
    assert "healthcheck:" in rendered.stdout
