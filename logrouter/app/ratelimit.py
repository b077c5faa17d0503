"""Flood protection per source: a token bucket per key, decided before any encoding (pure).

A stuck loop that logs an error per iteration must not take the broker and
every sink with it (journald and rsyslog rate-limit per source for the same
reason). Each key (logger name, ``facility.severity`` or call site) has a
bucket of ``burst`` tokens refilled at ``rate`` per second; a record without a
token is counted, not sent. While a key suppresses, ``due()`` hands out one
``Suppression`` per key every ``interval`` seconds, and a last one when the
flood is over (its bucket refilled); the handler publishes each as one summary
record ("suppressed 48,213 records from billing.worker (app.py:88) in 10 s",
counts in ``fields``). Records at or above an exempt severity always pass.

No I/O and no clock of its own: time is the record's ``created`` (or the
caller's ``now``), so tests drive it with plain numbers.
"""

from __future__ import annotations

import logging
import operator
import os
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from logrouter import severity as sev
from logrouter.app.values import number, whole

#: What a bucket is keyed by (handler option ``rate_limit_key``).
KEY_KINDS = ("logger", "facility.severity", "site")
DEFAULT_KEY = "site"
DEFAULT_EXEMPT = "crit"
DEFAULT_INTERVAL = 10.0
#: Buckets kept at most; idle ones (full, nothing suppressed) are forgotten first, and
#: when every key is busy, new keys share one more bucket (``OTHER_KEYS``).
MAX_KEYS = 10_000
OTHER_KEYS = "(other keys)"

#: The call site of a record whose caller logging did not look for (``logging._srcfile =
#: None``, the documented speed-up) or could not find: keyed by its logger instead, or
#: one flood would silence every such record of the process.
UNKNOWN_SITE = ("(unknown file)", 0)

#: A token, less what float sums of elapsed x rate lose (a source at exactly its rate passes).
_ONE = 1.0 - 1e-9
#: ``suppress_known`` leaves the last µs before a key's next token to ``allow``'s exact sums.
_REOPEN_MARGIN = 1e-6
#: (facility, severity) of a record, as the handler routes it.
Route = Callable[[logging.LogRecord], tuple[str, str]]


@dataclass(frozen=True)
class RateLimitSettings:
    """The handler's rate-limit options, validated (``from_options`` takes dictConfig strings)."""

    rate: float
    burst: int
    key: str = DEFAULT_KEY
    exempt: str | None = DEFAULT_EXEMPT
    interval: float = DEFAULT_INTERVAL

    @classmethod
    def from_options(
        cls,
        rate_limit: float | str | None,
        burst: int | str | None = None,
        key: str | None = None,
        exempt: str | None = None,
        interval: float | str | None = None,
    ) -> RateLimitSettings | None:
        """Settings from handler options; None when ``rate_limit`` is off (empty or 0).

        Raises ``ValueError`` naming the option and the allowed values.
        """
        if rate_limit is None or rate_limit == "":
            return None
        rate = number("rate_limit", rate_limit)
        if rate == 0:
            return None
        default_burst = max(1, int(rate * 2))
        size = default_burst if burst is None or burst == "" else whole("burst", burst)
        if size < 1:
            raise ValueError(f"burst: {burst!r} must be at least 1")
        kind = (key or DEFAULT_KEY).strip().lower()
        if kind not in KEY_KINDS:
            raise ValueError(f"rate_limit_key: {key!r} is not one of {', '.join(KEY_KINDS)}")
        # "" is the default, as for every other option; "none" exempts nothing
        word: str | None = (exempt or "").strip().lower() or DEFAULT_EXEMPT
        if word == "none":
            word = None
        elif word is not None:
            try:
                word = sev.parse_severity(word)
            except ValueError as err:
                raise ValueError(f"rate_limit_exempt: {err} (or none)") from None
        every = (
            DEFAULT_INTERVAL
            if interval is None or interval == ""
            else number("rate_limit_interval", interval)
        )
        if every <= 0:
            raise ValueError(f"rate_limit_interval: {interval!r} must be more than 0 seconds")
        return cls(rate, size, kind, word, every)


