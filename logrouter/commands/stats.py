"""``logrouter stats [CONFIG] [--watch [SECS]] [--timeout SECS]``.

Per sink of the config: its queue's depth and consumers (``queue.declare``
passive; a queue that does not exist shows as ``missing``) and the live
counters of every running instance that answered a ``status`` request on the
control exchange within the timeout; sinks that did not answer show ``no
answer``. Rates are records written per second: since the instance started
(one-shot), or between two refreshes (``--watch``), computed on the
instance's own uptime clock.

Gathering is I/O (``gather``); turning a snapshot into a table is pure
(``build_rows``, ``render_table``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pika.exceptions

from logrouter import control, exitcodes, render
from logrouter.commands.common import (
    close_quietly,
    connect_as,
    display_order,
    instance_label,
    resolve_target,
    stop_on_signals,
)
from logrouter.connection import BrokerSettings, BrokerUnavailable, describe_error, redact
from logrouter.counters import TABLE_COUNTERS
from logrouter.queue_probe import aside_queues

if TYPE_CHECKING:
    from logrouter.config import RoutingConfig

HEADER = (
    "SINK",
    "QUEUE",
    "READY",
    "UNACKED",
    "CONSUMERS",
    "INSTANCE",
    "STATE",
    *(str(spec.column) for spec in TABLE_COUNTERS),
    "WRITTEN/S",
    "CONFIG",
    "LAST ERROR",
)
NO_ANSWER = "no answer"
MISSING = "missing"
ERROR_WIDTH = 60

#: (sink, instance, host, pid) identifies one running instance across refreshes.
InstanceKey = tuple[str, str, str, str]


@dataclass(frozen=True)
class QueueDepth:
    """What ``queue.declare`` (passive) says; ``None`` counts mean the queue is missing."""

    ready: int | None
    consumers: int | None


@dataclass(frozen=True)
class Snapshot:
    sinks: tuple[tuple[str, str], ...]  # (sink name, queue name) in config order
    depths: Mapping[str, QueueDepth]  # by queue name
    replies: tuple[dict[str, Any], ...]
    missing: tuple[str, ...]
    config_version: str | None
    ignored: int = 0  # messages on the reply queue that were not a trusted reply
    #: (label, queue) of the queues records are routed aside to: rejected, unrouted
    aside: tuple[tuple[str, str], ...] = ()


# --------------------------------------------------------------------------- I/O


def queue_depths(connection: Any, queues: Iterable[str]) -> dict[str, QueueDepth]:
    """Ready count and consumers of each queue; a queue that does not exist is missing."""
    depths: dict[str, QueueDepth] = {}
    for name in queues:
        channel = connection.channel()
        try:
            frame = channel.queue_declare(queue=name, passive=True)
            depths[name] = QueueDepth(frame.method.message_count, frame.method.consumer_count)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
            depths[name] = QueueDepth(None, None)
        finally:
            if channel.is_open:
                channel.close()
    return depths


def gather(connection: Any, config: RoutingConfig, exchange: str, timeout: float) -> Snapshot:
    """Queue depths and instance replies for every sink of ``config``."""
    sinks = tuple((name, sink.queue) for name, sink in config.sinks.items())
    aside = aside_queues(exchange)
    depths = queue_depths(connection, [queue for _, queue in (*sinks, *aside)])
    result = control.request(
        connection,
        exchange,
        "status",
        expected=[name for name, _ in sinks],
        timeout=timeout,
        trusted=trusted_logins(config),
    )
    return Snapshot(
        sinks=sinks,
        depths=depths,
        replies=tuple(result.replies),
        missing=tuple(result.missing),
        config_version=config.digest,
        ignored=result.ignored,
        aside=aside,
    )


def trusted_logins(config: RoutingConfig) -> tuple[str, ...]:
    """Logins whose replies a client believes: the config's broker logins and allow_users."""
    return (*config.broker.logins(), *config.control.allow_users)


