"""Fixtures of the attack suite: a second, hostile broker user.

Fixtures (names are stable: other attack modules in this directory use them):

* ``attacker``: ``(user, password, url)`` of a RabbitMQ user made for this test
  with ``rabbitmqctl add_user`` (unique name), allowed to publish anywhere, to
  declare, bind and read only queues named ``attacker-*`` / ``amq.gen-*``, and
  deleted after the test. Not an administrator.
* ``make_attacker``: the factory behind it, for other permission sets:
  ``make_attacker(configure=..., write=..., read=...)`` -> ``Attacker``.
* ``attacker_channel``: an open pika channel logged in as ``attacker``.

Helpers to import (``from attackers import ...``): ``Attacker``, ``publish_as``,
``rabbitmqctl``, ``user_url``, ``OWN_QUEUES``.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest

from tests.adversarial.attackers import (
    OWN_QUEUES,
    RABBITMQCTL_TIMEOUT,
    Attacker,
    rabbitmqctl,
    user_url,
    vhost_of,
)

__all__ = ["attacker", "attacker_channel", "make_attacker"]


@pytest.fixture
def make_attacker(amqp_url: str) -> Iterator[Callable[..., Attacker]]:
    """Factory of hostile broker users (see the module docstring); all deleted afterwards."""
    made: list[str] = []
    vhost = vhost_of(amqp_url)

    def make(configure: str = OWN_QUEUES, write: str = ".*", read: str = OWN_QUEUES) -> Attacker:
        user = f"attacker-{secrets.token_hex(4)}"
        password = secrets.token_hex(12)  # a urlsafe one may start with '-' (a rabbitmqctl option)
        rabbitmqctl("add_user", user, password)
        made.append(user)
        rabbitmqctl("set_permissions", "-p", vhost, user, configure, write, read)
        return Attacker(user, password, user_url(amqp_url, user, password))

    yield make
    for user in made:
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_user", user],
            capture_output=True,
            timeout=RABBITMQCTL_TIMEOUT,
            check=False,
        )


@pytest.fixture
def attacker(make_attacker: Callable[..., Attacker]) -> Attacker:
    """A hostile user with the default rights; unpacks as ``(user, password, url)``."""
    return make_attacker()


@pytest.fixture
def attacker_channel(attacker: Attacker) -> Iterator[Any]:
    """A pika channel (confirms on) logged in as ``attacker``."""
    connection = pika.BlockingConnection(pika.URLParameters(attacker.url))
    channel = connection.channel()
    channel.confirm_delivery()
    try:
        yield channel
    finally:
        if connection.is_open:
            connection.close()
