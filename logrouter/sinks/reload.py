"""Reloading a sink process's config: SIGHUP, a saved file, a control request.

A reload re-reads the file and applies it as a diff; on any error it keeps the
old config. Validation comes first and is all-or-nothing: a broken file
changes nothing and is reported (log, STATUS=, the control reply). A valid one
reconciles bindings on the live queues, swaps outputs whose type or options
changed (after the batch in hand), starts new sinks (only when the process
runs every sink of the file) and stops removed ones (their queues stay until
``setup --prune``). The reload runs in the runner's main thread or the control
service's thread, one at a time; the sinks take their new settings in their
own threads.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from logrouter.config import ConfigError, RoutingConfig, load_config
from logrouter.control import ReloadResult
from logrouter.sinks.notify import Notify, status_line
from logrouter.sinks.supervisor import Supervisor

#: A control broadcast reaches every sink of a process; requests within this many
#: seconds of a reload share its result instead of reloading again.
SHARED_RESULT = 1.0


class Reloader:
    """The current config of a sink process and the way to a new one (module docstring)."""

    def __init__(
        self,
        config: RoutingConfig,
        supervisor: Supervisor,
        *,
        url: str | None,
        all_sinks: bool,
        notify: Notify,
        log: Any,
    ) -> None:
        self.config = config
        self.supervisor = supervisor
        self.url = url
        self.all_sinks = all_sinks
        self.notify = notify
        self.log = log
        #: the issues of the last refused config (empty once a reload succeeds)
        self.refused: list[str] = []
        #: SIGHUP also asks the sinks to reopen their files
        self.reopen = threading.Event()
        self._lock = threading.Lock()
        self._last: tuple[float, dict[str, ReloadResult]] | None = None

    def status_line(self) -> str:
        return status_line(self.supervisor.sinks, self.refused)

    def reload_for(self, name: str) -> ReloadResult:
        """A control request's reload, answered for sink ``name``.

        A broadcast reaches every sink of this process; the first one reloads and
        the others, arriving within a second, share its result.
        """
        with self._lock:
            last = self._last
            if last is not None and time.monotonic() - last[0] < SHARED_RESULT and name in last[1]:
                return last[1][name]
        return self.reload().get(name, self._result("unchanged"))

    def reload(self) -> dict[str, ReloadResult]:
        """Re-read the config and apply it as a diff; keep the old one on any error."""
        with self._lock:
            results = self._reload_locked()
            self._last = (time.monotonic(), results)
            return results

    def _result(self, outcome: str, **extra: Any) -> ReloadResult:
        result: dict[str, Any] = {"outcome": outcome, "config_version": self.config.digest}
        result.update(extra)
        return result  # type: ignore[return-value]

    def _reload_locked(self) -> dict[str, ReloadResult]:
        sinks = self.supervisor.sinks
        self.notify("reloading")
        if self.reopen.is_set():
            self.reopen.clear()
            for sink in sinks.values():
                sink.request_reopen()
        try:
            new = load_config(self.config.path, url=self.url)
        except (ConfigError, OSError) as exc:
            return self._refused(exc)
        self.refused = []
        if new.digest == self.config.digest:
            self.notify("ready")
            return {name: self._result("unchanged") for name in sinks}
        old = self.config
        self.config = new
        changed = {}
        for name, sink in list(sinks.items()):
            if name not in new.sinks:
                self.log.warning(
                    "sink removed from the config; stopping it (its queue stays until "
                    "`logrouter setup --prune`)",
                    sink=name,
                )
                self.supervisor.remove(name)
            elif new.sinks[name] != old.sinks.get(name):
                sink.request_apply(new.sinks[name])
                changed[name] = new.sinks[name]
        if self.all_sinks:
            for name in new.sinks:
                if name not in sinks:
                    self.log.info("starting new sink", sink=name)
                    self.supervisor.start(name, new.sinks[name], new.broker)
        self.supervisor.wait_applied(changed)
        self.log.info("config reloaded", version=new.digest[:12], changed=sorted(changed))
        self.notify("ready", self.status_line())
        return {name: self._result("applied") for name in sinks}

    def _refused(self, exc: ConfigError | OSError) -> dict[str, ReloadResult]:
        if isinstance(exc, ConfigError):
            issues = [str(i) for i in exc.issues]
        else:
            issues = [f"{self.config.path}: {exc.strerror or exc}"]
        self.refused = issues
        self.log.error("config refused, keeping the old routing", issues=issues)
        self.notify("ready", self.status_line())
        reason = issues[0] if issues else "invalid config"
        return {
            name: self._result("refused", reason=reason, issues=issues)
            for name in self.supervisor.sinks
        }
