"""Run sinks in one process: threads, signals, reload, sd_notify.

``run_sinks`` loads the config, starts one ``Sink`` thread per selected sink
(each with its own broker connection) and then the main thread only watches:
SIGTERM/SIGINT stop every sink (each writes and acks the batch in hand),
SIGHUP re-reads the config and reopens files, and sd_notify gets READY=1,
STATUS=, WATCHDOG=1 (only while every sink loop is alive) and STOPPING=1.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from logrouter import exitcodes, log
from logrouter.config import ConfigError, RoutingConfig, load_config
from logrouter.connection import URL_ENV
from logrouter.sinks.consumer import Sink
from logrouter.sinks.journal import state_dir

#: Seconds the sinks get to write and ack the batch in hand after SIGTERM.
STOP_TIMEOUT = 10.0
#: READY=1 is sent when every sink consumes, or after this long (broker down at start).
READY_GRACE = 10.0
POLL = 0.2


class _Notify:
    """sd_notify through ``logrouter.sdnotify`` when it is there; silent otherwise."""

    def __init__(self) -> None:
        try:
            self._module: Any = importlib.import_module("logrouter.sdnotify")
        except ImportError:
            self._module = None

    def __call__(self, name: str, *args: Any) -> Any:
        function = getattr(self._module, name, None)
        if function is None:
            return None
        try:
            return function(*args)
        except OSError:
            return None


def load(path: Path, url: str | None) -> RoutingConfig:
    """The config, with ``--url`` taking the place of ``$LOGROUTER_URL``."""
    env = dict(os.environ)
    if url:
        env[URL_ENV] = url
    return load_config(path, env=env)


def config_error(exc: ConfigError | OSError, path: Path) -> int:
    """Print a config problem to stderr; exit code 78."""
    if isinstance(exc, ConfigError):
        print(f"logrouter: invalid config {path}:", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
    else:
        print(f"logrouter: cannot read config {path}: {exc}", file=sys.stderr)
    return exitcodes.CONFIG


def run_sinks(
    path: Path,
    names: Sequence[str] | None,
    *,
    url: str | None = None,
    burst: bool = False,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run the named sinks (all when ``names`` is None) until stopped; an exit code."""
    log.configure()
    try:
        config = load(path, url)
    except (ConfigError, OSError) as exc:
        return config_error(exc, path)
    if not config.sinks:
        print(f"logrouter: {path} defines no sinks ([sinks.NAME] tables)", file=sys.stderr)
        return exitcodes.CONFIG
    wanted = list(config.sinks) if names is None else list(names)
    unknown = [name for name in wanted if name not in config.sinks]
    if unknown:
        print(
            f"logrouter: no sink {', '.join(map(repr, unknown))} in {path}; "
            f"sinks there: {', '.join(sorted(config.sinks))}",
            file=sys.stderr,
        )
        return exitcodes.CONFIG
    runner = Runner(config, wanted, url=url, burst=burst, state=state_dir(env))
    return runner.run()


class Runner:
    """The main thread of a sink process (see the module docstring)."""

    def __init__(
        self,
        config: RoutingConfig,
        names: Sequence[str],
        *,
        url: str | None,
        burst: bool,
        state: Path,
    ) -> None:
        self.config = config
        self.url = url
        self.burst = burst
        self.state = state
        self.all_sinks = len(names) == len(config.sinks)
        self.sinks: dict[str, Sink] = {}
        self.threads: dict[str, threading.Thread] = {}
        self.log = log.get_logger("runner")
        self.notify = _Notify()
        self._stop = threading.Event()
        self._reload = threading.Event()
        for name in names:
            self._start(name)

    def _start(self, name: str) -> None:
        sink = Sink(
            self.config.sinks[name], self.config.broker, state_dir=self.state, burst=self.burst
        )
        thread = threading.Thread(target=sink.run, name=f"sink-{name}", daemon=True)
        self.sinks[name] = sink
        self.threads[name] = thread
        thread.start()

    # ---- signals -------------------------------------------------------

    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        self._stop.set()

    def _on_hup(self, signum: int, _frame: FrameType | None) -> None:
        self._reload.set()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    # ---- the watch loop ------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        started = time.monotonic()
        ready = False
        watchdog = self.notify("watchdog_interval")
        last_ping = 0.0
        last_status = ""
        while any(thread.is_alive() for thread in self.threads.values()):
            self._stop.wait(POLL)
            if self._stop.is_set():
                break
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            now = time.monotonic()
            if not ready and (
                all(s.consuming.is_set() for s in self.sinks.values())
                or now - started > READY_GRACE
            ):
                ready = True
                self.notify("ready")
            status = self.status_line()
            if status != last_status:
                self.notify("status", status)
                last_status = status
            if watchdog and now - last_ping >= watchdog / 2 and self.healthy(now, watchdog):
                self.notify("watchdog_ping")
                last_ping = now
        return self.shutdown()

    def healthy(self, now: float, limit: float) -> bool:
        """Every sink thread alive and its loop seen within ``limit`` seconds."""
        return all(
            self.threads[name].is_alive() and now - sink.heartbeat < limit
            for name, sink in self.sinks.items()
        )

    def status_line(self) -> str:
        return "; ".join(
            f"{name}: {s.counters.state}, {s.counters.written} written, "
            f"{s.counters.rejected} rejected"
            for name, s in self.sinks.items()
        )

    def shutdown(self) -> int:
        """Stop every sink, wait for them (bounded), report; the exit code."""
        stopping = self._stop.is_set()
        if stopping:
            self.notify("stopping")
            self.log.info("stopping", sinks=sorted(self.sinks))
        for sink in self.sinks.values():
            sink.stop()
        deadline = time.monotonic() + STOP_TIMEOUT
        for name, thread in self.threads.items():
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                self.log.error("sink did not stop in time", sink=name, timeout=STOP_TIMEOUT)
                return exitcodes.RUNTIME
        failed = {name: s.failed for name, s in self.sinks.items() if s.failed}
        if failed:
            for name, error in failed.items():
                print(f"logrouter: sink {name} failed: {error}", file=sys.stderr)
            return exitcodes.RUNTIME
        return exitcodes.OK

    # ---- SIGHUP --------------------------------------------------------

    def reload(self) -> None:
        """Reopen files and apply the re-read config; keep the old one on any error."""
        self.notify("reloading")
        for sink in self.sinks.values():
            sink.request_reopen()
        try:
            new = load(self.config.path, self.url)
        except (ConfigError, OSError) as exc:
            issues = [str(i) for i in exc.issues] if isinstance(exc, ConfigError) else [str(exc)]
            self.log.error("config not reloaded, keeping the old one", issues=issues)
            self.notify("ready")
            return
        for name, sink in self.sinks.items():
            if name in new.sinks:
                sink.request_apply(new.sinks[name])
            else:
                self.log.warning("sink removed from the config; still running", sink=name)
        self.config = new
        if self.all_sinks:
            for name in new.sinks:
                if name not in self.sinks:
                    self.log.info("starting new sink", sink=name)
                    self._start(name)
        self.log.info("config reloaded", version=new.digest[:12])
        self.notify("ready")
