"""Command line: ``logrouter COMMAND ...`` (also ``python -m logrouter``).

Parsing lives here; each command's work lives in ``logrouter.commands.<name>``,
whose ``run(args)`` is attached to its subparser with ``set_defaults(run=...)``
(imported only when that command runs) and returns an exit code from
``logrouter.exitcodes``. A ``LogrouterError`` that escapes a command becomes its
message and ``exit_code`` here.

Every command takes ``--config FILE``; ``check``, ``setup``, ``sink``, ``run``
and ``stats`` also still take the config as a trailing positional argument
(the old spelling).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from logrouter import __version__, exitcodes, log
from logrouter.connection import redact
from logrouter.errors import LogrouterError
from logrouter.render import OUTPUTS, escape

CONFIG_ENV = "LOGROUTER_CONFIG"
SYSTEM_CONFIG = Path("/etc/logrouter/routing.toml")
LOCAL_CONFIG = Path("config/routing.toml")


def default_config() -> Path:
    """``$LOGROUTER_CONFIG``, else /etc/logrouter/routing.toml, else ./config/routing.toml."""
    if env := os.environ.get(CONFIG_ENV):
        return Path(env)
    return SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else LOCAL_CONFIG


CONFIG_HELP = f"routing config (default: ${CONFIG_ENV}, {SYSTEM_CONFIG}, or {LOCAL_CONFIG})"


def _command(name: str) -> Callable[[argparse.Namespace], int]:
    """``logrouter.commands.<name>.run``, imported when the command runs (not at start:
    what one command needs, e.g. the sinks for ``sink``, does not slow the others)."""

    def run(args: argparse.Namespace) -> int:
        module = importlib.import_module(f"logrouter.commands.{name}")
        code: int = module.run(args)
        return code

    return run


def _add_config(parser: argparse.ArgumentParser, *, positional: bool = True) -> None:
    """``--config FILE``, and (``positional``) the old trailing ``[CONFIG]`` spelling."""
    parser.add_argument("--config", type=Path, default=None, metavar="FILE", help=CONFIG_HELP)
    if positional:
        parser.add_argument(
            "config_positional",
            nargs="?",
            type=Path,
            default=None,
            metavar="CONFIG",
            help="same as --config (older spelling)",
        )


def _settle_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One ``args.config``: the flag or the positional (not two different files), or the default."""
    positional = getattr(args, "config_positional", None)
    if positional is not None:
        if args.config is not None and args.config != positional:
            parser.error(f"two configs given: --config {args.config} and {positional}")
        args.config = positional
    if args.config is None:
        args.config = default_config()


def _add_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=None,
        help="broker URL(s), space-separated for failover (default: $LOGROUTER_URL or config)",
    )


