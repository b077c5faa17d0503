"""``logrouter check [CONFIG] [--url URL] [--diff]``: validate a config, print its bindings.

Prints the config (path, digest), the broker (password hidden) and, per sink in
file order: type, match, queue and queue type, the compiled AMQP bindings one per
line, and where the sink writes. Exit 0. A config that cannot be used prints
every issue as ``file:line: key: message`` on stderr and exits 78 (EX_CONFIG);
so does a missing or unreadable file.

It also refuses (78) a sink whose output directory lies on a read-only file
system here: under the unit's ``ProtectSystem=strict`` everything outside
``LogsDirectory=``/``StateDirectory=`` is read-only, and such a sink would fail
every write with EROFS; the message names the ``ReadWritePaths=`` line to add.
The unit runs ``check`` first, so this is said once, and the sink is not
restarted in a loop (``RestartPreventExitStatus=78``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from logrouter import exitcodes, topology
from logrouter.config import (
    ArchiveOptions,
    ConfigError,
    ConsoleOptions,
    FileOptions,
    RoutingConfig,
    SinkConfig,
    load_config,
)
from logrouter.connection import BrokerUnavailable
from logrouter.render import escape
from logrouter.sinks.file import OVERFLOW_NAME
from logrouter.sinks.retention import format_age

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
    if isinstance(sink.options, FileOptions):
        yield f"  max_files {sink.options.max_files} (then the overflow file {OVERFLOW_NAME})"
    keep_age = getattr(sink.options, "keep_age", None)
    if keep_age:
        what = "partitions" if isinstance(sink.options, ArchiveOptions) else "rotated files"
        yield f"  keep      {format_age(keep_age)} ({what} older than that are deleted)"
    if sink.max_record_bytes:
        yield f"  max_record_bytes {sink.max_record_bytes} (larger ones are rejected)"
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


def output_dir(sink: SinkConfig) -> Path | None:
    """The directory a sink writes under (None for the console)."""
    options = sink.options
    if isinstance(options, FileOptions):
        return options.base_dir
    if isinstance(options, ArchiveOptions):
        return options.dir
    return None


def read_only(path: Path) -> bool:
    """Whether ``path`` (or, when missing, its nearest existing parent) is on a read-only mount."""
    for candidate in (path, *path.parents):
        try:
            return bool(os.statvfs(candidate).f_flag & os.ST_RDONLY)
        except FileNotFoundError:
            continue
        except OSError:
            return False  # cannot tell (e.g. EACCES): the sink will say what happens
    return False


def sandbox_issues(
    config: RoutingConfig,
    env: Mapping[str, str] = os.environ,
    is_read_only: Callable[[Path], bool] = read_only,
) -> list[str]:
    """One line per sink whose output directory cannot be written here, with the fix."""
    writable = [
        entry
        for key in ("LOGS_DIRECTORY", "STATE_DIRECTORY")
        for entry in env.get(key, "").split(":")
        if entry
    ]
    issues = []
    for sink in config.sinks.values():
        directory = output_dir(sink)
        if directory is None or not is_read_only(directory):
            continue
        if writable:
            issues.append(
                f"sink {sink.name}: {directory} is read-only here (EROFS): the unit's "
                f"ProtectSystem=strict leaves only {' and '.join(writable)} writable. "
                f"Write under one of those, or add `ReadWritePaths={directory}` with "
                f"`systemctl edit logrouter-sink@{sink.name}.service`"
            )
        else:
            issues.append(
                f"sink {sink.name}: {directory} is on a read-only file system (EROFS); "
                "under systemd's ProtectSystem=strict add "
                f"`ReadWritePaths={directory}` to the unit (`systemctl edit`)"
            )
    return issues


def diff(config: RoutingConfig, args: argparse.Namespace) -> int:
    """``--diff``: what ``setup`` or a reload would change on the live broker."""
    try:
        connection = config.broker.connect()
    except BrokerUnavailable as exc:
        print(f"logrouter check --diff: {exc}", file=sys.stderr)
        return exc.exit_code
    try:
        print()
        print(f"diff against the broker ({config.broker.describe()}):")
        for line in diff_lines(connection, config):
            print(line)
    finally:
        connection.close()
    return exitcodes.OK


def diff_lines(connection: Any, config: RoutingConfig) -> list[str]:
    """One block per sink: ``+ key`` to bind, ``- key`` to unbind, or unchanged."""
    channel = connection.channel()
    lines: list[str] = []
    for sink in config.sinks.values():
        wanted = frozenset(sink.selector.bindings)
        if not topology.queue_exists(connection, sink.queue):
            lines.append(f"{sink.queue}: missing, would be created")
            lines.extend(f"  + {key}" for key in sorted(wanted))
            continue
        live = topology.recorded_bindings(channel, config.broker, sink.queue)
        if live is None:
            lines.append(f"{sink.queue}: exists, bindings not recorded by logrouter setup")
            lines.extend(f"  + {key}" for key in sorted(wanted))
            continue
        if live == wanted:
            lines.append(f"{sink.queue}: unchanged")
            continue
        lines.append(f"{sink.queue}:")
        lines.extend(f"  + {key}" for key in sorted(wanted - live))
        lines.extend(f"  - {key}" for key in sorted(live - wanted))
    return lines


def run(args: argparse.Namespace) -> int:
    path = Path(args.config)
    try:
        config = load_config(path, url=getattr(args, "url", None))
    except ConfigError as exc:
        for issue in exc.issues:
            print(escape(str(issue)), file=sys.stderr)
        count = len(exc.issues)
        problems = f"{count} problem{'s' if count != 1 else ''}"
        print(f"logrouter check: {path}: {problems}, config not usable", file=sys.stderr)
        return exc.exit_code
    for line in describe(config):
        print(escape(line))
    sandbox = sandbox_issues(config, os.environ, read_only)
    if sandbox:
        for line in sandbox:
            print(line, file=sys.stderr)
        print(f"logrouter check: {path}: sink output not writable here", file=sys.stderr)
        return exitcodes.CONFIG
    if getattr(args, "diff", False):
        return diff(config, args)
    return exitcodes.OK
