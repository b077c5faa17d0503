"""Run sinks in one process: threads, signals, reload, sd_notify.

``run_sinks`` loads the config, starts one ``Sink`` thread per selected sink
(each with its own broker connection) and then the main thread only watches:
SIGTERM/SIGINT stop every sink (each writes and acks the batch in hand),
SIGHUP re-reads the config and reopens files, and sd_notify gets READY=1,
STATUS=, WATCHDOG=1 (only while every sink loop is alive) and STOPPING=1.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from logrouter import exitcodes, log, sdnotify
from logrouter.config import ConfigError, RoutingConfig, load_config
from logrouter.control import ReloadResult, SinkStatus, sink_status
from logrouter.metrics import MetricsServer, start_metrics_server
from logrouter.queue_probe import QueueProbe, aside_queues
from logrouter.sinks.consumer import Sink
from logrouter.sinks.journal import state_dir
from logrouter.sinks.service import ControlService
from logrouter.watch import ConfigWatcher

#: Seconds the sinks get to write and ack the batch in hand after SIGTERM.
STOP_TIMEOUT = 10.0
#: READY=1 is sent when every sink consumes, or after this long (broker down at start).
READY_GRACE = 10.0
POLL = 0.2


class _Notify:
    """sd_notify calls that never fail the daemon (no socket: a no-op)."""

    def __call__(self, name: str, *args: Any) -> Any:
        try:
            return getattr(sdnotify, name)(*args)
        except OSError:
            return None


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
    watch: bool = True,
    control: bool = True,
    metrics_port: int | None = None,
) -> int:
    """Run the named sinks (all when ``names`` is None) until stopped; an exit code."""
    log.configure()
    try:
        config = load_config(path, url=url)
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
    runner = Runner(
        config,
        wanted,
        url=url,
        burst=burst,
        state=state_dir(env),
        watch=watch and not burst,
        control=control and not burst,
        metrics_port=metrics_port,
    )
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
        watch: bool = False,
        control: bool = False,
        metrics_port: int | None = None,
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
        self._reopen = threading.Event()
        self._reload_lock = threading.Lock()
        self._last_reload: tuple[float, dict[str, ReloadResult]] | None = None
        self.refused: list[str] = []
        self.started = time.monotonic()
        self._install_signals()  # before the sinks start: a SIGTERM now still exits 0
        for name in names:
            self._start(name)
        self.watcher = ConfigWatcher(config.path, self._reload.set) if watch else None
        self.control = (
            ControlService(
                config.broker,
                self.instances,
                self.sink_status,
                self.reload_for,
                allow_users=config.control.allow_users,
            )
            if control
            else None
        )
        self.metrics: MetricsServer | None = None
        if metrics_port is not None:
            aside = [queue for _, queue in aside_queues(config.broker.exchange)]
            self.metrics = start_metrics_server(
                metrics_port,
                self.collect_counters,
                depths=QueueProbe(config.broker, aside),
                control=self.control.counters.as_dict if self.control is not None else None,
            )

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
        self._reopen.set()
        self._reload.set()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    # ---- the watch loop ------------------------------------------------

    def run(self) -> int:
        if self.watcher is not None:
            self.watcher.start()
        if self.control is not None:
            self.control.start()
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
                # Cleared before reading the file: a save or SIGHUP during this reload
                # sets it again and leads to exactly one more reload with the newest file.
                self._reload.clear()
                self.reload()
            now = time.monotonic()
            status = self.status_line()
            if not ready and (
                all(s.consuming.is_set() for s in self.sinks.values())
                or now - started > READY_GRACE
            ):
                ready = True
                self.notify("ready", status)  # READY=1 and the STATUS= it is ready with
                last_status = status
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
        line = "; ".join(
            f"{name}: {s.counters.state}, {s.counters.written} written, "
            f"{s.counters.rejected} rejected"
            for name, s in self.sinks.items()
        )
        if self.refused:
            line = f"config refused, old routing kept: {self.refused[0]}; {line}"
        return line

    # ---- what the control service and metrics read ----------------------

    def instances(self) -> dict[str, str]:
        return {name: sink.instance for name, sink in list(self.sinks.items())}

    def sink_status(self, name: str) -> SinkStatus:
        sink = self.sinks[name]
        return sink_status(
            sink.counters,
            config_version=self.config.digest,
            bindings=sink.config.selector.bindings,
            uptime=time.monotonic() - self.started,
            queue=sink.config.queue,
        )

    def collect_counters(self) -> dict[str, Any]:
        return {name: sink.counters for name, sink in list(self.sinks.items())}

    def shutdown(self) -> int:
        """Stop every sink, wait for them (bounded), report; the exit code."""
        if self.watcher is not None:
            self.watcher.stop()
        if self.control is not None:
            self.control.stop()
        if self.metrics is not None:
            self.metrics.close()
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

    # ---- reload (SIGHUP, file watch, control request) --------------------

    def reload_for(self, name: str) -> ReloadResult:
        """A control request's reload, answered for sink ``name``.

        A broadcast reaches every sink of this process; the first one reloads and
        the others, arriving within a second, share its result.
        """
        with self._reload_lock:
            last = self._last_reload
            if last is not None and time.monotonic() - last[0] < 1.0 and name in last[1]:
                return last[1][name]
        return self.reload().get(name, self._result("unchanged"))

    def reload(self) -> dict[str, ReloadResult]:
        """Re-read the config and apply it as a diff; keep the old one on any error.

        Validation comes first and is all-or-nothing: a broken file changes nothing.
        A valid one reconciles bindings on the live queues, swaps outputs whose type
        or options changed (after the batch in hand), starts new sinks (``run``) and
        stops removed ones (their queues stay until ``setup --prune``).
        """
        with self._reload_lock:
            results = self._reload_locked()
            self._last_reload = (time.monotonic(), results)
            return results

    def _result(self, outcome: str, **extra: Any) -> ReloadResult:
        result: dict[str, Any] = {"outcome": outcome, "config_version": self.config.digest}
        result.update(extra)
        return result  # type: ignore[return-value]

    def _reload_locked(self) -> dict[str, ReloadResult]:
        self.notify("reloading")
        if self._reopen.is_set():
            self._reopen.clear()
            for sink in self.sinks.values():
                sink.request_reopen()
        try:
            new = load_config(self.config.path, url=self.url)
        except (ConfigError, OSError) as exc:
            if isinstance(exc, ConfigError):
                issues = [str(i) for i in exc.issues]
            else:
                issues = [f"{self.config.path}: {exc.strerror or exc}"]
            self.refused = issues
            self.log.error("config refused, keeping the old routing", issues=issues)
            self.notify("ready", self.status_line())
            reason = issues[0] if issues else "invalid config"
            return {
                name: self._result("refused", reason=reason, issues=issues) for name in self.sinks
            }
        self.refused = []
        if new.digest == self.config.digest:
            self.notify("ready")
            return {name: self._result("unchanged") for name in self.sinks}
        old = self.config
        self.config = new
        changed: dict[str, Sink] = {}
        for name, sink in list(self.sinks.items()):
            if name not in new.sinks:
                self.log.warning(
                    "sink removed from the config; stopping it (its queue stays until "
                    "`logrouter setup --prune`)",
                    sink=name,
                )
                sink.stop()
                del self.sinks[name]
                self.threads.pop(name).join(STOP_TIMEOUT)
            elif new.sinks[name] != old.sinks.get(name):
                sink.request_apply(new.sinks[name])
                changed[name] = sink
        if self.all_sinks:
            for name in new.sinks:
                if name not in self.sinks:
                    self.log.info("starting new sink", sink=name)
                    self._start(name)
        self._wait_applied(changed)
        self.log.info("config reloaded", version=new.digest[:12], changed=sorted(changed))
        self.notify("ready", self.status_line())
        return {name: self._result("applied") for name in self.sinks}

    def _wait_applied(self, sinks: Mapping[str, Sink], timeout: float = 5.0) -> None:
        """Wait (bounded) until each sink's thread took its new config."""
        deadline = time.monotonic() + timeout
        for name, sink in sinks.items():
            while sink.config != self.config.sinks[name] and time.monotonic() < deadline:
                if not self.threads[name].is_alive():
                    break
                time.sleep(0.02)
