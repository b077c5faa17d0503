"""``logrouter setup [CONFIG] [--prune] [--url URL]``: declare and reconcile the topology.

Prints one block per queue: ``+ key`` for a binding added, ``- key`` for one removed,
``unchanged`` when nothing changed. Exit 0; 78 for a bad config; 1 when the broker is
unreachable or part of the topology cannot be declared.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

import pika.exceptions

from logrouter import exitcodes
from logrouter.config import ConfigError, load_config
from logrouter.connection import BadURL, BrokerUnavailable, describe_error, redact
from logrouter.topology import BindingDiff, TopologyError, queue_spec, setup


def format_diffs(diffs: Iterable[BindingDiff]) -> list[str]:
    """The lines printed for ``diffs``: a header per queue, then ``+``/``-`` per binding."""
    lines: list[str] = []
    for diff in diffs:
        if diff.deleted:
            lines.append(f"{diff.queue}: deleted (--prune)")
        elif not diff.changed:
            lines.append(f"{diff.queue}: unchanged")
            continue
        else:
            lines.append(f"{diff.queue}:")
        lines.extend(f"  + {key}" for key in sorted(diff.added))
        lines.extend(f"  - {key}" for key in sorted(diff.removed))
    return lines


def _print(lines: Iterable[str], stream: TextIO) -> None:
    for line in lines:
        print(line, file=stream)


def run(args: argparse.Namespace) -> int:
    # pika logs every refused declaration and failed connect; our own messages say it better.
    logging.getLogger("pika").addHandler(logging.NullHandler())
    path = Path(args.config)
    try:
        config = load_config(path, url=args.url)
    except ConfigError as exc:
        print(f"logrouter setup: invalid config {path}:", file=sys.stderr)
        _print((f"  {issue}" for issue in exc.issues), sys.stderr)
        return exc.exit_code
    except BadURL as exc:
        print(f"logrouter setup: {exc}", file=sys.stderr)
        return exitcodes.USAGE if args.url else exitcodes.CONFIG
    except OSError as exc:
        print(f"logrouter setup: cannot read config {path}: {exc}", file=sys.stderr)
        return exitcodes.CONFIG
    specs = [queue_spec(sink) for sink in config.sinks.values()]
    broker = config.broker
    try:
        diffs = setup(broker, specs, prune=args.prune)
    except BrokerUnavailable as exc:
        print(f"logrouter setup: broker unreachable: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except TopologyError as exc:
        _print(format_diffs(exc.diffs), sys.stdout)
        print(f"logrouter setup: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except (pika.exceptions.AMQPError, OSError) as exc:
        print(f"logrouter setup: broker error: {describe_error(exc)}", file=sys.stderr)
        return exitcodes.RUNTIME
    print(f"exchange {broker.exchange} on {broker.describe()}:")
    _print(format_diffs(diffs), sys.stdout)
    return exitcodes.OK
