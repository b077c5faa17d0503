"""The fault suite's pipeline: real handler -> broker -> real `logrouter run` (file + archive).

A ``Pipeline`` writes a routing config with two sinks that take everything
(``*.*``): a file sink (``out/{facility}.log``) and an archive sink (``.jsonl.gz``).
Records are ``log.info("rec-%d", i)`` through a real ``RabbitHandler``; after the
fault, the live daemon is given time to catch up, then stopped and the queues are
drained with ``run --burst``; ``counts()`` then reads files and archive and reports
lost / duplicated / unexpected records, and adds them to ``RESULTS`` (the table that
conftest.py merges into the results file, see results.py, and prints at the end of the run).

Process helpers come from tests/helpers/sinks.py (reused, not copied).
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pika

from logrouter import RabbitHandler, topology
from logrouter.config import load_config
from tests.helpers.growing import TOKEN_BYTES, DistinctTokens
from tests.helpers.sinks import (
    logrouter,
    sink_env,
    start,
    stop,
    tokens,
    write_config,
)

ROOT = Path(__file__).resolve().parents[2]
CATCH_UP = 90.0  # seconds the live daemon gets to write every record after a fault


@dataclass
class Counts:
    """One scenario's outcome after the drain (per output and summed)."""

    scenario: str
    records: int
    lost: int
    duplicated: int
    unexpected: int
    in_files: int
    in_archive: int
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.lost == self.duplicated == self.unexpected == 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


RESULTS: list[Counts] = []


def tally(expected: int, found: Counter[int]) -> tuple[int, int, int]:
    """(lost, duplicated, unexpected) of tokens ``found`` against ``range(expected)``."""
    lost = sum(1 for i in range(expected) if found[i] == 0)
    duplicated = sum(n - 1 for i, n in found.items() if n > 1 and 0 <= i < expected)
    unexpected = sum(n for i, n in found.items() if not 0 <= i < expected)
    return lost, duplicated, unexpected