def control_lines(replies: Iterable[Mapping[str, Any]], ignored: int) -> list[str]:
    """What the control plane turned away: refused requests per instance, ignored replies."""
    lines = []
    for reply in sorted(replies, key=display_order):
        counts = reply.get("control")
        refused = counts.get("refused") if isinstance(counts, dict) else None
        if isinstance(refused, int) and refused:
            lines.append(
                f"control: {reply.get('sink')} {instance_label(reply)} refused {refused} "
                "request(s) from logins not in [control] allow_users"
            )
    if ignored:
        lines.append(f"control: ignored {ignored} reply(ies) not from a trusted login")
    return lines


# --------------------------------------------------------------------------- pure


def instance_key(reply: Mapping[str, Any]) -> InstanceKey:
    return (
        str(reply.get("sink")),
        str(reply.get("instance")),
        str(reply.get("host")),
        str(reply.get("pid")),
    )


def _counter(reply: Mapping[str, Any], name: str) -> int | None:
    counters = reply.get("counters")
    value = counters.get(name) if isinstance(counters, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def written_rate(
    reply: Mapping[str, Any], previous: Mapping[str, Any] | None = None
) -> float | None:
    """Records written per second: since the last sample, else since the instance started."""
    written = _counter(reply, "written")
    uptime = reply.get("uptime")
    if written is None or not isinstance(uptime, int | float):
        return None
    if previous is not None:
        before = _counter(previous, "written")
        before_uptime = previous.get("uptime")
        if (
            before is not None
            and isinstance(before_uptime, int | float)
            and uptime > before_uptime
            and written >= before
        ):
            return (written - before) / (uptime - before_uptime)
    return written / uptime if uptime > 0 else None


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)


def _ready(depth: QueueDepth | None) -> str:
    if depth is None:
        return "-"
    return MISSING if depth.ready is None else str(depth.ready)


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _version(reply: Mapping[str, Any], current: str | None) -> str:
    version = reply.get("config_version")
    if not isinstance(version, str) or not version:
        return "-"
    short = version[:8]
    return short if current is None or version == current else f"{short} (old)"


def _short(text: Any) -> str:
    if not text:
        return ""
    line = " ".join(str(text).split())
    return line if len(line) <= ERROR_WIDTH else line[: ERROR_WIDTH - 1] + "…"


def instance_cells(
    reply: Mapping[str, Any], previous: Mapping[str, Any] | None, current_version: str | None
) -> list[str]:
    """The INSTANCE..LAST ERROR cells for one reply."""
    if not reply.get("ok", False):
        error = _short(reply.get("error", "error"))
        return [instance_label(reply), "error", *["-"] * (len(TABLE_COUNTERS) + 2), error]
    return [
        instance_label(reply),
        str(reply.get("state", "?")),
        *(_num(_counter(reply, name)) for name in (spec.name for spec in TABLE_COUNTERS)),
        _rate(written_rate(reply, previous)),
        _version(reply, current_version),
        _short(reply.get("last_error")),
    ]


def build_rows(
    snapshot: Snapshot, previous: Mapping[InstanceKey, Mapping[str, Any]] | None = None
) -> list[list[str]]:
    """One row per answering instance (sink columns on its first row), ``no answer`` rows."""
    previous = previous or {}
    by_sink: dict[str, list[dict[str, Any]]] = {}
    for reply in sorted(snapshot.replies, key=display_order):
        by_sink.setdefault(str(reply.get("sink")), []).append(reply)
    rows: list[list[str]] = []
    known = {name for name, _ in snapshot.sinks}
    sinks = list(snapshot.sinks) + [(name, "-") for name in sorted(by_sink) if name not in known]
    for name, queue in sinks:
        depth = snapshot.depths.get(queue)
        replies = by_sink.get(name, [])
        unacked = [u for r in replies if isinstance(u := r.get("unacked"), int)]
        sink_cells = [
            name if name in known else f"{name} (not in config)",
            queue,
            _ready(depth),
            str(sum(unacked)) if unacked else "-",
            _num(depth.consumers if depth else None),
        ]
        if not replies:
            rows.append([*sink_cells, NO_ANSWER, *[""] * (len(HEADER) - len(sink_cells) - 1)])
            continue
        for index, reply in enumerate(replies):
            cells = sink_cells if index == 0 else [""] * len(sink_cells)
            prior = previous.get(instance_key(reply))
            rows.append([*cells, *instance_cells(reply, prior, snapshot.config_version)])
    return rows


