"""RabbitHandler against the real broker: what an app's records become on a queue."""

from __future__ import annotations

import json
import logging
import logging.config
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika
import pytest
import structlog

from logrouter import RabbitHandler, batchwire
from logrouter.app.spool import Spool
from tests.helpers import ROOT
from tests.helpers.handler import collect, declare, delete
from tests.helpers.rabbit_nodes import free_port
from tests.helpers.tmpfs import mounted_tmpfs


def test_50000_records_arrive_once_each(route: tuple[str, str, str], make_logger: Any) -> None:
    """50,000 records logged in a burst arrive with 50,000 distinct message_ids (FIELD 5, 10)."""
    url, exchange, queue = route
    log, handler = make_logger(url=url, exchange=exchange)
    for i in range(50_000):
        log.info("user %s logged in from %s", i, "10.0.0.1")
    handler.flush()
    got = collect(url, queue, 50_000, timeout=60)
    ids = {mid for mid, _, _ in got}
    assert len(ids) == 50_000
    assert {body["msg"] for _, _, body in got} == {
        f"user {i} logged in from 10.0.0.1" for i in range(50_000)
    }
    assert handler.stats["confirmed"] >= 50_000
    assert handler.dropped == 0


def test_record_shape_and_routing_key(route: tuple[str, str, str], make_logger: Any) -> None:
    """A record arrives as schema-v1 JSON with AMQP properties; the key is facility.severity."""
    url, exchange, queue = route
    log, handler = make_logger(url=url, exchange=exchange, facility="Billing.EU")
    log.warning("disk %s full", "/var", extra={"order": 7})
    handler.flush()
    [(mid, key, body)] = collect(url, queue, 1)
    assert key == "billing_eu.warning"
    assert body["v"] == 1 and body["msg"] == "disk /var full" and body["app"] == "testapp"
    assert body["fields"] == {"order": 7} and body["level"] == "WARNING"
    assert body["ts"].endswith("Z") and body["src"]["func"] == "test_record_shape_and_routing_key"
    assert mid


def test_routing_key_always_two_words(route: tuple[str, str, str], make_logger: Any) -> None:
    """Dotted logger names, facility map, extras and custom levels give two-word keys (FIELD 9)."""
    url, exchange, queue = route
    log, handler = make_logger(
        url=url, exchange=exchange, facilities="a.b=auth, a.b.c=mail, x=local0"
    )
    child = logging.getLogger(log.name + ".deep.er")
    child.error("default facility")
    sub = logging.getLogger("a.b.c.d")
    sub.addHandler(handler)
    sub.warning("longest prefix wins")
    logging.getLogger("a.b.x").addHandler(handler)
    logging.getLogger("a.b.x").warning("shorter prefix")
    log.info("override", extra={"facility": "Cron.Daily", "severity": "panic"})
    log.log(25, "custom level")
    handler.flush()
    for name in ("a.b.c.d", "a.b.x"):
        logging.getLogger(name).removeHandler(handler)
    keys = {body["msg"]: key for _, key, body in collect(url, queue, 5)}
    assert keys == {
        "default facility": "user.err",
        "longest prefix wins": "mail.warning",
        "shorter prefix": "auth.warning",
        "override": "cron_daily.emerg",
        "custom level": "user.info",
    }


def test_pika_and_logrouter_records_not_published(
    route: tuple[str, str, str], tmp_path: Path
) -> None:
    """On the root logger, pika's and logrouter's own records never loop back (FIELD 7)."""
    url, exchange, queue = route
    handler = RabbitHandler(url=url, exchange=exchange, spool=str(tmp_path / "s"))
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        logging.getLogger("pika.connection").info("pika talks")
        logging.getLogger("logrouter.sinks").info("sink talks")
        logging.getLogger("pikachu_app").info("app talks")
        handler.flush()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
    got = collect(url, queue, 10, timeout=3)
    assert [body["msg"] for _, _, body in got] == ["app talks"]


