"""The control service of a sink process: answers ``status`` and ``reload`` over AMQP.

One daemon thread with its own broker connection serves every sink of the
process (``logrouter run`` has several): one ``ControlServer`` per sink, each
answering for its sink. It is apart from the consuming connections, so a sink
busy writing or backing off still answers, and a control hiccup never touches
the data path.

Only requests from ``allow_users`` are answered (default: the logins of the
broker URLs, i.e. the sink's own); the rest are counted, and ``status``
replies carry the counts under ``control``. Reconnects back off with the
shared ``backoff.Backoff``, which starts over after a healthy minute.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping
from typing import Any

import pika.exceptions

from logrouter import log
from logrouter.backoff import Backoff
from logrouter.connection import BrokerSettings, describe_error
from logrouter.control import ControlServer, ReloadResult, SinkStatus
from logrouter.counters import ControlCounters

TICK = 0.3
#: A control connection that stayed up this long starts the retry delays over.
HEALTHY_AFTER = 60.0


class ControlService:
    """Keeps a ``ControlServer`` per running sink on a connection of its own."""

    def __init__(
        self,
        broker: BrokerSettings,
        instances: Callable[[], Mapping[str, str]],
        status: Callable[[str], SinkStatus],
        reload: Callable[[str], ReloadResult],
        *,
        allow_users: Collection[str] = (),
    ) -> None:
        self.broker = broker.with_name("logrouter-control")
        self.instances = instances
        self.status = status
        self.reload = reload
        self.allow_users = frozenset(allow_users or broker.logins())
        self.counters = ControlCounters()
        self.backoff = Backoff(
            first=0.5, cap=broker.reconnect_max, jitter=0.2, healthy_after=HEALTHY_AFTER
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)
        self.log = log.get_logger("control")

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._serve()
            except (OSError, pika.exceptions.AMQPError) as exc:
                self.log.warning("control connection lost", error=describe_error(exc))
            except Exception as exc:  # never let a control bug end the daemon
                self.log.error("control service failed", error=describe_error(exc))
            self._stop.wait(self.backoff.failed())

    def _serve(self) -> None:
        connection: Any = self.broker.connect()  # pika's stubs say time_limit is an int
        self.backoff.up()
        try:
            channel = connection.channel()
            servers: dict[str, ControlServer] = {}
            while not self._stop.is_set():
                wanted = dict(self.instances())
                for name in list(servers):
                    # gone, or its instance id settled (a sink learns it from its journal)
                    if wanted.get(name) != servers[name].identity.instance:
                        servers.pop(name).close()
                for name, instance in wanted.items():
                    if name not in servers:
                        servers[name] = ControlServer(
                            channel,
                            self.broker.exchange,
                            name,
                            instance,
                            self._handlers(name),
                            allow_users=self.allow_users,
                            counters=self.counters,
                        )
                connection.process_data_events(time_limit=TICK)
        finally:
            if connection.is_open:
                connection.close()

    def _handlers(self, name: str) -> dict[str, Callable[[Any], Any]]:
        return {
            "status": lambda _request: {**self.status(name), "control": self.counters.as_dict()},
            "reload": lambda _request: self.reload(name),
        }
