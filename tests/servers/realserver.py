"""Real servers as users run them: start a process tree, load it, stop it, count its records.

- ``Route.drain``/``settle`` keep every record that arrived on the test queue, so a test
  counts per worker pid and per request number (``Drained``).
- ``Server``: one process tree in its own process group: wait until a port answers and
  the workers are forked, stop gracefully with a deadline, kill the group.
- ``load``: real HTTP requests from a thread pool; every response says which pid served it,
  how many records that process logged and its handler's stats.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Container, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import pytest

from logrouter import batchwire

APPS = Path(__file__).resolve().parent / "apps"
BIN = Path(sys.executable).parent
#: Seconds a server gets to answer on its port (cold imports on a busy 2-core box).
START_TIMEOUT = 60.0
#: Seconds to wait for records that should be on the broker already (bounded wait, not a
#: performance claim: a healthy run needs well under one).
ARRIVAL_TIMEOUT = 20.0
#: Requests (or tasks) per scenario; LR_SERVERS_REQUESTS=2000 for the long version by hand.
REQUESTS = int(os.environ.get("LR_SERVERS_REQUESTS", "500"))


# ---- records on the broker ------------------------------------------------------------------


@dataclass
class Drained:
    """Every record drained from the test queue, in arrival order."""

    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list, repr=False)
    #: Messages drained, and how many of them were batches.
    messages: int = 0
    batches: int = 0

    def of_kind(self, *kinds: str) -> list[dict[str, Any]]:
        """Bodies whose ``fields.kind`` is one of ``kinds``."""
        return [b for _, b in self.records if b.get("fields", {}).get("kind") in kinds]

    def keys(self) -> Counter[tuple[str, int]]:
        """(kind, request number) -> times it arrived, for request and error records."""
        return Counter(
            (b["fields"]["kind"], int(b["fields"]["req"])) for b in self.of_kind("request", "error")
        )

    def per_pid(self, *kinds: str) -> Counter[int]:
        """pid -> number of records of ``kinds`` it sent."""
        return Counter(int(b["pid"]) for b in self.of_kind(*kinds))

    def duplicated_ids(self, keys: Container[tuple[str, int]] | None = None) -> int:
        """Deliveries beyond the first of a message_id (of records with these ``keys``)."""
        ids = Counter(
            message_id for message_id, body in self.records if keys is None or _key(body) in keys
        )
        return sum(n - 1 for n in ids.values())

    def ids_of(self, key: tuple[str, int]) -> set[str]:
        """The message_ids the records with this (kind, request number) arrived with."""
        return {message_id for message_id, body in self.records if _key(body) == key}


def _key(body: dict[str, Any]) -> tuple[str, int] | None:
    fields = body.get("fields", {})
    if fields.get("kind") not in ("request", "error"):
        return None
    return fields["kind"], int(fields["req"])


def expected_keys(numbers: Iterable[int]) -> Counter[tuple[str, int]]:
    """What the apps log for these request numbers: one info each, an error every tenth."""
    keys: Counter[tuple[str, int]] = Counter()
    for n in numbers:
        keys["request", n] += 1
        if n % 10 == 0:
            keys["error", n] += 1
    return keys


def lost_and_duplicated(
    drained: Drained, numbers: Iterable[int]
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(keys expected but missing, keys that arrived more than once), sorted."""
    want, got = expected_keys(numbers), drained.keys()
    lost = sorted(k for k in want if got[k] == 0)
    duplicated = sorted(k for k, n in got.items() if n > 1)
    return lost, duplicated


