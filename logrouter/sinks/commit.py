"""The commit path of one batch: write, journal, reject, ack — or nack and roll back.

The order is the sink's delivery guarantee, so it lives in one place: records
are written and flushed (``sinks/output.py``), rejected copies are confirmed on
``logrouter.rejected`` (``sinks/rejects.py``), the checkpoint and keys are
committed to the crash journal, and only then is the batch acked with one
``multiple=True`` ack. If writing fails nothing is acked: the batch is nacked
back onto the queue, the consumer cancelled and the writer rolled back to the
last commit; the loop (``sinks/consumer.py``) waits the returned delay and
consumes again.

The two fsyncs of a batch (its data, then the journal's commit line) run in the
committer's fsync thread one after the other, each awaited before the next step,
while this thread keeps reading deliveries from the socket into the next batch
(``durable``): the disk's latency and the socket's work overlap, the order of the
steps does not change. The archive's compression of the batch runs there too
(``ArchiveWriter.offload``), before its data is written: zlib releases the GIL.
A connection lost meanwhile is raised once the batch is committed to the journal
and before anything is acked, as if it was lost at the ack; a write error nacks
and rolls back as before.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import gc
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from logrouter import topology
from logrouter.backoff import Backoff
from logrouter.counters import SinkCounters
from logrouter.sinks.batch import Batch
from logrouter.sinks.link import BrokerLink
from logrouter.sinks.output import Output
from logrouter.sinks.rejects import RejectedCopy

#: while an fsync runs, the socket is read for at most this long between checks
WAIT_SLICE = 0.05
_gc_lock = threading.Lock()
_gc_paused = 0
_gc_was_enabled = False


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """No cyclic collection while a batch is committed (sinks of one process share it).

    A batch builds thousands of records (acyclic dicts) that die together when it is
    written; the collector, at its default threshold, would examine and promote each
    several times before that: ~10 % of a file sink's CPU, measured. Objects freed by
    their reference count leave the collector's count too, so after the batch the
    collector is where it was.
    """
    global _gc_paused, _gc_was_enabled
    with _gc_lock:
        if _gc_paused == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_paused += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_paused -= 1
            if _gc_paused == 0 and _gc_was_enabled:
                gc.enable()


class Committer:
    """Commits batches of one sink (see the module docstring); the sink's thread only."""

    def __init__(
        self,
        output: Output,
        link: BrokerLink,
        *,
        counters: SinkCounters,
        backoff: Backoff,
        log: Any,
    ) -> None:
        self.output = output
        self.link = link
        self.counters = counters
        self.backoff = backoff
        self.log = log
        #: the connection failed while an fsync was awaited: raised before the ack
        self.link_error: BaseException | None = None
        self._fsyncs: ThreadPoolExecutor | None = None
        output.durable = self.durable

    def durable(self, step: Callable[[], None]) -> None:
        """Run ``step`` (an fsync, the journal's commit) in the fsync thread and return
        when it is done (raising what it raised), reading deliveries meanwhile."""
        link = self.link
        if self.link_error is not None or link.connection is None:
            step()
            return
        if self._fsyncs is None:
            self._fsyncs = ThreadPoolExecutor(1, thread_name_prefix="sink-fsync")
        future: Future[None] = self._fsyncs.submit(step)
        future.add_done_callback(lambda _done: link.wake())
        while not future.done():
            try:
                link.process(WAIT_SLICE)
            except Exception as exc:  # the connection: the batch is finished first
                self.link_error = exc
                break
        future.result()

    def close(self) -> None:
        """Stop the fsync thread (after the step it runs, if any)."""
        if self._fsyncs is not None:
            self._fsyncs.shutdown(wait=True)
            self._fsyncs = None

    def commit(self, batch: Batch) -> float | None:
        """Commit the oldest deliveries pending in ``batch`` (``Batch.take_slice``): None
        when they are written and acked; after a write error (everything in hand nacked,
        writer rolled back), the seconds to wait before consuming again."""
        with _no_cyclic_gc():
            return self._commit(batch)

    def _commit(self, batch: Batch) -> float | None:
        pending = batch.take_slice()
        last_tag = pending[-1].tag
        output = self.output
        outcome = output.classify(pending)
        try:
            refused, checkpoint, fsync = output.write(outcome)
        except OSError as exc:
            error, self.link_error = self.link_error, None
            rest = batch.take_pending()  # requeued with it: the same disk would refuse them
            if error is not None:  # no link to nack on: roll back, reconnect
                self._roll_back()
                raise error from exc
            last_tag = rest[-1].tag if rest else last_tag
            return self._write_failed(exc, last_tag, len(pending) + len(rest))
        # a record whose target was refused is rejected like an undecodable one
        outcome.rejected.extend((outcome.source(index), reason) for index, reason in refused)
        if self.link_error is None:  # else they are not acked either: redelivered
            try:
                self.link.reject(outcome.rejected, output.config.name, self._rejected)
            except BaseException:  # not journaled: redelivered, so not written either
                self._roll_back()
                raise
        keys = outcome.committed_keys(index for index, _ in refused)
        output.commit(checkpoint, keys, fsync=fsync)
        error, self.link_error = self.link_error, None
        if error is not None:
            raise error  # written and journaled, not acked: as if lost at the ack
        self.link.ack(last_tag)
        for delivery, problem in outcome.miscounted:  # written all the same: say so
            self.log.warning(
                "batch record count differs: records may be missing",
                message_id=getattr(delivery.properties, "message_id", None),
                routing_key=delivery.routing_key,
                problem=problem,
            )
        counters = self.counters
        counters.written += len(outcome.records) - len(refused)
        counters.suppressed += outcome.suppressed
        counters.duplicates += outcome.duplicates
        counters.filtered += outcome.filtered
        counters.acked += len(pending)
        counters.expired += output.take_expired()
        if counters.state == "backing-off":
            self.log.info("writing again", queue=output.config.queue)
        counters.state = "running"
        return None

    def _rejected(self, copy: RejectedCopy) -> None:
        """One log line per copy (a batch's rejected lines are one); the counter counts
        the records in it."""
        self.counters.rejected += copy.records
        self.log.warning("message rejected", to=topology.REJECTED_QUEUE, **copy.log_fields())

    def _write_failed(self, exc: OSError, last_tag: int, count: int) -> float:
        """Nothing of the batch is acked: requeue it, roll back; the delay to wait."""
        code = exc.errno if exc.errno is not None else errno_mod.EIO
        self.counters.write_errors += 1
        self.counters.last_error = str(exc)
        self.counters.state = "backing-off"
        delay = self.backoff.next()
        self.log.error(
            "write failed; records stay on the broker",
            path=getattr(exc, "filename", None),
            errno=errno_mod.errorcode.get(code, str(code)),
            error=str(exc),
            records=count,
            retry_in=delay,
        )
        self.link.pause(last_tag)
        self._roll_back()
        return delay

    def _roll_back(self) -> None:
        try:
            self.output.rollback()
        except OSError as rollback_exc:
            self.log.error("rollback failed", error=str(rollback_exc))
