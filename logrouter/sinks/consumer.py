"""The sink daemon's consumer loop: one sink, one thread, one broker connection.

``Sink.run()`` connects (retrying forever with capped backoff), declares its
exchange, queue and bindings with the same code as ``logrouter setup``, then
consumes with manual acks. Deliveries are batched; a batch is decoded, checked
against the selector and the dedup window, written, flushed (fsync per policy),
committed to the crash journal, and only then acked with one
``multiple=True`` ack. A write error nacks the batch back onto the queue, rolls
the writer back, pauses the consumer and retries with backoff. Messages that
cannot be decoded go to ``logrouter.rejected`` with the reason in a header.

This module is the loop: when to connect, consume, commit, back off and apply
a reload. The parts it drives each have a module of their own:
``sinks/link.py`` the broker connection and channels, ``sinks/commit.py`` the
order of one batch's commit (write, reject, journal, ack; nack and roll back on
a write error), ``sinks/output.py`` the writer, crash journal and dedup window
(including redelivery checks against peer instances), ``sinks/rejects.py`` the
rejected copies and their headers.

Other threads talk to a running sink only through ``stop()``,
``request_reopen()`` and ``request_apply()``; the pika connection is touched by
the sink's own thread alone.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pika.exceptions

from logrouter import batchwire, log
from logrouter.backoff import Backoff
from logrouter.connection import BrokerSettings, describe_error
from logrouter.counters import SinkCounters
from logrouter.errors import LogrouterError
from logrouter.sinks.base import Writer
from logrouter.sinks.batch import Batch, Delivery
from logrouter.sinks.commit import Committer
from logrouter.sinks.link import BrokerLink
from logrouter.sinks.output import Output, WriterFactory
from logrouter.sinks.writers import make_writer

if TYPE_CHECKING:
    from logrouter.config import SinkConfig

#: The loop returns to its own code at least this often (heartbeats, signals, batches).
TICK = 0.2
#: ``--burst``: the queue counts as drained after this long without a delivery.
BURST_IDLE = 1.0
#: ``--burst``: after this long without a delivery (and then at most this often) the sink
#: asks the broker whether its queue still holds ready messages; none: drained sooner.
BURST_CHECK = 0.2


def _default_writer(sink: SinkConfig, instance: str) -> Writer:
    return make_writer(sink, instance=instance)


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
        backoff_cap: float | None = None,
        fast_deliveries: bool = True,
    ) -> None:
        self.broker = broker
        self.state_dir = state_dir
        self.burst = burst
        self.counters = SinkCounters()
        self.consuming = threading.Event()
        self.drained = False
        self.failed: str | None = None
        self.heartbeat = time.monotonic()
        self.log = log.get_logger("sink", sink=config.name)
        self.output = Output(
            config, state_dir=state_dir, instance=instance, writer_factory=writer_factory
        )
        self.link = BrokerLink(broker, self.log, fast_deliveries=fast_deliveries)
        self._batch = Batch(self._batch_limit(config), config.batch_interval)
        self._stop = threading.Event()
        self._requests: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._handling = False  # in _handle_requests (a commit's pause must not nest it)
        self._backoff = Backoff(cap=broker.reconnect_max if backoff_cap is None else backoff_cap)
        self.committer = Committer(
            self.output, self.link, counters=self.counters, backoff=self._backoff, log=self.log
        )
        self._last_delivery = time.monotonic()
        self._last_check = 0.0

    @property
    def config(self) -> SinkConfig:
        """The settings this sink runs with (a reload changes them in the sink's thread)."""
        return self.output.config

    @property
    def instance(self) -> str:
        """This instance's name: host and journal slot once the journal is open."""
        return self.output.instance

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
                    self.link.close()
                if self._stop.is_set():
                    break
                self._pause(self._backoff.next(), serviced=False)
        finally:
            self._shutdown()

    def _recover(self) -> None:
        state = self.output.recover()
        self.log.info(
            "sink starting",
            queue=self.config.queue,
            journal=str(self.output.journal.path),
            remembered_ids=len(state.ids),
            broker=self.broker.describe(),
        )

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
        self.link.open(self.config)
        self._consume()
        self._backoff.reset()
        self.log.info(
            "consuming",
            queue=self.config.queue,
            prefetch=self.config.prefetch,
            fast_deliveries=self.link.fast,
        )
        while True:
            before = self.counters.received
            self.link.process(0.0 if len(self._batch) else TICK)
            # Group commit: write as soon as the socket has nothing more for us right now
            # (low latency when idle, big batches under load), or when full or due.
            idle = self.counters.received == before
            now = time.monotonic()
            self.heartbeat = now
            if self.link.cancelled:
                raise _Reconnect(f"broker cancelled the consumer of {self.config.queue}")
            self._handle_requests()
            stopping = self._stop.is_set()
            if stopping:  # nothing more comes: what is in hand (prefetch at most) is committed
                self.link.cancel()
            flush = len(self._batch) and (idle or self._batch.due(now) or stopping)
            if flush and not self._commit():
                continue
            if stopping and not len(self._batch):
                self.counters.state = "stopping"
                return
            if self.burst and not len(self._batch) and self._drained(now):
                self.drained = True
                self.log.info("queue drained", queue=self.config.queue)
                return

    def _drained(self, now: float) -> bool:
        """``--burst``, nothing in hand: no delivery for ``BURST_IDLE`` s, or for
        ``BURST_CHECK`` s and the queue holds no ready message.

        The queue's count is asked twice on the consuming channel: a delivery the queue
        sent before its first answer is on the wire before the second one (the channel
        handles its mailbox in order), so it is received before we look again.
        """
        idle = now - self._last_delivery
        if idle > BURST_IDLE:
            return True
        if idle < BURST_CHECK or now - self._last_check < BURST_CHECK:
            return False
        self._last_check = now
        received = self.counters.received
        queue = self.config.queue
        if self.link.ready(queue) or self.link.ready(queue):
            return False
        self.link.process(0.0)  # hand over deliveries that came with the answers
        return self.counters.received == received and not len(self._batch)

    def _consume(self) -> None:
        self.link.consume(self.config, self._on_message)
        self._last_delivery = time.monotonic()
        self.counters.state = "running"
        self.consuming.set()

    def _on_message(self, _channel: Any, method: Any, properties: Any, body: bytes) -> None:
        now = time.monotonic()
        self._last_delivery = now
        self.counters.received += 1
        records = 1
        if batchwire.is_batch(getattr(properties, "content_type", None)):
            # the lines it holds (what decoding and journaling it costs), not what its
            # header declares: a sender can declare 1 and send 99,999
            records = batchwire.line_count(body)
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
        """Commit the batch in hand (``sinks/commit.py``). False after a write error,
        once the back-off is over and the consumer runs again."""
        delay = self.committer.commit(self._batch)
        if delay is None:
            return True
        self._pause(delay, serviced=True)
        if not self._stop.is_set():
            self._consume()
            self.counters.state = "backing-off"  # until a batch is written
        return False

    def _pause(self, seconds: float, *, serviced: bool) -> None:
        """Wait ``seconds`` (stop-aware); keep the connection's heartbeats serviced."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if serviced and self.link.connection is not None:
                self.link.process(min(TICK, left))
            else:
                self._stop.wait(min(TICK, left))
            self.heartbeat = time.monotonic()
            self._handle_requests()

    # ---- reopen / reload -----------------------------------------------

    def _handle_requests(self) -> None:
        """Run the requests of other threads, in order. Not again from inside one (a
        commit's back-off pause services requests): the rest waits for the loop, so a
        newer config is never applied before an older one."""
        if self._handling:
            return
        self._handling = True
        try:
            while True:
                try:
                    kind, value = self._requests.get_nowait()
                except queue.Empty:
                    return
                if kind == "reopen":
                    try:
                        if self.output.reopen():
                            self.log.info("files reopened")
                    except OSError as exc:
                        self.log.error("reopen failed", error=str(exc))
                elif kind == "apply":
                    self.apply(value)
        finally:
            self._handling = False

    def apply(self, new: SinkConfig) -> None:
        """Switch to ``new`` settings of this sink (in the sink thread).

        Bindings are reconciled, prefetch/batch/dedup settings take effect, and a
        changed output gets a new writer (the batch in hand is written first). A config
        that cannot be applied is logged and the old one kept; what committing the batch
        in hand raises is raised (the session's to handle: reconnect, redelivery), never
        taken for "not applied" with its deliveries neither acked nor nacked.
        """
        old = self.config
        if new == old:
            return
        if new.queue != old.queue:
            self._not_applied(f"queue name changed ({old.queue} -> {new.queue}): restart the sink")
            return
        self._commit_in_hand()
        try:
            if self.link.is_open:
                self.link.reconcile(old, new)
            self.output.apply(new)
        except Exception as exc:  # keep the old settings on any error
            self._not_applied(repr(exc))
            return
        self._batch.size = self._batch_limit(new)
        self._batch.interval = new.batch_interval
        self.log.info("config applied", match=new.match, type=new.type)

    def _not_applied(self, error: str) -> None:
        self.log.error("new config not applied, keeping the old", error=error)

    def _commit_in_hand(self) -> None:
        """Commit the deliveries in hand now, slice by slice; not those read meanwhile (a
        busy queue never runs dry: this would never return)."""
        batch = self._batch
        if not len(batch):
            return
        end = batch.last_tag
        while len(batch) and batch.pending[0].tag <= end and self.link.is_open:
            if not self._commit():
                return

    @staticmethod
    def _batch_limit(config: SinkConfig) -> int:
        # A batch larger than the prefetch window would only ever fill by timeout.
        return max(1, min(config.batch_size, config.prefetch or config.batch_size))

    # ---- shutdown ------------------------------------------------------

    def _shutdown(self) -> None:
        self.consuming.clear()
        self.committer.close()
        try:
            self.output.close()
        except OSError as exc:
            self.log.error("closing the writer failed", error=str(exc))
        self.counters.state = "stopped"
        self.log.info("sink stopped", **self.counters.snapshot())
