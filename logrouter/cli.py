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