def _add_daemon_options(parser: argparse.ArgumentParser, burst_help: str) -> None:
    """What ``sink`` and ``run`` share: config, URL, --burst, --metrics-port, --no-watch."""
    _add_config(parser)
    _add_url(parser)
    parser.add_argument("--burst", action="store_true", help=burst_help)
    parser.add_argument("--metrics-port", type=int, default=None, help="Prometheus metrics port")
    parser.add_argument("--no-watch", action="store_true", help="do not watch the config file")


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

    check_parser = commands.add_parser("check", help="validate a config and print its bindings")
    check_parser.set_defaults(run=_command("check"))
    _add_config(check_parser)
    _add_url(check_parser)
    check_parser.add_argument("--diff", action="store_true", help="compare with the live broker")

    setup_parser = commands.add_parser("setup", help="declare and reconcile the topology")
    setup_parser.set_defaults(run=_command("setup"))
    _add_config(setup_parser)
    _add_url(setup_parser)
    setup_parser.add_argument("--prune", action="store_true", help="delete queues of removed sinks")

    sink_parser = commands.add_parser("sink", help="run one sink daemon")
    sink_parser.set_defaults(run=_command("sink"))
    sink_parser.add_argument("name", help="sink name from the config")
    _add_daemon_options(sink_parser, "exit once the queue is drained")

    run_parser = commands.add_parser("run", help="run every sink of the config in one process")
    run_parser.set_defaults(run=_command("run"))
    _add_daemon_options(run_parser, "exit once the queues are drained")

    tail_parser = commands.add_parser("tail", help="live view of matching records")
    tail_parser.set_defaults(run=_command("tail"))
    tail_parser.add_argument("selector", nargs="?", default="*.*", help="selector, e.g. '*.err'")
    _add_config(tail_parser, positional=False)
    _add_url(tail_parser)
    tail_parser.add_argument("--exchange", default=None)
    tail_parser.add_argument("--json", action="store_true", help="print raw JSON records")
    tail_parser.add_argument("--count", type=int, default=0, help="exit after N records")
    tail_parser.add_argument(
        "--host", action="append", default=None, help="only records of this host (repeatable)"
    )
    tail_parser.add_argument(
        "--app", action="append", default=None, help="only records of this app (repeatable)"
    )

    send_parser = commands.add_parser("send", help="publish one record, like logger(1)")
    send_parser.set_defaults(run=_command("send"))
    send_parser.add_argument("key", metavar="FACILITY.SEVERITY")
    send_parser.add_argument("message", nargs="+")
    _add_config(send_parser, positional=False)
    _add_url(send_parser)
    send_parser.add_argument("--exchange", default=None)
    send_parser.add_argument("--app", default="logrouter-send")
    send_parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for confirm"
    )

    stats_parser = commands.add_parser("stats", help="queue depths and live counters per sink")
    stats_parser.set_defaults(run=_command("stats"))
    _add_config(stats_parser)
    _add_url(stats_parser)
    stats_parser.add_argument("--watch", type=float, nargs="?", const=2.0, default=None)
    stats_parser.add_argument(
        "--timeout", type=float, default=2.0, help="seconds to wait for sinks"
    )

    query_parser = commands.add_parser("query", help="read the archive, like journalctl")
    query_parser.set_defaults(run=_command("query"))
    _add_archive_query(query_parser)
    query_parser.add_argument("-n", "--lines", type=int, default=None, help="only the newest N")
    query_parser.add_argument("-r", "--reverse", action="store_true", help="newest first")
    query_parser.add_argument("-o", "--output", choices=OUTPUTS, default="short")
    query_parser.add_argument("-f", "--follow", action="store_true", help="then print live records")
    query_parser.add_argument(
        "-c", "--count", action="store_true", help="print only the number of matches (as grep -c)"
    )

    replay_parser = commands.add_parser("replay", help="re-publish archived records (backfill)")
    replay_parser.set_defaults(run=_command("replay"))
    _add_archive_query(replay_parser)
    replay_parser.add_argument(
        "--to-sink", default=None, metavar="NAME", help="only to this sink's queue"
    )
    replay_parser.add_argument(
        "--rate", type=float, default=None, help="at most N records per second"
    )
    replay_parser.add_argument(
        "--dry-run", action="store_true", help="print what would be replayed"
    )
    replay_parser.add_argument(
        "--resume", type=Path, default=None, metavar="FILE", help="cursor file"
    )
    replay_parser.add_argument("--after", default=None, metavar="CURSOR", help="a printed cursor")
    replay_parser.add_argument(
        "--batch",
        choices=("auto", "off"),
        default=None,
        help="records in batch messages (default: auto with --to-sink, else off)",
    )

    rejected_parser = commands.add_parser("rejected", help="inspect and recover rejected/unrouted")
    rejected_parser.set_defaults(run=_command("rejected"))
    rejected_parser.add_argument("action", choices=("list", "show", "replay", "purge"))
    rejected_parser.add_argument("id", nargs="?", default=None, help="message id (show)")
    rejected_parser.add_argument("--queue", choices=("rejected", "unrouted"), default="rejected")
    rejected_parser.add_argument(
        "--reason", default=None, help="only messages whose reason has TEXT"
    )
    rejected_parser.add_argument("--since", default=None, help="only messages published since T")
    rejected_parser.add_argument("--yes", action="store_true", help="purge: yes, delete them")
    _add_config(rejected_parser, positional=False)
    _add_url(rejected_parser)
    rejected_parser.add_argument("--exchange", default=None)

    reload_parser = commands.add_parser("reload", help="ask running sinks to re-read the config")
    reload_parser.set_defaults(run=_command("reload"))
    reload_parser.add_argument("sink", nargs="?", default=None, help="only this sink")
    _add_config(reload_parser, positional=False)
    _add_url(reload_parser)
    reload_parser.add_argument("--timeout", type=float, default=5.0)
    return parser


#: options whose value may be a negative offset (``--since -2h``), which argparse
#: would otherwise take for an option
_TIME_OPTIONS = ("--since", "--until")


def _attach_times(argv: Sequence[str]) -> list[str]:
    """``--since -2h`` -> ``--since=-2h`` (argparse refuses a value that starts with -)."""
    out: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if token in _TIME_OPTIONS:
            value = next(tokens, None)
            if value is not None and value[:1] == "-" and value[1:2].isdigit():
                out.append(f"{token}={value}")
                continue
            out.append(token)
            if value is not None:
                out.append(value)
            continue
        out.append(token)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_attach_times(sys.argv[1:] if argv is None else argv))
    _settle_config(parser, args)
    log.configure()  # a command's own log lines (topology warnings...) go to stderr, never stdout
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return exitcodes.OK
    except LogrouterError as exc:
        # A command handles the errors it can explain better; any other ends here.
        print(f"logrouter {args.command}: {escape(redact(str(exc)))}", file=sys.stderr)
        return exc.exit_code
    return code
