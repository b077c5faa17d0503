"""The consumer loop (consumer.py) with a stand-in broker link and committer: backoff,
and when the loop stops committing (a stop, a reload) while deliveries keep coming."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pika.exceptions

from logrouter.config.loader import parse_config
from logrouter.sinks.batch import Batch
from logrouter.sinks.consumer import Backoff, Sink

PREFETCH = 20


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    """Retry delays grow 0.5, 1, 2 ... up to the cap, and start over after success."""
    backoff = Backoff(first=0.5, cap=3.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next() == 0.5


class BusyQueue:
    """A link to a queue that never runs dry: each ``process`` refills the prefetch
    window (what was acked comes back as new deliveries), until ``cancel``."""

    cancelled = False
    is_open = True
    connection = object()
    fast = False

    def __init__(self) -> None:
        self.tag = 0
        self.acked = 0
        self.consuming = True
        self.on_message: Any = None

    def open(self, _config: Any) -> None:
        pass

    def consume(self, _config: Any, on_message: Any) -> None:
        self.on_message = on_message

    def cancel(self) -> None:
        self.consuming = False

    def process(self, _seconds: float) -> None:
        while self.consuming and self.tag - self.acked < PREFETCH:
            self.tag += 1
            method = SimpleNamespace(delivery_tag=self.tag, routing_key="a.info", redelivered=False)
            props = SimpleNamespace(content_type="application/json", headers=None)
            self.on_message(None, method, props, b"{}")

    def reconcile(self, _old: Any, _new: Any) -> None:
        pass

    def close(self) -> None:
        pass


class ReadingCommitter:
    """Commits a slice and, like the fsync wait, reads the socket meanwhile."""

    def __init__(self, link: BusyQueue, on_commit: Any = None) -> None:
        self.link = link
        self.commits = 0
        self.on_commit = on_commit

    def commit(self, batch: Batch) -> None:
        self.commits += 1
        self.link.acked = batch.take_slice()[-1].tag
        self.link.process(0.05)
        if self.on_commit is not None:
            self.on_commit(self.commits)
        if self.commits > 100:
            raise AssertionError(f"still committing after {self.commits} commits")

    def close(self) -> None:
        pass


def busy_sink(tmp_path: Path) -> tuple[Sink, BusyQueue]:
    config = parse_config(
        '[broker]\nurl = "amqp://guest:guest@127.0.0.1:5672/%2F"\n'
        f'[sinks.a]\ntype = "console"\nmatch = "*.*"\nbatch_size = 10\nprefetch = {PREFETCH}\n',
        env={},
    )
    sink = Sink(config.sinks["a"], config.broker, state_dir=tmp_path)
    sink._batch.slice_records = 10  # commits of the batch size, as in a drain of many
    link = BusyQueue()
    link.on_message = sink._on_message
    sink.link = link  # type: ignore[assignment]
    return sink, link


def test_a_stop_commits_what_is_in_hand_and_returns_while_the_queue_is_busy(
    tmp_path: Path,
) -> None:
    """stop() while every commit reads more deliveries: the loop stops consuming and
    returns once what it holds is committed (it went on until the queue ran dry)."""
    sink, link = busy_sink(tmp_path)
    committer = ReadingCommitter(link, lambda n: n == 3 and sink.stop())
    sink.committer = committer  # type: ignore[assignment]
    sink._session()
    assert not link.consuming and len(sink._batch) == 0
    assert committer.commits <= 3 + PREFETCH // 10 + 1


def test_a_reload_commits_what_was_in_hand_not_what_arrives_meanwhile(tmp_path: Path) -> None:
    """apply() writes the deliveries in hand before it switches settings, and returns
    even though each commit reads more (it never returned under a busy queue)."""
    sink, link = busy_sink(tmp_path)
    link.process(0)
    committer = ReadingCommitter(link)
    sink.committer = committer  # type: ignore[assignment]
    new = dataclasses.replace(sink.config, batch_interval=sink.config.batch_interval + 1)
    sink.apply(new)
    assert sink.config == new
    assert committer.commits == PREFETCH // 10
    assert link.acked == PREFETCH


def test_a_commit_that_fails_during_a_reload_is_raised_not_taken_for_not_applied(
    tmp_path: Path,
) -> None:
    """Commits fail from the third on (rejected copies nacked) while a reload writes the
    batch in hand: every failure leaves the request handling, for the session to
    reconnect (the batch is redelivered); none is logged as "not applied" and swallowed,
    after which the next multiple ack covered the failed slice. The reload commits what
    was in hand (two slices), not what arrived meanwhile."""
    sink, link = busy_sink(tmp_path)
    link.process(0)
    raised: list[int] = []

    def refused(commits: int) -> None:
        if commits >= 3:
            raised.append(commits)
            raise pika.exceptions.NackError([])

    sink.committer = ReadingCommitter(link, refused)  # type: ignore[assignment]
    old = sink.config
    sink.request_apply(dataclasses.replace(old, batch_interval=old.batch_interval + 1))
    try:
        sink._handle_requests()
    except pika.exceptions.NackError:
        assert raised and sink.config == old
    else:
        assert raised == [], f"commit {raised} failed and was swallowed"
        assert sink.config != old


def test_requests_are_applied_in_order_even_from_a_commits_pause(tmp_path: Path) -> None:
    """Two reloads queued, the first one's commit pausing (a write error's back-off
    services requests): the second is not applied inside the first, so the newest
    settings are the ones left in force."""
    sink, link = busy_sink(tmp_path)
    link.process(0)
    old = sink.config
    v2 = dataclasses.replace(old, batch_interval=old.batch_interval + 1)
    v3 = dataclasses.replace(old, batch_interval=old.batch_interval + 2)

    def pause_on_first(commits: int) -> None:
        if commits == 1:
            sink._handle_requests()  # what _pause does while backing off

    sink.committer = ReadingCommitter(link, pause_on_first)  # type: ignore[assignment]
    sink.request_apply(v2)
    sink.request_apply(v3)
    sink._handle_requests()
    assert sink.config == v3
