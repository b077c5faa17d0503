"""``logrouter.RabbitHandler``: a logging handler that never blocks the app.

``emit()`` = prepare + enqueue: it freezes what cannot wait (the formatted
message and traceback) and puts the record in the ``Outbox`` (no I/O unless the
buffer is full). Its options are parsed into ``HandlerOptions`` (options.py).
The I/O thread (``Publisher``) encodes (``Encoder``), publishes
with streaming confirms (``FrameWriter``), spools to disk while the broker is
away and replays in order. Data flows one way: handler -> encoder -> outbox ->
publisher -> frames. See docs/handler.md.
"""

from __future__ import annotations

import atexit
import contextlib
import encodings.idna  # noqa: F401  (see the comment below the imports)
import itertools
import logging
import os
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from typing import Any

from logrouter import severity as sev
from logrouter import wire
from logrouter.app import levelcache
from logrouter.app.diagnostics import report
from logrouter.app.encoder import Captured, Encoder, Frozen, freeze
from logrouter.app.options import (
    DEFAULT_BUFFER,
    DEFAULT_LINGER_MS,
    DEFAULT_SPOOL_MAX,
    HandlerOptions,
    default_spool_path,
)
from logrouter.app.outbox import Outbox
from logrouter.app.packing import DEFAULT_MAX_BYTES, DEFAULT_MAX_RECORDS
from logrouter.app.publisher import Publisher
from logrouter.app.ratelimit import RateLimiter, key_function
from logrouter.app.spools import SpoolDir
from logrouter.connection import DEFAULT_EXCHANGE

# The I/O thread must import nothing lazily: a fork taken while a thread holds a
# module's import lock leaves that lock held forever in the child. pika resolves
# host names in a helper thread, and ``getaddrinfo`` imports ``encodings.idna`` on
# first use; under ``gunicorn --preload`` a worker forked during that import never
# connected (issue 11). Hence the import above, in the importing thread.

__all__ = ["DEFAULT_BUFFER", "RabbitHandler", "default_spool_path"]

#: Loggers whose records are never published (no feedback loop, FIELD-NOTE 7).
IGNORED_LOGGERS = frozenset({"pika", "logrouter"})
_IGNORED_PREFIXES = tuple(IGNORED_LOGGERS)


def _ignored(name: str) -> bool:
    """True for the records of the handler's own stack (pika, logrouter): never sent."""
    return name.startswith(_IGNORED_PREFIXES) and name.partition(".")[0] in IGNORED_LOGGERS


#: Seconds between two looks for due rate-limit summaries from emit (the I/O thread
#: also looks every tick).
SUMMARY_CHECK = 0.5

_handlers: weakref.WeakSet[RabbitHandler] = weakref.WeakSet()
#: State a forked child inherited: kept referenced, never closed (see _after_fork).
_inherited: list[object] = []