def test_exception_unserialisable_extra_huge_and_surrogates(
    route: tuple[str, str, str], make_logger: Any
) -> None:
    """Traceback in exc; odd extras become repr; huge msg truncated; bad text never breaks."""
    url, exchange, queue = route
    log, handler = make_logger(url=url, exchange=exchange, max_message=1000)

    class Odd:
        def __repr__(self) -> str:
            return "<Odd>"

    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed", extra={"obj": Odd(), "nan": float("nan")})
    log.info("x" * 5000)
    log.info("bad \udcff text", extra={"k": "\ud800"})
    log.info("%s %s", "too few args")
    handler.flush()
    got = {body["msg"][:6]: body for _, _, body in collect(url, queue, 4)}
    failed = got["failed"]
    assert "ValueError: boom" in failed["exc"] and "Traceback" in failed["exc"]
    assert failed["fields"] == {"obj": "<Odd>", "nan": "nan"}
    huge = got["xxxxxx"]
    assert huge["msg"].endswith("…[truncated]") and len(huge["msg"].encode()) <= 1000
    bad = next(b for b in got.values() if b["msg"].startswith("bad "))
    assert bad["msg"].endswith(" text") and "k" in bad["fields"]
    assert "too few args" in got["'%s %s"]["msg"]


def test_idle_connection_survives_heartbeats(route: tuple[str, str, str], make_logger: Any) -> None:
    """Idle for > 2 heartbeat periods, the same connection still delivers (FIELD 1)."""
    url, exchange, queue = route
    log, handler = make_logger(url=url, exchange=exchange, heartbeat=1)
    log.info("first")
    handler.flush()
    time.sleep(3.5)
    log.info("after idle")
    handler.flush()
    assert [b["msg"] for _, _, b in collect(url, queue, 2)] == ["first", "after idle"]
    assert handler._publisher is not None and handler._publisher.connections == 1


