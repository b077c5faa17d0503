"""``logrouter replay [SELECTOR] --since T [--until T] [--to-sink NAME | --exchange X]``.

Re-publishes archived records (the same selection as ``query``), in time
order, with streaming publisher confirms (up to ``MAX_IN_FLIGHT`` unconfirmed
messages or ``MAX_IN_FLIGHT_RECORDS`` records; acks and nacks honour
``multiple``): to the log exchange with each record's ``facility.severity`` key,
or with ``--to-sink NAME`` straight to the queue ``logrouter.NAME`` through the
default exchange (only that sink gets them). One message per record, or (``--batch
auto``, the default with ``--to-sink``) batch messages of one routing key and app
(``replay_pack``); either way each record keeps its id and app, and messages
carry the header ``x-logrouter-replay`` (the run's start time).

Resuming (``replay_cursor``): the cursor is the (ts, id) of the newest record
confirmed with every record before it (confirms are taken in publish order, and
a batch round's cursor moves only with its last message); records come in that
order, so a restarted replay skips everything up to it. With ``--resume FILE``
it is read from and written to FILE (atomically, twice a second and at the
end); it is also printed when a replay is interrupted (``--after CURSOR``). A
nack re-publishes, on a new channel, everything after the cursor. What was
confirmed after the last cursor write is sent again, and the sinks' dedup
(same sender, app and message id) drops it, so the target holds every record
once.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika.exceptions
import pika.spec

from logrouter import exitcodes
from logrouter.app.frames import emit, gather, streaming_confirms
from logrouter.archive_reader import Entry, read_archive
from logrouter.commands.common import (
    broker_failure,
    close_quietly,
    connect_as,
    resolve_target,
    stop_on_signals,
)
from logrouter.commands.query import UsageError, build_filter, resolve_source
from logrouter.commands.replay_cursor import (
    Confirms,
    Cursor,
    after,
    format_cursor,
    parse_cursor,
    read_cursor_file,
    write_cursor_file,
)
from logrouter.commands.replay_pack import Outgoing, Packer
from logrouter.connection import connection_login, redact
from logrouter.record_filter import RecordFilter
from logrouter.render import render_output

CURSOR_EVERY = 0.5
#: unconfirmed messages / records at most; publishing waits until half of them are confirmed
MAX_IN_FLIGHT = 5000
MAX_IN_FLIGHT_RECORDS = 20_000
#: publishes are flushed (and confirms taken) after this many records or seconds
FLUSH_EVERY = 100
FLUSH_SECONDS = 0.05
#: longest wait for confirms before publishing resumes (pika's process_data_events
#: runs for all of it when only the async channel's callbacks ran)
CONFIRM_WAIT = 0.005
#: pause before re-publishing on a new channel after a nack
NACK_PAUSE = 0.5
PROGRESS_EVERY = 0.5


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

    def entries(start: Cursor | None) -> Iterator[Entry]:
        return after(
            read_archive(source.root, query, interval=source.interval, on_error=_err), start
        )

    if args.dry_run:
        count = 0
        for entry in entries(cursor):
            print(render_output(entry.record, "short", raw=entry.line))
            count += 1
        print(f"would replay {count} record(s)", file=sys.stderr)
        return exitcodes.OK if count else exitcodes.NO_MATCH
    settings, config = resolve_target(args.config, args.url, args.exchange)
    if args.batch is None:
        args.batch = "auto" if args.to_sink is not None else "off"
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
                replay.send()  # pika writes on its own again (the close below)
                replay.save()
            if replay is not None and replay.interrupted:
                _err(
                    f"interrupted; resume with --after {format_cursor(replay.cursor)}"
                    if replay.cursor
                    else "interrupted before the first record"
                )
            close_quietly(connection)


class Replay:
    """Publishes entries with streaming publisher confirms, pacing, progress and the cursor."""

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
        #: user_id of every message: without it sinks would key dedup by "" (anyone's)
        self.login = connection_login(connection)
        self.exchange = exchange
        self.queue = queue
        self.rate: float | None = args.rate
        self.resume: Path | None = args.resume
        self.query = query
        self.cursor = cursor
        self.saved = cursor
        self.from_cursor = cursor is not None  # --resume, --after
        self.count = 0
        self.interrupted = False
        self.run_id = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.progress = sys.stderr.isatty()
        self.returned: list[str] = []
        self.nacked = False
        self.in_flight = Confirms()
        self.frames: list[bytes] | None = None
        self.packer = Packer(self.run_id, batches=args.batch == "auto", rate=args.rate)
        self.published = 0  # records published (every channel), for --rate
        self.open_channel()

    def open_channel(self) -> None:
        """A fresh confirm-mode channel; what was in flight on the old one is forgotten.

        Confirms stream (``frames.streaming_confirms``: many publishes in flight), and
        the frames of many publishes go out in one socket write (``frames.gather``)
        that ``pump`` sends before it takes the confirms.
        """
        self.send()
        self.channel = self.connection.channel()
        if self.queue is not None:
            self.channel.queue_declare(queue=self.queue, passive=True)  # 404 when missing
        self.publish = streaming_confirms(
            self.connection, self.channel, self._on_confirm, self._on_return
        )
        self.in_flight = Confirms()
        self.nacked = False

    def run(self, entries: Callable[[Cursor | None], Iterator[Entry]], stopped: list[int]) -> int:
        """Publish what ``entries(cursor)`` yields; after a nack, again from the cursor."""
        started = last_save = last_progress = last_flush = time.monotonic()
        source = entries(self.cursor)
        unflushed = 0  # records published since the last pump
        while True:
            messages = [] if stopped else self.packer.round(source)
            if not messages:
                self.interrupted = bool(stopped)
                self.wait_confirms(0)  # what is in flight is confirmed quickly: an exact cursor
                if not self.nacked or stopped:
                    break
            last = self.packer.last
            for number, message in enumerate(messages, 1):
                if self.rate is not None:
                    self.pace(started + (self.published + message.records) / self.rate)
                assert last is not None
                self.send_message(message, last.key if number == len(messages) else None)
                unflushed += message.records
            now = time.monotonic()
            if self.busy(1.0):
                self.wait_confirms(0.5)
                last_flush, unflushed = now, 0
            elif unflushed >= FLUSH_EVERY or now - last_flush >= FLUSH_SECONDS:
                self.pump(0)
                last_flush, unflushed = now, 0
            if self.nacked:
                _err(
                    "broker rejected publishes (nack): re-publishing from the last confirmed record"
                )
                self.send()
                close_quietly(self.channel)
                time.sleep(NACK_PAUSE)
                self.open_channel()
                source = entries(self.cursor)
                continue
            if now - last_save >= CURSOR_EVERY:
                self.save()
                last_save = now
            if self.progress and last is not None and now - last_progress >= PROGRESS_EVERY:
                self.show_progress(last, now - started)
                last_progress = now
        if self.progress:
            sys.stderr.write("\n")
        target = f"queue {self.queue!r}" if self.queue else f"exchange {self.exchange!r}"
        print(f"replayed {self.count} record(s) to {target}", file=sys.stderr, flush=True)
        # from a cursor (--resume, --after), nothing left after it means: done
        done = self.count or self.interrupted or self.from_cursor
        return exitcodes.OK if done else exitcodes.NO_MATCH

    def send_message(self, message: Outgoing, completes: Cursor | None) -> None:
        """Publish ``message`` (its frames gathered for one write), completing ``completes``."""
        message.properties.user_id = self.login
        if self.frames is None:
            self.frames = gather(self.connection)
        if self.queue is not None:
            self.publish("", self.queue, message.body, message.properties, mandatory=True)
        else:
            self.publish(self.exchange, message.routing_key, message.body, message.properties)
        self.in_flight.sent(completes, message.records)
        self.published += message.records

    def pace(self, due: float) -> None:
        """--rate: wait until ``due`` (what was gathered goes out first)."""
        ahead = due - time.monotonic()
        if ahead > 0:
            self.pump(0)
            time.sleep(ahead)

    def busy(self, share: float) -> bool:
        """More than ``share`` of the messages or records allowed in flight are unconfirmed."""
        in_flight = self.in_flight
        return (
            len(in_flight) > MAX_IN_FLIGHT * share
            or in_flight.records > MAX_IN_FLIGHT_RECORDS * share
        )

    def wait_confirms(self, share: float) -> None:
        """Run the connection until at most ``share`` of the in-flight limits is
        unconfirmed (or a nack)."""
        while self.busy(share) and not self.nacked:
            self.pump(CONFIRM_WAIT)

    def send(self) -> None:
        """Write the gathered publishes; pika writes on its own again until the next one."""
        frames, self.frames = self.frames, None
        emit(self.connection, frames)

    def pump(self, timeout: float) -> None:
        """Send what was gathered, then take confirms (and returns) for up to ``timeout`` s."""
        self.send()
        self.connection.process_data_events(timeout)
        self.check()

    def check(self) -> None:
        """Raise ``UnroutableError`` once the broker returned a message (queue gone)."""
        if self.returned:
            raise pika.exceptions.UnroutableError([])

    def _on_confirm(self, frame: Any) -> None:
        """basic.ack / basic.nack: advance the cursor over the confirmed prefix, in order."""
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            self.nacked = True
            return
        if self.nacked or self.returned:
            return  # nothing after a refused or returned message counts as confirmed
        count, cursor = self.in_flight.ack(method.delivery_tag, method.multiple)
        self.count += count
        if cursor is not None:
            self.cursor = cursor

    def _on_return(self, _channel: Any, method: Any, _props: Any, _body: bytes) -> None:
        self.returned.append(str(method.routing_key))

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
