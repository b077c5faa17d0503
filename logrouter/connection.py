"""Connection settings: the one way handler, sinks and CLI reach the broker.

A settings object holds one or more AMQP URLs (failover in order), TLS options and
timeouts. Its ``repr`` and every message it produces hide the password.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pika
import pika.exceptions

from logrouter.errors import LogrouterError, UsageError

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
DEFAULT_EXCHANGE = "logs"
URL_ENV = "LOGROUTER_URL"

# Query keys of the RabbitMQ URI spec that we turn into an ssl.SSLContext ourselves.
_TLS_KEYS = ("cacertfile", "certfile", "keyfile", "verify", "server_name_indication")
#: Where a URL starts: any scheme, any case (``AMQP://``, ``amqps://``, ``https://``).
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_TOKEN = re.compile(r"\S*://\S*")


class BrokerUnavailable(LogrouterError, ConnectionError):
    """No URL of the list answered. The message is safe to print (no password)."""


class BadURL(UsageError, ValueError):
    """A broker URL that cannot be used; the message names it, password hidden."""


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``.

    Parsed, not pattern-matched on the password: each run of non-space characters
    holding ``scheme://`` (any scheme, any case) is cut at every scheme, and in
    each URL everything between ``user:`` and the LAST ``@`` is the password, so
    one containing ``@``, ``%40``, ``:`` or ``/`` is hidden whole. Several URLs
    separated by spaces or commas are each redacted. Never raises.
    """
    if "://" not in text:
        return text
    return _TOKEN.sub(_redact_token, text)


def _redact_token(match: re.Match[str]) -> str:
    token = match.group()
    starts = [m.start() for m in _SCHEME.finditer(token)]
    if not starts:
        return token
    pieces = [token[: starts[0]]]
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(token)
        pieces.append(_redact_url(token[start:end]))
    return "".join(pieces)


def _redact_url(url: str) -> str:
    """One URL (maybe with trailing punctuation) with its password hidden."""
    head, _, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    user, colon, _password = userinfo.partition(":")
    return f"{head}://{user}{':***' if colon else ''}@{host}"


def redact_all(value: Any) -> Any:
    """``value`` with every string (keys included) passed through ``redact``.

    Containers are copied recursively (lists for any sequence or set); other
    objects become their redacted ``repr``.
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): redact_all(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_all(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    try:
        return redact(repr(value))
    except Exception as exc:  # a broken __repr__ must not break a log line
        return f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"


def login(url: str) -> str:
    """The user name ``url`` logs in as (``guest`` when it names none, as pika does)."""
    return str(getattr(pika.URLParameters(url).credentials, "username", "") or "guest")


def connection_login(connection: Any) -> str | None:
    """The login of an open pika connection (what RabbitMQ accepts as ``user_id``)."""
    impl = getattr(connection, "_impl", connection)  # BlockingConnection wraps the real one
    credentials = getattr(getattr(impl, "params", None), "credentials", None)
    username = getattr(credentials, "username", None)
    return username if isinstance(username, str) else None


def split_urls(value: str) -> tuple[str, ...]:
    """Split a space- or comma-separated list of URLs."""
    return tuple(part for part in re.split(r"[\s,]+", value.strip()) if part)


def validate_url(url: str) -> None:
    """Raise ``BadURL`` when ``url`` is not a usable amqp:// or amqps:// URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise BadURL(f"broker URL {redact(url)!r}: scheme must be amqp:// or amqps://")
    if not parts.hostname:
        raise BadURL(f"broker URL {redact(url)!r}: no host")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        # "Port out of range" is safe; "could not be cast ... as 'x'" quotes what
        # follows the last ':', which is part of the password when it holds a raw '/'
        reason = (
            str(exc)
            if "out of range" in str(exc)
            else "bad port (a '/', '@' or ':' in the password must be written %2F, %40, %3A)"
        )
        raise BadURL(f"broker URL {redact(url)!r}: {reason}") from None
    for key, value in parse_qsl(parts.query):
        if key == "verify" and value not in ("verify_peer", "verify_none"):
            raise BadURL(f"broker URL {redact(url)!r}: verify must be verify_peer or verify_none")


