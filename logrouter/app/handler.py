"""``logrouter.RabbitHandler``: a logging handler that never blocks the app.

``emit()`` only freezes what cannot wait (the formatted message and traceback)
and appends the record to a bounded in-memory buffer; the I/O thread
(``logrouter.app.publisher``) encodes, publishes with streaming confirms, spools to
disk while the broker is away and replays in order. See docs/handler.md.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import os
import socket
import sys
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from logrouter import severity as sev
from logrouter import wire
from logrouter.app.publisher import Captured, Publisher
from logrouter.app.spool import Spool, SpoolEntry
from logrouter.connection import DEFAULT_EXCHANGE, DEFAULT_URL, BrokerSettings, redact

#: Loggers whose records are never published (no feedback loop, FIELD-NOTE 7).
IGNORED_LOGGERS = frozenset({"pika", "logrouter"})
DEFAULT_BUFFER = 25_000  # ~0.7 KB each: bounded at ~17 MB; absorbs a burst without spooling
DEFAULT_SPOOL_MAX = 256 << 20

_handlers: weakref.WeakSet[RabbitHandler] = weakref.WeakSet()


def parse_facilities(value: Mapping[str, str] | str | None) -> dict[str, str]:
    """Logger-name prefix -> facility from a dict or an ``"a=b,c=d"`` string."""
    if not value:
        return {}
    if isinstance(value, str):
        pairs: dict[str, str] = {}
        for part in value.replace(";", ",").split(","):
            if not part.strip():
                continue
            prefix, eq, facility = part.partition("=")
            if not eq:
                raise ValueError(f"facilities: {part.strip()!r} is not prefix=facility")
            pairs[prefix.strip()] = facility.strip()
        value = pairs
    return {str(k): sev.normalize_facility(str(v)) for k, v in value.items()}


def default_spool_path(app: str, exchange: str = DEFAULT_EXCHANGE) -> Path:
    """A per-user cache file keyed by the app name and the exchange.

    Keyed by the exchange too, so that records spooled for one exchange are never
    replayed into another (say, the next test run's exchange).
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")

    def safe(text: str) -> str:
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:100] or "_"

    suffix = "" if exchange == DEFAULT_EXCHANGE else f"@{safe(exchange)}"
    return Path(base) / "logrouter" / f"spool-{safe(app)}{suffix}.sqlite"


def _default_app() -> str:
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    name = os.path.basename(argv0)
    if name in ("", "-c", "__main__.py"):
        return "python"
    return name.removesuffix(".py") or "python"


def _as_bool_size(value: Any, default: int) -> int:
    return default if value is None or value == "" else int(value)


