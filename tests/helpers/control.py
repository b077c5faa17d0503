"""A control-protocol responder for tests: a ControlServer on its own connection and thread."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import pika

from logrouter import control
from logrouter.connection import login


class Responder:
    """A ControlServer on its own connection, served by a thread's event loop."""

    def __init__(
        self,
        url: str,
        exchange: str,
        sink: str,
        instance: str,
        handlers: Mapping[str, control.Handler],
        *,
        serve: bool = True,
    ) -> None:
        self.url, self.exchange, self.sink, self.instance = url, exchange, sink, instance
        self.handlers, self.serve = handlers, serve
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.server: control.ControlServer | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "responder did not start"
        if self.error:
            raise self.error

    def _run(self) -> None:
        try:
            connection = pika.BlockingConnection(pika.URLParameters(self.url))
            try:
                channel = connection.channel()
                self.server = control.ControlServer(
                    channel,
                    self.exchange,
                    self.sink,
                    self.instance,
                    self.handlers,
                    allow_users=[login(self.url)],
                )
                self.ready.set()
                while not self.stop.is_set():
                    if self.serve:
                        connection.process_data_events(time_limit=0.05)
                    else:
                        self.stop.wait(0.05)  # wedged: never services its queue
            finally:
                connection.close()
        except BaseException as exc:  # surfaced to the test
            self.error = exc
            self.ready.set()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
