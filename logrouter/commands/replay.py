"""``logrouter replay [SELECTOR] --since T [--until T] [--to-sink NAME | --exchange X]``.

Re-publishes archived records (the same selection as ``query``), in time
order, in AMQP transactions of up to 500 records (``tx.commit`` returns once
the broker holds every message of the batch, like a confirm, without a
round trip per record): to the log exchange with each record's
``facility.severity`` key, or with ``--to-sink NAME`` straight to the queue
``logrouter.NAME`` through the default exchange (only that sink gets them).
Each message carries the archived line as body, the original ``message_id``
and ``app_id``, and the header ``x-logrouter-replay`` (the run's start time).

Resuming: the cursor is the (ts, id) of the newest committed record; records
come in that order, so a restarted replay skips everything up to it. With
``--resume FILE`` it is read from and written to FILE (atomically, twice a
second and at the end); it is also printed when a replay is interrupted
(``--after CURSOR``). What was confirmed after the last cursor write is sent
again, and the sinks' dedup (same sender, app and message id) drops it, so the
target holds every record once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import pika.exceptions

from logrouter import exitcodes, wire
from logrouter.archive_reader import Entry, read_archive
from logrouter.commands.common import (
    REPLAY_HEADER,
    TargetError,
    broker_failure,
    close_quietly,
    connect_as,
    resolve_target,
    stop_on_signals,
)
from logrouter.commands.query import UsageError, build_filter, resolve_source
from logrouter.connection import redact
from logrouter.record_filter import RecordFilter
from logrouter.render import render_output

CURSOR_EVERY = 0.5
#: a transaction is committed after this many records or seconds
COMMIT_EVERY = 500
COMMIT_SECONDS = 0.2
PROGRESS_EVERY = 0.5

Cursor = tuple[str, str]


def parse_cursor(text: str) -> Cursor:
    """``TS/ID`` as printed by an interrupted replay; raises ``UsageError`` naming it."""
    ts, slash, ident = text.strip().partition("/")
    if not slash or len(ts) != 27 or not ts.endswith("Z"):
        raise UsageError(f"bad cursor {text!r} (expected TS/ID as printed by replay)")
    return ts, ident


def format_cursor(cursor: Cursor) -> str:
    return f"{cursor[0]}/{cursor[1]}"


def read_cursor_file(path: Path) -> Cursor | None:
    """The cursor saved in ``path`` (None when the file does not exist yet)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return parse_cursor(text)


