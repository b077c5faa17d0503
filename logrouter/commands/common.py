"""What several commands share: the broker target, signal handling, reply labels.

``resolve_target`` turns --config / $LOGROUTER_URL / --url / --exchange into
broker settings (and the config when one was read); ``stop_on_signals`` lets a
long-running command end cleanly on Ctrl-C or SIGTERM; ``close_quietly`` ends a
connection that may already be gone; ``connect_as`` connects or says why not;
``broker_failure`` says what went wrong with
the broker; ``display_order`` and ``instance_label`` order and name the instances
that answered a control request.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import pika.exceptions

from logrouter import exitcodes, total_decoding
from logrouter.connection import (
    BadURL,
    BrokerSettings,
    BrokerUnavailable,
    describe_error,
    split_urls,
)
from logrouter.errors import LogrouterError

if TYPE_CHECKING:
    from logrouter.config import RoutingConfig


class TargetError(LogrouterError):
    """The broker target cannot be determined; ``exit_code`` is the exit code to use."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code


def resolve_target(
    config_path: Path | None,
    url: str | None = None,
    exchange: str | None = None,
    *,
    require_config: bool = False,
) -> tuple[BrokerSettings, RoutingConfig | None]:
    """Broker settings (and the config, when one was read) for a CLI command.

    The config file gives URL and exchange (``$LOGROUTER_URL`` overriding its
    URL); without a config file, ``$LOGROUTER_URL`` or the default URL and
    exchange ``logs``. ``--url`` and ``--exchange`` override both. Raises
    ``TargetError`` (code 78 for a bad or missing required config, 2 for a bad URL),
    which commands let through to ``cli.main`` (message on stderr, that exit code).
    """
    config: RoutingConfig | None = None
    try:
        if config_path is not None and config_path.exists():
            from logrouter.config import ConfigError, load_config

            try:
                config = load_config(config_path)
            except ConfigError as exc:
                raise TargetError(str(exc), exitcodes.CONFIG) from None
            settings = config.broker
        elif require_config:
            raise TargetError(f"config file {config_path} not found", exitcodes.CONFIG)
        else:
            settings = BrokerSettings.from_env()
        if url:
            settings = replace(settings, urls=split_urls(url))
        if exchange:
            settings = replace(settings, exchange=exchange)
    except BadURL as exc:
        raise TargetError(str(exc), exitcodes.USAGE) from None
    return settings, config


@contextmanager
def stop_on_signals() -> Iterator[list[int]]:
    """While active, SIGINT/SIGTERM append to the yielded list instead of raising."""
    received: list[int] = []

    def handle(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def display_order(reply: Mapping[str, Any]) -> tuple[str, str, int, str]:
    """Sort key: sink, host, pid (numerically), instance."""
    pid = reply.get("pid")
    return (
        str(reply.get("sink")),
        str(reply.get("host")),
        pid if isinstance(pid, int) else -1,
        str(reply.get("instance")),
    )


def instance_label(reply: Mapping[str, Any]) -> str:
    """``host:pid`` plus the instance id when it says more than that."""
    label = f"{reply.get('host', '?')}:{reply.get('pid', '?')}"
    instance = str(reply.get("instance") or "")
    return label if not instance or instance in label else f"{label} ({instance})"


def close_quietly(connection: Any) -> None:
    """Close ``connection`` if it is open; a broker already gone is not an error here."""
    with suppress(Exception):
        if connection is not None and connection.is_open:
            connection.close()


def connect_as(settings: BrokerSettings, name: str, say: Callable[[str], None]) -> Any:
    """A connection to the broker as client ``name``; None once ``say`` has told the
    user that no URL answered (the command then exits with ``exitcodes.RUNTIME``).
    Properties of messages it reads decode totally (``total_decoding``)."""
    total_decoding.install()
    try:
        return settings.with_name(name).connect()
    except BrokerUnavailable as exc:
        say(f"cannot reach the broker: {exc}")
        return None


def broker_failure(exc: Exception, missing: str) -> str:
    """What to print when the broker fails a command: ``missing`` when it answered 404
    (a queue or exchange that does not exist), else the channel close or the lost connection."""
    if isinstance(exc, pika.exceptions.ChannelClosedByBroker):
        if exc.reply_code == 404:
            return missing
        return f"broker closed the channel: {describe_error(exc)}"
    return f"lost the broker: {describe_error(exc)}"
