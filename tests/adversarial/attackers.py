"""Helpers of the attack suite (tests/adversarial): hostile broker users and publishing.

The fixtures built on them (``attacker``, ``make_attacker``, ``attacker_channel``)
are in this directory's conftest.py.

``publish_as(url, exchange, routing_key, bodies, **properties)`` publishes messages
with publisher confirms as whoever ``url`` logs in as.

The broker must be one ``rabbitmqctl`` on this machine administers (the shared
127.0.0.1 broker); otherwise the tests fail saying so.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pika
import pytest

RABBITMQCTL_TIMEOUT = 60
#: What an attacker may do by default: publish anywhere, own only its own queues.
OWN_QUEUES = r"^(attacker-.*|amq\.gen-.*)$"
HOW_TO = (
    "the attack suite creates broker users with `rabbitmqctl add_user`: run it on the "
    "machine of the broker the tests use, as a user rabbitmqctl accepts "
    "(the default 127.0.0.1:5672 broker of `make broker`)"
)


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl -q args``; the test fails with a how-to when it cannot."""
    if shutil.which("rabbitmqctl") is None:
        pytest.fail(f"rabbitmqctl not found: {HOW_TO}", pytrace=False)
    result = subprocess.run(
        ["rabbitmqctl", "-q", *args],
        capture_output=True,
        text=True,
        timeout=RABBITMQCTL_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"rabbitmqctl {' '.join(args[:2])} failed ({result.stderr.strip()}): {HOW_TO}",
            pytrace=False,
        )
    return result.stdout


@dataclass(frozen=True)
class Attacker:
    """A broker user made by a test: its login, password and AMQP URL."""

    user: str
    password: str
    url: str

    def __iter__(self) -> Iterator[str]:
        return iter((self.user, self.password, self.url))


def user_url(amqp_url: str, user: str, password: str) -> str:
    """``amqp_url`` with another login (host, port and vhost kept)."""
    parts = urllib.parse.urlsplit(amqp_url)
    host = parts.hostname or "127.0.0.1"
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}@"
    return urllib.parse.urlunsplit(
        (parts.scheme, f"{netloc}{host}{port}", parts.path, parts.query, "")
    )


def vhost_of(amqp_url: str) -> str:
    """The vhost of an AMQP URL ("/" when it names none)."""
    path = urllib.parse.urlsplit(amqp_url).path
    return urllib.parse.unquote(path[1:]) if len(path) > 1 else "/"


def publish_as(
    url: str, exchange: str, routing_key: str, bodies: list[bytes], **properties: Any
) -> None:
    """Publish ``bodies`` (confirmed) as the login of ``url``.

    ``properties`` go to ``pika.BasicProperties``; a callable value is called with
    the body's index (e.g. ``message_id=lambda i: str(i)``).
    """
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for index, body in enumerate(bodies):
            props = {k: (v(index) if callable(v) else v) for k, v in properties.items()}
            channel.basic_publish(exchange, routing_key, body, pika.BasicProperties(**props))
    finally:
        connection.close()
