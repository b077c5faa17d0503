"""``logrouter query [SELECTOR]``: read the archive like journalctl.

The archive comes from ``--dir DIR`` or from an archive sink of the config
(``--sink NAME``, or the config's only archive sink). Records are printed in
time order across every instance's files (``logrouter.archive_reader``), in
one of the renderer's outputs (``render.OUTPUTS``). ``--follow`` binds a
temporary queue to the exchange *before* reading the archive, prints the
archived tail, re-reads the newest part of the archive for a few seconds (what
the archive sink had in hand) and then prints live records; a record is never
printed twice (key: app and message id).

``--count`` prints only the number of matches (``archive_reader.count_archive``:
no ordering, and members counted off their raw bytes where those decide).

Exit 0 when something was printed (or counted), 1 when nothing matched (as grep), 2 for
usage errors (the bad selector, time or field is named), 78 for a bad config.
``build_filter``/``resolve_source`` are shared with ``replay``; the arguments
are declared in ``logrouter.cli``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pika.exceptions

from logrouter import batchwire, errors, exitcodes
from logrouter.archive_reader import Entry, count_archive, last_entries, read_archive
from logrouter.commands.common import (
    broker_failure,
    close_quietly,
    connect_as,
    resolve_target,
    stop_on_signals,
)
from logrouter.connection import redact
from logrouter.record_filter import FieldError, RecordFilter, parse_field, record_key
from logrouter.render import render_output, use_color
from logrouter.selector import SelectorError, compile_selector
from logrouter.timespec import TimeSpecError, parse_time

if TYPE_CHECKING:
    from logrouter.connection import BrokerSettings

#: --follow: how far back (before the live queue was bound) re-reads look.
FOLLOW_MARGIN = timedelta(minutes=5)
#: --follow: re-read the archive this long, at least, for what its sink had in hand.
FOLLOW_SETTLE = 3.0
FOLLOW_QUEUE_MAX = 10_000
DEDUP_MAX = 100_000
POLL_SECONDS = 0.2
FOLLOW_DEFAULT_LINES = 10


class UsageError(errors.UsageError):
    """A bad command line; ``exit_code`` is the exit code (2, or 78 for a bad config)."""

    def __init__(self, message: str, code: int = exitcodes.USAGE) -> None:
        super().__init__(message)
        self.exit_code = code


@dataclass(frozen=True)
class Source:
    """Where the archive is, how its files are partitioned, and the broker if known."""

    root: Path
    interval: str | None
    settle: float


def build_filter(args: argparse.Namespace, now: datetime | None = None) -> RecordFilter:
    """The filter of the command line; raises ``UsageError`` naming the bad token."""
    now = now or datetime.now(UTC)
    try:
        selector = compile_selector(args.selector)
    except SelectorError as exc:
        raise UsageError(f"bad selector {args.selector!r}: {exc}") from None
    try:
        since = parse_time(args.since, now) if args.since else None
        until = parse_time(args.until, now) if args.until else None
    except TimeSpecError as exc:
        raise UsageError(str(exc)) from None
    if since and until and until <= since:
        raise UsageError(f"--until {args.until!r} is not after --since {args.since!r}")
    try:
        fields = tuple(parse_field(token) for token in args.field)
    except FieldError as exc:
        raise UsageError(str(exc)) from None
    try:
        grep = re.compile(args.grep) if args.grep is not None else None
    except re.error as exc:
        raise UsageError(f"bad --grep {args.grep!r}: {exc}") from None
    return RecordFilter(selector=selector, since=since, until=until, fields=fields, grep=grep)


def resolve_source(args: argparse.Namespace) -> Source:
    """The archive to read: ``--dir``, or an archive sink of the config."""
    if args.dir is not None:
        if not args.dir.is_dir():
            raise UsageError(f"--dir {str(args.dir)!r} is not a directory")
        return Source(args.dir, None, FOLLOW_SETTLE)
    from logrouter.config import ConfigError, load_config

    if args.config is None or not args.config.exists():
        raise UsageError(f"no archive: give --dir DIR, or --config FILE (not found: {args.config})")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc), exitcodes.CONFIG) from None
    archives = {name: sink for name, sink in config.sinks.items() if sink.type == "archive"}
    if args.sink is not None:
        sink = archives.get(args.sink)
        if sink is None:
            raise UsageError(
                f"sink {args.sink!r} is not an archive sink of {args.config} "
                f"(archive sinks: {', '.join(archives) or 'none'})"
            )
    elif len(archives) == 1:
        (sink,) = archives.values()
    else:
        raise UsageError(
            f"{args.config} has {len(archives)} archive sinks; choose one with --sink "
            f"({', '.join(archives) or 'none'}) or give --dir"
        )
    options: Any = sink.options
    return Source(
        Path(options.dir), options.rotate_interval, max(FOLLOW_SETTLE, 3 * sink.batch_interval)
    )


def _err(message: str) -> None:
    print(f"logrouter query: {redact(message)}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        query = build_filter(args)
        source = resolve_source(args)
        if args.lines is not None and args.lines < 0:
            raise UsageError("-n must be 0 or more")
        if args.follow and (query.until is not None or args.reverse):
            raise UsageError("--follow cannot be combined with --until or --reverse")
        if args.count and (args.follow or args.lines is not None):
            raise UsageError("--count cannot be combined with --follow or -n")
    except UsageError as exc:
        _err(str(exc))
        return exc.exit_code
    if args.count:
        count = count_archive(source.root, query, interval=source.interval, on_error=_err)
        print(count, flush=True)
        return exitcodes.OK if count else exitcodes.NO_MATCH
    printer = Printer(args.output, use_color(sys.stdout))
    if not args.follow:
        for entry in _archived(source, query, args.lines, args.reverse):
            printer.entry(entry)
        return exitcodes.OK if printer.count else exitcodes.NO_MATCH
    settings, _ = resolve_target(args.config, args.url, args.exchange)
    lines = args.lines
    if lines is None and query.since is None:
        lines = FOLLOW_DEFAULT_LINES
    return _follow(settings, source, query, lines, printer)


def _archived(
    source: Source, query: RecordFilter, lines: int | None, reverse: bool
) -> Iterator[Entry]:
    if lines is not None:
        picked = last_entries(source.root, query, lines, interval=source.interval, on_error=_err)
        return reversed(picked) if reverse else iter(picked)
    return read_archive(
        source.root, query, interval=source.interval, reverse=reverse, on_error=_err
    )


class Printer:
    """Prints records once each (by app and message id among the recent ones)."""

    def __init__(self, output: str, color: bool) -> None:
        self.output = output
        self.color = color
        self.count = 0
        self.seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.remember = False
        #: the newest archived ``ts`` printed (canonical text)
        self.last_key = ""

    def entry(self, entry: Entry) -> None:
        self.record(entry.record, entry.line)
        self.last_key = max(self.last_key, entry.key[0])

    def record(self, record: dict[str, Any], raw: bytes | None = None) -> None:
        if self.remember:
            ident = record.get("id")
            if ident is not None:
                key = (str(record.get("app")), str(ident))
                if key in self.seen:
                    return
                self.seen[key] = None
                if len(self.seen) > DEDUP_MAX:
                    self.seen.popitem(last=False)
        sys.stdout.write(render_output(record, self.output, color=self.color, raw=raw) + "\n")
        sys.stdout.flush()
        self.count += 1


def _follow(
    settings: BrokerSettings,
    source: Source,
    query: RecordFilter,
    lines: int | None,
    printer: Printer,
) -> int:
    with stop_on_signals() as stopped:
        connection = connect_as(settings, "logrouter-query", _err)
        if connection is None:
            return exitcodes.RUNTIME
        try:
            channel = connection.channel()
            channel.exchange_declare(exchange=settings.exchange, passive=True)
            queue = str(
                channel.queue_declare(
                    queue="",
                    exclusive=True,
                    auto_delete=True,
                    arguments={"x-max-length": FOLLOW_QUEUE_MAX},
                ).method.queue
            )
            assert query.selector is not None
            for key in query.selector.bindings:
                channel.queue_bind(queue=queue, exchange=settings.exchange, routing_key=key)
            bound = datetime.now(UTC)
            printer.remember = True
            for entry in _archived(source, query, lines, False):
                printer.entry(entry)
            _live(channel, queue, source, query, bound, printer, stopped)
        except pika.exceptions.AMQPError as exc:
            missing = f"exchange {settings.exchange!r} does not exist on {settings.describe()}"
            _err(broker_failure(exc, missing))
            return exitcodes.RUNTIME
        finally:
            close_quietly(connection)
    return exitcodes.OK  # followed until Ctrl-C: nothing printed is no failure


def _live(
    channel: Any,
    queue: str,
    source: Source,
    query: RecordFilter,
    bound: datetime,
    printer: Printer,
    stopped: list[int],
) -> None:
    """Live records; for ``source.settle`` seconds also what the archive sink had in hand.

    Those re-reads print records at or after the newest archived one printed
    (and within ``FOLLOW_MARGIN`` of the bind), never one printed already.
    """
    since = bound - FOLLOW_MARGIN
    if printer.last_key:
        since = max(since, datetime.fromisoformat(printer.last_key))
    recent = RecordFilter(
        selector=query.selector,
        since=max(since, query.since) if query.since else since,
        fields=query.fields,
        grep=query.grep,
    )
    settle_until = time.monotonic() + source.settle
    next_reread = 0.0
    for method, properties, body in channel.consume(
        queue, auto_ack=True, inactivity_timeout=POLL_SECONDS
    ):
        if stopped:
            return
        now = time.monotonic()
        if now < settle_until and now >= next_reread:
            for entry in read_archive(source.root, recent, interval=source.interval, on_error=_err):
                printer.entry(entry)
            next_reread = now + 0.5
        if method is None:
            continue
        for item in batchwire.decode_message(
            body,
            method.routing_key,
            content_type=properties.content_type,
            message_id=properties.message_id,
            timestamp=properties.timestamp,
            app_id=properties.app_id,
            headers=properties.headers,
            user_id=properties.user_id,
        ):
            if item.record is None:
                _err(f"skipped a record: {item.reason}")
            elif query.wants(item.record, record_key(item.record)):
                printer.record(item.record)