@dataclass(frozen=True)
class Suppression:
    """What one key suppressed since its last summary."""

    key: Hashable
    key_kind: str
    count: int
    first: float
    last: float
    until: float
    logger: str
    pathname: str
    lineno: int
    levelno: int
    levelname: str
    facility: str | None
    severity: str | None
    ended: bool
    #: the suppressed records' own routing (``extra`` facility / severity) and function,
    #: as the first of them had it: the summary goes where they went
    own_facility: str | None = None
    own_severity: str | None = None
    func: str | None = None
    thread: str | None = None

    @property
    def seconds(self) -> float:
        """Length of the window this summary covers (first suppressed record until now)."""
        return max(0.0, self.until - self.first)

    def source(self) -> str:
        """``billing.worker (app.py:88)``; with ``facility.severity`` keys the key first."""
        site = f"{os.path.basename(self.pathname)}:{self.lineno}"
        if self.key == OTHER_KEYS:  # past MAX_KEYS: many sources share it
            return f"{OTHER_KEYS} (the first: {self.logger}, {site})"
        if (self.pathname, self.lineno) == UNKNOWN_SITE:
            return self.logger
        if self.key_kind == "facility.severity" and self.facility and self.severity:
            return f"{self.facility}.{self.severity} ({self.logger}, {site})"
        return f"{self.logger} ({site})"

    def message(self) -> str:
        """``suppressed 48,213 records from billing.worker (app.py:88) in 10 s``."""
        seconds = self.seconds
        span = f"{seconds:.0f}" if seconds >= 1 else f"{seconds:.1f}"
        noun = "record" if self.count == 1 else "records"
        return f"suppressed {self.count:,} {noun} from {self.source()} in {span} s"

    def fields(self, settings: RateLimitSettings) -> dict[str, Any]:
        """The counts a sink (and its metrics) can read from the summary record."""
        return {
            "suppressed": self.count,
            "suppressed_key": key_text(self.key),
            "suppressed_by": self.key_kind,
            "suppressed_seconds": round(self.seconds, 3),
            "suppressed_ended": self.ended,
            "rate_limit": settings.rate,
            "burst": settings.burst,
        }

    def record(self, settings: RateLimitSettings) -> logging.LogRecord:
        """The summary as a LogRecord (routed like the suppressed records, never limited)."""
        attrs: dict[str, Any] = {
            "name": self.logger,
            "levelno": self.levelno,
            "levelname": self.levelname,
            "pathname": self.pathname,
            "filename": os.path.basename(self.pathname),
            "lineno": self.lineno,
            "funcName": self.func,
            "threadName": self.thread,  # not the thread that makes the summary
            "msg": self.message(),
            "args": None,
            "created": self.until,
            "rate_limit_summary": True,
        }
        attrs.update(self.fields(settings))
        if self.key_kind == "facility.severity" and self.facility and self.severity:
            attrs["facility"], attrs["severity"] = self.facility, self.severity
        else:
            if self.own_facility is not None:
                attrs["facility"] = self.own_facility
            if self.own_severity is not None:
                attrs["severity"] = self.own_severity
        return logging.makeLogRecord(attrs)


def key_text(key: Hashable) -> str:
    """A key as text: ``path:line`` for a call site, ``facility.severity``, a logger name."""
    if isinstance(key, tuple) and len(key) == 2:
        return f"{key[0]}{':' if isinstance(key[1], int) else '.'}{key[1]}"
    return str(key)


def key_function(kind: str, route: Route | None = None) -> Callable[[logging.LogRecord], Hashable]:
    """How a record's key is computed; ``route`` is needed for ``facility.severity``."""
    if kind == "logger":
        return operator.attrgetter("name")
    if kind == "site":
        return operator.attrgetter("pathname", "lineno")
    if kind == "facility.severity":
        if route is None:
            raise ValueError("facility.severity keys need the handler's route function")
        return route
    raise ValueError(f"rate_limit_key: {kind!r} is not one of {', '.join(KEY_KINDS)}")


def held_here(lock: Any) -> bool:
    """True when this thread holds ``lock`` (an RLock): a signal handler that logs runs
    in the thread it interrupts, and must not wait for a lock its own thread holds."""
    return bool(lock._is_owned())


