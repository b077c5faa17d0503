"""The handler's I/O thread: one pika SelectConnection, streaming publisher confirms.

The thread owns the connection (heartbeats are serviced by its ioloop even when
the app is idle), takes encoded records from the ``Outbox`` oldest first, has
``FrameWriter`` put them on the wire, and tells the outbox which ones the broker
confirmed (``multiple`` honoured), nacked (re-published on a fresh channel after a
pause, see ``_on_nacked``) or left unconfirmed when the channel went away (back
in front, in order). While the broker cannot take records (down, unreachable,
blocked by an alarm) the outbox spills them to the spool.

Everything here runs in the I/O thread except ``start``, ``wake``, ``idle``,
``spill_all`` and ``stop``, which only read state or post callbacks to the ioloop.
"""

from __future__ import annotations

import contextlib
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pika.spec
from pika.adapters.select_connection import IOLoop, SelectConnection

from logrouter.app.encoder import Encoded
from logrouter.app.frames import FrameWriter
from logrouter.app.outbox import Outbox
from logrouter.app.packing import DEFAULT_MAX_BYTES, DEFAULT_MAX_RECORDS, pack
from logrouter.connection import BrokerSettings, connection_login, describe_error, redact

TICK = 0.05
PUBLISH_BATCH = 500
#: With batching: records taken from the outbox per pump, at most (then I/O is serviced).
PUMP_RECORDS = 2000


def _fields(item: Encoded) -> tuple[str, str, int, bytes]:
    return item.routing_key, item.message_id, item.timestamp, item.body


REPORT_INTERVAL = 30.0
ADOPT_INTERVAL = 30.0
NOT_FOUND = 404


def backoff(attempt: int, *, base: float, cap: float) -> float:
    """Capped exponential delay with jitter: base * 2**attempt, at most ``cap``."""
    return float(min(cap, base * 2.0 ** min(attempt, 10)) * random.uniform(0.5, 1.0))


