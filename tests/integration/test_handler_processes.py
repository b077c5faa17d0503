"""RabbitHandler across processes: busy forks, spool adoption, signals, a missing exchange."""

from __future__ import annotations

import json
import logging
import multiprocessing
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika
import pytest

from logrouter import batchwire
from tests.helpers import ROOT
from tests.helpers.handler import collect
from tests.helpers.rabbit_nodes import free_port


def _run(script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=ROOT,
        timeout=timeout,
        capture_output=True,
        text=True,
    )


def _child_logs(name: str, index: int) -> None:
    log = logging.getLogger(name)
    for i in range(200):
        log.info("child %d record %d", index, i)


def test_children_forked_while_parent_logs_and_connects(
    route: tuple[str, str, str], make_logger: Any
) -> None:
    """Forks taken while a parent thread logs and the parent's I/O thread is still connecting:
    every child's records and every parent record arrive exactly once (issue 11)."""
    url, exchange, queue = route
    log, handler = make_logger(url=url, exchange=exchange)
    stop = threading.Event()
    parent_count = [0]

    def chatter() -> None:
        while not stop.is_set() and parent_count[0] < 5000:
            log.info("parent %d", parent_count[0])
            parent_count[0] += 1

    chatty = threading.Thread(target=chatter)
    chatty.start()  # the first record starts the I/O thread: forks race its connect
    ctx = multiprocessing.get_context("fork")
    children = [ctx.Process(target=_child_logs, args=(log.name, n)) for n in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=60)
    stop.set()
    chatty.join()
    assert [c.exitcode for c in children] == [0, 0, 0, 0]
    handler.flush()
    expected = 4 * 200 + parent_count[0]
    got = collect(url, queue, expected, timeout=60)
    msgs = Counter(b["msg"] for _, _, b in got)
    assert {f"child {n} record {i}" for n in range(4) for i in range(200)} <= set(msgs)
    assert {f"parent {i}" for i in range(parent_count[0])} <= set(msgs)
    assert len(msgs) == expected and max(msgs.values()) == 1
    assert len({b["pid"] for _, _, b in got}) == 5


def test_orphaned_spool_adopted_exactly_once_by_simultaneous_starters(
    route: tuple[str, str, str], tmp_path: Path
) -> None:
    """A dead process's spool is taken by exactly one of three processes that start together:
    every record arrives once; files were private (umask 022) and are gone afterwards."""
    url, exchange, queue = route
    spool = tmp_path / "spool"
    down = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    dead = _run(
        f"""
        import logging, os
        os.umask(0o022)
        from logrouter import RabbitHandler
        h = RabbitHandler(url={down!r}, exchange={exchange!r}, spool={str(spool)!r},
                          app="adopt", flush_timeout=1)
        logging.getLogger().addHandler(h)
        for i in range(300):
            logging.getLogger("app").warning("orphan %d", i)
        h.flush()  # broker away: everything to the spool
        os._exit(0)  # like a SIGKILLed process: no close, no cleanup
        """
    )
    assert dead.returncode == 0, dead.stderr
    files = sorted(spool.iterdir())
    assert [p.suffix for p in files if p.suffix in (".lock", ".sqlite")] == [".lock", ".sqlite"]
    assert stat.S_IMODE(spool.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}
    starter = f"""
        import logging, time
        from logrouter import RabbitHandler
        h = RabbitHandler(url={url!r}, exchange={exchange!r}, spool={str(spool)!r}, app="adopt")
        logging.getLogger().addHandler(h)
        logging.getLogger("app").warning("starter")
        time.sleep(2)
        """
    procs = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(starter)], cwd=ROOT)
        for _ in range(3)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    got = collect(url, queue, 303, timeout=30)
    msgs = Counter(b["msg"] for _, _, b in got)
    assert msgs == Counter({f"orphan {i}": 1 for i in range(300)} | {"starter": 3})
    assert list(spool.iterdir()) == []


