"""Depths of the queues records are routed aside to, for the metrics endpoint.

``QueueProbe(settings, queues)()`` returns ``{queue: ready count}`` (None for a
queue that does not exist), asking the broker at most every ``max_age``
seconds on a short-lived connection of its own; when the broker cannot be
asked, the last answer (or nothing) is returned: a scrape never fails for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import replace

import pika.exceptions

from logrouter.connection import BrokerSettings, BrokerUnavailable
from logrouter.topology import REJECTED_QUEUE

MAX_AGE = 10.0
TIMEOUT = 2.0


def aside_queues(exchange: str) -> tuple[tuple[str, str], ...]:
    """(label, queue) of ``logrouter.rejected`` and ``<exchange>.unrouted``."""
    return (("rejected", REJECTED_QUEUE), ("unrouted", f"{exchange}.unrouted"))


class QueueProbe:
    """Cached ``queue.declare`` (passive) counts of a few queues."""

    def __init__(
        self, settings: BrokerSettings, queues: Sequence[str], max_age: float = MAX_AGE
    ) -> None:
        self.settings = replace(settings, connect_timeout=min(settings.connect_timeout, TIMEOUT))
        self.queues = tuple(queues)
        self.max_age = max_age
        self._lock = threading.Lock()
        self._last: dict[str, int | None] = {}
        self._when = -max_age

    def __call__(self) -> dict[str, int | None]:
        with self._lock:
            if time.monotonic() - self._when >= self.max_age:
                self._when = time.monotonic()
                with suppress(BrokerUnavailable, pika.exceptions.AMQPError, OSError):
                    self._last = self._ask()
            return dict(self._last)

    def _ask(self) -> dict[str, int | None]:
        from logrouter.commands.stats import queue_depths

        connection = self.settings.with_name("logrouter-metrics").connect()
        try:
            depths = queue_depths(connection, self.queues)
        finally:
            with suppress(Exception):
                connection.close()
        return {name: depth.ready for name, depth in depths.items()}
