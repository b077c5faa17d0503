"""Severities, facilities and the two-word routing key (pure, no I/O)."""

from __future__ import annotations

import logging
import re

#: RFC 5424 keywords, most to least severe. Index = rank (0 is most severe).
SEVERITIES: tuple[str, ...] = (
    "emerg",
    "alert",
    "crit",
    "err",
    "warning",
    "notice",
    "info",
    "debug",
)
RANK: dict[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}
ALIASES: dict[str, str] = {
    "error": "err",
    "critical": "crit",
    "warn": "warning",
    "fatal": "crit",
    "panic": "emerg",
    "emergency": "emerg",
}
DEFAULT_FACILITY = "user"

_STANDARD_LEVELS: tuple[tuple[int, str], ...] = (
    (logging.CRITICAL, "crit"),
    (logging.ERROR, "err"),
    (logging.WARNING, "warning"),
    (logging.INFO, "info"),
    (logging.DEBUG, "debug"),
)
_FACILITY_BAD = re.compile(r"[^a-z0-9_-]")


def parse_severity(word: str) -> str:
    """Return the canonical keyword for ``word`` (keyword or alias, any case).

    Raises ``ValueError`` naming the allowed words.
    """
    lowered = word.strip().lower()
    if lowered in RANK:
        return lowered
    if lowered in ALIASES:
        return ALIASES[lowered]
    allowed = " ".join(SEVERITIES)
    raise ValueError(f"unknown severity {word!r}; allowed: {allowed} (or an alias)")


def severity_for_level(levelno: int, levelname: str = "") -> str:
    """Map a Python logging level to a severity keyword.

    A level whose name is a keyword or alias maps to it; otherwise the word of the
    nearest standard level at or below it (anything below DEBUG is ``debug``).
    """
    lowered = levelname.lower()
    if lowered in RANK:
        return lowered
    if lowered in ALIASES:
        return ALIASES[lowered]
    for threshold, word in _STANDARD_LEVELS:
        if levelno >= threshold:
            return word
    return "debug"


def normalize_facility(name: str) -> str:
    """Lower-case ``name``; every character outside ``[a-z0-9_-]`` becomes ``_``."""
    cleaned = _FACILITY_BAD.sub("_", name.lower())
    return cleaned or DEFAULT_FACILITY


def routing_key(facility: str, severity: str) -> str:
    """The AMQP routing key: always exactly two words."""
    return f"{normalize_facility(facility)}.{severity}"


def split_routing_key(key: str) -> tuple[str, str] | None:
    """Split ``facility.severity``; ``None`` when the key is not of that shape.

    The severity may be an alias (foreign publishers); the facility is normalized.
    """
    facility, dot, word = key.rpartition(".")
    if not dot or not facility:
        return None
    try:
        severity = parse_severity(word)
    except ValueError:
        return None
    return normalize_facility(facility), severity
