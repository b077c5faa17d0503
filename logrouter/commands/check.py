"""``logrouter check [CONFIG] [--url URL] [--diff]``: validate a config, print its bindings.

Prints the config (path, digest), the broker (password hidden) and, per sink in
file order: type, match, queue and queue type, the compiled AMQP bindings one per
line, and where the sink writes. Exit 0. A config that cannot be used prints
every issue as ``file:line: key: message`` on stderr and exits 78 (EX_CONFIG);
so does a missing or unreadable file.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from logrouter import exitcodes
from logrouter.config import (
    ArchiveOptions,
    ConfigError,
    ConsoleOptions,
    FileOptions,
    RoutingConfig,
    SinkConfig,
    load_config,
)
from logrouter.connection import URL_ENV

SUPERSET_NOTE = "superset: AMQP cannot exclude a facility; the sink filters the rest"


def _destination(sink: SinkConfig) -> str:
    options = sink.options
    if isinstance(options, FileOptions):
        return f"path {options.path}"
    if isinstance(options, ConsoleOptions):
        return f"stream {options.stream}, color {options.color}"
    if isinstance(options, ArchiveOptions):
        return f"dir {options.dir} ({options.compression}, every {options.rotate_interval})"
    return ""


def describe_sink(sink: SinkConfig) -> Iterator[str]:
    """The lines ``check`` prints for one sink."""
    yield f"sink {sink.name}"
    yield f"  type      {sink.type}"
    yield f"  match     {sink.match}"
    yield f"  queue     {sink.queue} ({sink.queue_type})"
    yield f"  writes    {_destination(sink)}"
    note = "" if sink.selector.exact else f"  ({SUPERSET_NOTE})"
    yield f"  bindings  {len(sink.selector.bindings)}{note}"
    for binding in sink.selector.bindings:
        yield f"    {binding}"


def describe(config: RoutingConfig) -> Iterator[str]:
    """The lines ``check`` prints for a valid config."""
    yield f"config    {config.path} (sha256 {config.digest[:12]})"
    yield f"broker    {config.broker.describe()}"
    yield f"exchange  {config.broker.exchange}"
    for sink in config.sinks.values():
        yield ""
        yield from describe_sink(sink)


def load(path: Path, url: str | None) -> RoutingConfig:
    """The config at ``path``; ``--url`` takes the place of ``$LOGROUTER_URL``."""
    env = dict(os.environ)
    if url:
        env[URL_ENV] = url
    return load_config(path, env=env)


def diff(config: RoutingConfig, args: argparse.Namespace) -> int:
    """``--diff``: compare with the live broker (not implemented here yet)."""
    print("check --diff: not implemented yet", file=sys.stderr)
    return exitcodes.RUNTIME


def run(args: argparse.Namespace) -> int:
    path = Path(args.config)
    try:
        config = load(path, getattr(args, "url", None))
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        count = len(exc.issues)
        problems = f"{count} problem{'s' if count != 1 else ''}"
        print(f"logrouter check: {path}: {problems}, config not usable", file=sys.stderr)
        return exitcodes.CONFIG
    for line in describe(config):
        print(line)
    if getattr(args, "diff", False):
        return diff(config, args)
    return exitcodes.OK
