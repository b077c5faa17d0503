"""The handler's I/O thread: one pika SelectConnection, streaming publisher confirms.

The thread owns the connection (heartbeats are serviced by its ioloop even when
the app is idle), takes records from the handler's in-memory buffer, encodes
and publishes them, and lets a record go only when the broker confirmed it.
Unconfirmed records are re-published after a reconnect; nacked ones are
retried on a fresh channel after a pause (see ``_on_nacked``). While the
broker cannot take records (down, unreachable, blocked by an alarm), records
beyond half the buffer go to the disk spool; the spool is replayed, merged in
logging order with the buffer, when the broker is back.

Everything here runs in the I/O thread except ``wake``, ``idle``, ``flush``
and ``stop``, which only read counters or post callbacks to the ioloop.
"""

from __future__ import annotations

import contextlib
import random
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pika.frame
import pika.spec
from pika.adapters.select_connection import IOLoop, SelectConnection

from logrouter.app.spool import Spool, SpoolEntry
from logrouter.connection import BrokerSettings, describe_error

#: A record captured by emit(): (seq, record, message, exc_text).
Captured = tuple[int, Any, str, str | None]
#: Encoded record: (run, seq, routing_key, message_id, timestamp, body, spool row id or None).
Outgoing = tuple[int, int, str, str, int, bytes, int | None]
Encoder = Callable[[Captured], SpoolEntry]

TICK = 0.05
PUBLISH_BATCH = 500
SPILL_BATCH = 2000
SPOOL_READ = 1000
OVERFLOW_BATCH = 256
REPORT_INTERVAL = 30.0
#: The I/O thread releases the GIL at least this often (seconds), so that a
#: logging thread never waits a whole switch interval (5 ms) behind it.
YIELD_INTERVAL = 0.0005
_last_yield = [0.0]


def yield_gil(clock: Callable[[], float] = time.perf_counter) -> None:
    """Release the GIL when the I/O thread has held it for YIELD_INTERVAL."""
    now = clock()
    if now - _last_yield[0] >= YIELD_INTERVAL:
        time.sleep(0)
        _last_yield[0] = clock()


_FRAME_END = b"\xce"
#: content_type, content_encoding, delivery_mode, message_id, timestamp, app_id
_PROPERTY_FLAGS = (1 << 15) | (1 << 14) | (1 << 12) | (1 << 7) | (1 << 6) | (1 << 3)
_CONSTANT_PROPS = b"\x10application/json\x05utf-8\x02"  # type, encoding, persistent


def shortstr(value: str) -> bytes:
    """AMQP short string (cut to 255 bytes)."""
    data = value.encode("utf-8")[:255]
    return bytes((len(data),)) + data


def publish_method_frame(channel: int, exchange: str, routing_key: str) -> bytes:
    """Marshaled basic.publish method frame (cached per routing key by the publisher)."""
    method = pika.spec.Basic.Publish(exchange=exchange, routing_key=routing_key)
    return bytes(pika.frame.Method(channel, method).marshal())


def content_frames(
    channel: int, body: bytes, message_id: str, timestamp: int, app_id: bytes
) -> bytes:
    """Content header + one body frame, as pika would marshal them for our properties.

    pika spends most of a publish encoding BasicProperties field by field; ours
    differ only by message_id and timestamp. Bodies larger than one frame take
    pika's own path. Checked byte for byte against pika in tests/test_publisher.py.
    """
    props = _CONSTANT_PROPS + shortstr(message_id) + struct.pack(">Q", timestamp) + app_id
    header = struct.pack(">HHQH", 60, 0, len(body), _PROPERTY_FLAGS) + props
    head = struct.pack(">BHI", 2, channel, len(header)) + header + _FRAME_END
    if not body:
        return head
    return b"".join((head, struct.pack(">BHI", 3, channel, len(body)), body, _FRAME_END))


def _position(item: Outgoing) -> tuple[int, int]:
    """Logging order of an encoded record: (run, seq)."""
    return (item[0], item[1])


