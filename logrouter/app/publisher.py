"""The handler's I/O thread: streaming publisher confirms over one ``Link``.

The thread owns the connection (``Link``) (heartbeats are serviced by its ioloop even when
the app is idle), takes encoded records from the ``Outbox`` oldest first, has
``FrameWriter`` put them on the wire (one message each, or packed by ``BatchPump``
with ``batch="auto"``), keeps them in ``Inflight`` and tells the outbox which ones the broker
confirmed (``multiple`` honoured), nacked (re-published on a fresh channel after a
pause, see ``Link.nacked``) or left unconfirmed when the channel went away (back
in front, in order). While the broker cannot take records (down, unreachable,
blocked by an alarm) the outbox spills them to the spool.

Everything here runs in the I/O thread except ``start``, ``wake``, ``idle``,
``spill_all`` and ``stop``, which only read state or post callbacks to the ioloop.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import pika.spec
from pika.adapters.select_connection import IOLoop, PollEvents

from logrouter.app.batchpump import BatchPump
from logrouter.app.diagnostics import DropReport, report
from logrouter.app.inflight import Inflight
from logrouter.app.link import Link
from logrouter.app.outbox import Outbox
from logrouter.app.packing import DEFAULT_MAX_BYTES, DEFAULT_MAX_RECORDS
from logrouter.connection import BrokerSettings, describe_error

__all__ = ["Publisher", "report"]

TICK = 0.05
PUBLISH_BATCH = 500
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
        self._on_tick = on_tick
        #: True while the thread waits for work with the connection usable: emit()
        #: then wakes it (once per empty -> non-empty transition).
        self.sleeping = False
        self.confirmed = 0
        self.nacked = 0
        self._ioloop = IOLoop()
        self._inflight = Inflight()
        #: batch="auto": a backlog of one routing key goes as one batch message
        self._batch = (
            BatchPump(
                outbox,
                self._inflight,
                self._ioloop,
                linger=linger,
                batch_records=batch_records,
                batch_bytes=batch_bytes,
                on_due=self._pump_now,
            )
            if batch
            else None
        )
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
        #: emit() wakes the thread through this pipe (see ``wake``); closed with the
        #: publisher, never before: a late wake must not write into a reused descriptor
        self._wake_r, self._wake_w = os.pipe()  # not inherited by exec'd children (PEP 446)
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        closing = weakref.finalize(self, _close_all, self._wake_r, self._wake_w)
        closing.atexit = False  # at exit the I/O thread may still poll them: the OS closes them
        self._thread = threading.Thread(target=self._main, name="logrouter-publisher", daemon=True)
        self._stopped = threading.Event()
        self._pump_scheduled = False
        self._last_adopt = time.monotonic()
        self._drops = DropReport()

    # ---- called from other threads -------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Ask the thread to publish (emit calls this only when ``sleeping``).

        A byte down a pipe the ioloop watches, no lock: a signal handler that logs
        may run while its thread is in here already (pika's ``add_callback_threadsafe``
        takes a lock, and a log call from such a signal handler waited on it forever).
        """
        with contextlib.suppress(OSError):  # full: a wake is pending anyway
            os.write(self._wake_w, b"\0")

    @property
    def unavailable(self) -> bool:
        """The broker is known to be unreachable or blocking (an attempt failed)."""
        return self.link.unavailable

    @property
    def connections(self) -> int:
        return self.link.connections

    @property
    def published(self) -> int:
        """Records published so far (``messages`` counts AMQP messages)."""
        return self._inflight.published

    @property
    def messages(self) -> int:
        return self._inflight.messages

    @property
    def unconfirmed(self) -> int:
        """Records published and not confirmed yet."""
        return self._inflight.records

    def idle(self) -> bool:
        """Nothing of ours waits: outbox empty, nothing in hand, nothing in flight."""
        in_hand = self._batch is not None and self._batch.in_hand
        return not (in_hand or len(self._inflight)) and self.outbox.idle()

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
            self._ioloop.add_handler(self._wake_r, self._on_wake, PollEvents.READ)  # type: ignore[arg-type]  # types-pika: IO; pika: a fd
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

    def _on_wake(self, fd: int, _events: int) -> None:
        with contextlib.suppress(OSError):  # BlockingIOError: read them all
            while os.read(fd, 4096):
                pass
        self._pump()

    def _channel_ready(self) -> None:
        self._inflight.next_tag = 1
        self._rewind_inflight()
        self._schedule_pump()

    def _channel_lost(self) -> None:
        self.sleeping = False
        self._rewind_inflight()

    def _rewind_inflight(self) -> None:
        """Unconfirmed records go back to the outbox, in front (their tags are void)."""
        self.outbox.rewind(self._inflight.drain())

    # ---- confirms ---------------------------------------------------------------

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        done = self._inflight.settle(method.delivery_tag, method.multiple)
        if isinstance(method, pika.spec.Basic.Nack):
            records = [record for message in done for record in message]
            self.outbox.retry(records)  # the broker could not store them: publish again
            self.nacked += len(records)
            self.link.nacked()
            return
        self.link.acked()
        self.confirmed += sum(map(len, done))
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
        if self._batch is not None:
            if self._batch.lingering(limit):
                return
            sent = self._batch.publish(writer, limit)
        else:
            sent = 0
            with writer:
                while sent < limit:
                    item = outbox.take()
                    if item is None:
                        break
                    writer.publish(item.routing_key, item.body, item.message_id, item.timestamp)
                    inflight.add((item,))
                    sent += 1
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
            self._drops.check(self.outbox.dropped, now, spool_off=self.outbox.spools is None)
        finally:
            if not self.link.stopping:
                self._ioloop.call_later(TICK, self._tick)

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


def _close_all(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
