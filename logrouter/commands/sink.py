"""``logrouter sink NAME [CONFIG]``: run one sink daemon (what the systemd unit runs)."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    # Imported here: the daemon machinery stays out of `send`/`tail` start-up.
    from logrouter.sinks.runner import run_sinks

    return run_sinks(
        args.config,
        [args.name],
        url=args.url,
        burst=args.burst,
        watch=not args.no_watch,
        metrics_port=args.metrics_port,
    )