@dataclass(frozen=True)
class BrokerSettings:
    """Where the broker is and how to talk to it."""

    urls: tuple[str, ...] = (DEFAULT_URL,)
    exchange: str = DEFAULT_EXCHANGE
    heartbeat: int = 10
    connect_timeout: float = 5.0
    blocked_timeout: float = 30.0
    client_name: str = "logrouter"
    #: Type of logrouter's own queues (unrouted, rejected, topology record) and the
    #: default for sink queues: "quorum" on a cluster, so none lives on one node only.
    queue_type: str = "classic"
    #: Sink daemons: the longest pause between attempts to reach the broker (their
    #: retries start at 0.5 s and double up to it; write retries follow the same schedule).
    reconnect_max: float = 30.0

    def __post_init__(self) -> None:
        if not self.urls:
            raise BadURL("no broker URL given")
        for url in self.urls:
            validate_url(url)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> BrokerSettings:
        """Settings from one URL or several separated by spaces or commas."""
        return cls(urls=split_urls(url), **options)

    @classmethod
    def from_env(cls, default_url: str = DEFAULT_URL, **options: Any) -> BrokerSettings:
        """Settings from ``$LOGROUTER_URL`` when set, else ``default_url``."""
        return cls.from_url(os.environ.get(URL_ENV) or default_url, **options)

    def with_name(self, client_name: str) -> BrokerSettings:
        return replace(self, client_name=client_name)

    def logins(self) -> tuple[str, ...]:
        """The user names the URLs log in as (distinct, in order)."""
        return tuple(dict.fromkeys(login(url) for url in self.urls))

    def describe(self) -> str:
        """The URL list with passwords hidden, for logs and CLI output."""
        return " ".join(redact(url) for url in self.urls)

    def __repr__(self) -> str:
        return f"BrokerSettings(urls={self.describe()!r}, exchange={self.exchange!r})"

    __str__ = describe

    def parameters(self) -> Iterator[pika.URLParameters]:
        """pika parameters for each URL, in failover order."""
        for url in self.urls:
            yield self._parameters_for(url)

    def _parameters_for(self, url: str) -> pika.URLParameters:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        tls = {key: query.pop(key) for key in _TLS_KEYS if key in query}
        plain_url = urlunsplit(parts._replace(scheme="amqp", query=urlencode(query)))
        params = pika.URLParameters(plain_url)
        if parts.scheme == "amqps":
            if parts.port is None:
                params.port = 5671
            params.ssl_options = pika.SSLOptions(
                _tls_context(tls), tls.get("server_name_indication", parts.hostname)
            )
        params.heartbeat = self.heartbeat
        params.socket_timeout = self.connect_timeout
        params.stack_timeout = self.connect_timeout * 2
        params.blocked_connection_timeout = self.blocked_timeout
        params.connection_attempts = 1
        params.client_properties = {"connection_name": self.client_name, "product": "logrouter"}
        return params

    def connect(self) -> pika.BlockingConnection:
        """A blocking connection to the first URL that answers (CLI, setup, sinks).

        Raises ``BrokerUnavailable`` with each URL's reason, passwords hidden.
        """
        reasons = []
        for url, params in zip(self.urls, self.parameters(), strict=True):
            try:
                return pika.BlockingConnection(params)
            except (pika.exceptions.AMQPError, OSError, ssl.SSLError) as exc:
                reasons.append(f"{redact(url)}: {describe_error(exc)}")
        raise BrokerUnavailable("no broker answered: " + "; ".join(reasons))


def _tls_context(options: dict[str, str]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=options.get("cacertfile"))
    if "certfile" in options:
        context.load_cert_chain(options["certfile"], options.get("keyfile"))
    if options.get("verify") == "verify_none":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def describe_error(exc: BaseException) -> str:
    """A one-line, password-free description of a connection error."""
    text = str(exc) or repr(exc)
    if isinstance(exc, pika.exceptions.AMQPConnectionError) and exc.args:
        inner = exc.args[0]
        if isinstance(inner, BaseException):
            text = describe_error(inner)
        elif isinstance(inner, list | tuple) and inner:
            text = describe_error(inner[-1]) if isinstance(inner[-1], BaseException) else str(inner)
    return redact(f"{type(exc).__name__}: {text}")