@dataclass
class Route:
    """A unique log exchange (with logrouter's topology) and one queue bound to ``#``."""

    url: str
    exchange: str
    queue: str
    drained: Drained = field(default_factory=Drained, repr=False)

    def drain(self, until: Callable[[Drained], bool], timeout: float = ARRIVAL_TIMEOUT) -> Drained:
        """Consume until ``until(drained)`` holds or ``timeout`` passed; then what arrived."""
        self._consume(lambda: until(self.drained), timeout)
        return self.drained

    def settle(self, quiet: float = 1.0, timeout: float = ARRIVAL_TIMEOUT) -> Drained:
        """Consume until nothing arrived for ``quiet`` seconds (late records, duplicates)."""
        last = [time.monotonic()]

        def done() -> bool:
            return time.monotonic() - last[0] >= quiet

        self._consume(done, timeout, on_message=lambda: last.__setitem__(0, time.monotonic()))
        return self.drained

    def _consume(
        self,
        done: Callable[[], bool],
        timeout: float,
        on_message: Callable[[], None] | None = None,
    ) -> None:
        deadline = time.monotonic() + timeout
        conn = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            ch = conn.channel()
            ch.basic_qos(prefetch_count=1000)
            # acked one by one: at cancel, what was delivered but not read goes back to
            # the queue (with auto_ack it was dropped, and records looked lost)
            for method, props, body in ch.consume(
                self.queue, auto_ack=False, inactivity_timeout=0.1
            ):
                if method is not None:
                    self.drained.records += _records(method.routing_key, props, body)
                    self.drained.messages += 1
                    self.drained.batches += batchwire.is_batch(props.content_type)
                    ch.basic_ack(method.delivery_tag)
                    if on_message:
                        on_message()
                if done() or time.monotonic() > deadline:
                    break
            ch.cancel()
        finally:
            conn.close()