class RabbitHandler(logging.Handler):
    """Publish every record to a RabbitMQ topic exchange as ``facility.severity``.

    Every option is a plain string or number (dictConfig, fileConfig, Django).
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
        level: int | str = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        url = url or os.environ.get("LOGROUTER_URL") or DEFAULT_URL
        self.settings = BrokerSettings.from_url(
            url, exchange=exchange, heartbeat=int(heartbeat), client_name="logrouter-handler"
        )
        self.facility = sev.normalize_facility(facility)
        self.facilities = parse_facilities(facilities)
        self.app = app or _default_app()
        self.buffer_size = max(2, int(buffer_size))
        self.spool_path: Path | None = (
            None
            if spool == ""
            else Path(spool)
            if spool
            else default_spool_path(self.app, self.settings.exchange)
        )
        self.spool_max_bytes = _as_bool_size(spool_max_bytes, DEFAULT_SPOOL_MAX)
        self.flush_timeout = float(flush_timeout)
        self.max_message = int(max_message)
        self.reconnect_max = float(reconnect_max)
        self.host = socket.gethostname()
        self._closed = False
        self._forked = False
        self._facility_cache: dict[str, str] = {}
        self._fresh_state()
        _handlers.add(self)

    def _fresh_state(self) -> None:
        """Per-process state: created at init and again in a forked child."""
        self._run = time.time_ns()
        self._id_prefix = uuid.uuid4().hex[:16]
        self._seq = itertools.count(1)
        self._buffer: deque[Captured] = deque()
        self._publisher: Publisher | None = None
        self._spool: Spool | None = None
        self._start_lock = threading.Lock()

    # ---- public ----------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Records lost because the buffer was full and the spool off or full."""
        pub = self._publisher
        return pub.dropped + pub.overflow_dropped if pub is not None else 0

    @property
    def stats(self) -> dict[str, int]:
        pub = self._publisher
        return {
            "buffered": len(self._buffer),
            "published": pub.published if pub else 0,
            "confirmed": pub.confirmed if pub else 0,
            "spooled": pub.spooled if pub else 0,
            "dropped": self.dropped,
        }

    def handle(self, record: logging.LogRecord) -> bool:
        """As logging.Handler.handle, minus the lock: emit() is thread-safe by itself."""
        if self.filters and not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        """Freeze the record and append it to the buffer; never blocks, never raises."""
        try:
            if record.name.partition(".")[0] in IGNORED_LOGGERS:
                return
            message = wire.record_message(record)
            exc = wire.record_exception(record) if record.exc_info or record.exc_text else None
            captured = (next(self._seq), record, message, exc)
            buffer = self._buffer
            if len(buffer) >= self.buffer_size:
                self._overflow(captured)
                return
            buffer.append(captured)
            pub = self._publisher
            if pub is None:
                self._start()
            elif pub.sleeping:
                pub.sleeping = False
                pub.wake()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Wait up to ``flush_timeout`` for every record to be confirmed; spool the rest."""
        if self._closed:
            return
        self._wait(self.flush_timeout, spool_rest=True)

    def close(self) -> None:
        """Flush (bounded), spool what is left, stop the I/O thread. Idempotent."""
        if self._closed:
            super().close()
            return
        self._closed = True
        try:
            pub = self._publisher
            if pub is not None:
                self._wait(self.flush_timeout, spool_rest=False)
                pub.stop(timeout=2.0)
            if self._spool is not None:
                self._spool.close()
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
            if pub.sleeping and self._buffer:
                pub.sleeping = False
                pub.wake()
            time.sleep(pause)
            pause = min(pause * 2, 0.02)

    def _start(self) -> Publisher:
        with self._start_lock:
            if self._publisher is not None:
                return self._publisher
            pub = Publisher(
                self.settings,
                self._buffer,
                self._encode,
                run=self._run,
                buffer_size=self.buffer_size,
                spool_opener=self._open_spool,
                app_id=self.app,
                reconnect_max=self.reconnect_max,
            )
            self._publisher = pub
            pub.start()
            if self._forked:
                # multiprocessing children leave through os._exit(): no atexit there.
                # (Registered now: multiprocessing clears its registry right after fork.)
                mp_util = sys.modules.get("multiprocessing.util")
                if mp_util is not None:
                    mp_util.Finalize(self, self.close, exitpriority=100)
            return pub

    def _open_spool(self) -> Spool | None:
        """Open the spool (called once, in the I/O thread)."""
        if self.spool_path is None:
            return None
        try:
            self._spool = Spool(self.spool_path, self.spool_max_bytes)
        except Exception as exc:
            sys.stderr.write(
                f"logrouter handler: spool {self.spool_path} unusable, running without it:"
                f" {type(exc).__name__}: {exc}\n"
            )
            self.spool_path = None
        return self._spool

    def _overflow(self, captured: Captured) -> None:
        """Buffer full: this record goes straight to the spool (or is counted as dropped)."""
        pub = self._publisher or self._start()
        if self.spool_path is not None:
            pub.spool_ready.wait(1.0)
        if pub.spool is None:
            pub.overflow_dropped += 1
            return
        pub.add_overflow(self._encode(captured))

    def facility_for(self, name: str) -> str:
        """Facility of a logger name: longest matching prefix of the map, else the default."""
        cached = self._facility_cache.get(name)
        if cached is not None:
            return cached
        best = self.facility
        best_len = -1
        for prefix, facility in self.facilities.items():
            if (name == prefix or name.startswith(prefix + ".") or prefix == "") and len(
                prefix
            ) > best_len:
                best, best_len = facility, len(prefix)
        if len(self._facility_cache) < 10_000:
            self._facility_cache[name] = best
        return best

    def _encode(self, captured: Captured) -> SpoolEntry:
        """Captured record -> spool entry (runs in the I/O thread, or on overflow)."""
        seq, record, message, exc = captured
        message_id = f"{self._id_prefix}{seq:x}"
        try:
            extra_facility = record.__dict__.get("facility")
            facility = (
                sev.normalize_facility(str(extra_facility))
                if extra_facility
                else self.facility_for(record.name)
            )
            severity = None
            extra_severity = record.__dict__.get("severity")
            if isinstance(extra_severity, str):
                try:
                    severity = sev.parse_severity(extra_severity)
                except ValueError:
                    severity = None
            if severity is None:
                severity = sev.severity_for_level(record.levelno, record.levelname)
            body = wire.encode(
                wire.record_to_dict(
                    record,
                    facility=facility,
                    severity=severity,
                    host=self.host,
                    app=self.app,
                    max_message=self.max_message,
                    message=message,
                    exc=exc,
                )
            )
            if len(body) > self.max_message * 2 + 65536:  # huge fields: keep what matters
                body = wire.encode(
                    {
                        "v": wire.SCHEMA_VERSION,
                        "ts": wire.format_ts(record.created),
                        "host": self.host,
                        "app": self.app,
                        "pid": record.process,
                        "logger": record.name,
                        "facility": facility,
                        "severity": severity,
                        "level": record.levelname,
                        "msg": wire.truncate(message, self.max_message),
                        "fields": {"_truncated": f"record was {len(body)} bytes"},
                    }
                )
        except Exception as err:  # never lose a record to a rendering bug
            facility, severity = self.facility, "err"
            body = wire.encode(
                {
                    "v": wire.SCHEMA_VERSION,
                    "ts": wire.format_ts(time.time()),
                    "host": self.host,
                    "app": self.app,
                    "facility": facility,
                    "severity": severity,
                    "msg": redact(
                        f"{message} (record not renderable: {type(err).__name__}: {err})"
                    ),
                }
            )
        key = f"{facility}.{severity}"
        return (self._run, seq, key, message_id, int(record.created), body)

    def _after_fork(self) -> None:
        self._fresh_state()
        self._closed = False
        self._forked = True

    def __repr__(self) -> str:
        return f"<RabbitHandler {self.settings.describe()} exchange={self.settings.exchange}>"


def _after_fork_in_child() -> None:
    for handler in list(_handlers):
        handler._after_fork()


def _at_exit() -> None:
    for handler in list(_handlers):
        with contextlib.suppress(Exception):
            handler.close()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
