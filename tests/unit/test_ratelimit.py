"""Flood protection per source: token buckets per key and the summaries (pure, driven by time)."""

from __future__ import annotations

import logging

import pytest

from logrouter.app.ratelimit import (
    OTHER_KEYS,
    RateLimiter,
    RateLimitSettings,
    SeverityGate,
    key_function,
    key_text,
)


def _record(
    t: float,
    *,
    name: str = "billing.worker",
    line: int = 88,
    level: int = logging.ERROR,
    **extra: object,
) -> logging.LogRecord:
    record = logging.LogRecord(name, level, "/srv/billing/app.py", line, "boom", None, None)
    record.created = t
    record.__dict__.update(extra)
    return record


def _limiter(
    rate: float = 10, burst: int = 5, key: str = "site", exempt: str | None = "crit", **kw: object
) -> RateLimiter:
    settings = RateLimitSettings.from_options(rate, burst, key, exempt or "none", 10)
    assert settings is not None
    route = (lambda r: ("billing", "err")) if key == "facility.severity" else None
    return RateLimiter(settings, key_function(key, route), **kw)  # type: ignore[arg-type]


def _flood(
    limiter: RateLimiter, start: float, seconds: float, per_second: int, **kw: object
) -> int:
    """Records sent out of a flood of ``per_second`` records for ``seconds``."""
    sent = 0
    for i in range(int(seconds * per_second)):
        sent += limiter.allow(_record(start + i / per_second, **kw))  # type: ignore[arg-type]
    return sent


def test_flood_sends_burst_then_rate() -> None:
    """1,000 records/s for 10 s at rate 10, burst 5: about burst + rate x 10 are sent."""
    limiter = _limiter()
    sent = _flood(limiter, 0.0, 10, 1000)
    assert 5 + 10 * 10 - 1 <= sent <= 5 + 10 * 10
    assert limiter.suppressed == 10_000 - sent


def test_below_the_rate_nothing_is_suppressed() -> None:
    """A source under its rate never loses a record."""
    limiter = _limiter(rate=10, burst=1)
    assert _flood(limiter, 0.0, 5, 10) == 50
    assert limiter.suppressed == 0 and limiter.due(100.0) == []


def test_keys_are_independent() -> None:
    """A flood from one call site does not take tokens from another."""
    limiter = _limiter(burst=2)
    _flood(limiter, 0.0, 1, 1000, line=88)
    assert limiter.allow(_record(0.5, line=99)) and limiter.allow(_record(0.5, line=99))


def test_unknown_call_sites_are_keyed_by_logger() -> None:
    """Records whose site logging did not look for (``logging._srcfile = None``: all
    "(unknown file)", line 0) are keyed by logger: one logger's flood does not silence
    another's records, and its summary names the logger alone."""
    limiter = _limiter(burst=2)
    unknown = {"line": 0, "pathname": "(unknown file)"}
    sent = _flood(limiter, 0.0, 1, 1000, name="billing.worker", **unknown)
    assert sent < 20
    assert limiter.allow(_record(0.5, name="payments", **unknown))
    assert limiter.allow(_record(0.5, name="payments", **unknown))
    (summary,) = limiter.due(1.5)
    assert summary.message() == f"suppressed {1000 - sent} records from billing.worker in 1 s"
    assert summary.fields(limiter.settings)["suppressed_key"] == "billing.worker"


def test_logger_key_groups_call_sites() -> None:
    """With rate_limit_key=logger, every call site of a logger shares its bucket."""
    limiter = _limiter(burst=2, key="logger")
    assert limiter.allow(_record(0, line=1)) and limiter.allow(_record(0, line=2))
    assert not limiter.allow(_record(0, line=3))
    assert limiter.allow(_record(0, name="other"))


def test_facility_severity_key_and_summary_route() -> None:
    """With facility.severity keys the summary names the key and is routed to it."""
    limiter = _limiter(burst=1, key="facility.severity")
    assert limiter.allow(_record(0))
    assert not limiter.allow(_record(0.01))
    (summary,) = limiter.due(10.5)
    assert summary.source() == "billing.err (billing.worker, app.py:88)"
    record = summary.record(limiter.settings)
    assert (record.facility, record.severity) == ("billing", "err")  # type: ignore[attr-defined]


