"""Command line: ``logrouter COMMAND ...`` (also ``python -m logrouter``).

Parsing lives here; each command's work lives in ``logrouter.commands.<name>``
and returns an exit code from ``logrouter.exitcodes``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from logrouter import __version__, exitcodes
from logrouter.render import OUTPUTS

CONFIG_ENV = "LOGROUTER_CONFIG"
SYSTEM_CONFIG = Path("/etc/logrouter/routing.toml")
LOCAL_CONFIG = Path("config/routing.toml")


def default_config() -> Path:
    """``$LOGROUTER_CONFIG``, else /etc/logrouter/routing.toml, else ./config/routing.toml."""
    if env := os.environ.get(CONFIG_ENV):
        return Path(env)
    return SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else LOCAL_CONFIG


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        nargs="?",
        type=Path,
        default=None,
        help=f"routing config (default: ${CONFIG_ENV}, {SYSTEM_CONFIG}, or {LOCAL_CONFIG})",
    )


def _add_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=None,
        help="broker URL(s), space-separated for failover (default: $LOGROUTER_URL or config)",
    )


def _add_archive_query(parser: argparse.ArgumentParser) -> None:
    """What ``query`` and ``replay`` select: selector, archive, time range, filters."""
    parser.add_argument("selector", nargs="?", default="*.*", help="selector, e.g. '*.err'")
    parser.add_argument("--config", type=Path, default=None, help="config naming the archive")
    parser.add_argument("--sink", default=None, help="archive sink of the config to read")
    parser.add_argument("--dir", type=Path, default=None, help="archive directory to read")
    parser.add_argument("--since", default=None, help="e.g. 2026-11-30T12:00Z, today, -2h")
    parser.add_argument("--until", default=None, help="end of the range (exclusive)")
    parser.add_argument(
        "--field", action="append", default=[], metavar="KEY=VALUE", help="e.g. fields.order=42"
    )
    parser.add_argument("--grep", default=None, metavar="REGEX", help="message matches REGEX")
    _add_url(parser)
    parser.add_argument("--exchange", default=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logrouter", description="Route Python logging records through RabbitMQ."
    )
    parser.add_argument("--version", action="version", version=f"logrouter {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="validate a config and print its bindings")
    _add_config(check)
    _add_url(check)
    check.add_argument("--diff", action="store_true", help="compare with the live broker")

    setup = commands.add_parser("setup", help="declare and reconcile the topology")
    _add_config(setup)
    _add_url(setup)
    setup.add_argument("--prune", action="store_true", help="delete queues of removed sinks")

    sink = commands.add_parser("sink", help="run one sink daemon")
    sink.add_argument("name", help="sink name from the config")
    _add_config(sink)
    _add_url(sink)
    sink.add_argument("--burst", action="store_true", help="exit once the queue is drained")
    sink.add_argument("--metrics-port", type=int, default=None, help="Prometheus metrics port")
    sink.add_argument("--no-watch", action="store_true", help="do not watch the config file")

    run = commands.add_parser("run", help="run every sink of the config in one process")
    _add_config(run)
    _add_url(run)
    run.add_argument("--burst", action="store_true", help="exit once the queues are drained")
    run.add_argument("--metrics-port", type=int, default=None, help="Prometheus metrics port")
    run.add_argument("--no-watch", action="store_true", help="do not watch the config file")

    tail = commands.add_parser("tail", help="live view of matching records")
    tail.add_argument("selector", nargs="?", default="*.*", help="selector, e.g. '*.err'")
    tail.add_argument("--config", type=Path, default=None, help="config for broker URL/exchange")
    _add_url(tail)
    tail.add_argument("--exchange", default=None)
    tail.add_argument("--json", action="store_true", help="print raw JSON records")
    tail.add_argument("--count", type=int, default=0, help="exit after N records")
    tail.add_argument(
        "--host", action="append", default=None, help="only records of this host (repeatable)"
    )
    tail.add_argument(
        "--app", action="append", default=None, help="only records of this app (repeatable)"
    )

    send = commands.add_parser("send", help="publish one record, like logger(1)")
    send.add_argument("key", metavar="FACILITY.SEVERITY")
    send.add_argument("message", nargs="+")
    send.add_argument("--config", type=Path, default=None, help="config for broker URL/exchange")
    _add_url(send)
    send.add_argument("--exchange", default=None)
    send.add_argument("--app", default="logrouter-send")
    send.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for confirm")

    stats = commands.add_parser("stats", help="queue depths and live counters per sink")
    _add_config(stats)
    _add_url(stats)
    stats.add_argument("--watch", type=float, nargs="?", const=2.0, default=None)
    stats.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for sinks")

    query = commands.add_parser("query", help="read the archive, like journalctl")
    _add_archive_query(query)
    query.add_argument("-n", "--lines", type=int, default=None, help="only the newest N")
    query.add_argument("-r", "--reverse", action="store_true", help="newest first")
    query.add_argument("-o", "--output", choices=OUTPUTS, default="short")
    query.add_argument("-f", "--follow", action="store_true", help="then print live records")

    replay = commands.add_parser("replay", help="re-publish archived records (backfill)")
    _add_archive_query(replay)
    replay.add_argument("--to-sink", default=None, metavar="NAME", help="only to this sink's queue")
    replay.add_argument("--rate", type=float, default=None, help="at most N records per second")
    replay.add_argument("--dry-run", action="store_true", help="print what would be replayed")
    replay.add_argument("--resume", type=Path, default=None, metavar="FILE", help="cursor file")
    replay.add_argument("--after", default=None, metavar="CURSOR", help="a printed cursor")

    rejected = commands.add_parser("rejected", help="inspect and recover rejected/unrouted")
    rejected.add_argument("action", choices=("list", "show", "replay", "purge"))
    rejected.add_argument("id", nargs="?", default=None, help="message id (show)")
    rejected.add_argument("--queue", choices=("rejected", "unrouted"), default="rejected")
    rejected.add_argument("--reason", default=None, help="only messages whose reason has TEXT")
    rejected.add_argument("--since", default=None, help="only messages published since T")
    rejected.add_argument("--yes", action="store_true", help="purge: yes, delete them")
    rejected.add_argument("--config", type=Path, default=None)
    _add_url(rejected)
    rejected.add_argument("--exchange", default=None)

    reload = commands.add_parser("reload", help="ask running sinks to re-read the config")
    reload.add_argument("sink", nargs="?", default=None, help="only this sink")
    reload.add_argument("--config", type=Path, default=None)
    _add_url(reload)
    reload.add_argument("--timeout", type=float, default=5.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "config", "unset") is None:
        args.config = default_config()
    module = importlib.import_module(f"logrouter.commands.{args.command}")
    try:
        code: int = module.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return exitcodes.OK
    return code