def test_short_script_delivers_last_record(route: tuple[str, str, str], tmp_path: Path) -> None:
    """A script that logs and exits at once (no close call) still delivers (FIELD 2, 3)."""
    url, exchange, queue = route
    script = textwrap.dedent(
        f"""
        import logging
        from logrouter import RabbitHandler
        h = RabbitHandler(url={url!r}, exchange={exchange!r}, spool={str(tmp_path / "s")!r})
        logging.getLogger().addHandler(h)
        logging.getLogger("script").warning("last words")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, timeout=30, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert [b["msg"] for _, _, b in collect(url, queue, 1)] == ["last words"]


def test_exit_with_broker_down_does_not_hang_and_spools(tmp_path: Path) -> None:
    """Broker unreachable: the script exits promptly, its records in its spool, and says
    so on stderr (FIELD 2-4)."""
    spool = tmp_path / "spool"
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    script = textwrap.dedent(
        f"""
        import logging
        from logrouter import RabbitHandler
        h = RabbitHandler(url={url!r}, exchange="logs", spool={str(spool)!r}, flush_timeout=2)
        logging.getLogger().addHandler(h)
        for i in range(100):
            logging.getLogger("script").warning("kept %d", i)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, timeout=30, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    from logrouter.app.spool import Spool

    [file] = spool.glob("*.sqlite")  # one spool file per process
    spooled = Spool(file, create=False)
    rows = spooled.read((-1, -1), 1000)
    spooled.close()
    assert [json.loads(r.body)["msg"] for r in rows] == [f"kept {i}" for i in range(100)]
    assert "password" not in done.stderr and "guest:guest" not in done.stderr
    assert (  # the app's last records are not on the broker: it says where they went
        "closing: about 100 records not confirmed within flush_timeout 2 s"
        f" (broker slow or away); they go to the spool {spool}"
    ) in done.stderr, done.stderr


def test_drops_counted_with_spool_off(make_logger: Any, capfd: pytest.CaptureFixture[str]) -> None:
    """Broker unreachable, spool off: beyond the buffer, records are counted and reported."""
    url = f"amqp://guest:secret@127.0.0.1:{free_port()}/%2F"
    log, handler = make_logger(url=url, exchange="logs", spool="", buffer_size=100)
    for i in range(500):
        log.info("r %d", i)
    assert handler.dropped == 400
    deadline = time.monotonic() + 5
    err = ""
    while "dropped" not in err and time.monotonic() < deadline:
        time.sleep(0.1)
        err += capfd.readouterr().err
    assert "dropped 400 records" in err
    assert "secret" not in err


def test_spool_on_a_full_disk_counts_drops_and_never_raises(
    tmp_path: Path, make_logger: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    """Broker unreachable, spool on a disk that fills: the app's calls never raise and
    print no 'Logging error' tracebacks; stderr names the spool file that could not be
    written, once; every record is in the spool or counted as dropped."""
    url = f"amqp://guest:secret@127.0.0.1:{free_port()}/%2F"
    total = 20_000
    with mounted_tmpfs(tmp_path / "disk", "256k") as disk:
        log, handler = make_logger(
            url=url, exchange="logs", spool=str(disk / "spool"), buffer_size=100
        )
        for i in range(total):
            log.info("record %d %s", i, "x" * 200)
        handler.close()
        kept = 0
        for path in (disk / "spool").glob("*.sqlite"):
            spool = Spool(path, create=False)
            kept += len(spool)
            spool.close()
    err = capfd.readouterr().err
    assert "Logging error" not in err and "Traceback" not in err
    assert err.count("write failed (records dropped): OperationalError") == 1, err
    assert f"spool {disk / 'spool'}/" in err
    assert "secret" not in err
    assert handler.dropped > 0
    assert kept == handler.stats["spooled"]
    assert kept + handler.dropped == total


def test_missing_exchange_keeps_records_then_replays_in_order(
    amqp_url: str, unique_name: Callable[[str], str], make_logger: Any
) -> None:
    """Publishing to an absent exchange loses nothing: records spool, then arrive in order."""
    exchange, queue = unique_name("late"), unique_name("q")
    log, _ = make_logger(url=amqp_url, exchange=exchange, buffer_size=50)
    try:
        for i in range(1000):
            log.info("n %d", i)
        time.sleep(1.5)  # the channel is refused (404); records go to the spool
        # The queue is reached through the alternate exchange: a record published between
        # the exchange's and the binding's declaration would be confirmed and unroutable.
        declare(amqp_url, f"{exchange}.ae", queue)
        conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        conn.channel().exchange_declare(
            exchange, "topic", arguments={"alternate-exchange": f"{exchange}.ae"}
        )
        conn.close()
        for i in range(1000, 1200):
            log.info("n %d", i)
        got = collect(amqp_url, queue, 1200, timeout=30)
        msgs = [b["msg"] for _, _, b in got]
        assert sorted(set(msgs), key=lambda m: int(m[2:])) == [f"n {i}" for i in range(1200)]
        first_seen = list(dict.fromkeys(msgs))
        assert first_seen == [f"n {i}" for i in range(1200)]
    finally:
        delete(amqp_url, exchange, queue)
        delete(amqp_url, f"{exchange}.ae", queue)


def test_dictconfig_with_plain_strings(route: tuple[str, str, str], tmp_path: Path) -> None:
    """Every option works as a plain string from logging.config.dictConfig (FIELD 8)."""
    url, exchange, queue = route
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "router": {
                    "class": "logrouter.RabbitHandler",
                    "url": f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F {url}",
                    "exchange": exchange,
                    "facility": "billing",
                    "facilities": "dc.auth=auth",
                    "app": "dc-app",
                    "buffer_size": "500",
                    "spool": str(tmp_path / "dc.sqlite"),
                    "spool_max_bytes": "1000000",
                    "flush_timeout": "5",
                    "max_message": "2048",
                    "heartbeat": "5",
                    "level": "INFO",
                }
            },
            "loggers": {"dc": {"handlers": ["router"], "level": "DEBUG", "propagate": False}},
        }
    )
    dc = logging.getLogger("dc")
    handler = dc.handlers[0]
    try:
        dc.info("from dictconfig")
        logging.getLogger("dc.auth").error("denied")
        dc.debug("filtered by level")
        handler.flush()
        got = {b["msg"]: (key, b["app"]) for _, key, b in collect(url, queue, 2)}
        assert got == {
            "from dictconfig": ("billing.info", "dc-app"),
            "denied": ("auth.err", "dc-app"),
        }
    finally:
        dc.removeHandler(handler)
        handler.close()


