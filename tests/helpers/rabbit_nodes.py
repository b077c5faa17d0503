"""Private RabbitMQ nodes for fault and cluster tests.

Each ``RabbitNode`` is a real ``rabbitmq-server`` run as the current user from
``/usr/lib/rabbitmq/bin`` (never the /usr/sbin wrappers, which switch user), with
its own ports, config file, empty plugin list, data and log dirs and pid file, so
it never touches the shared broker (5672/25672/15672). Recipe and traps: "Private
RabbitMQ nodes" in ../shared/FIELD-NOTES.md.

All nodes of one Python process share one Erlang cookie (a private ``HOME`` with
``.erlang.cookie``; ``$LOGROUTER_RABBIT_HOME`` picks it, e.g. for a subprocess), so
``rabbitmqctl`` reaches them and they can cluster. Every
node started is killed at interpreter exit if a test forgot to stop it.

Use from tests::

    from tests.helpers.rabbit_nodes import RabbitNode, free_port, make_cluster

    def test_x(private_node: RabbitNode) -> None:   # fixture from conftest.py
        private_node.restart()
        private_node.kill(); private_node.start()
        private_node.set_memory_alarm(True)
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

RABBIT_BIN = Path(os.environ.get("LOGROUTER_RABBIT_BIN", "/usr/lib/rabbitmq/bin"))
RABBITMQ_SERVER = RABBIT_BIN / "rabbitmq-server"
RABBITMQCTL = RABBIT_BIN / "rabbitmqctl"
SHARED_PORTS = frozenset({5672, 5671, 25672, 15672, 4369, 35672})
EX_UNAVAILABLE = 69  # rabbitmqctl's "node not (yet) reachable"
CTL_TIMEOUT = 60.0  # seconds any single rabbitmqctl call may take


class RabbitNodeError(RuntimeError):
    """A private node did not start, stop or answer; the message includes its log tail."""


def available() -> bool:
    """True when rabbitmq-server is installed where private nodes are started from."""
    return RABBITMQ_SERVER.exists() and RABBITMQCTL.exists()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, never one of the shared broker's ports.

    Kept below 55000 so that RabbitMQ's derived ports (dist port + 20000 etc.) stay valid.
    """
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in SHARED_PORTS and port < 55000:
            return port
    # The ephemeral range is above 55000 on this machine: probe a fixed range instead.
    for port in range(20000 + secrets.randbelow(20000), 55000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port below 55000")


_cookie_home: Path | None = None


def _home() -> Path:
    """A private HOME holding the Erlang cookie shared by this process's nodes and CLI calls."""
    global _cookie_home
    if _cookie_home is None and (given := os.environ.get("LOGROUTER_RABBIT_HOME")):
        _cookie_home = Path(given)  # the caller's directory, the caller's cleanup
        _cookie_home.mkdir(parents=True, exist_ok=True)
        cookie = _cookie_home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(16).upper())
            cookie.chmod(0o400)
    if _cookie_home is None:
        home = Path(tempfile.mkdtemp(prefix="lrh-"))
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        _cookie_home = home
        atexit.register(shutil.rmtree, home, True)
    return _cookie_home


_live_nodes: weakref.WeakSet[RabbitNode] = weakref.WeakSet()


def _kill_leftovers() -> None:
    for node in list(_live_nodes):
        with contextlib.suppress(Exception):
            node.kill()


atexit.register(_kill_leftovers)