class Publisher:
    """Owns the I/O thread. Created by the handler, lazily, once per process."""

    def __init__(
        self,
        settings: BrokerSettings,
        buffer: deque[Captured],
        encoder: Encoder,
        *,
        run: int,
        buffer_size: int,
        spool_opener: Callable[[], Spool | None],
        app_id: str,
        max_inflight: int = 4000,
        reconnect_max: float = 5.0,
    ) -> None:
        self.settings = settings
        self.buffer = buffer
        self.encoder = encoder
        self.run = run
        self.buffer_size = buffer_size
        self.spool: Spool | None = None
        self.spool_ready = threading.Event()
        self._spool_opener = spool_opener
        self.app_id = app_id
        self.max_inflight = max_inflight
        self.reconnect_max = reconnect_max

        #: True while the thread waits for work with the connection usable:
        #: emit() then wakes it (once per empty -> non-empty transition).
        self.sleeping = False
        self.dropped = 0
        #: Drops counted by emit() itself (buffer full, spool off or full).
        self.overflow_dropped = 0
        self.confirmed = 0
        self.published = 0
        self.spooled = 0
        #: Connections opened so far (1 while the first one lives).
        self.connections = 0
        #: Bumped by every writer of the spool; the thread compares to what it read.
        self.spool_writes = 0
        self._spool_seen = 0
        self._count_lock = threading.Lock()
        #: Oldest position written since replay last looked (None: nothing older).
        self._rewind: tuple[int, int] | None = None
        #: Records emit() encoded because the buffer was full, written in batches.
        self.overflow_pending: list[SpoolEntry] = []
        self._overflow_lock = threading.Lock()

        self._ioloop = IOLoop()
        self._thread = threading.Thread(target=self._main, name="logrouter-publisher", daemon=True)
        self._conn: SelectConnection | None = None
        self._counted_conn: SelectConnection | None = None
        self._channel: Any = None
        self._ready = False
        self._blocked = False
        self._stopping = False
        self._stopped = threading.Event()
        self._url_index = 0
        self._failures = 0
        self._down_since: float | None = time.monotonic()
        self._attempted = False
        self._next_tag = 1
        #: Nacks since the last ack: paces the channel reopens they cause.
        self._nack_streak = 0
        #: The current channel is being closed by us because the broker nacked.
        self._closing_for_nack = False
        self.nacked = 0
        self._inflight: deque[tuple[int, Outgoing]] = deque()
        self._acked_early: set[int] = set()
        self._retry: deque[Outgoing] = deque()
        self._spool_ahead: deque[Outgoing] = deque()
        self._spool_cursor: tuple[int, int] = (-1, -1)
        self._spool_done: list[tuple[int, int]] = []
        self._pump_scheduled = False
        self._method_frames: dict[str, bytes] = {}
        self._app_id_bytes = shortstr(app_id)
        self._last_report = 0.0
        self._last_drop_report = -REPORT_INTERVAL
        self._reported_dropped = 0
        self._last_error = ""

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
        """Nothing of ours waits: buffer, in-flight, retries and unread spool all empty."""
        return not (
            self.buffer
            or self._inflight
            or self._retry
            or self._spool_ahead
            or self.spool_writes != self._spool_seen
            or self.overflow_pending
        )

    def pending(self) -> int:
        return len(self.buffer) + len(self._inflight) + len(self._retry)

    def spill_all(self, timeout: float) -> None:
        """Move everything in memory to the spool (from the I/O thread); wait up to timeout."""
        done = threading.Event()

        def run() -> None:
            try:
                self._spill(everything=True)
            finally:
                done.set()

        if self._thread.is_alive():
            try:
                self._ioloop.add_callback_threadsafe(run)
            except Exception:
                return
            done.wait(timeout)

    def stop(self, timeout: float) -> None:
        """Spool what is left, close the connection, end the thread (bounded wait)."""
        if not self._thread.is_alive():
            return
        try:
            self._ioloop.add_callback_threadsafe(self._begin_stop)
        except Exception:
            return
        self._stopped.wait(timeout)
        self._thread.join(timeout=0.5)

    # ---- the I/O thread -----------------------------------------------------------

    def _main(self) -> None:
        try:
            try:
                self.spool = self._spool_opener()
            finally:
                self.spool_ready.set()
            if self.spool is not None and len(self.spool):
                self._spool_seen = -1  # leftovers of an earlier run: replay them first
            self._ioloop.call_later(0, self._connect)
            self._ioloop.call_later(TICK, self._tick)
            self._ioloop.start()
        except Exception as exc:  # never die silently: report, keep records in the spool
            self._report(f"I/O thread failed: {describe_error(exc)}")
            with contextlib.suppress(Exception):
                self._spill(everything=True)
        finally:
            self._stopped.set()
            with contextlib.suppress(Exception):
                self._ioloop.close()

    def _connect(self) -> None:
        if self._stopping:
            return
        urls = self.settings.urls
        index = self._url_index % len(urls)
        params = self.settings._parameters_for(urls[index])
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
        self._method_frames = {}  # they carry the channel number
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
        self._requeue_inflight()
        self._schedule_pump()

    def _on_open_error(self, _conn: Any, exc: BaseException | str) -> None:
        self._conn = None
        self._attempted = True
        self._note_error(
            f"cannot connect: {describe_error(exc) if isinstance(exc, BaseException) else exc}"
        )
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
            delay = self._nack_backoff()
        else:
            # e.g. the exchange does not exist (404): keep records, retry on a new channel.
            self._note_error(f"channel closed: {describe_error(exc)}")
            self._failures += 1
            delay = self._backoff()
        self._ioloop.call_later(delay, self._reopen_channel)

    def _reopen_channel(self) -> None:
        conn = self._conn
        if conn is not None and conn.is_open and self._channel is None and not self._stopping:
            conn.channel(on_open_callback=self._on_channel_open)

    def _lost(self) -> None:
        self._ready = False
        self._blocked = False
        self.sleeping = False
        if self._down_since is None:
            self._down_since = time.monotonic()
        self._requeue_inflight()

    def _requeue_inflight(self) -> None:
        if self._inflight:
            # Back in logging order (nacked records may already wait in _retry).
            items = [item for _, item in self._inflight]
            items.extend(self._retry)
            items.sort(key=_position)
            self._retry = deque(items)
            self._inflight.clear()
            self._acked_early.clear()

    def _nack_backoff(self) -> float:
        """Pause before reopening a channel after nacks: 0.1 s, doubling, up to reconnect_max."""
        cap = min(self.reconnect_max, 0.05 * 2.0 ** min(self._nack_streak, 10))
        return float(cap * random.uniform(0.5, 1.0))

    def _backoff(self) -> float:
        cap = min(self.reconnect_max, 0.1 * 2.0 ** min(self._failures, 10))
        return float(cap * random.uniform(0.5, 1.0))

    def _schedule_reconnect(self) -> None:
        if self._stopping:
            return
        # Next URL at once after a failure, back off once the whole list failed.
        cycle_done = self._failures % len(self.settings.urls) == 0
        delay = self._backoff() if cycle_done else 0.0
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
        multiple: bool = method.multiple
        nack = isinstance(method, pika.spec.Basic.Nack)
        inflight = self._inflight
        done: list[Outgoing] = []
        if multiple:
            while inflight and inflight[0][0] <= tag:
                done.append(inflight.popleft()[1])
            self._acked_early = {t for t in self._acked_early if t > tag}
        elif inflight and inflight[0][0] == tag:
            done.append(inflight.popleft()[1])
        else:
            for position, (t, item) in enumerate(inflight):
                if t == tag:
                    done.append(item)
                    del inflight[position]
                    break
        if nack:
            self._retry.extend(done)  # the broker could not store them: publish again
            self.nacked += len(done)
            self._on_nacked()
            return
        self._nack_streak = 0
        self.confirmed += len(done)
        for item in done:
            if item[6] is not None:
                self._spool_done.append((item[6], len(item[5])))
        self._schedule_pump()

    def _on_nacked(self) -> None:
        """The broker refused records on this channel: reopen the channel after a pause.

        Never re-publish on the same channel at once. A nack may be sticky to the
        channel: RabbitMQ (3.10) nacks every publish of a channel whose first publish
        to a quorum queue found the queue's recorded leader on a dead node (the
        channel's queue client keeps asking that node), so after a failover inside a
        cluster the handler would re-publish the same records in a tight loop and never
        get a confirm. A fresh channel looks the leader up again; the pause (doubling
        while nacks go on) keeps a queue that rejects publishes for good (overflow =
        reject-publish) from turning into a hot loop.
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
        if self._spool_done and self.spool is not None:
            self.spool.delete(self._spool_done)
            self._spool_done = []
        channel = self._channel
        if not self.connected or channel is None or not channel.is_open:
            self._maybe_spill()
            return
        exchange = self.settings.exchange
        app_id = self.app_id
        inflight = self._inflight
        room = self.max_inflight - len(inflight)
        sent = 0
        limit = min(room, PUBLISH_BATCH)
        number = channel.channel_number
        body_max = getattr(self._conn, "_body_max_length", None) or 0
        methods = self._method_frames
        app_id_bytes = self._app_id_bytes
        frames = self._gather_frames()
        try:
            while sent < limit:
                item = self._next_item()
                if item is None:
                    break
                body = item[5]
                if frames is not None and len(body) <= body_max:
                    method = methods.get(item[2])
                    if method is None:
                        method = publish_method_frame(number, exchange, item[2])
                        methods[item[2]] = method
                    frames.append(method)
                    frames.append(content_frames(number, body, item[3], item[4], app_id_bytes))
                else:
                    self._emit_frames(frames)  # keep the order on the wire
                    properties = pika.BasicProperties(
                        content_type="application/json",
                        content_encoding="utf-8",
                        delivery_mode=2,
                        message_id=item[3],
                        timestamp=item[4],
                        app_id=app_id,
                    )
                    channel.basic_publish(exchange, item[2], body, properties)
                    frames = self._gather_frames()
                inflight.append((self._next_tag, item))
                self._next_tag += 1
                sent += 1
        finally:
            self._emit_frames(frames)
        self.published += sent
        if sent == limit and sent:
            if len(inflight) < self.max_inflight:
                self._schedule_pump()  # more to do: come back after servicing I/O
            return
        if not sent and self._has_work():
            return  # capped by in-flight: confirms call us back
        # Nothing left: sleep until emit() wakes us (re-check to not miss a record).
        self.sleeping = True
        if self.buffer:
            self.sleeping = False
            self._schedule_pump()

    def _gather_frames(self) -> list[bytes] | None:
        """Collect the frames of a publish batch to write them with one send().

        pika writes each frame (method, header, body) to the socket on its own:
        three syscalls per record. Uses pika 1.x's ``_adapter_emit_data`` hook;
        without it, publishing works as usual, frame by frame.
        """
        conn: Any = self._conn
        if conn is None or not hasattr(conn, "_adapter_emit_data"):
            return None
        frames: list[bytes] = []
        conn._adapter_emit_data = frames.append
        return frames

    def _emit_frames(self, frames: list[bytes] | None) -> None:
        conn: Any = self._conn
        if frames is None or conn is None:
            return
        with contextlib.suppress(AttributeError):
            del conn._adapter_emit_data  # back to the class's method
        if frames and conn.is_open:
            data = b"".join(frames)
            conn.bytes_sent += len(data)
            conn._adapter_emit_data(data)
        frames.clear()

    def _has_work(self) -> bool:
        return bool(self.buffer or self._retry or self._spool_ahead)

    def _next_item(self) -> Outgoing | None:
        """The oldest record not yet published: retries, then spool and buffer merged."""
        if self._retry:
            return self._retry.popleft()
        ahead = self._spool_ahead
        buffer = self.buffer
        for attempt in range(3):
            if self.overflow_pending:
                self._flush_overflow()  # older than what the buffer holds now
            if self._rewind is not None:
                self._apply_rewind()
            if not ahead and self.spool is not None and self.spool_writes != self._spool_seen:
                self._read_spool()
            if ahead and not (buffer and (self.run, buffer[0][0]) < ahead[0][:2]):
                return ahead.popleft()
            if not buffer:
                return None
            captured = buffer.popleft()
            if attempt < 2 and (self.overflow_pending or self._rewind is not None):
                # emit() spilled an older record meanwhile: take that one first.
                buffer.appendleft(captured)
                continue
            return self._encode(captured)
        return None

    def _read_spool(self) -> None:
        assert self.spool is not None
        writes = self.spool_writes
        rows = self.spool.read(self._spool_cursor, SPOOL_READ)
        if rows:
            last = rows[-1]
            self._spool_cursor = (last.run, last.seq)
            self._spool_ahead.extend(
                (r.run, r.seq, r.routing_key, r.message_id, r.timestamp, r.body, r.id) for r in rows
            )
        else:
            self._spool_seen = writes

    def _encode(self, captured: Captured) -> Outgoing:
        run, seq, key, message_id, timestamp, body = self.encoder(captured)
        return (run, seq, key, message_id, timestamp, body, None)

    def _maybe_spill(self) -> None:
        if self.spool is None:
            return
        down_for = time.monotonic() - self._down_since if self._down_since is not None else 0.0
        if len(self.buffer) > self.buffer_size // 2 or (self.buffer and down_for > 1.0):
            self._spill(everything=False)

    def _spill(self, *, everything: bool) -> None:
        """Move records from memory to the spool, in batches (one transaction each)."""
        if everything:
            self._flush_overflow()
        if self.spool is None:
            if everything and self._stopping:  # nowhere to keep them: count them
                self.dropped += len(self.buffer) + len(self._retry) + len(self._inflight)
            return
        if everything:
            # Unconfirmed records that came from memory go too (duplicates are harmless).
            self._requeue_inflight()
            retry = [item for item in self._retry if item[6] is None]
            self._retry.clear()
            if retry:
                self._store([(i[0], i[1], i[2], i[3], i[4], i[5]) for i in retry])
            self._spool_ahead.clear()
            self._spool_cursor = (-1, -1)
            self._spool_seen = -1
        buffer = self.buffer
        while buffer:
            batch: list[SpoolEntry] = []
            while buffer and len(batch) < SPILL_BATCH:
                batch.append(self.encoder(buffer.popleft()))
                if not len(batch) % 8:
                    yield_gil()
            self._store(batch)
            if not everything and len(buffer) <= self.buffer_size // 4:
                break

    def _store(self, entries: list[SpoolEntry], *, by_caller: bool = False) -> None:
        """Write to the spool (any thread) and account for it."""
        spool = self.spool
        if spool is None or not entries:
            return
        rejected = spool.append(entries)
        first = min((e[0], e[1]) for e in entries)
        with self._count_lock:
            self.spool_writes += 1
            self.spooled += len(entries) - len(rejected)
            if by_caller:
                self.overflow_dropped += len(rejected)
            else:
                self.dropped += len(rejected)
            if self._rewind is None or first < self._rewind:
                self._rewind = first

    def add_overflow(self, entry: SpoolEntry) -> None:
        """emit() with a full buffer: keep ``entry`` for the spool, written in batches.

        The batch is written under the lock, so the I/O thread, which flushes
        pending entries before it takes a newer record from the buffer, never
        publishes past a record that is on its way to the spool.
        """
        with self._overflow_lock:
            pending = self.overflow_pending
            pending.append(entry)
            if len(pending) >= OVERFLOW_BATCH:
                self._store(pending, by_caller=True)
                self.overflow_pending = []

    def _flush_overflow(self) -> None:
        with self._overflow_lock:
            pending, self.overflow_pending = self.overflow_pending, []
            self._store(pending, by_caller=True)

    def _apply_rewind(self) -> None:
        """Rows older than what replay already read were written: read again from there."""
        with self._count_lock:
            rewind, self._rewind = self._rewind, None
        if rewind is not None and rewind <= self._spool_cursor:
            self._spool_cursor = (rewind[0], rewind[1] - 1)
            self._spool_ahead.clear()  # re-read in order (duplicates are harmless)
            self._spool_seen = -1  # and do read, whatever the write counter says

    # ---- periodic work -------------------------------------------------------------

    def _tick(self) -> None:
        try:
            if self.overflow_pending:
                self._flush_overflow()
            if not self._stopping:
                self._pump()
            dropped = self.dropped + self.overflow_dropped
            if dropped != self._reported_dropped:
                now = time.monotonic()
                if now - self._last_drop_report >= REPORT_INTERVAL:
                    self._last_drop_report = now
                    count = dropped - self._reported_dropped
                    self._reported_dropped = dropped
                    reason = "spool off" if self.spool is None else "spool full"
                    self._report(f"dropped {count} records (buffer full, {reason})", now=now)
        finally:
            if not self._stopping:
                self._ioloop.call_later(TICK, self._tick)

    def _note_error(self, text: str) -> None:
        if text != self._last_error:
            self._last_error = text
            self._report(text)

    def _report(self, text: str, now: float | None = None) -> None:
        """Our own diagnostics: straight to stderr, never through logging."""
        self._last_report = time.monotonic() if now is None else now
        try:
            sys.stderr.write(f"logrouter handler: {text}\n")
            sys.stderr.flush()
        except Exception:
            pass

    def _begin_stop(self) -> None:
        self._stopping = True
        try:
            self._spill(everything=True)
        except Exception as exc:
            self._report(f"could not spool at exit: {describe_error(exc)}")
        conn = self._conn
        if conn is not None and not (conn.is_closed or conn.is_closing):
            try:
                conn.close()
            except Exception:
                self._ioloop.stop()
            # Bound the close handshake.
            self._ioloop.call_later(1.0, self._ioloop.stop)
        else:
            self._ioloop.stop()
