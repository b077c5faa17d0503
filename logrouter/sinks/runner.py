"""Run sinks in one process: the main thread, its signals and its services.

``run_sinks`` loads the config, starts one ``Sink`` thread per selected sink
(each with its own broker connection) and then the main thread only watches:
SIGTERM/SIGINT stop every sink (each writes and acks the batch in hand),
SIGHUP re-reads the config and reopens files, and sd_notify gets READY=1,
STATUS=, WATCHDOG=1 (only while every sink loop is alive) and STOPPING=1.

The runner wires the parts and owns the order of start and stop; each part has
a module of its own: ``sinks/supervisor.py`` the sink threads,
``sinks/reload.py`` the config and its reload, ``sinks/notify.py`` what systemd
is told, ``sinks/service.py`` the control service, ``metrics`` the endpoint.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from logrouter import exitcodes, log
from logrouter.config import ConfigError, RoutingConfig, load_config
from logrouter.control import SinkStatus, sink_status
from logrouter.metrics import MetricsServer, start_metrics_server
from logrouter.queue_probe import QueueProbe, aside_queues
from logrouter.sinks.journal import state_dir
from logrouter.sinks.notify import Notify, Readiness
from logrouter.sinks.reload import Reloader
from logrouter.sinks.service import ControlService
from logrouter.sinks.supervisor import Supervisor
from logrouter.watch import ConfigWatcher

POLL = 0.2


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
        self.log = log.get_logger("runner")
        self.notify = Notify()
        self.supervisor = Supervisor(state=state, burst=burst, log=self.log)
        self.reloader = Reloader(
            config,
            self.supervisor,
            url=url,
            all_sinks=len(names) == len(config.sinks),
            notify=self.notify,
            log=self.log,
        )
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._stop_signalled = False
        self._hup_signalled = False
        self.started = time.monotonic()
        self._install_signals()  # before the sinks start: a SIGTERM now still exits 0
        for name in names:
            self.supervisor.start(name, config.sinks[name], config.broker)
        self.watcher = ConfigWatcher(config.path, self._reload.set) if watch else None
        self.control = (
            ControlService(
                config.broker,
                self.supervisor.instances,
                self.sink_status,
                self.reloader.reload_for,
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
                self.supervisor.counters,
                depths=QueueProbe(config.broker, aside),
                control=self.control.counters.as_dict if self.control is not None else None,
            )

    @property
    def config(self) -> RoutingConfig:
        """The config in force (a reload replaces it)."""
        return self.reloader.config

    # ---- signals -------------------------------------------------------

    # A handler runs in the main thread between two bytecodes, possibly while that thread
    # holds the lock inside ``self._stop.wait`` or ``self._reload.clear``: it must take no
    # lock (Event.set would deadlock), so it only raises a flag the watch loop acts on.

    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        self._stop_signalled = True

    def _on_hup(self, signum: int, _frame: FrameType | None) -> None:
        self._hup_signalled = True

    def _take_signals(self) -> None:
        """What the handlers flagged, done by the loop (where taking a lock is safe)."""
        if self._hup_signalled:
            self._hup_signalled = False
            self.reloader.reopen.set()
            self._reload.set()
        if self._stop_signalled:
            self._stop.set()

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
        readiness = Readiness(self.notify, time.monotonic())
        supervisor = self.supervisor
        while supervisor.any_alive():
            self._stop.wait(POLL)
            self._take_signals()
            if self._stop.is_set():
                break
            if self._reload.is_set():
                # Cleared before reading the file: a save or SIGHUP during this reload
                # sets it again and leads to exactly one more reload with the newest file.
                self._reload.clear()
                self.reloader.reload()
            readiness.tick(
                time.monotonic(),
                self.reloader.status_line(),
                supervisor.all_consuming,
                supervisor.healthy,
            )
        return self.shutdown()

    def sink_status(self, name: str) -> SinkStatus:
        """What ``status`` answers for sink ``name`` (the control service asks)."""
        sink = self.supervisor.sinks[name]
        return sink_status(
            sink.counters,
            config_version=self.config.digest,
            bindings=sink.config.selector.bindings,
            uptime=time.monotonic() - self.started,
            queue=sink.config.queue,
        )

    def shutdown(self) -> int:
        """Stop the services, then every sink (bounded); the exit code."""
        if self.watcher is not None:
            self.watcher.stop()
        if self.control is not None:
            self.control.stop()
        if self.metrics is not None:
            self.metrics.close()
        if self._stop.is_set():
            self.notify("stopping")
            self.log.info("stopping", sinks=sorted(self.supervisor.sinks))
        return self.supervisor.stop_all()