class RabbitHandler(logging.Handler):
    """Publish every record to a RabbitMQ topic exchange as ``facility.severity``.

    Every option is a plain string or number (dictConfig, fileConfig, Django).
    Raises ValueError / BadURL for a bad option at construction, never later.
    The parsed options read as attributes (``handler.linger``, ``handler.settings``).
    """

    def __init__(
        self,
        url: str | None = None,
        exchange: str = DEFAULT_EXCHANGE,
        facility: str = sev.DEFAULT_FACILITY,
        facilities: Mapping[str, str] | str | None = None,
        app: str | None = None,
        buffer_size: int | str = DEFAULT_BUFFER,
        spool: str | None = None,
        spool_max_bytes: int | str = DEFAULT_SPOOL_MAX,
        flush_timeout: float | str = 5.0,
        max_message: int | str = wire.DEFAULT_MAX_MESSAGE,
        heartbeat: int | str = 10,
        reconnect_max: float | str = 5.0,
        fast_frames: bool | str = True,
        batch: str = "off",
        linger_ms: float | str = DEFAULT_LINGER_MS,
        batch_records: int | str = DEFAULT_MAX_RECORDS,
        batch_bytes: int | str = DEFAULT_MAX_BYTES,
        rate_limit: float | str | None = None,
        burst: int | str | None = None,
        rate_limit_key: str | None = None,
        rate_limit_exempt: str | None = None,
        rate_limit_interval: float | str | None = None,
        level: int | str = logging.NOTSET,
    ) -> None:
        # Every parameter but ``level`` is an option: HandlerOptions reads them by name.
        given = {k: v for k, v in locals().items() if k not in ("self", "level", "__class__")}
        super().__init__(level)
        self.options = HandlerOptions.from_options(given)
        self._closed = False
        self._forked = False
        self._fresh_state()
        _handlers.add(self)

    def __getattr__(self, name: str) -> Any:
        """The parsed options, read as attributes as before (``handler.linger``)."""
        options = self.__dict__.get("options")
        if options is None or name not in HandlerOptions.__dataclass_fields__:
            raise AttributeError(name)
        return getattr(options, name)

    def _fresh_state(self) -> None:
        """Per-process state: created at init and again in a forked child."""
        run = time.time_ns()
        self._seq = itertools.count(1)
        opts = self.options
        encoder = Encoder(
            host=opts.host,
            app=opts.app,
            facility=opts.facility,
            facilities=opts.facilities,
            max_message=opts.max_message,
            run=run,
            id_prefix=uuid.uuid4().hex[:16],
        )
        spools = (
            None
            if opts.spool_path is None
            else SpoolDir.for_process(opts.spool_path, opts.spool_max_bytes, run=run)
        )
        self._outbox = Outbox(encoder, spools, buffer_size=opts.buffer_size, report=report)
        self._publisher: Publisher | None = None
        limit = opts.rate_limit
        self._limiter = (
            None
            if limit is None
            else RateLimiter(limit, key_function(limit.key, encoder.key_words))
        )
        self._emit_inline = self._limiter is None and type(self).emit is RabbitHandler.emit
        #: The limiter's fast no (keys no ignored logger's records share).
        self._suppress_known = (
            self._limiter.suppress_known
            if self._limiter is not None and limit is not None and limit.key != "facility.severity"
            else None
        )
        #: The limiter's summaries are looked for (in emit) from this ``created`` on.
        self._summaries_at = 0.0
        self._start_lock = threading.Lock()

    # ---- public ----------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Records lost because the buffer was full and the spool off, full or unusable."""
        return self._outbox.dropped

    @property
    def stats(self) -> dict[str, int]:
        pub = self._publisher
        return {
            "buffered": len(self._outbox.buffer),
            "published": pub.published if pub else 0,
            "confirmed": pub.confirmed if pub else 0,
            "messages": pub.messages if pub else 0,
            "spooled": self._outbox.spooled,
            "dropped": self.dropped,
            "suppressed": self._limiter.suppressed if self._limiter else 0,
        }

    @property
    def suppressed_by_key(self) -> dict[str, int]:
        """Records the rate limit suppressed, by key, as its summaries reported them."""
        return dict(self._limiter.by_key) if self._limiter else {}

    def handle(self, record: logging.LogRecord) -> bool:
        """As logging.Handler.handle, minus the lock: emit() is thread-safe by itself.

        A flood's suppressed call stops here, at the cost of a dict lookup.
        """
        if self._emit_inline and not self.filters:
            # emit() inlined (no rate limit, emit not overridden): a fifth of its cost
            try:
                name = record.name
                if name.startswith(_IGNORED_PREFIXES) and _ignored(name):
                    return False
                self._enqueue(freeze(next(self._seq), record))
            except RecursionError:
                raise
            except Exception:
                self.handleError(record)
            return True
        suppress_known = self._suppress_known
        if suppress_known is not None and not self.filters:
            try:
                if record.created >= self._summaries_at:
                    self._summarize(record.created)
                name = record.name  # _ignored's first test inline: a flood's every call
                ours = name.startswith(_IGNORED_PREFIXES) and _ignored(name)
                if not ours and suppress_known(record):
                    return False
            except RecursionError:
                raise
            except Exception:  # a summary's spool write failed: as in emit, never to the app
                self.handleError(record)
                return False
        if self.filters and not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        """Freeze the record and put it in the outbox; never blocks, never raises."""
        try:
            if _ignored(record.name):
                return
            limiter = self._limiter
            if limiter is not None:
                if record.created >= self._summaries_at:
                    self._summarize(record.created)
                if not limiter.allow(record):  # before any encoding: a cheap no
                    return
            self._enqueue(freeze(next(self._seq), record))
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Wait up to ``flush_timeout`` for every record to be confirmed; spool the rest.

        Pending rate-limit summaries are sent first.
        """
        if self._closed:
            return
        self._summarize(time.time(), everything=True)
        self._wait(self.options.flush_timeout, spool_rest=True)

    def close(self) -> None:
        """Flush (bounded), spool what is left, stop the I/O thread. Idempotent."""
        if self._closed:
            super().close()
            return
        with contextlib.suppress(Exception):  # closing must not fail on a summary
            self._summarize(time.time(), everything=True)
        self._closed = True
        try:
            pub = self._publisher
            stopped = True
            if pub is not None:
                self._wait(self.options.flush_timeout, spool_rest=False)
                if not pub.idle():  # said: the app's last records are not on the broker yet
                    self._say_left(pub)
                stopped = pub.stop(timeout=2.0)
                if not stopped:
                    report("closing: the I/O thread did not stop within 2 s")
            if stopped:
                self._outbox.close()
        finally:
            super().close()

    # ---- internals -----------------------------------------------------------------

    def _wait(self, timeout: float, *, spool_rest: bool) -> None:
        pub = self._publisher
        if pub is None:
            return
        deadline = time.monotonic() + timeout
        pause = 0.001
        while not pub.idle():
            if pub.unavailable or time.monotonic() >= deadline:
                # The broker is away (or slow): keep the records on disk, don't wait.
                if spool_rest:
                    pub.spill_all(timeout=max(1.0, deadline - time.monotonic()))
                return
            if pub.sleeping and self._outbox.buffer:
                pub.sleeping = False
                pub.wake()
            time.sleep(pause)
            pause = min(pause * 2, 0.02)

    def _say_left(self, pub: Publisher) -> None:
        left = len(self._outbox.buffer) + pub.unconfirmed
        where = (
            f"they go to the spool {self.options.spool_path}"
            if self.options.spool_path is not None
            else "the spool is off: they are lost"
        )
        report(
            f"closing: about {left} records not confirmed within flush_timeout"
            f" {self.options.flush_timeout:g} s (broker slow or away); {where}"
        )

    def _summarize(self, now: float, *, everything: bool = False) -> None:
        """Put the rate limit's due summary records in the outbox (any thread)."""
        limiter = self._limiter
        if limiter is None:
            return
        self._summaries_at = now + SUMMARY_CHECK
        if not limiter.active:
            return
        for suppression in limiter.due(now, everything=everything):
            record = suppression.record(limiter.settings)
            self._enqueue(Captured(next(self._seq), record, record.getMessage(), None))

    def _enqueue(self, captured: Frozen) -> None:
        """Put a record in the outbox and get the I/O thread going (started, or woken)."""
        self._outbox.put(captured)
        pub = self._publisher
        if pub is None:
            self._start()
        elif pub.sleeping:
            pub.sleeping = False
            pub.wake()

    def _tick(self) -> None:
        """The I/O thread's periodic call: a flood that ended while the app is quiet
        still gets its summary."""
        self._summarize(time.time())

    def _start(self) -> None:
        """Start the I/O thread once. Non-blocking: a signal handler that logs while
        this thread holds the lock returns at once (its record waits in the outbox)."""
        if not self._start_lock.acquire(blocking=False):
            return
        try:
            if self._publisher is not None:
                return
            opts = self.options
            pub = Publisher(
                opts.settings,
                self._outbox,
                app_id=opts.app,
                reconnect_max=opts.reconnect_max,
                fast_frames=opts.fast_frames,
                batch=opts.batch == "auto",
                linger=opts.linger,
                batch_records=opts.batch_records,
                batch_bytes=opts.batch_bytes,
                on_tick=self._tick if self._limiter is not None else None,
            )
            self._publisher = pub
            levelcache.unlock(IGNORED_LOGGERS)  # the I/O thread's pika never waits for logging
            pub.start()
            if self._forked:
                # multiprocessing children leave through os._exit(): no atexit there.
                # (Registered now: multiprocessing clears its registry right after fork.)
                mp_util = sys.modules.get("multiprocessing.util")
                if mp_util is not None:
                    mp_util.Finalize(self, self.close, exitpriority=100)
        finally:
            self._start_lock.release()

    def _after_fork(self) -> None:
        """In a forked child: fresh machinery; the parent's stays untouched.

        The parent's outbox (with its SQLite connection) and publisher are kept
        referenced and never closed here: closing an inherited SQLite connection
        can drop locks of, and checkpoint, a database the parent still writes.
        Only the parent's spool lock descriptor is closed (not unlocked).
        """
        old = self._outbox
        if old.spools is not None:
            old.spools.forget_after_fork()
        _inherited.append((old, self._publisher))
        self._fresh_state()
        self._closed = False
        self._forked = True

    def __repr__(self) -> str:
        settings = self.options.settings
        return f"<RabbitHandler {settings.describe()} exchange={settings.exchange}>"


def _after_fork_in_child() -> None:
    for handler in list(_handlers):
        handler._after_fork()
    if _handlers:
        _close_before_celery_child_exits()


def _close_before_celery_child_exits() -> None:
    """Celery's prefork children end with ``os._exit`` (billiard's worker): no atexit and
    no ``multiprocessing`` finalizer runs, and a child's last records, still in memory
    (with ``batch="auto"`` a backlog waits for a confirm), were lost. Celery sends
    ``worker_process_shutdown`` in the child just before: close the handlers then."""
    signals = sys.modules.get("celery.signals")
    shutdown = getattr(signals, "worker_process_shutdown", None)
    if shutdown is not None:
        with contextlib.suppress(Exception):  # a celery without it: the finalizer path
            shutdown.connect(_on_celery_child_exit, weak=False, dispatch_uid=__name__)


def _on_celery_child_exit(**_: object) -> None:
    _at_exit()


def _at_exit() -> None:
    for handler in list(_handlers):
        with contextlib.suppress(Exception):
            handler.close()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