def _records(routing_key: str, props: Any, body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(id, body) of each record of a message: the message's one, or a batch's lines."""
    if not batchwire.is_batch(props.content_type):
        return [(props.message_id, json.loads(body))]
    lines = batchwire.split_batch(body, routing_key, message_id=props.message_id)
    bad = [line.reason for line in lines if line.record is None]
    assert not bad, f"undecodable lines in a handler's batch {props.message_id}: {bad}"
    return [(line.id or "", line.record) for line in lines if line.record is not None]


# ---- process trees -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _sigint_state() -> str:
    """SIGINT's disposition and whether it is blocked, in this thread."""
    blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    return f"handler {signal.getsignal(signal.SIGINT)!r}, blocked {blocked}"


def _signals_as_from_a_shell() -> None:
    """In the forked child, before exec: SIGINT and SIGTERM at their defaults and no
    signal blocked, as a shell starts a server (Ctrl-C must reach it). An ignored
    disposition and the blocked mask are inherited across exec, and a test process can
    carry either (a server run by the suite ignored SIGINT after all its requests)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


class Server:
    """One process tree started in its own process group; its output goes to files."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, logs: Path):
        self.name = name
        self.argv = argv
        self.out = logs / f"{name}.out"
        self.err = logs / f"{name}.err"
        # faulthandler on: a server that hangs is sent SIGABRT (``stop``) and its threads'
        # stacks land in its stderr, so the failure says where it hung
        env = {**env, "PYTHONFAULTHANDLER": "1"}
        #: how this test process had SIGINT when it started the server (for failures)
        self.inherited = _sigint_state()
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=_signals_as_from_a_shell,
            )
        self.pid = self.proc.pid

    def output(self) -> str:
        """stdout + stderr so far (for failure messages)."""
        return f"--- {self.name} stdout\n{self.out.read_text(errors='replace')[-4000:]}\n" + (
            f"--- {self.name} stderr\n{self.err.read_text(errors='replace')[-12000:]}"
        )

    def wait_port(self, port: int, timeout: float = START_TIMEOUT) -> None:
        """Return once 127.0.0.1:``port`` accepts; fail with the output if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited ({self.proc.returncode})\n{self.output()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return
            time.sleep(0.1)
        pytest.fail(f"{self.name} did not answer on port {port} in {timeout} s\n{self.output()}")

    def wait_children(self, count: int, timeout: float = START_TIMEOUT) -> list[int]:
        """The master's children once there are ``count`` of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = children(self.pid)
            if len(found) >= count:
                return found
            time.sleep(0.1)
        pytest.fail(f"{self.name}: {children(self.pid)} children, wanted {count}\n{self.output()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, deadline: float = 60.0) -> float:
        """Send ``sig`` to the master; seconds until it exited (fails past ``deadline``)."""
        start = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(deadline)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # faulthandler: every thread's stack
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            pytest.fail(
                f"{self.name} still running {deadline} s after {sig.name} (its threads' stacks"
                f" at SIGABRT end its stderr; SIGINT in the test process at its start:"
                f" {self.inherited})\n{self.output()}"
            )
        return time.monotonic() - start

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


# ---- load ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One answered request: its number, status, and what the serving process said."""

    req: int
    status: int
    pid: int
    logged: int
    stats: dict[str, int]


def request(port: int, n: int, timeout: float = 30.0) -> Reply | None:
    """``GET /log?n=N``; None when the connection failed (e.g. its worker was killed)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", f"/log?n={n}")
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    if response.status != 200:
        return Reply(n, response.status, 0, 0, {})
    data = json.loads(body)
    return Reply(n, 200, int(data["pid"]), int(data["logged"]), data["stats"])


def load(
    port: int,
    numbers: Iterable[int],
    concurrency: int = 8,
    before: Callable[[int], None] | None = None,
) -> list[Reply]:
    """Send every request (``concurrency`` at a time); the answered ones, in request order.

    ``before(n)`` runs just before request ``n`` is sent (say, to kill a worker mid-load).
    """

    def send(n: int) -> Reply | None:
        if before is not None:
            before(n)
        return request(port, n)

    with ThreadPoolExecutor(concurrency) as pool:
        replies = list(pool.map(send, numbers))
    return [r for r in replies if r is not None]


def served(replies: Iterable[Reply]) -> list[int]:
    """Request numbers answered 200."""
    return [r.req for r in replies if r.status == 200]


# ---- what a scenario must show -------------------------------------------------------------


def complete(replies: Iterable[Reply]) -> Callable[[Drained], bool]:
    """A ``drain`` condition: every record of every answered request has arrived.

    Incremental (looks at each new record once), so draining thousands stays linear.
    """
    missing = set(expected_keys(served(replies)))
    seen = 0

    def done(drained: Drained) -> bool:
        nonlocal seen
        for _, body in drained.records[seen:]:
            fields = body.get("fields", {})
            if fields.get("kind") in ("request", "error"):
                missing.discard((fields["kind"], int(fields["req"])))
        seen = len(drained.records)
        return not missing

    return done


def detail_problems(drained: Drained, numbers: Iterable[int], details: int) -> list[str]:
    """What is wrong with the ``detail`` records (``details`` for each request of
    ``numbers``, each once, each with its own id)."""
    want = set(numbers)
    got = Counter(int(b["fields"]["req"]) for b in drained.of_kind("detail"))
    wrong = sorted(n for n in want if got[n] != details)
    ids = Counter(i for i, b in drained.records if b.get("fields", {}).get("kind") == "detail")
    problems = []
    if wrong:
        problems.append(
            f"{len(wrong)} requests have not {details} detail records each:"
            f" {[(n, got[n]) for n in wrong[:5]]}"
        )
    if repeated := sum(n - 1 for n in ids.values() if n > 1):
        problems.append(f"{repeated} detail records repeated an id")
    return problems


def record_problems(drained: Drained, replies: list[Reply], stage: str) -> list[str]:
    """What is wrong with the records of the answered requests (empty: every one once).

    Lost and duplicated are counted by (kind, request number) and by message_id; the
    records are counted per pid against the replies that pid gave.
    """
    ok = [r for r in replies if r.status == 200]
    want = expected_keys(r.req for r in ok)
    lost, duplicated = lost_and_duplicated(drained, (r.req for r in ok))
    duplicated = [key for key in duplicated if key in want]  # of these requests only
    pid_of = {r.req: r.pid for r in ok}
    problems = []
    if lost:
        by_pid = Counter(pid_of[n] for _, n in lost)
        problems.append(
            f"{stage}: {len(lost)} of {sum(want.values())} records lost"
            f" (by worker pid: {dict(by_pid)}; first: {lost[:5]})"
        )
    if duplicated:
        problems.append(f"{stage}: {len(duplicated)} records arrived twice: {duplicated[:5]}")
    if extra := drained.duplicated_ids(want):
        problems.append(f"{stage}: {extra} deliveries repeated a message_id")
    sent: Counter[int] = Counter()
    for r in ok:
        sent[r.pid] += 2 if r.req % 10 == 0 else 1
    got = Counter({pid: n for pid, n in drained.per_pid("request", "error").items() if pid in sent})
    if not lost and got != sent:
        problems.append(f"{stage}: records per pid {dict(got)}, the replies say {dict(sent)}")
    return problems


def spooled_rows(cache: Path) -> dict[str, int]:
    """Rows left in every handler spool (SQLite) under ``cache`` (the test's XDG_CACHE_HOME)."""
    left = {}
    for path in cache.rglob("*.sqlite"):
        with contextlib.closing(sqlite3.connect(path)) as db:
            (rows,) = db.execute("SELECT count(*) FROM spool").fetchone()
        if rows:
            left[str(path.relative_to(cache))] = int(rows)
    return left


def import_problems(drained: Drained, pids: Iterable[int]) -> list[str]:
    """Each of ``pids`` logged its ``import`` record exactly once, and nobody else did."""
    want, got = Counter(pids), drained.per_pid("import")
    if got == want:
        return []
    return [f"import records per pid {dict(got)}, expected one from each of {sorted(want)}"]


def serve_and_stop(
    server: Server,
    port: int,
    route: Route,
    requests: int,
    *,
    workers: Iterable[int],
    import_pids: Iterable[int],
    stop_signal: signal.Signals = signal.SIGTERM,
    stop_within: float | None = None,
) -> list[str]:
    """Load ``requests``, check while running, stop, check again; every problem seen.

    ``workers``: the pids that must have served (all of them); ``import_pids``: who logs
    the import record, once each; ``stop_within``: the server's own shutdown timeout (a
    stop that takes that long means the server had to kill a worker).
    """
    start = time.monotonic()
    replies = load(port, range(1, requests + 1))
    loaded = time.monotonic()
    problems = []
    if len(served(replies)) != requests:
        problems.append(f"only {len(served(replies))} of {requests} requests answered 200")
    problems += record_problems(route.drain(complete(replies)), replies, "while running")
    pids, workers = {r.pid for r in replies}, set(workers)
    if pids != workers:
        problems.append(f"replies came from pids {sorted(pids)}, workers are {sorted(workers)}")
    arrived = time.monotonic()
    elapsed = server.stop(stop_signal)
    if stop_within is not None and elapsed >= stop_within:
        problems.append(
            f"stop took {elapsed:.1f} s: the server's own shutdown timeout ({stop_within} s)"
            " ran out and workers were killed"
        )
    final = route.settle()
    problems += record_problems(final, replies, "after stop")
    problems += import_problems(final, import_pids)
    print(
        f"{server.name}: {requests} requests in {loaded - start:.1f} s, records on the broker"
        f" {arrived - loaded:.1f} s later, stop {elapsed:.1f} s"
    )
    return problems


# ---- gunicorn ---------------------------------------------------------------------------

#: gunicorn --graceful-timeout, equal to the handler's flush_timeout: a worker that waits
#: its whole flush_timeout at exit is SIGKILLed by the master, and the stop takes this long.
GRACEFUL = 5
FLUSH_TIMEOUT = "5"


def gunicorn(
    servers: Callable[..., Server], *options: str, app: str = "wsgi_app:app", **env: str
) -> tuple[Server, int]:
    """A started gunicorn (``options`` added), answering on its port, 4 workers forked."""
    port = free_port()
    argv = [str(BIN / "gunicorn"), "-b", f"127.0.0.1:{port}", "-w", "4", "--no-control-socket"]
    argv += ["--graceful-timeout", str(GRACEFUL), *options, app]
    server = servers("gunicorn", argv, **{"LR_TEST_FLUSH_TIMEOUT": FLUSH_TIMEOUT, **env})
    server.wait_port(port)
    server.wait_children(4)
    return server, port