def test_signal_handler_that_logs_while_the_thread_starts(route: tuple[str, str, str]) -> None:
    """A signal handler logging while _start holds its lock neither hangs nor loses the record."""
    url, exchange, queue = route
    done = _run(
        f"""
        import logging, os, signal
        from logrouter import RabbitHandler
        from logrouter.app import publisher

        log = logging.getLogger("app")
        signal.signal(signal.SIGUSR1, lambda *_: log.warning("from the signal handler"))
        original = publisher.Publisher.__init__
        def init(self, *args, **kwargs):
            os.kill(os.getpid(), signal.SIGUSR1)  # delivered inside _start, lock held
            original(self, *args, **kwargs)
        publisher.Publisher.__init__ = init
        h = RabbitHandler(url={url!r}, exchange={exchange!r}, spool="")
        log.addHandler(h)
        log.warning("first")
        h.flush()
        """,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(b["msg"] for _, _, b in collect(url, queue, 2)) == [
        "first",
        "from the signal handler",
    ]


def test_missing_exchange_said_once_with_the_command(
    amqp_url: str,
    unique_name: Callable[[str], str],
    make_logger: Any,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Publishing to an absent exchange: stderr says so once, naming `logrouter setup`;
    the records are kept in the spool."""
    exchange = unique_name("absent")
    log, handler = make_logger(url=amqp_url, exchange=exchange, reconnect_max=0.2)
    for i in range(20):
        log.info("kept %d", i)
    err = ""
    deadline = time.monotonic() + 10
    while "does not exist" not in err and time.monotonic() < deadline:
        time.sleep(0.1)
        err += capfd.readouterr().err
    time.sleep(1.5)  # several more refused channels
    log.info("kept 20")
    time.sleep(0.5)
    err += capfd.readouterr().err
    assert err.count("does not exist") == 1 and "logrouter setup" in err
    handler.flush()
    assert handler.stats["spooled"] == 21 and handler.dropped == 0


def test_io_thread_imports_nothing_after_the_handler_is_made(
    route: tuple[str, str, str],
) -> None:
    """Connecting by host name and publishing imports no module: a fork taken during such
    an import leaves its lock held in the child, whose I/O thread then never connects
    (the gunicorn --preload worker that never published, issue 11)."""
    url, exchange, queue = route
    by_name = url.replace("127.0.0.1", "localhost")
    done = _run(
        f"""
        import logging, sys
        from logrouter import RabbitHandler
        h = RabbitHandler(url={by_name!r}, exchange={exchange!r}, spool="")
        before = set(sys.modules)
        log = logging.getLogger("app")
        log.addHandler(h)
        log.warning("one")
        h.flush()
        print(sorted(set(sys.modules) - before))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert [b["msg"] for _, _, b in collect(url, queue, 1)] == ["one"]


@pytest.mark.parametrize("fast_frames", ["true", "false"])
def test_every_message_carries_the_login_as_user_id(
    route: tuple[str, str, str], make_logger: Any, fast_frames: str
) -> None:
    """user_id is the connection's login on the fast frames path and on basic_publish alike
    (the broker refuses any other, so it names the sender)."""
    url, exchange, queue = route
    log, handler = make_logger(url=url, exchange=exchange, fast_frames=fast_frames)
    for i in range(3):
        log.info("who %d", i)
    handler.flush()
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = conn.channel()
        got = []
        for _ in range(3):
            method, props, body = channel.basic_get(queue, auto_ack=True)
            assert method is not None
            got.append((props.user_id, props.app_id, json.loads(body)["msg"]))
    finally:
        conn.close()
    login = pika.URLParameters(url).credentials.username
    assert got == [(login, "testapp", f"who {i}") for i in range(3)]


def test_a_celery_child_leaving_with_os_exit_closes_the_handler_first(
    route: tuple[str, str, str],
) -> None:
    """A Celery prefork child ends with os._exit (billiard's worker): no atexit and no
    multiprocessing finalizer runs. Celery sends worker_process_shutdown in the child
    just before; the handler closes then. A forked child that logs 2,000 records
    (batch="auto": a backlog waits for confirms), sends that signal and leaves with
    os._exit has every record on the broker."""
    url, exchange, queue = route
    done = _run(
        f"""
        import logging, os
        import celery.signals
        from logrouter import RabbitHandler

        handler = RabbitHandler(url={url!r}, exchange={exchange!r}, spool="", batch="auto")
        log = logging.getLogger("app")
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.info("parent")
        handler.flush()
        child = os.fork()
        if child == 0:
            for i in range(2000):
                log.info("child %d", i)
            celery.signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)
            os._exit(0)
        _, status = os.waitpid(child, 0)
        assert status == 0, status
        """,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    messages = []
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        while (got := channel.basic_get(queue, auto_ack=True))[0] is not None:
            messages.append(got)
    finally:
        connection.close()
    texts = [
        line.record["msg"]
        for method, props, body in messages
        for line in batchwire.decode_message(
            body, method.routing_key, content_type=props.content_type
        )
        if line.record is not None
    ]
    assert Counter(texts) == Counter(["parent"] + [f"child {i}" for i in range(2000)])