def test_structlog_recipe(route: tuple[str, str, str], make_logger: Any) -> None:
    """The documented structlog setup keeps the event as msg and key-values as fields."""
    url, exchange, queue = route
    log, handler = make_logger(url=url, exchange=exchange)
    structlog.configure(
        processors=[
            structlog.stdlib.add_log_level,
            structlog.processors.format_exc_info,
            structlog.stdlib.render_to_log_kwargs,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    try:
        structlog.get_logger(log.name).info("login", user="bob", attempt=2)
    finally:
        structlog.reset_defaults()
    handler.flush()
    [(_, key, body)] = collect(url, queue, 1)
    assert body["msg"] == "login" and key == "user.info"
    assert body["fields"]["user"] == "bob" and body["fields"]["attempt"] == 2


def _child(url: str, exchange: str, name: str, index: int) -> None:
    log = logging.getLogger(name)
    for i in range(250):
        log.info("child %d record %d", index, i)


def test_fork_children_records_all_arrive(route: tuple[str, str, str], make_logger: Any) -> None:
    """4 children forked by multiprocessing each get their own machinery (FIELD 11)."""
    url, exchange, queue = route
    log, handler = make_logger(url=url, exchange=exchange)
    log.info("parent before fork")
    handler.flush()
    ctx = multiprocessing.get_context("fork")
    children = [ctx.Process(target=_child, args=(url, exchange, log.name, n)) for n in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=60)
    assert [c.exitcode for c in children] == [0, 0, 0, 0]
    log.info("parent after fork")
    handler.flush()
    got = collect(url, queue, 1002, timeout=30)
    msgs = {b["msg"] for _, _, b in got}
    expected = {f"child {n} record {i}" for n in range(4) for i in range(250)}
    assert expected <= msgs
    assert {"parent before fork", "parent after fork"} <= msgs
    assert len({mid for mid, _, _ in got}) == len(got)
    assert len({b["pid"] for _, _, b in got}) == 5
    assert os.getpid() in {b["pid"] for _, _, b in got}


def test_default_spool_is_per_user_app_and_exchange(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default spool lives in the user's cache dir, one directory per app and exchange."""
    from logrouter.app.handler import default_spool_path

    monkeypatch.setenv("XDG_CACHE_HOME", "/cache")
    assert str(default_spool_path("billing api")) == "/cache/logrouter/spool-billing_api"
    assert default_spool_path("a", "logs") != default_spool_path("a", "test.logs.1")
    handler = RabbitHandler(app="billing", exchange="audit")
    assert str(handler.spool_path) == "/cache/logrouter/spool-billing@audit"
    assert RabbitHandler(app="billing", spool="").spool_path is None


_SIGNAL_APP = """
import faulthandler, logging, signal, sys, time
from logrouter import RabbitHandler, batchwire
url, exchange, spool, limited = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "limited"
options = {"rate_limit": 100} if limited else {}
handler = RabbitHandler(url=url, exchange=exchange, spool=spool, batch="auto", **options)
app, sig = logging.getLogger("app"), logging.getLogger("sig")
for logger in (app, sig):
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
faulthandler.dump_traceback_later(40, exit=True)  # a hang: its stacks, exit 1
alarms = 0
def on_alarm(signum, frame):
    global alarms
    alarms += 1
    sig.critical("alarm %d", alarms)  # crit: exempt from the rate limit, every one is sent
signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
start, n = time.monotonic(), 0
while time.monotonic() - start < 3:
    app.error("loop %d", n)
    n += 1
    if not limited:
        time.sleep(0.0002)  # the I/O thread keeps going idle: emit wakes it each time
signal.setitimer(signal.ITIMER_REAL, 0, 0)
faulthandler.cancel_dump_traceback_later()
print(alarms, n)
"""


@pytest.mark.parametrize("mode", ["limited", "unlimited"])
def test_a_signal_handler_that_logs_never_hangs_the_app(
    route: tuple[str, str, str], tmp_path: Path, mode: str
) -> None:
    """A signal handler runs in the thread it interrupts: its log call may land while
    that thread is inside the handler's rate limiter or waking the I/O thread. It used
    to wait there for its own thread forever (a plain lock in the limiter, pika's wake
    lock). Thousands of alarms, each logging, during a flood or an idle-waking loop:
    the app finishes, and every alarm's record arrives."""
    url, exchange, queue = route
    done = subprocess.run(
        [sys.executable, "-c", _SIGNAL_APP, url, exchange, str(tmp_path / "s"), mode],
        cwd=ROOT,
        timeout=90,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    alarms, loops = map(int, done.stdout.split())
    assert alarms > 1000 and loops > 1000
    alarm_messages = set()
    with pika.BlockingConnection(pika.URLParameters(url)) as conn:
        channel = conn.channel()
        while (got := channel.basic_get(queue, auto_ack=True))[0] is not None:
            method, props, body = got
            lines = (
                [line.record for line in batchwire.split_batch(body, method.routing_key)]
                if batchwire.is_batch(props.content_type)
                else [json.loads(body)]
            )
            alarm_messages |= {r["msg"] for r in lines if r and r["logger"] == "sig"}
    assert alarm_messages == {f"alarm {i}" for i in range(1, alarms + 1)}


def test_reconfiguring_logging_does_not_wait_for_the_handlers_timeouts(
    route: tuple[str, str, str], tmp_path: Path
) -> None:
    """dictConfig closes the old handlers holding logging's module lock; close() waits
    for the I/O thread, whose pika checks its log level, which (after any setLevel)
    needed that lock: both waited until every timeout ran out (13.5 s; gunicorn's
    SIGHUP reload), and the records went to a spool. Now the second dictConfig returns
    as soon as the broker confirmed, and every record arrives."""
    url, exchange, queue = route
    script = textwrap.dedent(
        f"""
        import logging, logging.config, time
        def config():
            handler = {{"class": "logrouter.RabbitHandler", "url": {url!r},
                "exchange": {exchange!r}, "spool": {str(tmp_path / "s")!r},
                "batch": "auto", "flush_timeout": "30"}}
            return {{"version": 1, "disable_existing_loggers": False,
                "handlers": {{"r": handler}}, "root": {{"handlers": ["r"], "level": "INFO"}}}}
        logging.config.dictConfig(config())
        for i in range(5000):
            logging.getLogger("app").info("before %d", i)
        logging.getLogger("any.library").setLevel(logging.INFO)  # clears every level cache
        start = time.monotonic()
        logging.config.dictConfig(config())
        print(round(time.monotonic() - start, 2))
        logging.getLogger("app").info("after")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, timeout=120, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 10, done.stdout  # flush_timeout is 30 s: no timeout ran out
    assert "not confirmed" not in done.stderr and "did not stop" not in done.stderr, done.stderr
    messages = set()
    with pika.BlockingConnection(pika.URLParameters(url)) as conn:
        channel = conn.channel()
        while (got := channel.basic_get(queue, auto_ack=True))[0] is not None:
            method, props, body = got
            assert batchwire.is_batch(props.content_type) or props.content_type
            messages |= (
                {
                    line.record["msg"]
                    for line in batchwire.split_batch(body, method.routing_key)
                    if line.record
                }
                if batchwire.is_batch(props.content_type)
                else {json.loads(body)["msg"]}
            )
    assert messages == {f"before {i}" for i in range(5000)} | {"after"}
