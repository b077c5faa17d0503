"""The sink daemon's consumer loop: one sink, one thread, one broker connection.

``Sink.run()`` connects (retrying forever with capped backoff), declares its
exchange, queue and bindings with the same code as ``logrouter setup``, then
consumes with manual acks. Deliveries are batched; a batch is decoded, checked
against the selector and the dedup window, written, flushed (fsync per policy),
committed to the crash journal, and only then acked with one
``multiple=True`` ack. A write error nacks the batch back onto the queue, rolls
the writer back, pauses the consumer and retries with backoff. Messages that
cannot be decoded go to ``logrouter.rejected`` with the reason in a header.

Other threads talk to a running sink only through ``stop()``,
``request_reopen()`` and ``request_apply()``; the pika connection is touched by
the sink's own thread alone.
"""

from __future__ import annotations

import errno as errno_mod
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pika
import pika.exceptions

from logrouter import batchwire, log, topology, wire
from logrouter.backoff import Backoff
from logrouter.connection import BrokerSettings, connection_login, describe_error
from logrouter.counters import SinkCounters
from logrouter.errors import LogrouterError
from logrouter.sinks.base import Writer
from logrouter.sinks.batch import Batch, Delivery, Outcome, classify_pending, suppressed_in
from logrouter.sinks.dedup import DedupKey, DedupWindow
from logrouter.sinks.journal import Journal
from logrouter.sinks.writers import make_writer

if TYPE_CHECKING:
    from logrouter.config import SinkConfig

#: The loop returns to its own code at least this often (heartbeats, signals, batches).
TICK = 0.2
#: ``--burst``: the queue counts as drained after this long without a delivery.
BURST_IDLE = 1.0
REASON_HEADER = "x-logrouter-reason"
#: On a rejected line of a batch: the message_id of the batch it came from.
BATCH_HEADER = "x-logrouter-batch"
#: A batch declaring more records than this counts as this many toward a sink batch.
MAX_RECORDS_PER_MESSAGE = 10_000
SINK_HEADER = "x-logrouter-sink"
ROUTING_KEY_HEADER = "x-logrouter-routing-key"
#: On a rejected copy: the broker-validated user_id of the message the sink rejected.
USER_HEADER = "x-logrouter-user-id"
#: Set by ``logrouter rejected replay``: the user_id of the message before it was rejected.
ORIGINAL_USER_HEADER = "x-logrouter-original-user"
#: Headers whose value on a rejected copy is the sink's word: a sender's own are dropped.
SINK_OWNED_HEADERS = (
    REASON_HEADER,
    BATCH_HEADER,
    SINK_HEADER,
    ROUTING_KEY_HEADER,
    USER_HEADER,
    ORIGINAL_USER_HEADER,
)

WriterFactory = Callable[["SinkConfig", str], Writer]


def _default_writer(sink: SinkConfig, instance: str) -> Writer:
    return make_writer(sink, instance=instance)


class _WithPeers:
    """The dedup window plus the keys other instances on this host committed."""

    def __init__(self, own: DedupWindow[DedupKey], peers: frozenset[DedupKey]) -> None:
        self.own = own
        self.peers = peers

    def __contains__(self, message_id: object) -> bool:
        return message_id in self.own or message_id in self.peers


class _Reconnect(LogrouterError):
    """Leave the session and connect again (broker cancelled us, channel gone)."""