def test_exempt_severities_always_pass() -> None:
    """crit and above are exempt by default; a record's own severity extra counts."""
    limiter = _limiter(burst=1)
    limiter.allow(_record(0))
    assert not limiter.allow(_record(0, level=logging.ERROR))
    assert limiter.allow(_record(0, level=logging.CRITICAL))
    assert limiter.allow(_record(0, severity="emerg"))
    assert not limiter.allow(_record(0, level=logging.CRITICAL, severity="info"))


def test_exempt_none_limits_everything() -> None:
    """rate_limit_exempt=none limits crit too."""
    limiter = _limiter(burst=1, exempt=None)
    limiter.allow(_record(0, level=logging.CRITICAL))
    assert not limiter.allow(_record(0, level=logging.CRITICAL))
    assert not SeverityGate(None).exempt(_record(0, level=logging.CRITICAL))
    assert SeverityGate("err").exempt(_record(0, level=logging.ERROR))


def test_one_summary_per_interval_during_a_flood_and_one_at_its_end() -> None:
    """A 25 s flood gives a summary at 10 s and 20 s, and a last one once it is over."""
    limiter = _limiter(rate=10, burst=5)
    summaries = []
    per_second = 1000
    for i in range(25 * per_second):
        t = i / per_second
        limiter.allow(_record(t))
        if not i % 100:
            summaries += limiter.due(t)
    summaries += limiter.due(25.0)
    assert [s.ended for s in summaries] == [False, False]
    assert limiter.due(25.3) == []  # the bucket is not full yet: the flood may go on
    summaries += limiter.due(25.6)
    assert [round(s.seconds) for s in summaries] == [10, 10, 5]
    assert summaries[-1].ended
    assert sum(s.count for s in summaries) == limiter.suppressed
    assert limiter.by_key == {"/srv/billing/app.py:88": limiter.suppressed}


def test_summary_text_and_fields() -> None:
    """The summary reads like the issue's example and carries the counts in fields."""
    limiter = _limiter(rate=0.001, burst=1)
    limiter.allow(_record(0))
    for i in range(48_213):
        limiter.allow(_record(0.0001 + i * 0.0002))
    (summary,) = limiter.due(10.3)
    assert summary.message() == (
        "suppressed 48,213 records from billing.worker (app.py:88) in 10 s"
    )
    record = summary.record(limiter.settings)
    assert record.getMessage() == summary.message() and record.name == "billing.worker"
    assert record.levelno == logging.ERROR and record.lineno == 88
    assert record.suppressed == 48_213  # type: ignore[attr-defined]
    assert record.suppressed_key == "/srv/billing/app.py:88"  # type: ignore[attr-defined]
    assert summary.fields(limiter.settings)["rate_limit"] == 0.001


def test_summary_goes_where_the_records_went() -> None:
    """Records with their own facility and severity (``extra``): the summary carries
    them, so the handler routes it as it routed them (not by the crit level here), and
    it names their function and thread (not the thread that makes the summary)."""
    limiter = _limiter(rate=1, burst=1)
    for i in range(5):
        own = {"facility": "auth", "severity": "info", "funcName": "pay", "threadName": "w-3"}
        limiter.allow(_record(i * 0.01, level=logging.CRITICAL, **own))
    (summary,) = limiter.due(100.0)
    record = summary.record(limiter.settings)
    assert (record.funcName, record.threadName) == ("pay", "w-3")
    assert (record.facility, record.severity) == ("auth", "info")  # type: ignore[attr-defined]
    plain = _limiter(rate=1, burst=1)
    for i in range(5):
        plain.allow(_record(i * 0.01))
    (summary,) = plain.due(100.0)
    assert not {"facility", "severity"} & set(vars(summary.record(plain.settings)))


def test_everything_flushes_pending_summaries() -> None:
    """At flush/close every key that suppressed anything gets its summary at once."""
    limiter = _limiter(burst=1)
    limiter.allow(_record(0))
    limiter.allow(_record(0))
    assert limiter.due(0.08) == []
    (summary,) = limiter.due(0.08, everything=True)
    assert summary.count == 1 and summary.message().endswith("in 0.1 s")
    assert summary.message().startswith("suppressed 1 record from")


