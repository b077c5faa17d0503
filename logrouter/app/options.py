"""The handler's options: plain strings or numbers in, checked settings out.

``HandlerOptions.from_options`` takes what ``RabbitHandler(...)`` is given (by
code, dictConfig, fileConfig or Django, so every option may be a string; the
handler's signature is the one list of options and their defaults) and
returns the settings the handler, its outbox and its publisher run with.
Raises ValueError / BadURL for a bad option, at construction, never later.
``default_spool_path`` is where the spool goes when the ``spool`` option is not given.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logrouter import severity as sev
from logrouter.app.encoder import parse_facilities
from logrouter.app.packing import parse_mode
from logrouter.app.ratelimit import RateLimitSettings
from logrouter.app.values import number, whole
from logrouter.connection import DEFAULT_EXCHANGE, DEFAULT_URL, BrokerSettings

DEFAULT_BUFFER = 25_000  # ~0.7 KB each: bounded at ~17 MB; absorbs a burst without spooling
DEFAULT_SPOOL_MAX = 256 << 20
DEFAULT_LINGER_MS = 5.0


def default_spool_path(app: str, exchange: str = DEFAULT_EXCHANGE) -> Path:
    """A per-user cache directory keyed by the app name and the exchange.

    Keyed by the exchange too, so that records spooled for one exchange are never
    replayed into another (say, the next test run's exchange). Each process of the
    app keeps its own spool file in it.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")

    def safe(text: str) -> str:
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:100] or "_"

    suffix = "" if exchange == DEFAULT_EXCHANGE else f"@{safe(exchange)}"
    return Path(base) / "logrouter" / f"spool-{safe(app)}{suffix}"


def _default_app() -> str:
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    name = os.path.basename(argv0)
    if name in ("", "-c", "__main__.py"):
        return "python"
    return name.removesuffix(".py") or "python"


@dataclass(frozen=True)
class HandlerOptions:
    """What a ``RabbitHandler`` runs with (its options, parsed and checked)."""

    settings: BrokerSettings
    facility: str
    facilities: dict[str, str]
    app: str
    buffer_size: int
    spool_path: Path | None
    spool_max_bytes: int
    flush_timeout: float
    max_message: int
    reconnect_max: float
    fast_frames: bool
    batch: str
    #: seconds (the option ``linger_ms`` is in milliseconds)
    linger: float
    batch_records: int
    batch_bytes: int
    rate_limit: RateLimitSettings | None
    host: str

    @classmethod
    def from_options(cls, given: Mapping[str, Any]) -> HandlerOptions:
        """Parse and check the handler's options, given by the names (and with the
        defaults) of ``RabbitHandler``'s parameters. Raises ValueError / BadURL."""
        url = given["url"] or os.environ.get("LOGROUTER_URL") or DEFAULT_URL
        spool, spool_max_bytes = given["spool"], given["spool_max_bytes"]
        linger_ms, batch_records, batch_bytes = (
            given["linger_ms"],
            given["batch_records"],
            given["batch_bytes"],
        )
        settings = BrokerSettings.from_url(
            url,
            exchange=given["exchange"],
            heartbeat=whole("heartbeat", given["heartbeat"]),
            client_name="logrouter-handler",
        )
        facility = sev.normalize_facility(given["facility"])
        parsed_facilities = parse_facilities(given["facilities"])
        app = given["app"] or _default_app()
        size = max(2, whole("buffer_size", given["buffer_size"]))
        spool_path = (
            None
            if spool == ""
            else Path(spool)
            if spool
            else default_spool_path(app, settings.exchange)
        )
        spool_max = (
            DEFAULT_SPOOL_MAX
            if spool_max_bytes in (None, "")
            else whole("spool_max_bytes", spool_max_bytes)
        )
        flush = number("flush_timeout", given["flush_timeout"])
        max_msg = whole("max_message", given["max_message"])
        reconnect = number("reconnect_max", given["reconnect_max"])
        fast = str(given["fast_frames"]).lower() not in ("false", "0", "no", "off")
        mode = parse_mode(given["batch"])
        linger = number("linger_ms", linger_ms) / 1000.0
        records = whole("batch_records", batch_records)
        size_bytes = whole("batch_bytes", batch_bytes)
        if linger < 0 or records < 1 or size_bytes < 1:
            raise ValueError(
                "linger_ms must be >= 0, batch_records and batch_bytes >= 1"
                f" (got {linger_ms!r}, {batch_records!r}, {batch_bytes!r})"
            )
        limit = RateLimitSettings.from_options(
            given["rate_limit"],
            given["burst"],
            given["rate_limit_key"],
            given["rate_limit_exempt"],
            given["rate_limit_interval"],
        )
        return cls(
            settings=settings,
            facility=facility,
            facilities=parsed_facilities,
            app=app,
            buffer_size=size,
            spool_path=spool_path,
            spool_max_bytes=spool_max,
            flush_timeout=flush,
            max_message=max_msg,
            reconnect_max=reconnect,
            fast_frames=fast,
            batch=mode,
            linger=linger,
            batch_records=records,
            batch_bytes=size_bytes,
            rate_limit=limit,
            host=socket.gethostname(),
        )