class SeverityGate:
    """Which records bypass the limit: severity at or above ``exempt`` (None: none do)."""

    def __init__(self, exempt: str | None) -> None:
        self.rank = sev.RANK[exempt] if exempt is not None else -1
        #: level number -> exempt (a level's name is fixed per process: addLevelName)
        self.by_level: dict[int, bool] = {}

    def exempt(self, record: logging.LogRecord) -> bool:
        """True when ``record`` must always be sent (its own ``severity`` extra counts)."""
        if "severity" not in record.__dict__:
            answer = self.by_level.get(record.levelno)
            if answer is not None:
                return answer
        return self._exempt_slow(record)

    def _exempt_slow(self, record: logging.LogRecord) -> bool:
        own = record.__dict__.get("severity")
        if self.rank < 0:
            if own is None and len(self.by_level) < 256:
                self.by_level[record.levelno] = False
            return False
        if isinstance(own, str):
            try:
                return sev.RANK[sev.parse_severity(own)] <= self.rank
            except ValueError:
                pass
        answer = sev.RANK[sev.severity_for_level(record.levelno, record.levelname)] <= self.rank
        if own is None and len(self.by_level) < 256:
            self.by_level[record.levelno] = answer
        return answer


class _Bucket:
    __slots__ = (
        "facility",
        "first",
        "func",
        "last",
        "levelname",
        "levelno",
        "lineno",
        "logger",
        "own_facility",
        "own_severity",
        "pathname",
        "reopen",
        "severity",
        "stamp",
        "suppressed",
        "thread",
        "tokens",
    )

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp
        self.suppressed = 0
        self.first = 0.0
        self.last = 0.0
        self.logger = ""
        self.pathname = ""
        self.lineno = 0
        self.levelno = 0
        self.levelname = ""
        self.facility: str | None = None
        self.severity: str | None = None
        self.own_facility: str | None = None
        self.own_severity: str | None = None
        self.func: str | None = None
        self.thread: str | None = None
        #: While suppressing: no token before this ``created`` (less a margin).
        self.reopen = 0.0


