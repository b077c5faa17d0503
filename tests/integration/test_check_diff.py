"""`logrouter check --diff`: what setup or a reload would change on the live broker."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pytest

CONFIG = """\
[broker]
url = "{url}"
exchange = "{exchange}"

[sinks.{sink}]
type = "file"
match = "{match}"
path = "out/{{facility}}.log"
"""


@pytest.fixture
def names(unique_name: Callable[[str], str], amqp_url: str) -> Iterator[tuple[str, str]]:
    exchange = unique_name("diff")
    sink = unique_name("diffsink").replace(".", "-")
    yield exchange, sink
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.queue_delete(f"logrouter.{sink}")
    for name in (exchange, f"{exchange}.unrouted", f"{exchange}.control"):
        channel.exchange_delete(name)
    channel.queue_delete(f"{exchange}.unrouted")
    connection.close()


def logrouter(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "logrouter", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def write(path: Path, url: str, exchange: str, sink: str, match: str) -> None:
    path.write_text(CONFIG.format(url=url, exchange=exchange, sink=sink, match=match))


def test_diff_shows_missing_queue_then_unchanged_then_changes(
    tmp_path: Path, amqp_url: str, names: tuple[str, str]
) -> None:
    """Before setup the queue is missing; after it, unchanged; an edit shows + and - keys."""
    exchange, sink = names
    config = tmp_path / "routing.toml"
    write(config, amqp_url, exchange, sink, "*.err")

    before = logrouter("check", str(config), "--diff")
    assert before.returncode == 0, before.stderr
    assert f"logrouter.{sink}: missing, would be created" in before.stdout
    assert "  + *.err" in before.stdout

    assert logrouter("setup", str(config)).returncode == 0
    same = logrouter("check", str(config), "--diff")
    assert f"logrouter.{sink}: unchanged" in same.stdout

    write(config, amqp_url, exchange, sink, "*.=info;mail.*")
    changed = logrouter("check", str(config), "--diff")
    assert changed.returncode == 0, changed.stderr
    block = changed.stdout.split(f"logrouter.{sink}:")[-1]
    assert "  + *.info" in block and "  + mail.*" in block
    assert "  - *.err" in block and "  - *.crit" in block


def test_diff_with_broker_down_exits_1_without_password(
    tmp_path: Path, names: tuple[str, str]
) -> None:
    """An unreachable broker is exit 1 with a message that hides the password."""
    exchange, sink = names
    config = tmp_path / "routing.toml"
    write(config, "amqp://guest:s3cret@127.0.0.1:1/%2F", exchange, sink, "*.err")
    result = logrouter("check", str(config), "--diff")
    assert result.returncode == 1
    assert "no broker answered" in result.stderr
    assert "s3cret" not in result.stdout + result.stderr