class Sink:
    """One sink daemon (see the module docstring). ``run()`` is the thread body."""

    def __init__(
        self,
        config: SinkConfig,
        broker: BrokerSettings,
        *,
        state_dir: Path,
        burst: bool = False,
        instance: str | None = None,
        writer_factory: WriterFactory = _default_writer,
        backoff_cap: float = 30.0,
    ) -> None:
        self.config = config
        self.broker = broker
        self.state_dir = state_dir
        self.burst = burst
        # Stable across restarts (host + journal slot), so a restarted sink appends to the
        # files its journal knows; two live processes of one sink never share a slot.
        self._instance = instance
        self.instance = instance or f"{socket.gethostname()}-{os.getpid()}"
        self.counters = SinkCounters()
        self.consuming = threading.Event()
        self.drained = False
        self.failed: str | None = None
        self.heartbeat = time.monotonic()
        self.log = log.get_logger("sink", sink=config.name)
        self._writer_factory = writer_factory
        self._writer: Writer | None = None
        self._journal = Journal(state_dir, config.queue, keep_ids=max(config.dedup_window, 1))
        self._dedup: DedupWindow[DedupKey] = DedupWindow(config.dedup_window)
        self._batch = Batch(self._batch_limit(config), config.batch_interval)
        self._stop = threading.Event()
        self._requests: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._backoff = Backoff(cap=backoff_cap)
        self._last_fsync = time.monotonic()
        self._last_delivery = time.monotonic()
        self._connection: Any = None
        self._channel: Any = None
        self._reject_channel: Any = None
        self._consumer_tag: str | None = None
        self._cancelled = False

    # ---- other threads -------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to write and ack the batch in hand, then return."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_reopen(self) -> None:
        """SIGHUP: reopen the writer's files in the sink's thread."""
        self._requests.put(("reopen", None))

    def request_apply(self, new: SinkConfig) -> None:
        """Apply a new config of this sink in the sink's thread (see ``apply``)."""
        self._requests.put(("apply", new))

    # ---- the thread body -----------------------------------------------

    def run(self) -> None:
        """Consume until stopped (or drained with ``burst``); never raises."""
        try:
            try:
                self._recover()
            except Exception as exc:  # journal locked, rollback refused, bad output
                self.failed = describe_error(exc)
                self.counters.last_error = self.failed
                self.log.error("sink cannot start", error=self.failed)
                return
            while not self._stop.is_set():
                try:
                    self._session()
                except (OSError, pika.exceptions.AMQPError, _Reconnect) as exc:
                    self._lost(describe_error(exc))
                except Exception as exc:  # a bug must not end the daemon
                    self.log.exception("sink loop failed", error=describe_error(exc))
                    self._lost(describe_error(exc))
                else:
                    break
                finally:
                    self._close_connection()
                if self._stop.is_set():
                    break
                self._pause(self._backoff.next(), serviced=False)
        finally:
            self._shutdown()

    def _recover(self) -> None:
        """Open the journal: roll the writer back to the last commit, seed the dedup window."""
        state = self._journal.open()
        self._dedup.extend(state.ids)
        self.instance = self._instance or f"{socket.gethostname()}-{self._journal.slot}"
        self._refuse_shared_file()
        self._writer = self._writer_factory(self.config, self.instance)
        if state.checkpoint:
            self._writer.rollback(state.checkpoint)
        self._journal.recovered()
        self._hook(self._writer)
        self.log.info(
            "sink starting",
            queue=self.config.queue,
            journal=str(self._journal.path),
            remembered_ids=len(state.ids),
            broker=self.broker.describe(),
        )

    def _refuse_shared_file(self) -> None:
        """A second instance of a file sink on this host needs its own files.

        Each instance's crash journal rolls files back to the sizes *it* committed; on
        a file another instance appends to, that would cut the other's acked lines.
        """
        path = getattr(self.config.options, "path", "")
        if self.config.type == "file" and self._journal.slot != 0 and "{instance}" not in path:
            raise RuntimeError(
                f"sink {self.config.name!r} already runs on this host and this second "
                f"instance would append to the same files ({path}); put {{instance}} in "
                "its path so every instance writes its own files"
            )

    def _hook(self, writer: Writer) -> None:
        """Let a writer with files journal each file's size before a batch first writes it."""
        if hasattr(writer, "intent"):
            writer.intent = self._journal.intent

    def _lost(self, error: str) -> None:
        self.consuming.clear()
        self._batch.take_pending()  # unacked: the broker redelivers them
        self.counters.reconnects += 1
        self.counters.last_error = error
        if self.counters.state != "reconnecting":
            self.log.warning("broker connection lost, retrying", error=error)
        self.counters.state = "reconnecting"

    def _session(self) -> None:
        self.counters.state = "reconnecting" if self.counters.reconnects else "starting"
        self.heartbeat = time.monotonic()
        connection: Any = self.broker.with_name(f"logrouter sink {self.config.name}").connect()
        self._connection = connection
        channel = connection.channel()
        self._channel = channel
        topology.declare_exchange(channel, self.broker)
        diff = topology.declare_queue(channel, self.broker, topology.queue_spec(self.config))
        if diff.added or diff.removed:
            self.log.info(
                "bindings reconciled", added=sorted(diff.added), removed=sorted(diff.removed)
            )
        self._reject_channel = connection.channel()
        self._reject_channel.confirm_delivery()
        self._consume()
        self._backoff.reset()
        self.log.info("consuming", queue=self.config.queue, prefetch=self.config.prefetch)
        while True:
            before = self.counters.received
            wait = 0.0 if len(self._batch) else TICK
            connection.process_data_events(time_limit=wait)
            # Group commit: write as soon as the socket has nothing more for us right now
            # (low latency when idle, big batches under load), or when full or due.
            idle = self.counters.received == before
            now = time.monotonic()
            self.heartbeat = now
            if self._cancelled:
                raise _Reconnect(f"broker cancelled the consumer of {self.config.queue}")
            self._handle_requests()
            flush = len(self._batch) and (idle or self._batch.due(now) or self._stop.is_set())
            if flush and not self._commit():
                continue
            if self._stop.is_set():
                self.counters.state = "stopping"
                return
            if self.burst and not len(self._batch) and now - self._last_delivery > BURST_IDLE:
                self.drained = True
                self.log.info("queue drained", queue=self.config.queue)
                return

    def _consume(self) -> None:
        channel = self._channel
        channel.basic_qos(prefetch_count=self.config.prefetch)
        self._cancelled = False
        channel.add_on_cancel_callback(self._on_cancel)
        self._consumer_tag = channel.basic_consume(self.config.queue, self._on_message)
        self._last_delivery = time.monotonic()
        self.counters.state = "running"
        self.consuming.set()

    def _on_cancel(self, _frame: Any) -> None:
        self._cancelled = True

    def _on_message(self, _channel: Any, method: Any, properties: Any, body: bytes) -> None:
        now = time.monotonic()
        self._last_delivery = now
        self.counters.received += 1
        records = 1
        if batchwire.is_batch(getattr(properties, "content_type", None)):  # count records
            declared = batchwire.declared_count(getattr(properties, "headers", None))
            records = min(max(declared or 1, 1), MAX_RECORDS_PER_MESSAGE)
        self._batch.append(
            Delivery(
                method.delivery_tag,
                method.routing_key,
                body,
                properties,
                bool(method.redelivered),
                time.time(),
            ),
            now,
            records,
        )

    # ---- one batch -----------------------------------------------------

    def _commit(self) -> bool:
        """Write, flush, journal, reject, ack one batch. False after a write error."""
        assert self._writer is not None
        last_tag = self._batch.last_tag
        pending = self._batch.take_pending()
        # writers that take ready JSON lines (archive) get the bodies that already are records
        write_lines = getattr(self._writer, "write_lines", None)
        dedup: Any = self._dedup
        if any(delivery.redelivered for delivery in pending):
            dedup = _WithPeers(self._dedup, self._journal.peer_ids())
        outcome = classify_pending(
            pending,
            self.config.selector.matches,
            dedup,
            keep_lines=write_lines is not None,
            max_record_bytes=self.config.max_record_bytes,
        )
        fsync = self._fsync_due()
        self._journal.sync_intents = fsync
        refused: list[tuple[int, str]] = []
        try:
            if outcome.records:
                if write_lines is not None:
                    refused = write_lines(outcome.records, outcome.lines)
                else:
                    refused = self._writer.write(outcome.records)
            self._writer.flush(fsync)
            checkpoint = self._writer.checkpoint()
        except OSError as exc:
            self._write_failed(exc, last_tag, len(pending))
            return False
        if fsync:
            self._last_fsync = time.monotonic()
        # a record whose target was refused is rejected like an undecodable one
        outcome.rejected.extend((outcome.sources[index], reason) for index, reason in refused)
        self._reject(outcome)
        keys = outcome.committed_keys(index for index, _ in refused)
        self._journal.commit(checkpoint, keys, fsync=fsync)
        self._dedup.extend(keys)
        self._channel.basic_ack(delivery_tag=last_tag, multiple=True)
        counters = self.counters
        counters.written += len(outcome.records) - len(refused)
        counters.suppressed += suppressed_in(outcome.records)
        counters.duplicates += outcome.duplicates
        counters.filtered += outcome.filtered
        counters.acked += len(pending)
        take_expired = getattr(self._writer, "take_expired", None)
        if take_expired is not None:
            counters.expired += take_expired()
        if counters.state == "backing-off":
            self.log.info("writing again", queue=self.config.queue)
        counters.state = "running"
        return True

    def _fsync_due(self) -> bool:
        policy = self.config.fsync
        if policy == "batch":
            return True
        if policy == "interval":
            return time.monotonic() - self._last_fsync >= self.config.fsync_interval
        return False

    def _reject(self, outcome: Outcome) -> None:
        """Publish rejected messages to logrouter.rejected (confirmed) with the reason.

        The copy's ``user_id`` is the sink's login; the sender's (validated by the
        broker, or none) goes in ``x-logrouter-user-id``. Headers in
        ``SINK_OWNED_HEADERS`` are the sink's alone: a sender's are dropped, so none
        can pass itself off as another login.
        """
        sink_login = connection_login(self._connection)
        for delivery, reason in outcome.rejected:
            props = delivery.properties or pika.BasicProperties()
            headers = {
                key: value
                for key, value in (getattr(props, "headers", None) or {}).items()
                if key not in SINK_OWNED_HEADERS
            }
            headers[REASON_HEADER] = reason
            headers[SINK_HEADER] = self.config.name
            headers[ROUTING_KEY_HEADER] = delivery.routing_key
            user_id = getattr(props, "user_id", None)
            if isinstance(user_id, str):  # the broker checked it is the sender's login
                headers[USER_HEADER] = user_id
            content_type, message_id = props.content_type, props.message_id
            if delivery.line:
                # one line of a batch: rejected alone, as a single-record message
                headers.pop(batchwire.RECORDS_HEADER, None)
                headers[BATCH_HEADER] = message_id
                content_type, message_id = wire.CONTENT_TYPE, delivery.record_id
            new_props = pika.BasicProperties(
                content_type=content_type,
                content_encoding=props.content_encoding,
                headers=headers,
                delivery_mode=2,
                message_id=message_id,
                timestamp=props.timestamp,
                app_id=props.app_id,
                type=props.type,
                user_id=sink_login,
            )
            self._reject_channel.basic_publish(
                topology.REJECTED_QUEUE,
                delivery.routing_key,
                delivery.body,
                new_props,
                mandatory=True,
            )
            self.counters.rejected += 1
            self.log.warning(
                "message rejected",
                routing_key=delivery.routing_key,
                reason=reason,
                to=topology.REJECTED_QUEUE,
            )

    def _write_failed(self, exc: OSError, last_tag: int, count: int) -> None:
        """Nothing of the batch is acked: requeue it, roll back, pause, retry later."""
        assert self._writer is not None
        code = exc.errno if exc.errno is not None else errno_mod.EIO
        self.counters.write_errors += 1
        self.counters.last_error = str(exc)
        self.counters.state = "backing-off"
        delay = self._backoff.next()
        self.log.error(
            "write failed; records stay on the broker",
            path=getattr(exc, "filename", None),
            errno=errno_mod.errorcode.get(code, str(code)),
            error=str(exc),
            records=count,
            retry_in=delay,
        )
        self._channel.basic_nack(delivery_tag=last_tag, multiple=True, requeue=True)
        if self._consumer_tag is not None:
            self._channel.basic_cancel(self._consumer_tag)
            self._consumer_tag = None
        try:
            self._writer.rollback(self._journal.rollback_point())
        except OSError as rollback_exc:
            self.log.error("rollback failed", error=str(rollback_exc))
        self._pause(delay, serviced=True)
        if not self._stop.is_set():
            self._consume()
            self.counters.state = "backing-off"  # until a batch is written

    def _pause(self, seconds: float, *, serviced: bool) -> None:
        """Wait ``seconds`` (stop-aware); keep the connection's heartbeats serviced."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if serviced and self._connection is not None:
                self._connection.process_data_events(time_limit=min(TICK, left))
            else:
                self._stop.wait(min(TICK, left))
            self.heartbeat = time.monotonic()
            self._handle_requests()

    # ---- reopen / reload -----------------------------------------------

    def _handle_requests(self) -> None:
        while True:
            try:
                kind, value = self._requests.get_nowait()
            except queue.Empty:
                return
            if kind == "reopen" and self._writer is not None:
                try:
                    self._writer.reopen()
                    self.log.info("files reopened")
                except OSError as exc:
                    self.log.error("reopen failed", error=str(exc))
            elif kind == "apply":
                try:
                    self.apply(value)
                except Exception as exc:  # keep the old settings on any error
                    self.log.error("new config not applied, keeping the old", error=repr(exc))

    def apply(self, new: SinkConfig) -> None:
        """Switch to ``new`` settings of this sink (in the sink thread).

        Bindings are reconciled, prefetch/batch/dedup settings take effect, and a
        changed output gets a new writer (the batch in hand is written first).
        """
        old = self.config
        if new == old:
            return
        if new.queue != old.queue:
            raise ValueError(f"queue name changed ({old.queue} -> {new.queue}): restart the sink")
        if len(self._batch) and self._channel is not None:
            self._commit()
        if self._channel is not None:
            topology.declare_queue(self._channel, self.broker, topology.queue_spec(new))
            if new.prefetch != old.prefetch:
                self._channel.basic_qos(prefetch_count=new.prefetch)
        if new.type != old.type or new.options != old.options:
            fresh = self._writer_factory(new, self.instance)
            self._hook(fresh)
            if self._writer is not None:
                self._writer.close()
            self._writer = fresh
        self._batch.size = self._batch_limit(new)
        self._batch.interval = new.batch_interval
        self._dedup.resize(new.dedup_window)
        self.config = new
        self.log.info("config applied", match=new.match, type=new.type)

    @staticmethod
    def _batch_limit(config: SinkConfig) -> int:
        # A batch larger than the prefetch window would only ever fill by timeout.
        return max(1, min(config.batch_size, config.prefetch or config.batch_size))

    # ---- shutdown ------------------------------------------------------

    def _close_connection(self) -> None:
        connection, self._connection = self._connection, None
        self._channel = self._reject_channel = None
        self._consumer_tag = None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception as exc:  # already broken: nothing to save
                self.log.debug("close failed", error=describe_error(exc))

    def _shutdown(self) -> None:
        self.consuming.clear()
        try:
            if self._writer is not None:
                self._writer.close()
        except OSError as exc:
            self.log.error("closing the writer failed", error=str(exc))
        self._journal.close()
        self.counters.state = "stopped"
        self.log.info("sink stopped", **self.counters.snapshot())