class RateLimiter:
    """Token buckets per key; thread-safe (``allow`` is called from any logging thread)."""

    def __init__(
        self,
        settings: RateLimitSettings,
        key: Callable[[logging.LogRecord], Hashable],
        *,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.settings = settings
        self.rate = settings.rate
        self.burst = float(settings.burst)
        self.interval = settings.interval
        self.key = key
        self.max_keys = max(1, max_keys)
        self.gate = SeverityGate(settings.exempt)
        self._by_level = self.gate.by_level  # the same dict, one lookup less per call
        self._by_site = settings.key == "site"
        #: Records suppressed so far, in total and by key (text).
        self.suppressed = 0
        self.by_key: dict[str, int] = {}
        self._buckets: dict[Hashable, _Bucket] = {}
        #: Keys suppressing since their last summary, and their buckets.
        self._active: dict[Hashable, _Bucket] = {}
        self._lock = threading.RLock()  # see held_here

    @property
    def active(self) -> bool:
        """Some key is suppressing (a summary will be due)."""
        return bool(self._active)

    def allow(self, record: logging.LogRecord) -> bool:
        """Take a token for ``record``'s key; False means: count it, do not send it."""
        if self.gate.exempt(record):
            return True
        key = self.key(record)
        if self._by_site and key == UNKNOWN_SITE:  # suppress_known then never finds it
            key = record.name
        now = record.created
        if held_here(self._lock):  # logged by a signal handler while this thread is in here
            return True
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None and len(self._buckets) >= self.max_keys:
                self._forget_idle(now)
                if len(self._buckets) >= self.max_keys:  # every key busy: new ones share one
                    key = OTHER_KEYS
                    bucket = self._buckets.get(key)
            if bucket is None:
                self._buckets[key] = _Bucket(self.burst - 1.0, now)
                return True
            elapsed = now - bucket.stamp
            tokens = bucket.tokens
            if elapsed > 0:
                tokens = min(self.burst, tokens + elapsed * self.rate)
                bucket.stamp = now
            if tokens >= _ONE:
                bucket.tokens = tokens - 1.0
                return True
            bucket.tokens = tokens
            bucket.reopen = (
                bucket.stamp + (_ONE - tokens) / self.rate - _REOPEN_MARGIN
                if self.rate > 0
                else float("inf")
            )
            if not bucket.suppressed:
                self._start(bucket, key, record)
            bucket.suppressed += 1
            bucket.last = now
            if record.levelno > bucket.levelno:
                bucket.levelno, bucket.levelname = record.levelno, record.levelname
            self.suppressed += 1
            return False

    def suppress_known(self, record: logging.LogRecord) -> bool:
        """``allow``'s cheap no, for a flood under way: True (counted, do not send) when
        ``record``'s key is suppressing and has no token before ``record.created``.

        False means: ask ``allow``. Only for keys no ignored logger shares (not
        ``facility.severity``) and records no filter drops, as ``allow`` counts them.
        """
        active = self._active
        if not active:  # no flood under way: the common case, no key computed
            return False
        bucket = active.get(self.key(record))
        if bucket is None:
            return False
        created, levelno = record.created, record.levelno
        if (
            created >= bucket.reopen
            or self._by_level.get(levelno) is not False
            or "severity" in record.__dict__
        ):
            return False
        if held_here(self._lock):  # a signal handler's record: allow() lets it go
            return False
        with self._lock:
            if not bucket.suppressed:  # summarized meanwhile: allow() starts it again
                return False
            bucket.suppressed += 1
            bucket.last = created
            if levelno > bucket.levelno:
                bucket.levelno, bucket.levelname = levelno, record.levelname
            self.suppressed += 1
            return True

    def _start(self, bucket: _Bucket, key: Hashable, record: logging.LogRecord) -> None:
        bucket.first = record.created
        bucket.logger = record.name
        bucket.pathname = record.pathname
        bucket.lineno = record.lineno
        bucket.func = record.funcName
        bucket.thread = record.threadName
        bucket.levelno, bucket.levelname = record.levelno, record.levelname
        own_facility, own_severity = (
            record.__dict__.get("facility"),
            record.__dict__.get("severity"),
        )
        bucket.own_facility = str(own_facility) if own_facility else None  # as the handler
        bucket.own_severity = own_severity if isinstance(own_severity, str) else None  # reads them
        if isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], str):
            bucket.facility, bucket.severity = str(key[0]), key[1]
        self._active[key] = bucket

    def _forget_idle(self, now: float) -> None:
        """Drop buckets that are full and suppress nothing (they behave as new ones)."""
        idle = [
            k
            for k, b in self._buckets.items()
            if not b.suppressed and b.tokens + (now - b.stamp) * self.rate >= self.burst
        ]
        for k in idle:
            del self._buckets[k]
        if len(self._buckets) >= self.max_keys:  # none idle: forget the oldest quiet one
            for k, b in self._buckets.items():
                if not b.suppressed and k != OTHER_KEYS:
                    del self._buckets[k]
                    break

    def due(self, now: float, *, everything: bool = False) -> list[Suppression]:
        """Summaries to publish now: keys whose interval is over or whose flood ended.

        ``everything`` (flush, close): every key that suppressed anything.
        """
        if not self._active:
            return []
        out: list[Suppression] = []
        if held_here(self._lock):  # a signal handler's record: the summaries come later
            return out
        with self._lock:
            for key, bucket in list(self._active.items()):
                refilled = bucket.tokens + max(0.0, now - bucket.stamp) * self.rate
                ended = refilled >= self.burst
                if not (everything or ended or now - bucket.first >= self.interval):
                    continue
                out.append(
                    Suppression(
                        key,
                        self.settings.key,
                        bucket.suppressed,
                        bucket.first,
                        bucket.last,
                        max(now, bucket.last),
                        bucket.logger,
                        bucket.pathname,
                        bucket.lineno,
                        bucket.levelno,
                        bucket.levelname,
                        bucket.facility,
                        bucket.severity,
                        ended,
                        bucket.own_facility,
                        bucket.own_severity,
                        bucket.func,
                        bucket.thread,
                    )
                )
                self._count(key, bucket.suppressed)
                bucket.suppressed = 0
                del self._active[key]
        return out

    def _count(self, key: Hashable, count: int) -> None:
        text = key_text(key)
        by_key = self.by_key
        if text not in by_key and len(by_key) - (OTHER_KEYS in by_key) >= self.max_keys:
            text = OTHER_KEYS
        by_key[text] = by_key.get(text, 0) + count
