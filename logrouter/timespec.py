"""Times as ``journalctl --since/--until`` takes them, all in UTC (the archive's clock).

Accepted: RFC 3339 (``2026-11-30T12:00:00Z``, ``...+02:00``), ``2026-11-30
12:00[:SS[.ffffff]]``, ``2026-11-30`` (midnight), ``now``, ``today``,
``yesterday``, ``tomorrow`` (midnights), and offsets from now: ``-2h``, ``-30m``,
``-7d``, ``+1h``, ``-90s``, ``-1w`` (several units may follow each other:
``-1h30m``). A time without an offset is UTC. Pure: ``now`` is passed in.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_RELATIVE = re.compile(r"([+-])((?:\d+(?:\.\d+)?(?:us|ms|s|m|h|d|w))+)\Z")
_UNIT = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d|w)")
_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_WORDS = {"today": 0, "yesterday": -1, "tomorrow": 1}
HELP = "RFC 3339, 'YYYY-MM-DD [HH:MM[:SS]]', now, today, yesterday, tomorrow, or -2h/-30m/-7d"


class TimeSpecError(ValueError):
    """A time the parser does not understand; ``token`` is the offending text."""

    def __init__(self, token: str) -> None:
        super().__init__(f"bad time {token!r} (expected {HELP})")
        self.token = token


def parse_time(text: str, now: datetime) -> datetime:
    """``text`` as an aware UTC datetime; raises ``TimeSpecError`` naming ``text``."""
    token = text.strip()
    lowered = token.lower()
    if lowered == "now":
        return now.astimezone(UTC)
    if lowered in _WORDS:
        midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight + timedelta(days=_WORDS[lowered])
    relative = _RELATIVE.match(lowered)
    if relative:
        seconds = sum(float(n) * _SECONDS[u] for n, u in _UNIT.findall(relative.group(2)))
        sign = -1 if relative.group(1) == "-" else 1
        return now.astimezone(UTC) + timedelta(seconds=sign * seconds)
    candidate = token[:-1] + "+00:00" if token[-1:] in ("Z", "z") else token
    if not candidate[:4].isdigit():
        raise TimeSpecError(text)
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        raise TimeSpecError(text) from None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def ts_key(when: datetime) -> str:
    """The archive's canonical ``ts`` text of a time (sorts like the time)."""
    when = when.astimezone(UTC)
    return f"{when.year:04d}-{when:%m-%dT%H:%M:%S.%f}Z"  # %Y: no zeros before year 999
