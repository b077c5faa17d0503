"""``logrouter tail [SELECTOR]``: a live view of matching records.

A temporary exclusive, auto-delete queue is bound to the log exchange with the
selector's bindings; every record is re-checked against the selector (the
bindings may be a superset), decoded with ``wire.decode`` and printed as a
console line (coloured as ``render.use_color`` decides: a terminal, no ``NO_COLOR``,
not ``TERM=dumb``) or, with ``--json``, as one JSON object per line. ``--host`` and
``--app`` keep only records of those hosts and apps. Every control and bidi character of a record is
escaped (``render.escape``; ``render.json_line`` for ``--json``). A message that
cannot be decoded (no facility/severity, JSON nested too deeply) is reported
on stderr as rejected, with the reason, and tail goes on. Ctrl-C (or SIGTERM)
ends it with exit 0, as does reaching ``--count`` records.

Broker settings come from ``commands.common.resolve_target``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import pika.exceptions

from logrouter import batchwire, exitcodes, render
from logrouter.commands.common import (
    broker_failure,
    close_quietly,
    connect_as,
    resolve_target,
    stop_on_signals,
)
from logrouter.connection import redact
from logrouter.render import use_color
from logrouter.selector import Selector, SelectorError, compile_selector

#: The temporary queue never grows past this (oldest dropped) if the terminal is slow.
TAIL_QUEUE_MAX = 10_000
POLL_SECONDS = 0.2


def format_record(record: dict[str, Any], *, as_json: bool, color: bool) -> str:
    """One output line (or several, for tracebacks) for a decoded record."""
    if as_json:
        return render.json_line(record)
    return render.render_console(record, color=color)


def from_origin(record: dict[str, Any], hosts: list[str] | None, apps: list[str] | None) -> bool:
    """Whether ``record`` passes ``--host`` / ``--app`` (any of the names given; None: all)."""
    return (not hosts or record.get("host") in hosts) and (not apps or record.get("app") in apps)


def _err(message: str) -> None:
    print(f"logrouter tail: {render.escape(redact(message))}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        selector = compile_selector(args.selector)
    except SelectorError as exc:
        _err(f"bad selector {args.selector!r}: {exc}")
        return exitcodes.USAGE
    if args.count < 0:
        _err("--count must be 0 (no limit) or more")
        return exitcodes.USAGE
    settings, _ = resolve_target(args.config, args.url, args.exchange)
    with stop_on_signals() as stopped:
        connection = connect_as(settings, "logrouter-tail", _err)
        if connection is None:
            return exitcodes.RUNTIME
        try:
            return _tail(connection, settings.exchange, selector, args, stopped)
        except pika.exceptions.AMQPError as exc:
            missing = (
                f"exchange {settings.exchange!r} does not exist on {settings.describe()} "
                "(run `logrouter setup` first)"
            )
            _err(broker_failure(exc, missing))
            return exitcodes.RUNTIME
        finally:
            close_quietly(connection)


def _tail(
    connection: Any,
    exchange: str,
    selector: Selector,
    args: argparse.Namespace,
    stopped: list[int],
) -> int:
    channel = connection.channel()
    channel.exchange_declare(exchange=exchange, passive=True)
    queue = channel.queue_declare(
        queue="",
        exclusive=True,
        auto_delete=True,
        arguments={"x-max-length": TAIL_QUEUE_MAX},
    ).method.queue
    for key in selector.bindings:
        channel.queue_bind(queue=queue, exchange=exchange, routing_key=key)
    color = use_color(sys.stdout)
    print(
        f"logrouter tail: {selector.text!r} on exchange {exchange!r} "
        f"(bindings: {' '.join(selector.bindings)}); Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )
    shown = 0
    for method, properties, body in channel.consume(
        queue, auto_ack=True, exclusive=True, inactivity_timeout=POLL_SECONDS
    ):
        if stopped:
            break
        if method is None:
            continue
        for record in _records(method.routing_key, properties, body):
            if not selector.matches(str(record["facility"]), str(record["severity"])):
                continue
            if not from_origin(record, args.host, args.app):
                continue
            try:
                line = format_record(record, as_json=args.json, color=color)
            except Exception as exc:  # a record tail cannot show is reported, never fatal
                _err(f"rejected a message (routing key {method.routing_key!r}): {exc!r}")
                continue
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            shown += 1
            if args.count and shown >= args.count:
                return exitcodes.OK
    return exitcodes.OK


def _records(routing_key: str, properties: Any, body: bytes) -> list[dict[str, Any]]:
    """The records of one message: one, or each line of a batch (what cannot be decoded
    is reported on stderr and skipped)."""
    records = []
    for item in batchwire.decode_message(
        body,
        routing_key,
        content_type=properties.content_type,
        message_id=properties.message_id,
        timestamp=properties.timestamp,
        app_id=properties.app_id,
        headers=properties.headers,
        user_id=properties.user_id,
    ):
        if item.record is not None:
            records.append(item.record)
        elif batchwire.is_batch(properties.content_type):
            _err(f"skipped a record of a batch: {item.reason}")
        else:
            _err(f"rejected a message (routing key {routing_key!r}): {item.reason}")
    return records