def test_clock_going_backwards_grants_nothing_extra() -> None:
    """A record older than the last one seen neither refills nor breaks the bucket."""
    limiter = _limiter(rate=10, burst=1)
    assert limiter.allow(_record(100.0))
    assert not limiter.allow(_record(50.0))


def test_keys_are_bounded() -> None:
    """Beyond max_keys idle buckets are forgotten; counters by key stay bounded."""
    limiter = _limiter(burst=1, max_keys=3)
    for line in range(10):
        limiter.allow(_record(0, line=line))
        limiter.allow(_record(0, line=line))
    assert limiter.suppressed == 3 + 13  # three own buckets, then one shared by 7 keys
    assert len(limiter._buckets) == 3 + 1
    summaries = limiter.due(100.0, everything=True)
    assert sum(s.count for s in summaries) == limiter.suppressed
    assert limiter.by_key[OTHER_KEYS] == 13 and len(limiter.by_key) == 4
    (shared,) = [s for s in summaries if s.key == OTHER_KEYS]
    assert shared.message().startswith(  # many sources: it says so, and names the first
        "suppressed 13 records from (other keys) (the first: billing.worker, app.py:3)"
    )
    limiter.allow(_record(200.0, line=50))  # the quiet buckets are forgotten again
    assert ("/srv/billing/app.py", 50) in limiter._buckets


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rate_limit": "x"}, "rate_limit: 'x' is not a number"),
        ({"rate_limit": "-1"}, "rate_limit: '-1' must be a finite number >= 0"),
        ({"rate_limit": "5", "burst": "0"}, "burst: '0' must be at least 1"),
        ({"rate_limit": "5", "key": "host"}, "rate_limit_key: 'host' is not one of"),
        ({"rate_limit": "5", "exempt": "loud"}, "rate_limit_exempt: unknown severity 'loud'"),
        ({"rate_limit": "5", "interval": "0"}, "rate_limit_interval: '0' must be more than"),
    ],
)
def test_bad_options_name_the_option(options: dict[str, str], message: str) -> None:
    """A bad dictConfig string is a ValueError naming the option and the value."""
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        RateLimitSettings.from_options(**options)  # type: ignore[arg-type]


def test_options_from_strings_and_defaults() -> None:
    """dictConfig strings parse; off when empty or 0; burst defaults to 2 x rate."""
    assert RateLimitSettings.from_options(None) is None
    assert RateLimitSettings.from_options("") is None
    assert RateLimitSettings.from_options("0") is None
    settings = RateLimitSettings.from_options("100")
    assert settings == RateLimitSettings(100.0, 200, "site", "crit", 10.0)
    settings = RateLimitSettings.from_options("0.5", "3", "Logger", "ERROR", "2.5")
    assert settings == RateLimitSettings(0.5, 3, "logger", "err", 2.5)
    assert RateLimitSettings.from_options("1", exempt="none") == RateLimitSettings(
        1.0, 2, "site", None, 10.0
    )
    assert RateLimitSettings.from_options("1", exempt="") == RateLimitSettings(
        1.0, 2, "site", "crit", 10.0
    )  # "" is the default, as for burst, key and interval
    with pytest.raises(ValueError, match=r"^burst: '2.5' is not a whole number$"):
        RateLimitSettings.from_options("1", burst="2.5")


def test_key_text() -> None:
    """Keys read as path:line, facility.severity or the logger name."""
    assert key_text(("/a.py", 3)) == "/a.py:3"
    assert key_text(("auth", "err")) == "auth.err"
    assert key_text("billing") == "billing"
    with pytest.raises(ValueError, match="route"):
        key_function("facility.severity")


def _handled(limiter: RateLimiter, record: logging.LogRecord) -> bool:
    """Sent or not, as the handler decides: the cheap no first, then ``allow``."""
    return not limiter.suppress_known(record) and limiter.allow(record)