def wait_until(predicate: Callable[[], bool], timeout: float, poll: float = 0.1) -> bool:
    """Poll ``predicate`` until true or ``timeout`` passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)


class Pipeline:
    """One scenario's exchange, two sinks (file + archive), daemon process and handlers.

    ``url`` is how the test itself reaches the broker (declare, drain checks, cleanup);
    ``sink_url`` goes into the config (e.g. through a TCP proxy); handlers get their own.
    """

    def __init__(
        self,
        tmp: Path,
        url: str,
        *,
        sink_url: str | None = None,
        out: Path | None = None,
        archive: Path | None = None,
        heartbeat: int = 2,
        reconnect_max: float = 1.0,
        sink_options: dict[str, Any] | None = None,
    ) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.url = url
        self.sink_url = sink_url or url
        self.tag = uuid.uuid4().hex[:8]
        self.exchange = f"test.rel.{self.tag}"
        self.out = out or tmp / "out"
        self.archive = archive or tmp / "archive"
        self._written = DistinctTokens(self.out)
        self.file_sink = f"rf_{self.tag}"
        self.archive_sink = f"ra_{self.tag}"
        self.config = tmp / "routing.toml"
        self.log = tmp / "daemon.log"
        self.env = sink_env(tmp / "state")
        self.process: subprocess.Popen[bytes] | None = None
        self.handlers: list[tuple[logging.Logger, RabbitHandler]] = []
        self.heartbeat = heartbeat
        #: the daemon's longest pause between connection attempts (the handlers' is 1 s
        #: too): after an outage, sinks resume within a second of the broker, not 30 s
        self.reconnect_max = reconnect_max
        self.sink_options = {"batch_interval": 0.05, **(sink_options or {})}
        self.write_config()

    # ---- config and topology ------------------------------------------------------

    def sinks(self) -> dict[str, dict[str, Any]]:
        return {
            self.file_sink: {
                "type": "file",
                "match": "*.*",
                "path": f"{self.out}/{{facility}}.log",
                **self.sink_options,
            },
            self.archive_sink: {
                "type": "archive",
                "match": "*.*",
                "dir": str(self.archive),
                **self.sink_options,
            },
        }

    def config_text(self) -> str:
        """The good config, with ``heartbeat`` and ``reconnect_max`` in [broker]."""
        path = self.tmp / ".render.toml"
        write_config(path, self.sink_url, self.exchange, self.sinks())
        text = path.read_text().replace(
            "[broker]\n",
            f"[broker]\nheartbeat = {self.heartbeat}\nreconnect_max = {self.reconnect_max}\n",
            1,
        )
        path.unlink()
        return text

    def write_config(self, text: str | None = None) -> None:
        """Save the config (the good one by default) atomically, as an editor does."""
        temp = self.config.with_name(f".routing.{uuid.uuid4().hex[:6]}.tmp")
        temp.write_text(self.config_text() if text is None else text)
        temp.replace(self.config)

    @property
    def queues(self) -> list[str]:
        return [f"logrouter.{self.file_sink}", f"logrouter.{self.archive_sink}"]

    def declare(self) -> None:
        """Declare exchange and sink queues through ``url`` (what `logrouter setup` does)."""
        config = load_config(self.config, env={"LOGROUTER_URL": self.url})
        topology.setup(config.broker, [topology.queue_spec(s) for s in config.sinks.values()])

    # ---- daemon ---------------------------------------------------------------------

    def start(self, wait: bool = True) -> subprocess.Popen[bytes]:
        """Start `logrouter run CONFIG` (stderr appended to ``daemon.log``); with ``wait``,
        return once both sinks log "consuming" (so a SIGTERM is not sent mid-start-up)."""
        assert self.process is None or self.process.poll() is not None, "daemon already running"
        before = self.daemon_log().count('"consuming"')
        self.process = start(["run", str(self.config)], self.env, self.log)
        if wait:
            up = wait_until(lambda: self.daemon_log().count('"consuming"') >= before + 2, 60)
            assert up, f"daemon not consuming within 60 s:\n{self.daemon_log()[-3000:]}"
        return self.process

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the daemon (a crash mid-batch)."""
        if self.alive():
            assert self.process is not None
            stop(self.process, signal.SIGKILL)

    def stop(self) -> int | None:
        """SIGTERM the daemon; its exit code (None when it was not running)."""
        if not self.alive():
            return None if self.process is None else self.process.returncode
        assert self.process is not None
        return stop(self.process)

    def daemon_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # ---- app side -----------------------------------------------------------------

    def handler(
        self, url: str | None = None, **options: Any
    ) -> tuple[logging.Logger, RabbitHandler]:
        """A fresh app logger with a RabbitHandler (heartbeat as the sinks', own spool)."""
        options.setdefault("heartbeat", self.heartbeat)
        options.setdefault("reconnect_max", 1)
        options.setdefault("spool", str(self.tmp / f"spool-{len(self.handlers)}.sqlite"))
        handler = RabbitHandler(url=url or self.url, exchange=self.exchange, app="rel", **options)
        logger = logging.getLogger(f"rel.{self.tag}.{len(self.handlers)}")
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(handler)
        self.handlers.append((logger, handler))
        return logger, handler

    @staticmethod
    def log_range(
        logger: logging.Logger, first: int, last: int, *, pace_every: int = 0, pace: float = 0.0
    ) -> float:
        """Log ``rec-first`` .. ``rec-(last-1)``; returns the slowest call in seconds."""
        slowest = 0.0
        for i in range(first, last):
            began = time.perf_counter()
            logger.info("rec-%d", i)
            slowest = max(slowest, time.perf_counter() - began)
            if pace_every and i % pace_every == pace_every - 1:
                time.sleep(pace)
        return slowest

    # ---- outputs ----------------------------------------------------------------------

    def file_tokens(self) -> Counter[int]:
        """``rec-N`` numbers in the file sink's lines (a scenario's files hold ~10^5 lines:
        one pass over each file's bytes, as ``tokens`` over its lines would find them)."""
        found: Counter[int] = Counter()
        for path in sorted(self.out.rglob("*.log")):
            found.update(map(int, TOKEN_BYTES.findall(path.read_bytes())))
        return found

    def archive_tokens(self) -> Counter[int]:
        """``rec-N`` numbers in the ``msg`` of the archived records (orjson: the archive
        holds as many records as the files, parsed here in a third of json's time)."""
        messages = [
            str(orjson.loads(line).get("msg", ""))
            for path in sorted(self.archive.rglob("*.jsonl.gz"))
            for line in gzip.decompress(path.read_bytes()).splitlines()
            if line.strip()
        ]
        return tokens(["\n".join(messages)])  # one text: a token never spans a newline

    def written(self) -> int:
        """How many distinct records the file sink has written so far (cheap to poll)."""
        return self._written.count()

    def wait_files(self, total: int, timeout: float = CATCH_UP) -> bool:
        """Wait until the live file sink has written ``total`` distinct records."""
        return wait_until(lambda: self.written() >= total, timeout, poll=0.25)

    def drain(self, timeout: float = 120) -> None:
        """Stop the daemon, flush and close handlers, then `run --burst` until queues are empty."""
        code = self.stop()
        assert code in (None, 0), f"daemon exit {code}:\n{self.daemon_log()[-3000:]}"
        self.close_handlers()
        result = subprocess.run(
            [*logrouter("run", str(self.config)), "--burst"],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"drain exit {result.returncode}:\n{result.stderr[-3000:]}"

    def close_handlers(self) -> None:
        for logger, handler in self.handlers:
            logger.removeHandler(handler)
            handler.close()
        self.handlers.clear()

    def counts(self, scenario: str, total: int, notes: str = "", **extra: Any) -> Counts:
        """Tally files and archive against ``range(total)``, record it in RESULTS."""
        files, archived = self.file_tokens(), self.archive_tokens()
        lost_f, dup_f, unexp_f = tally(total, files)
        lost_a, dup_a, unexp_a = tally(total, archived)
        counts = Counts(
            scenario=scenario,
            records=total,
            lost=lost_f + lost_a,
            duplicated=dup_f + dup_a,
            unexpected=unexp_f + unexp_a,
            in_files=sum(1 for i in files if 0 <= i < total),
            in_archive=sum(1 for i in archived if 0 <= i < total),
            notes=notes,
            extra=extra,
        )
        RESULTS.append(counts)
        return counts

    def cleanup(self) -> None:
        """Kill the daemon, close handlers, delete queues and exchanges (best effort)."""
        if self.alive():
            self.kill()
        self.close_handlers()
        with contextlib.suppress(Exception):
            connection = pika.BlockingConnection(pika.URLParameters(self.url))
            try:
                channel = connection.channel()
                for queue in [*self.queues, f"{self.exchange}.unrouted"]:
                    channel.queue_delete(queue)
                for name in (
                    self.exchange,
                    f"{self.exchange}.unrouted",
                    f"{self.exchange}.control",
                ):
                    channel.exchange_delete(name)
            finally:
                connection.close()


def assert_exactly_once(counts: Counts, pipeline: Pipeline) -> None:
    """lost = duplicated = unexpected = 0, with the daemon log tail when not."""
    assert counts.ok, f"{counts}\n--- daemon log tail:\n{pipeline.daemon_log()[-3000:]}"
