"""``logrouter sink NAME [CONFIG]``: run one sink daemon (what the systemd unit runs)."""

from __future__ import annotations

import argparse

from logrouter.sinks.runner import run_sinks


def run(args: argparse.Namespace) -> int:
    return run_sinks(
        args.config,
        [args.name],
        url=args.url,
        burst=args.burst,
        watch=not args.no_watch,
        metrics_port=args.metrics_port,
    )