@pytest.mark.parametrize("exempt", ["crit", None])
def test_cheap_no_decides_as_allow_alone(exempt: str | None) -> None:
    """A flood with summaries every 2 s, records at jittered times, mixed levels, an
    own ``severity`` extra and unknown call sites of two loggers: the cheap path sends
    and counts exactly what ``allow`` alone does, and the summaries carry the same
    counts."""
    outcomes = []
    for cheap in (False, True):
        limiter = _limiter(rate=7, burst=3, exempt=exempt)
        sent, counts = [], []
        for i in range(20_000):
            t = i / 1000 + (i % 7) * 1e-4
            extra = {"severity": "crit"} if i % 997 == 0 else {}
            level = logging.CRITICAL if i % 499 == 0 else logging.ERROR
            if i % 3 == 0:  # logging._srcfile = None: no site, keyed by logger
                extra.update(pathname="(unknown file)", name=f"worker.{i % 2}")
            record = _record(t, level=level, line=0 if i % 3 == 0 else 88 + i % 2, **extra)
            ok = _handled(limiter, record) if cheap else limiter.allow(record)
            sent.append(ok)
            if i % 2000 == 1999:
                counts += [s.count for s in limiter.due(t)]
        outcomes.append((sent, counts, limiter.suppressed))
    assert outcomes[0] == outcomes[1]
    assert outcomes[1][2] > 15_000


def test_cheap_no_leaves_undecided_records_to_allow() -> None:
    """The cheap path says no only for a key that is suppressing and has no token
    yet: a new key, a token due, an exempt level, a record with its own severity, and
    a key whose flood was just summarized all go to ``allow``."""
    limiter = _limiter(rate=1, burst=1)
    assert not limiter.suppress_known(_record(0.0))  # nothing suppressing yet
    assert limiter.allow(_record(0.0))
    assert not limiter.allow(_record(0.1))  # suppressing from here
    assert limiter.suppress_known(_record(0.2))
    assert not limiter.suppress_known(_record(0.2, line=89))  # another key
    assert not limiter.suppress_known(_record(1.2))  # a token is due
    assert not limiter.suppress_known(_record(0.3, level=logging.CRITICAL))
    assert not limiter.suppress_known(_record(0.3, severity="err"))
    assert limiter.suppressed == 2
    [summary] = limiter.due(0.5, everything=True)
    assert summary.count == 2
    assert not limiter.suppress_known(_record(0.6))  # allow() starts the next summary


class _Interrupting(logging.LogRecord):
    """A record whose call site is read under the limiter's lock (when its key starts
    suppressing): reading it runs ``interrupt`` once, as a signal handler would run
    there, in the same thread."""

    interrupt: object = None

    @property  # type: ignore[override]
    def funcName(self) -> str:  # LogRecord's name
        interrupt, type(self).interrupt = type(self).interrupt, None
        if callable(interrupt):
            interrupt()
        return "handle"

    @funcName.setter
    def funcName(self, value: str) -> None:
        pass


def test_a_record_logged_inside_the_limiter_by_a_signal_handler_is_sent_at_once() -> None:
    """A signal handler that logs runs in the thread it interrupts: if that thread is
    inside the limiter (its lock held) the handler's record must not wait for the lock
    (it waited for itself forever): it goes out, uncounted, and the interrupted call
    finishes as it would have. A due() from there gives nothing (the summaries come
    at the next look); another thread still waits its turn."""
    limiter = _limiter(rate=1, burst=1)
    inside: list[object] = []

    def signal_handler() -> None:
        inside.append(limiter.allow(_record(0.2, line=7)))
        inside.append(limiter.suppress_known(_record(0.2, line=7)))
        inside.append(limiter.due(100.0, everything=True))

    assert limiter.allow(_record(0.0))  # the burst's token
    record = _Interrupting(
        "billing.worker", logging.ERROR, "/srv/billing/app.py", 88, "boom", None, None
    )
    record.created = 0.1
    _Interrupting.interrupt = signal_handler
    assert not limiter.allow(record)  # suppressed: its key starts suppressing, lock held
    assert inside == [True, False, []]
    assert limiter.suppressed == 1
    assert [s.count for s in limiter.due(100.0, everything=True)] == [1]
