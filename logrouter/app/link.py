"""The I/O thread's link to the broker: connection and channel lifecycle.

``Link`` connects over the URL list (the next URL at once, capped exponential
back-off with jitter once the whole list failed), opens a confirm-mode channel,
follows alarms (blocked/unblocked), reopens a channel the broker closed (once
saying so on stderr when the exchange is missing), and cycles the channel after
nacks. It tells its ``Publisher`` when the channel is ready (``writer`` is then the
``FrameWriter`` to publish through), when it is gone, when an alarm cleared,
and each confirm.
Runs entirely in the I/O thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pika.exceptions
from pika.adapters.select_connection import IOLoop, SelectConnection

from logrouter.app.frames import FrameWriter
from logrouter.backoff import delay as backoff
from logrouter.connection import BrokerSettings, connection_login, describe_error, redact

NOT_FOUND = 404


#: The reconnect and channel-reopen delays: random in [half, all] of the doubled delay.
JITTER = 0.5


class Link:
    """One connection and its confirm-mode channel, kept open forever."""

    def __init__(
        self,
        ioloop: IOLoop,
        settings: BrokerSettings,
        *,
        app_id: str,
        reconnect_max: float,
        fast_frames: bool,
        on_ready: Callable[[], None],
        on_lost: Callable[[], None],
        on_unblocked: Callable[[], None],
        on_confirm: Callable[[Any], None],
        report: Callable[[str], None],
    ) -> None:
        self._ioloop = ioloop
        self.settings = settings
        self.app_id = app_id
        self.reconnect_max = reconnect_max
        self.fast_frames = fast_frames
        self._on_ready = on_ready
        self._on_lost_cb = on_lost
        self._on_unblocked_cb = on_unblocked
        self._on_confirm = on_confirm
        self._report = report
        self._params = list(settings.parameters())
        #: Connections opened so far (1 while the first one lives).
        self.connections = 0
        self.writer: FrameWriter | None = None
        self.stopping = False
        self._conn: Any = None
        self._counted_conn: Any = None
        self._channel: Any = None
        self._ready = False
        self._blocked = False
        self._url_index = 0
        self._failures = 0
        self._down_since: float | None = time.monotonic()
        self._attempted = False
        self._nack_streak = 0  # nacks since the last ack: paces the channel reopens
        self._closing_for_nack = False
        self._last_error = ""
        self._missing_exchange_said = False

    @property
    def connected(self) -> bool:
        """A confirm-mode channel is open and the broker does not block publishing."""
        channel = self._channel
        return self._ready and not self._blocked and channel is not None and channel.is_open

    @property
    def unavailable(self) -> bool:
        """The broker is known to be unreachable or blocking (an attempt failed)."""
        return self._attempted and not (self._ready and not self._blocked)

    def down_for(self) -> float:
        """Seconds since the broker stopped taking records (0 while it takes them)."""
        return 0.0 if self._down_since is None else time.monotonic() - self._down_since

    def acked(self) -> None:
        self._nack_streak = 0

    def connect(self) -> None:
        if self.stopping:
            return
        params = self._params[self._url_index % len(self._params)]
        try:
            conn = SelectConnection(
                parameters=params,
                on_open_callback=self._on_open,
                on_open_error_callback=self._on_open_error,
                on_close_callback=self._on_closed,
                custom_ioloop=self._ioloop,
            )
        except Exception as exc:
            self._on_open_error(None, exc)
            return
        conn.add_on_connection_blocked_callback(self._on_blocked)
        conn.add_on_connection_unblocked_callback(self._on_unblocked)
        self._conn = conn

    def close(self) -> bool:
        """Begin closing (stop); False when there was nothing open to close."""
        self.stopping = True
        conn = self._conn
        if conn is None or conn.is_closed or conn.is_closing:
            return False
        conn.close()
        return True

    def _on_open(self, conn: Any) -> None:
        conn.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel: Any) -> None:
        self._channel = channel
        self._closing_for_nack = False
        self.writer = FrameWriter(
            self._conn,
            channel,
            self.settings.exchange,
            app_id=self.app_id,
            user_id=connection_login(self._conn),
            fast=self.fast_frames,
        )
        channel.add_on_close_callback(self._on_channel_closed)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_confirm_ok)

    def _on_confirm_ok(self, _frame: Any) -> None:
        if self._conn is not self._counted_conn:  # not a channel reopened after nacks
            self._counted_conn = self._conn
            self.connections += 1
        self._ready = True
        self._failures = 0
        self._down_since = None
        self._attempted = True
        self._on_ready()

    def _on_open_error(self, _conn: Any, exc: BaseException | str) -> None:
        self._conn = None
        self._attempted = True
        reason = describe_error(exc) if isinstance(exc, BaseException) else redact(str(exc))
        self._note_error(f"cannot connect: {reason}")
        self._url_index += 1
        self._failures += 1
        self._schedule_reconnect()

    def _on_closed(self, _conn: Any, exc: BaseException) -> None:
        self._conn = None
        self._channel = None
        self._lost()
        if self.stopping:
            self._ioloop.stop()
            return
        self._note_error(f"connection lost: {describe_error(exc)}")
        self._failures += 1
        self._schedule_reconnect()

    def _on_channel_closed(self, channel: Any, exc: BaseException) -> None:
        if self._channel is not channel and self._channel is not None:
            return  # an older channel: the current one is not affected
        self._channel = None
        self._lost()
        conn = self._conn
        if self.stopping or conn is None or not conn.is_open:
            return
        if self._closing_for_nack:
            delay = backoff(self._nack_streak, first=0.05, cap=self.reconnect_max, jitter=JITTER)
        else:
            if getattr(exc, "reply_code", None) == NOT_FOUND:
                self._say_exchange_missing()
            else:
                self._note_error(f"channel closed: {describe_error(exc)}")
            self._failures += 1
            delay = backoff(self._failures, first=0.1, cap=self.reconnect_max, jitter=JITTER)
        self._ioloop.call_later(delay, self._reopen_channel)

    def _say_exchange_missing(self) -> None:
        """Once per process: records are kept (spooled) and retried meanwhile."""
        if not self._missing_exchange_said:
            self._missing_exchange_said = True
            self._report(
                f"exchange {self.settings.exchange!r} does not exist on"
                f" {self.settings.describe()}: records are kept and retried; create it with"
                f" `logrouter setup` (or `logrouter setup CONFIG` with [broker] exchange ="
                f" {self.settings.exchange!r})"
            )

    def _reopen_channel(self) -> None:
        conn = self._conn
        if conn is not None and conn.is_open and self._channel is None and not self.stopping:
            conn.channel(on_open_callback=self._on_channel_open)

    def _lost(self) -> None:
        self._ready = False
        self._blocked = False
        self.writer = None
        if self._down_since is None:
            self._down_since = time.monotonic()
        self._on_lost_cb()

    def _schedule_reconnect(self) -> None:
        if self.stopping:
            return
        # Next URL at once after a failure, back off once the whole list failed.
        cycle_done = self._failures % len(self._params) == 0
        delay = (
            backoff(self._failures, first=0.1, cap=self.reconnect_max, jitter=JITTER)
            if cycle_done
            else 0.0
        )
        self._ioloop.call_later(delay, self.connect)

    def _on_blocked(self, _conn: Any, _frame: Any) -> None:
        self._blocked = True
        if self._down_since is None:
            self._down_since = time.monotonic()
        self._note_error("broker blocked publishing (resource alarm)")

    def _on_unblocked(self, _conn: Any, _frame: Any) -> None:
        self._blocked = False
        if self._ready:
            self._down_since = None
        self._on_unblocked_cb()

    def nacked(self) -> None:
        """The broker refused records on this channel: reopen the channel after a pause.

        Never re-publish on the same channel at once. A nack may be sticky to the
        channel: RabbitMQ (3.10) nacks every publish of a channel whose first publish
        to a quorum queue found the queue's recorded leader on a dead node, so after a
        failover inside a cluster the handler would re-publish the same records in a
        tight loop and never get a confirm. A fresh channel looks the leader up again;
        the pause (doubling while nacks go on) keeps a queue that rejects publishes for
        good (overflow = reject-publish) from turning into a hot loop.
        """
        channel = self._channel
        if self._closing_for_nack or channel is None:
            return
        self._nack_streak += 1
        self._closing_for_nack = True
        self._ready = False  # publish nothing more on it
        self._note_error("broker rejected publishes (nack): re-publishing on a new channel")
        if channel.is_open:
            channel.close()
        else:
            self._on_channel_closed(channel, pika.exceptions.ChannelClosed(0, "nacked"))

    def _note_error(self, text: str) -> None:
        if text != self._last_error:
            self._last_error = text
            self._report(text)
