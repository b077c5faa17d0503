"""Sink-side faults: the daemon killed -9 mid-batch ten times; disk full under the file and
archive sinks (a real tmpfs); 50 broken routing configs saved over a running sink's config."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from logrouter.config import ConfigError, parse_config
from tests.helpers.broker import queue_depth
from tests.helpers.tmpfs import mounted_tmpfs
from tests.reliability.harness import assert_exactly_once, wait_until

#: minutes-long scenarios: scheduled first (tests/conftest.py), beside the rest
pytestmark = pytest.mark.slow(minutes=1)

TOTAL = 5000
REFUSED = "config refused, keeping the old routing"


def test_sink_killed_9_mid_batch_ten_times(amqp_url: str, pipeline_factory: Any) -> None:
    """The `run` daemon (file + archive sinks) is SIGKILLed ten times while records stream in
    (the app logs 1,000 records/s until the last kill); after a restart and a drain, files and
    archive hold every record exactly once."""
    pipeline = pipeline_factory(amqp_url)
    pipeline.declare()
    log, _ = pipeline.handler()
    logged = [0]
    killing = threading.Event()
    killing.set()

    def stream() -> None:
        while killing.is_set():
            pipeline.log_range(log, logged[0], logged[0] + 50)
            logged[0] += 50
            time.sleep(0.05)

    streamer = threading.Thread(target=stream)
    streamer.start()
    rng = random.Random(7)
    kills = 0
    try:
        for _ in range(10):
            pipeline.start()
            written = pipeline.written()
            # mid-batch: once this run has written something, after a random extra moment
            wait_until(lambda w=written: pipeline.written() > w, 15, poll=0.02)
            time.sleep(rng.uniform(0.0, 0.3))
            pipeline.kill()
            kills += 1
    finally:
        killing.clear()
        streamer.join(60)
    assert not streamer.is_alive(), "logging did not finish"
    total = logged[0]
    pipeline.start()
    assert pipeline.wait_files(total), "the restarted sink did not catch up"
    pipeline.drain()
    counts = pipeline.counts("sink killed -9 mid-batch x10", total, kills=kills)
    assert_exactly_once(counts, pipeline)
    assert kills == 10


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for the test (root needed), unmounted afterwards."""
    with mounted_tmpfs(tmp_path / "disk", "2m") as mount_point:
        yield mount_point


def fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` with one file until ENOSPC."""
    filler = directory / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as handle:
        while True:
            handle.write(b"\0" * 4096)
            handle.flush()
    return filler


def test_disk_full_under_file_and_archive_sinks(
    amqp_url: str, small_disk: Path, pipeline_factory: Any
) -> None:
    """With the output file system full (ENOSPC), the sinks stop acking and records stay on
    the broker; once space is freed they arrive in files and archive exactly once."""
    total = 2000
    pipeline = pipeline_factory(amqp_url, out=small_disk / "out", archive=small_disk / "arch")
    pipeline.declare()
    pipeline.start()
    log, _ = pipeline.handler()
    pipeline.log_range(log, 0, 50)
    assert pipeline.wait_files(50, 30), "records before the disk filled were not written"
    filler = fill(small_disk)
    pipeline.log_range(log, 50, total)
    assert wait_until(lambda: "write failed" in pipeline.daemon_log(), 30), "no write error logged"
    time.sleep(1)
    held = {queue: queue_depth(amqp_url, queue) for queue in pipeline.queues}
    written_while_full = pipeline.written()
    assert pipeline.alive(), "the daemon died on ENOSPC"
    assert written_while_full < total
    assert all(depth > 0 for depth in held.values()), f"records left the queues: {held}"
    filler.unlink()
    assert pipeline.wait_files(total), "records did not arrive after space was freed"
    pipeline.drain()
    counts = pipeline.counts(
        "disk full (tmpfs) under file + archive sinks",
        total,
        notes=f"queued while full: {sum(held.values())}",
        queued_while_full=held,
        written_while_full=written_while_full,
    )
    assert_exactly_once(counts, pipeline)


def broken_configs(good: str, file_sink: str, archive_sink: str) -> list[str]:
    """50 routing configs, each refused by the loader for a different reason."""
    f, a = f"[sinks.{file_sink}]", f"[sinks.{archive_sink}]"
    variants = [
        "",
        "not toml at all [",
        "\0\1\2 binary",
        good.replace('match = "*.*"', 'match = "*.eror"', 1),
        good.replace('match = "*.*"', 'match = "*.info;mail.nope"', 1),
        good.replace('match = "*.*"', 'match = ""', 1),
        good.replace('match = "*.*"', "match = 5", 1),
        good.replace('match = "*.*"', 'match = "*"', 1),
        good.replace('match = "*.*"', 'match = "*.=bogus"', 1),
        good.replace('match = "*.*"', 'match = "au th.*"', 1),
        good.replace('type = "file"', 'type = "fiel"', 1),
        good.replace('type = "archive"', 'type = "zip"', 1),
        good.replace('type = "file"', "type = 1", 1),
        good.replace("batch_interval = 0.05", "batch_interval = -1"),
        good.replace("batch_interval = 0.05", 'batch_interval = "soon"'),
        good.replace("batch_interval = 0.05", "batch_interval = 0.05\nprefetch = 0", 1),
        good.replace("batch_interval = 0.05", "batch_interval = 0.05\nprefetch = -3", 1),
        good.replace("batch_interval = 0.05", "batch_interval = 0.05\nprefetch = 70000", 1),
        good.replace("batch_interval = 0.05", "batch_interval = 0.05\nbatch_size = 0", 1),
        good.replace("batch_interval = 0.05", 'batch_interval = 0.05\nfsync = "sometimes"', 1),
        good.replace("batch_interval = 0.05", 'batch_interval = 0.05\nqueue_type = "stream"', 1),
        good.replace("batch_interval = 0.05", "batch_interval = 0.05\nunknown_key = 1", 1),
        good.replace("batch_interval = 0.05", "batch_interval = 0.05\ndedup_window = -1", 1),
        good.replace("heartbeat = 2", "heartbeat = 0"),
        good.replace("heartbeat = 2", "heartbeat = 100000"),
        good.replace("heartbeat = 2", 'heartbeat = "2"'),
        good.replace('url = "amqp://', 'url = "http://', 1),
        good.replace('url = "amqp://', 'url = "amqp:/', 1),
        good.replace("[broker]", "[brokers]", 1),
        good.replace("[broker]", "[broker]\nnonsense = true", 1),
        good.replace('exchange = "', "exchange = 7\n#", 1),
        good.replace(f, f"{f}\n{f}", 1),
        good.replace(f, "[sinks.bad name]", 1),
        good.replace(f, "[sinks.]", 1),
        good.replace(f, "[sinks]", 1),
        good + '\n[sinks.extra]\ntype = "file"\nmatch = "*.*"\n',
        good + '\n[sinks.extra2]\ntype = "archive"\nmatch = "*.*"\n',
        good + '\n[sinks.extra3]\ntype = "console"\nmatch = "*.*"\nstream = "stdin"\n',
        good + '\n[sinks.extra4]\ntype = "console"\nmatch = "*.*"\ncolor = "sometimes"\n',
        good + "\n[other]\nx = 1\n",
        good + "\n= 1\n",
        good.replace("path = ", "paths = ", 1),
        good.replace("path = ", "path = 5\n#", 1),
        good.replace("dir = ", "dirs = ", 1),
        good.replace(a, f'{a}\nrotate_interval = "weekly"', 1),
        good.replace(a, f'{a}\nrotate_bytes = "lots"', 1),
        good.replace(a, f"{a}\ncompresslevel = 42", 1),
        good.replace(f, f"{f}\nkeep = -1", 1),
        good.replace(f, f"{f}\nrotate_bytes = -5", 1),
        good.replace(f, f'{f}\nformat = "{{nonsense"', 1),
    ]
    return variants


def test_fifty_broken_configs_are_refused_and_flow_is_unaffected(
    amqp_url: str, pipeline_factory: Any
) -> None:
    """50 broken routing configs saved (atomically) over a running daemon's config while records
    stream: each is refused with a log line, the old routing keeps working, and every record
    reaches files and archive exactly once."""
    pipeline = pipeline_factory(amqp_url)
    good = pipeline.config.read_text()
    configs = broken_configs(good, pipeline.file_sink, pipeline.archive_sink)
    assert len(configs) == 50
    for i, text in enumerate(configs):  # pure precheck: the loader refuses each of them
        with pytest.raises(ConfigError):
            parse_config(text, pipeline.config)
        assert text != good, i
    pipeline.declare()
    pipeline.start()
    assert wait_until(lambda: "consuming" in pipeline.daemon_log(), 30), "daemon did not start"
    log, _ = pipeline.handler()
    stream = threading.Thread(
        target=pipeline.log_range, args=(log, 0, TOTAL), kwargs={"pace_every": 50, "pace": 0.02}
    )
    stream.start()
    refused = 0
    try:
        for i, text in enumerate(configs):
            pipeline.write_config(text)
            seen = wait_until(
                lambda n=refused: pipeline.daemon_log().count(REFUSED) > n, 15, poll=0.02
            )
            assert seen, f"broken config #{i} was not refused:\n{text}"
            refused = pipeline.daemon_log().count(REFUSED)
        pipeline.write_config(good)
    finally:
        stream.join(60)
    assert pipeline.alive(), "the daemon exited on a broken config"
    assert pipeline.wait_files(TOTAL), "records stopped flowing"
    pipeline.drain()
    counts = pipeline.counts(
        "50 broken configs saved over a running sink",
        TOTAL,
        notes=f"{refused} 'config refused' log lines",
        refused=refused,
    )
    assert_exactly_once(counts, pipeline)
    assert refused >= 50