def render_table(rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> str:
    """Left-aligned columns, two spaces apart, trailing blanks stripped."""
    widths = [len(h) for h in header]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip()
        for line in (header, *rows)
    ]
    return "\n".join(lines)


def render_snapshot(
    snapshot: Snapshot,
    settings: BrokerSettings,
    config_name: str,
    previous: Mapping[InstanceKey, Mapping[str, Any]] | None = None,
) -> str:
    """The heading line, the table, and the list of sinks that did not answer."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    version = (snapshot.config_version or "")[:8]
    head = (
        f"{when}  broker {settings.describe()}  exchange {settings.exchange}  "
        f"config {config_name} ({version})"
    )
    text = head + "\n" + render_table(build_rows(snapshot, previous))
    if snapshot.aside:
        text += "\n" + "  ".join(
            f"{label} {queue}: {_ready(snapshot.depths.get(queue))}"
            for label, queue in snapshot.aside
        )
    if snapshot.missing:
        text += "\nno answer from: " + ", ".join(snapshot.missing)
    for line in control_lines(snapshot.replies, snapshot.ignored):
        text += "\n" + line
    return render.escape_multiline(redact(text), indent="")


# --------------------------------------------------------------------------- command


def _err(message: str) -> None:
    print(f"logrouter stats: {render.escape(redact(message))}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    settings, config = resolve_target(args.config, args.url, None, require_config=True)
    assert config is not None
    if args.watch is not None and args.watch <= 0:
        _err("--watch needs a positive number of seconds")
        return exitcodes.USAGE
    if args.watch is None:
        return _once(settings, config, args.timeout)
    return _watch(settings, config, args.timeout, args.watch)


def _once(settings: BrokerSettings, config: RoutingConfig, timeout: float) -> int:
    connection = connect_as(settings, "logrouter-stats", _err)
    if connection is None:
        return exitcodes.RUNTIME
    try:
        snapshot = gather(connection, config, settings.exchange, timeout)
    except pika.exceptions.AMQPError as exc:
        _err(f"lost the broker: {describe_error(exc)}")
        return exitcodes.RUNTIME
    finally:
        close_quietly(connection)
    print(render_snapshot(snapshot, settings, config.path.name), flush=True)
    return exitcodes.OK


def _watch(settings: BrokerSettings, config: RoutingConfig, timeout: float, every: float) -> int:
    clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() else ""
    previous: dict[InstanceKey, Mapping[str, Any]] = {}
    connection: Any = None
    with stop_on_signals() as stopped:
        try:
            while not stopped:
                try:
                    if connection is None or not connection.is_open:
                        connection = settings.with_name("logrouter-stats").connect()
                    snapshot = gather(connection, config, settings.exchange, timeout)
                except (BrokerUnavailable, pika.exceptions.AMQPError) as exc:
                    connection = None
                    text = f"broker unreachable, retrying every {every:g}s: " + (
                        str(exc) if isinstance(exc, BrokerUnavailable) else describe_error(exc)
                    )
                    print(clear + render.escape_multiline(redact(text), indent=""), flush=True)
                else:
                    rendered = render_snapshot(snapshot, settings, config.path.name, previous)
                    print(clear + rendered + "\n", flush=True)
                    previous = {instance_key(r): r for r in snapshot.replies}
                deadline = time.monotonic() + every
                while not stopped and (left := deadline - time.monotonic()) > 0:
                    time.sleep(min(left, 0.2))
        finally:
            close_quietly(connection)
    return exitcodes.OK
