"""``logrouter reload [SINK] [--config PATH] [--timeout SECS]``.

Asks every running instance (of every sink, or of one) to re-read its config
now, over the control exchange, and prints each instance's answer: applied
(with the config version now in force) or refused with the reason (file, line
and key of each config issue). Exit 0 when every answer is "applied" (or
"unchanged"), 1 when one refused or failed, or none answered.

The config is read only to find the broker and the expected sinks; a config
that does not validate does not stop the request (the sinks will refuse it,
and their refusal is the useful message), so it is read leniently then.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika.exceptions

from logrouter import control, exitcodes, render
from logrouter.commands.common import TargetError, display_order, instance_label, resolve_target
from logrouter.commands.stats import trusted_logins
from logrouter.connection import (
    DEFAULT_EXCHANGE,
    BrokerSettings,
    BrokerUnavailable,
    describe_error,
    redact,
)

SUCCESS = ("applied", "unchanged")


@dataclass(frozen=True)
class Target:
    settings: BrokerSettings
    sinks: tuple[str, ...]  # expected sinks (empty when unknown)
    warning: str | None = None  # why the config could not be used as it is
    trusted: tuple[str, ...] = ()  # logins whose replies are believed (besides our own)


def lenient_target(path: Path, url: str | None) -> Target:
    """Broker URL, exchange and sink names from a config that does not validate."""
    data: dict[str, Any] = {}
    with suppress(OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    broker = data.get("broker") if isinstance(data.get("broker"), dict) else {}
    assert isinstance(broker, dict)
    config_url = broker.get("url") if isinstance(broker.get("url"), str) else None
    exchange = broker.get("exchange") if isinstance(broker.get("exchange"), str) else None
    sinks = data.get("sinks") if isinstance(data.get("sinks"), dict) else {}
    assert isinstance(sinks, dict)
    settings = (
        BrokerSettings.from_url(url, exchange=exchange or DEFAULT_EXCHANGE)
        if url
        else BrokerSettings.from_env(
            default_url=config_url or BrokerSettings().urls[0],
            exchange=exchange or DEFAULT_EXCHANGE,
        )
    )
    return Target(settings, tuple(name for name in sinks if isinstance(name, str)))


def find_target(config_path: Path, url: str | None) -> Target:
    """Settings and sink names from the config; leniently when it does not validate."""
    try:
        settings, config = resolve_target(config_path, url, None)
    except TargetError as exc:
        if exc.exit_code != exitcodes.CONFIG:
            raise
        target = lenient_target(config_path, url)
        return Target(target.settings, target.sinks, f"the config does not validate:\n{exc}")
    if config is None:
        return Target(settings, ())
    return Target(settings, tuple(config.sinks), trusted=trusted_logins(config))


def describe_reply(reply: Mapping[str, Any]) -> tuple[bool, list[str]]:
    """Whether the instance applied the reload, and the lines that say so."""
    who = f"{reply.get('sink', '?')} {instance_label(reply)}"
    if not reply.get("ok", False):
        return False, [f"{who}: failed: {reply.get('error', 'no reason given')}"]
    outcome = str(reply.get("outcome", "?"))
    version = reply.get("config_version")
    suffix = f" (config {str(version)[:8]})" if isinstance(version, str) and version else ""
    if outcome in SUCCESS:
        return True, [f"{who}: {outcome}{suffix}"]
    lines = [f"{who}: {outcome}" + (f": {reply['reason']}" if reply.get("reason") else "")]
    issues = reply.get("issues")
    if isinstance(issues, list):
        lines.extend(f"    {issue}" for issue in issues)
    if outcome == "refused" and suffix:
        lines.append(f"    still running{suffix}")
    return False, lines


def _err(message: str) -> None:
    print(f"logrouter reload: {render.escape(redact(message))}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        target = find_target(args.config, args.url)
    except TargetError as exc:
        _err(str(exc))
        return exc.exit_code
    if target.warning:
        _err(f"warning: {target.warning}")
    if args.sink is not None and target.sinks and args.sink not in target.sinks:
        _err(f"warning: sink {args.sink!r} is not in {args.config}")
    try:
        result = control.request_with_settings(
            target.settings,
            "reload",
            sink=args.sink,
            expected=target.sinks,
            timeout=args.timeout,
            trusted=target.trusted,
        )
    except BrokerUnavailable as exc:
        _err(f"cannot reach the broker: {exc}")
        return exitcodes.RUNTIME
    except pika.exceptions.AMQPError as exc:
        _err(f"lost the broker: {describe_error(exc)}")
        return exitcodes.RUNTIME
    all_applied = bool(result.replies)
    for reply in sorted(result.replies, key=display_order):
        applied, lines = describe_reply(reply)
        all_applied = all_applied and applied
        print(render.escape_multiline(redact("\n".join(lines)), indent=""), flush=True)
    for name in result.missing:
        print(f"{name}: no answer within {args.timeout:g}s", flush=True)
    if result.ignored:
        _err(f"ignored {result.ignored} reply(ies) not from a trusted login")
    if not result.replies:
        _err("no running sink answered")
    return exitcodes.OK if all_applied else exitcodes.RUNTIME