def write_cursor_file(path: Path, cursor: Cursor) -> None:
    """Replace ``path`` with ``cursor`` atomically (a crash leaves the old or the new one)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(format_cursor(cursor) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def after(entries: Iterator[Entry], cursor: Cursor | None) -> Iterator[Entry]:
    """The entries that come after ``cursor`` (all of them without one)."""
    if cursor is None:
        yield from entries
        return
    for entry in entries:
        if entry.key > cursor:
            yield entry


def message_of(entry: Entry, run_id: str) -> tuple[str, bytes, pika.BasicProperties]:
    """Routing key, body (the archived line) and properties of one replayed record."""
    record = entry.record
    ident = record.get("id")
    app = record.get("app")
    props = pika.BasicProperties(
        content_type=wire.CONTENT_TYPE,
        content_encoding="utf-8",
        delivery_mode=2,
        message_id=str(ident) if ident is not None else None,
        timestamp=int(datetime.fromisoformat(entry.key[0]).timestamp()) if entry.key[0] else None,
        app_id=str(app) if app is not None else None,
        headers={REPLAY_HEADER: run_id},
    )
    return f"{record.get('facility')}.{record.get('severity')}", entry.line, props


def _err(message: str) -> None:
    print(f"logrouter replay: {redact(message)}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        if not args.since:
            raise UsageError("--since is required (what to replay), e.g. --since yesterday")
        query = build_filter(args)
        source = resolve_source(args)
        if args.rate is not None and args.rate <= 0:
            raise UsageError("--rate must be a positive number of records per second")
        cursor = parse_cursor(args.after) if args.after else None
        if args.resume is not None and cursor is None:
            cursor = read_cursor_file(args.resume)
    except UsageError as exc:
        _err(str(exc))
        return exc.exit_code
    entries = after(
        read_archive(source.root, query, interval=source.interval, on_error=_err), cursor
    )
    if args.dry_run:
        count = 0
        for entry in entries:
            print(render_output(entry.record, "short", raw=entry.line))
            count += 1
        print(f"would replay {count} record(s)", file=sys.stderr)
        return exitcodes.OK if count else exitcodes.NO_MATCH
    try:
        settings, config = resolve_target(args.config, args.url, args.exchange)
    except TargetError as exc:
        _err(str(exc))
        return exc.exit_code
    if args.to_sink is not None:
        if config is not None and args.to_sink not in config.sinks:
            _err(f"no sink {args.to_sink!r} in {args.config} (sinks: {', '.join(config.sinks)})")
            return exitcodes.USAGE
        exchange, queue = "", f"logrouter.{args.to_sink}"
    else:
        exchange, queue = settings.exchange, None
    connection = connect_as(settings, "logrouter-replay", _err)
    if connection is None:
        return exitcodes.RUNTIME
    with stop_on_signals() as stopped:
        replay: Replay | None = None
        try:
            replay = Replay(connection, exchange, queue, args, query, cursor)
            return replay.run(entries, stopped)
        except pika.exceptions.UnroutableError:
            _err(f"queue {queue!r} does not exist (is sink {args.to_sink!r} set up?)")
            return exitcodes.RUNTIME
        except pika.exceptions.AMQPError as exc:
            missing = (
                f"{'queue ' + repr(queue) if queue else 'exchange ' + repr(exchange)}"
                " does not exist (run `logrouter setup`)"
            )
            _err(broker_failure(exc, missing))
            return exitcodes.RUNTIME
        finally:
            if replay is not None:
                replay.save()
            if replay is not None and replay.interrupted:
                _err(
                    f"interrupted; resume with --after {format_cursor(replay.cursor)}"
                    if replay.cursor
                    else "interrupted before the first record"
                )
            close_quietly(connection)


class Replay:
    """Publishes entries in transactions, with pacing, progress and the resume cursor."""

    def __init__(
        self,
        connection: Any,
        exchange: str,
        queue: str | None,
        args: argparse.Namespace,
        query: RecordFilter,
        cursor: Cursor | None,
    ) -> None:
        self.connection = connection
        self.channel = connection.channel()
        if queue is not None:
            self.channel.queue_declare(queue=queue, passive=True)  # 404 when missing
        self.channel.tx_select()
        # pika 1.x internals: BlockingChannel.basic_publish flushes every message
        # on its own (an epoll per record); in a transaction nothing is gained by
        # that, tx.commit (a blocking RPC) flushes the batch. So publish on the
        # wrapped async channel; without it, the ordinary flushing publish.
        impl: Any = getattr(self.channel, "_impl", None)
        self.publish = getattr(impl, "basic_publish", None) or self.channel.basic_publish
        self.returned: list[str] = []
        self.channel.add_on_return_callback(self._on_return)
        self.exchange = exchange
        self.queue = queue
        self.rate: float | None = args.rate
        self.resume: Path | None = args.resume
        self.query = query
        self.cursor = cursor
        self.saved = cursor
        self.count = 0
        self.interrupted = False
        self.run_id = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.progress = sys.stderr.isatty()

    def run(self, entries: Iterator[Entry], stopped: list[int]) -> int:
        started = last_save = last_progress = last_commit = time.monotonic()
        pending: Cursor | None = None
        in_batch = 0
        for entry in entries:
            if stopped:
                self.interrupted = True
                break
            key, body, props = message_of(entry, self.run_id)
            if self.queue is not None:
                self.publish("", self.queue, body, props, mandatory=True)
            else:
                self.publish(self.exchange, key, body, props)
            pending, in_batch = entry.key, in_batch + 1
            now = time.monotonic()
            if in_batch >= COMMIT_EVERY or now - last_commit >= COMMIT_SECONDS:
                self.commit(pending, in_batch)
                in_batch, last_commit = 0, now
            if self.rate is not None:
                ahead = started + (self.count + in_batch) / self.rate - now
                if ahead > 0:
                    time.sleep(ahead)
            if now - last_save >= CURSOR_EVERY:
                self.save()
                last_save = now
            if self.progress and now - last_progress >= PROGRESS_EVERY:
                self.show_progress(entry, now - started)
                last_progress = now
        if in_batch and pending is not None:
            self.commit(pending, in_batch)
        if self.progress:
            sys.stderr.write("\n")
        target = f"queue {self.queue!r}" if self.queue else f"exchange {self.exchange!r}"
        print(f"replayed {self.count} record(s) to {target}", file=sys.stderr, flush=True)
        return exitcodes.OK if self.count or self.interrupted else exitcodes.NO_MATCH

    def commit(self, cursor: Cursor, count: int) -> None:
        """Commit the open transaction: the broker now holds the batch (or raises)."""
        self.channel.tx_commit()
        self.connection.process_data_events(0)  # dispatch basic.return sent before commit-ok
        if self.returned:
            raise pika.exceptions.UnroutableError([])
        self.cursor = cursor
        self.count += count

    def _on_return(self, _channel: Any, _method: Any, _props: Any, _body: bytes) -> None:
        self.returned.append(str(_method.routing_key))

    def save(self) -> None:
        """Write the cursor file (when one was asked for and the cursor moved)."""
        if self.resume is not None and self.cursor is not None and self.cursor != self.saved:
            write_cursor_file(self.resume, self.cursor)
            self.saved = self.cursor

    def show_progress(self, entry: Entry, elapsed: float) -> None:
        rate = self.count / elapsed if elapsed > 0 else 0.0
        eta = ""
        since, until = self.query.since, self.query.until or datetime.now(UTC)
        if since is not None and rate > 0:
            at = datetime.fromisoformat(entry.key[0]) if entry.key[0] else since
            done = (at - since) / (until - since) if until > since else 1.0
            if 0 < done <= 1:
                eta = f", ETA {elapsed * (1 - done) / done:.0f}s"
        sys.stderr.write(f"\r{self.count} records, {rate:.0f}/s, at {entry.key[0]}{eta}   ")
        sys.stderr.flush()
