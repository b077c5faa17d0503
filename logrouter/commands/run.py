"""``logrouter run [CONFIG]``: every sink of the config in one process (one thread each)."""

from __future__ import annotations

import argparse

from logrouter.sinks.runner import run_sinks


def run(args: argparse.Namespace) -> int:
    return run_sinks(
        args.config,
        None,
        url=args.url,
        burst=args.burst,
        watch=not args.no_watch,
        metrics_port=args.metrics_port,
    )