class Publisher:
    """Owns the I/O thread. Created by the handler, lazily, once per process."""

    def __init__(
        self,
        settings: BrokerSettings,
        outbox: Outbox,
        *,
        app_id: str,
        max_inflight: int = 4000,
        reconnect_max: float = 5.0,
        fast_frames: bool = True,
        batch: bool = False,
        linger: float = 0.005,
        batch_records: int = DEFAULT_MAX_RECORDS,
        batch_bytes: int = DEFAULT_MAX_BYTES,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.app_id = app_id
        self.max_inflight = max_inflight
        self.reconnect_max = reconnect_max
        self.fast_frames = fast_frames
        #: batch="auto": a backlog of one routing key goes as one batch message
        self.batch = batch
        self.linger = max(0.0, linger)
        self.batch_records = max(1, batch_records)
        self.batch_bytes = max(1, batch_bytes)
        self._on_tick = on_tick
        #: records taken from the outbox, not yet in flight (``idle`` must not miss them)
        self._in_hand = False
        self._linger_until: float | None = None
        #: AMQP messages published (``published`` counts records)
        self.messages = 0
        #: True while the thread waits for work with the connection usable: emit()
        #: then wakes it (once per empty -> non-empty transition).
        self.sleeping = False
        self.confirmed = 0
        self.published = 0
        self.nacked = 0
        #: Connections opened so far (1 while the first one lives).
        self.connections = 0
        self._params = list(settings.parameters())
        self._ioloop = IOLoop()
        self._thread = threading.Thread(target=self._main, name="logrouter-publisher", daemon=True)
        self._conn: Any = None
        self._counted_conn: Any = None
        self._channel: Any = None
        self._writer: FrameWriter | None = None
        self._ready = False
        self._blocked = False
        self._stopping = False
        self._stopped = threading.Event()
        self._url_index = 0
        self._failures = 0
        self._down_since: float | None = time.monotonic()
        self._attempted = False
        self._next_tag = 1
        self._nack_streak = 0  # nacks since the last ack: paces the channel reopens
        self._closing_for_nack = False
        #: (delivery tag, the records of that message), oldest first
        self._inflight: deque[tuple[int, tuple[Encoded, ...]]] = deque()
        self._pump_scheduled = False
        self._last_error = ""
        self._missing_exchange_said = False
        self._last_adopt = time.monotonic()
        self._last_drop_report = -REPORT_INTERVAL
        self._reported_dropped = 0

    # ---- called from other threads -------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Ask the thread to publish (emit calls this only when ``sleeping``)."""
        # The ioloop may be closed already (stopping): close() handles the rest then.
        with contextlib.suppress(Exception):
            self._ioloop.add_callback_threadsafe(self._pump)

    @property
    def connected(self) -> bool:
        return self._ready and not self._blocked

    @property
    def unavailable(self) -> bool:
        """The broker is known to be unreachable or blocking (an attempt failed)."""
        return self._attempted and not self.connected

    def idle(self) -> bool:
        """Nothing of ours waits: outbox empty, nothing in hand, nothing in flight."""
        return not (self._in_hand or self._inflight) and self.outbox.idle()

    def spill_all(self, timeout: float) -> None:
        """Move everything in memory to the spool (in the I/O thread); wait up to timeout."""
        done = threading.Event()

        def run() -> None:
            try:
                self.outbox.rewind(self._drain_inflight())
                self.outbox.spill(everything=True)
            finally:
                done.set()

        if self._thread.is_alive():
            try:
                self._ioloop.add_callback_threadsafe(run)
            except Exception:
                return
            done.wait(timeout)

    def stop(self, timeout: float) -> bool:
        """Spool what is left, close the connection, end the thread; True once it ended."""
        if not self._thread.is_alive():
            return True
        try:
            self._ioloop.add_callback_threadsafe(self._begin_stop)
        except Exception:
            return False
        self._stopped.wait(timeout)
        self._thread.join(timeout=0.5)
        return not self._thread.is_alive()

    # ---- connection and channel lifecycle ----------------------------------------

    def _main(self) -> None:
        try:
            self._ioloop.call_later(0, self._connect)
            self._ioloop.call_later(0, self.outbox.adopt)  # spools of dead processes
            self._ioloop.call_later(TICK, self._tick)
            self._ioloop.start()
        except Exception as exc:  # never die silently: report, keep records in the spool
            self._report(f"I/O thread failed: {describe_error(exc)}")
            with contextlib.suppress(Exception):
                self.outbox.spill(everything=True, final=True)
        finally:
            self._stopped.set()
            with contextlib.suppress(Exception):
                self._ioloop.close()

    def _connect(self) -> None:
        if self._stopping:
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

    def _on_open(self, conn: Any) -> None:
        conn.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel: Any) -> None:
        self._channel = channel
        self._closing_for_nack = False
        user = connection_login(self._conn)
        self._writer = FrameWriter(
            self._conn,
            channel,
            self.settings.exchange,
            app_id=self.app_id,
            user_id=user,
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
        self._next_tag = 1
        self.outbox.rewind(self._drain_inflight())
        self._schedule_pump()

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
        if self._stopping:
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
        if self._stopping or conn is None or not conn.is_open:
            return
        if self._closing_for_nack:
            delay = backoff(self._nack_streak, base=0.05, cap=self.reconnect_max)
        else:
            if getattr(exc, "reply_code", None) == NOT_FOUND:
                self._say_exchange_missing()
            else:
                self._note_error(f"channel closed: {describe_error(exc)}")
            self._failures += 1
            delay = backoff(self._failures, base=0.1, cap=self.reconnect_max)
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
        if conn is not None and conn.is_open and self._channel is None and not self._stopping:
            conn.channel(on_open_callback=self._on_channel_open)

    def _lost(self) -> None:
        self._ready = False
        self._blocked = False
        self._writer = None
        self.sleeping = False
        if self._down_since is None:
            self._down_since = time.monotonic()
        self.outbox.rewind(self._drain_inflight())

    def _drain_inflight(self) -> list[Encoded]:
        """Every record in flight (unconfirmed), oldest message first."""
        items = [item for _, records in self._inflight for item in records]
        self._inflight.clear()
        return items

    def _schedule_reconnect(self) -> None:
        if self._stopping:
            return
        # Next URL at once after a failure, back off once the whole list failed.
        cycle_done = self._failures % len(self._params) == 0
        delay = backoff(self._failures, base=0.1, cap=self.reconnect_max) if cycle_done else 0.0
        self._ioloop.call_later(delay, self._connect)

    def _on_blocked(self, _conn: Any, _frame: Any) -> None:
        self._blocked = True
        self.sleeping = False
        if self._down_since is None:
            self._down_since = time.monotonic()
        self._note_error("broker blocked publishing (resource alarm)")

    def _on_unblocked(self, _conn: Any, _frame: Any) -> None:
        self._blocked = False
        if self._ready:
            self._down_since = None
        self._schedule_pump()

    # ---- confirms ---------------------------------------------------------------

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag: int = method.delivery_tag
        inflight = self._inflight
        done: list[Encoded] = []
        if method.multiple:
            while inflight and inflight[0][0] <= tag:
                done.extend(inflight.popleft()[1])
        elif inflight and inflight[0][0] == tag:
            done.extend(inflight.popleft()[1])
        else:
            for position, (t, records) in enumerate(inflight):
                if t == tag:
                    done.extend(records)
                    del inflight[position]
                    break
        if isinstance(method, pika.spec.Basic.Nack):
            self.outbox.retry(done)  # the broker could not store them: publish again
            self.nacked += len(done)
            self._on_nacked()
            return
        self._nack_streak = 0
        self.confirmed += len(done)
        self.outbox.confirmed(done)
        self._schedule_pump()

    def _on_nacked(self) -> None:
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

    # ---- the pump: publish or spill -----------------------------------------------

    def _schedule_pump(self) -> None:
        if not self._pump_scheduled:
            self._pump_scheduled = True
            self._ioloop.call_later(0, self._pump_now)

    def _pump_now(self) -> None:
        self._pump_scheduled = False
        self._pump()

    def _pump(self) -> None:
        try:
            self._pump_inner()
        except Exception as exc:  # keep the thread alive whatever happens
            self._report(f"publisher error: {describe_error(exc)}")

    def _pump_inner(self) -> None:
        outbox = self.outbox
        outbox.sweep()
        writer = self._writer
        channel = self._channel
        if not self.connected or writer is None or channel is None or not channel.is_open:
            since = self._down_since
            outbox.maybe_spill(time.monotonic() - since if since is not None else 0.0)
            return
        inflight = self._inflight
        limit = min(self.max_inflight - len(inflight), PUBLISH_BATCH)
        if self.batch:
            if self._lingering(limit):
                return
            sent = self._publish_packed(writer, limit)
        else:
            sent = 0
            with writer:
                while sent < limit:
                    item = outbox.take()
                    if item is None:
                        break
                    writer.publish(item.routing_key, item.body, item.message_id, item.timestamp)
                    inflight.append((self._next_tag, (item,)))
                    self._next_tag += 1
                    sent += 1
            self.published += sent
            self.messages += sent
        if sent == limit and sent:
            if len(inflight) < self.max_inflight:
                self._schedule_pump()  # more to do: come back after servicing I/O
            return
        if not sent and not outbox.idle():
            return  # capped by in-flight: confirms call us back
        # Nothing left: sleep until emit() wakes us (re-check to not miss a record).
        self.sleeping = True
        if outbox.buffer:
            self.sleeping = False
            self._schedule_pump()

    def _lingering(self, limit: int) -> bool:
        """batch="auto": hold a small backlog up to ``linger`` s while messages are in flight.

        Only while the broker still owes confirms (the app is busy): a record of a
        quiet app goes at once. True when this pump should publish nothing yet.
        """
        if not self.linger or not limit:
            return False
        now = time.monotonic()
        until = self._linger_until
        if until is not None:
            if now < until:
                return True  # the pump scheduled for ``until`` publishes
            self._linger_until = None
            return False
        if self._inflight and len(self.outbox.buffer) < self.batch_records:
            self._linger_until = now + self.linger
            self._ioloop.call_later(self.linger, self._pump_now)
            return True
        return False

    def _publish_packed(self, writer: FrameWriter, limit: int) -> int:
        """Take up to PUMP_RECORDS records and publish them packed; messages published."""
        outbox = self.outbox
        items: list[Encoded] = []
        budget = min(PUMP_RECORDS, limit * self.batch_records)
        self._in_hand = True
        try:
            while len(items) < budget:
                item = outbox.take()
                if item is None:
                    break
                items.append(item)
            if not items:
                return 0
            packets = pack(
                items, _fields, max_records=self.batch_records, max_bytes=self.batch_bytes
            )
            inflight = self._inflight
            done = 0
            try:
                with writer:
                    for packet in packets:
                        if packet.batch:
                            writer.publish_batch(
                                packet.routing_key,
                                packet.body,
                                packet.message_id,
                                packet.timestamp,
                                len(packet.items),
                            )
                        else:
                            writer.publish(
                                packet.routing_key,
                                packet.body,
                                packet.message_id,
                                packet.timestamp,
                            )
                        inflight.append((self._next_tag, tuple(packet.items)))
                        self._next_tag += 1
                        done += 1
            except BaseException:
                # what was not handed to the broker goes back in front, in order
                outbox.rewind(item for packet in packets[done:] for item in packet.items)
                raise
        finally:
            self._in_hand = False
        self.published += len(items)
        self.messages += len(packets)
        # more than a pump's share waiting: report a full pump so that it comes back
        return limit if len(items) >= budget else len(packets)

    # ---- periodic work -------------------------------------------------------------

    def _tick(self) -> None:
        try:
            now = time.monotonic()
            if self._on_tick is not None and not self._stopping:
                self._on_tick()
            if not self._stopping:
                self._pump()
                if now - self._last_adopt >= ADOPT_INTERVAL:
                    self._last_adopt = now
                    self.outbox.adopt()
            dropped = self.outbox.dropped
            if (
                dropped != self._reported_dropped
                and now - self._last_drop_report >= REPORT_INTERVAL
            ):
                self._last_drop_report = now
                count, self._reported_dropped = dropped - self._reported_dropped, dropped
                reason = "spool off" if self.outbox.spools is None else "spool full or unusable"
                self._report(f"dropped {count} records (buffer full, {reason})")
        finally:
            if not self._stopping:
                self._ioloop.call_later(TICK, self._tick)

    def _note_error(self, text: str) -> None:
        if text != self._last_error:
            self._last_error = text
            self._report(text)

    def _report(self, text: str) -> None:
        report(text)

    def _begin_stop(self) -> None:
        self._stopping = True
        try:
            self.outbox.rewind(self._drain_inflight())
            self.outbox.spill(everything=True, final=True)
        except Exception as exc:
            self._report(f"could not spool at exit: {describe_error(exc)}")
        conn = self._conn
        if conn is not None and not (conn.is_closed or conn.is_closing):
            try:
                conn.close()
            except Exception:
                self._ioloop.stop()
            self._ioloop.call_later(1.0, self._ioloop.stop)  # bound the close handshake
        else:
            self._ioloop.stop()


def report(text: str) -> None:
    """The handler's own diagnostics: straight to stderr, never through logging."""
    with contextlib.suppress(Exception):
        sys.stderr.write(f"logrouter handler: {text}\n")
        sys.stderr.flush()