class RabbitNode:
    """One private RabbitMQ node under ``base_dir`` (keep it short: Erlang dislikes long paths)."""

    def __init__(
        self,
        name: str,
        base_dir: Path,
        port: int | None = None,
        dist_port: int | None = None,
        config: str = "",
    ) -> None:
        self.name = name if "@" in name else f"{name}@localhost"
        self.base_dir = Path(base_dir)
        self.port = port or free_port()
        self.dist_port = dist_port or free_port()
        for which, value in (("port", self.port), ("dist_port", self.dist_port)):
            if value in SHARED_PORTS:
                raise ValueError(f"{which} {value} belongs to the shared broker")
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.config = config
        self.pid_file = self.base_dir / "rabbit.pid"
        self.config_file = self.base_dir / "rabbitmq.conf"
        self.plugins_file = self.base_dir / "enabled_plugins"
        self.mnesia_base = self.base_dir / "mnesia"
        self.log_base = self.base_dir / "log"
        self._write_files()
        self.alarms: set[str] = set()  # alarms raised since the last start

    def __repr__(self) -> str:
        return f"RabbitNode({self.name!r}, port={self.port}, dir={str(self.base_dir)!r})"

    # -- files and environment ------------------------------------------------
    def _write_files(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.mnesia_base.mkdir(exist_ok=True)
        self.log_base.mkdir(exist_ok=True)
        self.plugins_file.write_text("[].\n")  # the dot matters
        self.config_file.write_text(
            "loopback_users = none\n"
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "log.console = false\n"
            "log.file.level = info\n" + (self.config.rstrip() + "\n" if self.config else "")
        )

    def env(self) -> dict[str, str]:
        """Environment for rabbitmq-server and rabbitmqctl of this node."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(_home()),
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONF_ENV_FILE="/dev/null",
            RABBITMQ_CONFIG_FILE=str(self.config_file),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base_dir / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.plugins_file),
            RABBITMQ_MNESIA_BASE=str(self.mnesia_base),
            RABBITMQ_LOG_BASE=str(self.log_base),
            RABBITMQ_PID_FILE=str(self.pid_file),
            RABBITMQ_ALLOW_INPUT="",
        )
        return env

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the node's logs, for error messages."""
        chunks = []
        for path in sorted(self.log_base.glob("*.log")):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                chunks.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(chunks) or "(no log)"

    # -- lifecycle --------------------------------------------------------------
    def pid(self) -> int | None:
        """The beam process id from the pid file, or None."""
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def is_running(self) -> bool:
        """True while the node's beam process exists."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return _not_zombie(pid)

    def start(self, timeout: float = 60) -> None:
        """Start detached and wait until the node has booted (await_startup, retried on 69)."""
        self.alarms.clear()
        if self.is_running():
            raise RabbitNodeError(f"{self} is already running")
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        _live_nodes.add(self)
        result = subprocess.run(
            [str(RABBITMQ_SERVER), "-detached"],
            env=self.env(),
            cwd=self.base_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CTL_TIMEOUT,
        )
        if result.returncode != 0:
            raise RabbitNodeError(f"{self}: rabbitmq-server -detached failed: {result.stderr}")
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise RabbitNodeError(
                    f"{self} did not start within {timeout}s: {last}\n{self.log_tail()}"
                )
            code, out = self._ctl(
                ["await_startup", "--timeout", str(max(1, int(remaining)))], min(remaining, 60)
            )
            if code == 0:
                self._spawn_reaper()
                return
            last = out.strip()
            if code != EX_UNAVAILABLE and "nodedown" not in out and "unable" not in out.lower():
                self.kill()
                raise RabbitNodeError(
                    f"{self}: await_startup exit {code}: {last}\n{self.log_tail()}"
                )
            time.sleep(0.5)

    def _spawn_reaper(self) -> None:
        """A tiny shell that kill -9s the node if this Python process dies without cleanup
        (SIGKILL, a hung CI job killed): no node outlives the test session."""
        pid = self.pid()
        if pid is None:
            return
        me = os.getpid()
        watch = f"while kill -0 {me} && kill -0 {pid}; do sleep 1; done"
        script = f"({watch}; kill -0 {me} || kill -9 {pid}) >/dev/null 2>&1 </dev/null &"
        # The backgrounded subshell is orphaned at once: no child left for Python to reap.
        subprocess.run(["sh", "-c", script], start_new_session=True, check=False, timeout=10)

    def stop(self) -> None:
        """Graceful stop (``rabbitmqctl stop PIDFILE`` waits for the process to end)."""
        if not self.is_running():
            return
        code, out = self._ctl(["stop", str(self.pid_file)], CTL_TIMEOUT)
        if code != 0 and self.is_running():
            self.kill()
            raise RabbitNodeError(f"{self}: stop failed ({code}): {out}; killed instead")
        self._wait_dead(30)
        _live_nodes.discard(self)

    def kill(self) -> None:
        """``kill -9`` the beam process and wait until it is gone (a crash, for fault tests)."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_dead(30)
        _live_nodes.discard(self)

    def restart(self) -> None:
        """Graceful stop, then start."""
        self.stop()
        self.start()

    def _wait_dead(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.is_running():
            if time.monotonic() > deadline:
                raise RabbitNodeError(f"{self}: process {self.pid()} still alive after {timeout}s")
            time.sleep(0.05)

    # -- control ----------------------------------------------------------------
    def _ctl(self, args: list[str], timeout: float = CTL_TIMEOUT) -> tuple[int, str]:
        try:
            result = subprocess.run(
                [str(RABBITMQCTL), "-n", self.name, *args],
                env=self.env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return EX_UNAVAILABLE, f"rabbitmqctl {' '.join(args)} timed out after {timeout}s"
        return result.returncode, result.stdout + result.stderr

    def rabbitmqctl(self, *args: str) -> str:
        """Run ``rabbitmqctl -n NODE ARGS``; return stdout, raise RabbitNodeError on failure."""
        code, out = self._ctl(list(args))
        if code != 0:
            raise RabbitNodeError(f"{self}: rabbitmqctl {' '.join(args)} exit {code}: {out}")
        return out

    def set_memory_alarm(self, on: bool) -> None:
        """Raise (watermark 0) or clear the memory alarm: publishers get blocked."""
        self.rabbitmqctl("set_vm_memory_high_watermark", "0" if on else "0.4")
        self._note_alarm("memory", on)

    def set_disk_alarm(self, on: bool) -> None:
        """Raise (a huge free-disk limit) or clear the disk alarm."""
        self.rabbitmqctl("set_disk_free_limit", "1000000GB" if on else "50MB")
        self._note_alarm("disk", on)

    def _note_alarm(self, kind: str, on: bool) -> None:
        # Runtime settings: a (re)start clears them, so start() forgets them too.
        if on:
            self.alarms.add(kind)
        else:
            self.alarms.discard(kind)


def _not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def peer_config(first: RabbitNode) -> str:
    """rabbitmq.conf lines of a blank node that joins ``first`` as it boots (peer discovery;
    the stop_app, reset, join_cluster, start_app of ``make_cluster`` took ~8 s a node)."""
    return (
        "cluster_formation.peer_discovery_backend = classic_config\n"
        f"cluster_formation.classic_config.nodes.1 = {first.name}\n"
    )


def running_nodes(node: RabbitNode) -> set[str]:
    """The names of the running members of ``node``'s cluster (``cluster_status``)."""
    status = json.loads(node.rabbitmqctl("cluster_status", "--formatter", "json"))
    return set(status.get("running_nodes", []))


def make_cluster(nodes: list[RabbitNode]) -> None:
    """Join nodes[1:] to nodes[0] (all started): stop_app, reset, join_cluster, start_app;
    a node that already joined at boot (``peer_config``) is left as it is."""
    first = nodes[0]
    joined = running_nodes(first)
    for node in nodes[1:]:
        if node.name in joined:
            continue
        node.rabbitmqctl("stop_app")
        node.rabbitmqctl("reset")
        node.rabbitmqctl("join_cluster", first.name)
        node.rabbitmqctl("start_app")
        node.rabbitmqctl("await_startup", "--timeout", "60")


def short_dir(prefix: str = "lrn-") -> Path:
    """A fresh short directory under /tmp (Erlang paths stay short)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def unique_node_name(prefix: str = "lrt") -> str:
    """A node name no concurrent test run uses, e.g. ``lrt-3fa2c1@localhost``."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}@localhost"


def require_rabbitmq_server() -> None:
    """Fail (never skip) with a how-to when rabbitmq-server is not installed."""
    if not available():
        pytest.fail(
            f"{RABBITMQ_SERVER} not found: private-node tests need rabbitmq-server installed "
            "(`apt-get install rabbitmq-server`), or LOGROUTER_RABBIT_BIN pointing at its bin dir.",
            pytrace=False,
        )


@contextlib.contextmanager
def started_node(prefix: str = "lrt", config: str = "") -> Iterator[RabbitNode]:
    """A started private node in a short temp dir; killed and removed on exit."""
    require_rabbitmq_server()
    base = short_dir()
    node = RabbitNode(unique_node_name(prefix), base, config=config)
    try:
        node.start()
        yield node
    finally:
        try:
            node.stop()
        except Exception:
            node.kill()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def session_node() -> Iterator[RabbitNode]:
    """One private RabbitMQ node for the session (per xdist worker); killed at the end.

    Starting a node takes seconds, so the fault tests share it: ``private_node``
    hands it over running and alarm-free, and takes it back the same way.
    """
    with started_node("lrs") as node:
        yield node


def reset_node(node: RabbitNode) -> None:
    """Running, no memory or disk alarm (whatever the last test did to it)."""
    if not node.is_running():
        node.start()
    if "memory" in node.alarms:
        node.set_memory_alarm(False)
    if "disk" in node.alarms:
        node.set_disk_alarm(False)


@pytest.fixture
def private_node(session_node: RabbitNode) -> Iterator[RabbitNode]:
    """The session's private node, running and alarm-free at the start and end of a test;
    a test may stop, kill, restart or alarm it (use unique queue names)."""
    reset_node(session_node)
    yield session_node
    reset_node(session_node)


@contextlib.contextmanager
def started_cluster(prefix: str = "lrc", size: int = 3) -> Iterator[list[RabbitNode]]:
    """``size`` private nodes joined into one cluster; all killed and removed afterwards."""
    require_rabbitmq_server()
    tag = uuid.uuid4().hex[:6]
    base = short_dir(f"{prefix}-")
    first = RabbitNode(f"{prefix}1-{tag}@localhost", base / "n1")
    nodes = [first] + [
        RabbitNode(f"{prefix}{i}-{tag}@localhost", base / f"n{i}", config=peer_config(first))
        for i in range(2, size + 1)
    ]
    try:
        for node in nodes:
            node.start()
        make_cluster(nodes)  # whoever did not join at boot
        yield nodes
    finally:
        for node in reversed(nodes):
            node.kill()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def session_cluster() -> Iterator[list[RabbitNode]]:
    """Three private nodes joined into one cluster for the session (per xdist worker);
    all killed at the end. Forming a cluster takes tens of seconds, so tests share it."""
    with started_cluster("lrc") as nodes:
        yield nodes


@pytest.fixture
def rabbit_cluster(session_cluster: list[RabbitNode]) -> Iterator[list[RabbitNode]]:
    """The session's cluster with every node running and alarm-free at the start and end
    of a test; a test may kill, stop or restart nodes (a restarted node rejoins)."""
    for node in session_cluster:
        reset_node(node)
    yield session_cluster
    for node in session_cluster:
        reset_node(node)
