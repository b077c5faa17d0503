"""The sink threads of one process: start, stop, and how they are doing.

Each sink (``sinks/consumer.Sink``) runs in a daemon thread of its own with its
own broker connection. The runner, the reload and the control service reach
the sinks only through this module: which sinks run, starting and stopping one
(a reload adds and removes sinks), whether all consume, whether every loop was
seen recently (the systemd watchdog), and the bounded stop at exit.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from logrouter import exitcodes
from logrouter.connection import BrokerSettings
from logrouter.sinks.consumer import Sink

if TYPE_CHECKING:
    from logrouter.config import SinkConfig

#: Seconds the sinks get to write and ack the batch in hand after SIGTERM.
STOP_TIMEOUT = 10.0


class Supervisor:
    """The running ``Sink`` threads of a process (see the module docstring)."""

    def __init__(self, *, state: Path, burst: bool, log: Any) -> None:
        self.state = state
        self.burst = burst
        self.log = log
        self.sinks: dict[str, Sink] = {}
        self.threads: dict[str, threading.Thread] = {}

    def start(self, name: str, config: SinkConfig, broker: BrokerSettings) -> None:
        """Start a thread running sink ``name`` with ``config``."""
        sink = Sink(config, broker, state_dir=self.state, burst=self.burst)
        thread = threading.Thread(target=sink.run, name=f"sink-{name}", daemon=True)
        self.sinks[name] = sink
        self.threads[name] = thread
        thread.start()

    def remove(self, name: str) -> None:
        """Stop sink ``name`` (it writes and acks its batch) and forget it."""
        self.sinks.pop(name).stop()
        self.threads.pop(name).join(STOP_TIMEOUT)

    def any_alive(self) -> bool:
        return any(thread.is_alive() for thread in self.threads.values())

    def all_consuming(self) -> bool:
        return all(sink.consuming.is_set() for sink in self.sinks.values())

    def healthy(self, now: float, limit: float) -> bool:
        """Every sink thread alive and its loop seen within ``limit`` seconds."""
        return all(
            self.threads[name].is_alive() and now - sink.heartbeat < limit
            for name, sink in self.sinks.items()
        )

    def wait_applied(self, configs: Mapping[str, SinkConfig], timeout: float = 5.0) -> None:
        """Wait (bounded) until each named sink's thread took its config in ``configs``."""
        deadline = time.monotonic() + timeout
        for name, config in configs.items():
            sink = self.sinks[name]
            while sink.config != config and time.monotonic() < deadline:
                if not self.threads[name].is_alive():
                    break
                time.sleep(0.02)

    def instances(self) -> dict[str, str]:
        """``{sink name: instance}`` (what the control service answers as)."""
        return {name: sink.instance for name, sink in list(self.sinks.items())}

    def counters(self) -> dict[str, Any]:
        """``{sink name: SinkCounters}`` (what the metrics endpoint reads)."""
        return {name: sink.counters for name, sink in list(self.sinks.items())}

    def stop_all(self) -> int:
        """Stop every sink, wait for them (bounded), report failures; the exit code."""
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
