"""The handler's I/O thread: streaming publisher confirms over one ``Link``.

The thread owns the connection (``Link``) (heartbeats are serviced by its ioloop even when
the app is idle), takes encoded records from the ``Outbox`` oldest first, has
``FrameWriter`` put them on the wire, and tells the outbox which ones the broker
confirmed (``multiple`` honoured), nacked (re-published on a fresh channel after a
pause, see ``Link.nacked``) or left unconfirmed when the channel went away (back
in front, in order). While the broker cannot take records (down, unreachable,
blocked by an alarm) the outbox spills them to the spool.

Everything here runs in the I/O thread except ``start``, ``wake``, ``idle``,
``spill_all`` and ``stop``, which only read state or post callbacks to the ioloop.
"""

from __future__ import annotations

import contextlib
import operator
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pika.spec
from pika.adapters.select_connection import IOLoop

from logrouter.app.encoder import Encoded
from logrouter.app.frames import FrameWriter
from logrouter.app.link import Link
from logrouter.app.outbox import Outbox
from logrouter.app.packing import DEFAULT_MAX_BYTES, DEFAULT_MAX_RECORDS, pack
from logrouter.connection import BrokerSettings, describe_error

TICK = 0.05
PUBLISH_BATCH = 500
#: With batching: records taken from the outbox per pump, at most (then I/O is serviced).
PUMP_RECORDS = 2000
#: What the packer needs of an encoded record: (routing_key, message_id, timestamp, body).
_fields = operator.attrgetter("routing_key", "message_id", "timestamp", "body")
REPORT_INTERVAL = 30.0
ADOPT_INTERVAL = 30.0


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
        self.outbox = outbox
        self.max_inflight = max_inflight
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
        self._ioloop = IOLoop()
        self.link = Link(
            self._ioloop,
            settings,
            app_id=app_id,
            reconnect_max=reconnect_max,
            fast_frames=fast_frames,
            on_ready=self._channel_ready,
            on_lost=self._channel_lost,
            on_unblocked=self._schedule_pump,
            on_confirm=self._on_confirm,
            report=report,
        )
        self._thread = threading.Thread(target=self._main, name="logrouter-publisher", daemon=True)
        self._stopped = threading.Event()
        self._next_tag = 1
        #: (delivery tag, the records of that message), oldest first
        self._inflight: deque[tuple[int, tuple[Encoded, ...]]] = deque()
        self._pump_scheduled = False
        self._last_adopt = time.monotonic()
        self._last_drop_report = -REPORT_INTERVAL
        self._reported_dropped = 0
        self._drops_since: float | None = None  # first drop not reported yet

    # ---- called from other threads -------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Ask the thread to publish (emit calls this only when ``sleeping``)."""
        # The ioloop may be closed already (stopping): close() handles the rest then.
        with contextlib.suppress(Exception):
            self._ioloop.add_callback_threadsafe(self._pump)

    @property
    def unavailable(self) -> bool:
        """The broker is known to be unreachable or blocking (an attempt failed)."""
        return self.link.unavailable

    @property
    def connections(self) -> int:
        return self.link.connections

    def idle(self) -> bool:
        """Nothing of ours waits: outbox empty, nothing in hand, nothing in flight."""
        return not (self._in_hand or self._inflight) and self.outbox.idle()

    def spill_all(self, timeout: float) -> None:
        """Move everything in memory to the spool (in the I/O thread); wait up to timeout."""
        done = threading.Event()

        def run() -> None:
            try:
                self._rewind_inflight()
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

    # ---- the I/O thread ----------------------------------------------------------

    def _main(self) -> None:
        try:
            self._ioloop.call_later(0, self.link.connect)
            self._ioloop.call_later(0, self.outbox.adopt)  # spools of dead processes
            self._ioloop.call_later(TICK, self._tick)
            self._ioloop.start()
        except Exception as exc:  # never die silently: report, keep records in the spool
            report(f"I/O thread failed: {describe_error(exc)}")
            with contextlib.suppress(Exception):
                self.outbox.spill(everything=True, final=True)
        finally:
            self._stopped.set()
            with contextlib.suppress(Exception):
                self._ioloop.close()

    def _channel_ready(self) -> None:
        self._next_tag = 1
        self._rewind_inflight()
        self._schedule_pump()

    def _channel_lost(self) -> None:
        self.sleeping = False
        self._rewind_inflight()

    def _rewind_inflight(self) -> None:
        """Unconfirmed records go back to the outbox, in front (their tags are void)."""
        self.outbox.rewind(item for _, records in self._inflight for item in records)
        self._inflight.clear()

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
            self.link.nacked()
            return
        self.link.acked()
        self.confirmed += len(done)
        self.outbox.confirmed(done)
        self._schedule_pump()

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
            report(f"publisher error: {describe_error(exc)}")

    def _pump_inner(self) -> None:
        outbox = self.outbox
        outbox.sweep()
        writer = self.link.writer
        if writer is None or not self.link.connected:
            outbox.maybe_spill(self.link.down_for())
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
        budget = min(PUMP_RECORDS, limit * self.batch_records)
        self._in_hand = True
        try:
            items = outbox.take_many(budget)
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
            if self._on_tick is not None and not self.link.stopping:
                self._on_tick()
            if not self.link.stopping:
                self._pump()
                if now - self._last_adopt >= ADOPT_INTERVAL:
                    self._last_adopt = now
                    self.outbox.adopt()
            self._report_drops(now)
        finally:
            if not self.link.stopping:
                self._ioloop.call_later(TICK, self._tick)

    def _report_drops(self, now: float) -> None:
        """Drops on stderr: a burst is summed for a second, then at most every 30 s."""
        dropped = self.outbox.dropped
        if dropped == self._reported_dropped:
            return
        if self._drops_since is None:
            self._drops_since = now
        if now - self._drops_since < 1.0 or now - self._last_drop_report < REPORT_INTERVAL:
            return
        self._last_drop_report, self._drops_since = now, None
        count, self._reported_dropped = dropped - self._reported_dropped, dropped
        reason = "spool off" if self.outbox.spools is None else "spool full or unusable"
        report(f"dropped {count} records (buffer full, {reason})")

    def _begin_stop(self) -> None:
        self.link.stopping = True
        try:
            self._rewind_inflight()
            self.outbox.spill(everything=True, final=True)
        except Exception as exc:
            report(f"could not spool at exit: {describe_error(exc)}")
        try:
            closing = self.link.close()
        except Exception:
            closing = False
        if closing:
            self._ioloop.call_later(1.0, self._ioloop.stop)  # bound the close handshake
        else:
            self._ioloop.stop()


def report(text: str) -> None:
    """The handler's own diagnostics: straight to stderr, never through logging."""
    with contextlib.suppress(Exception):
        sys.stderr.write(f"logrouter handler: {text}\n")
        sys.stderr.flush()
