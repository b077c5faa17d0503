"""Which archived records a query wants: selector, time range, fields, message regex.

Pure. ``RecordFilter.wants_line`` is the cheap test on a raw JSON line that
runs before any decoding; it answers False only when the record surely does
not match (it never decides on a line it cannot read exactly: escapes,
repeated keys, spaced JSON), so ``wants_line`` then ``wants`` is exactly
``wants`` alone.

``RecordFilter.count_raw`` counts the matches of a whole gzip member without
decoding it, when the raw bytes decide that exactly. It relies on what the
archive writer guarantees of every line it writes (``sinks/archive.py``): one
JSON object per line, no blank line, a top-level ``severity`` keyword and
``facility`` word (``wire.complete`` ran on every record). With that, a member
whose ``"severity"`` tokens are exactly as many as its lines holds one per line,
the top-level key (a token inside a string, behind an escaped quote, would be a
second one on its line; a ``\\u`` escape could spell another ``severity`` key
unseen, so a member with one is decoded), so counting ``"severity":"err"`` is
counting records of severity ``err``.
"""

from __future__ import annotations

import operator
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import compress
from typing import Any

from logrouter.selector import Selector
from logrouter.severity import SEVERITIES
from logrouter.timespec import ts_key

_REGEX_META = frozenset(".^$*+?{}[]\\|()")
_SEVERITY = b'"severity"'
_FACILITY = b'"facility"'
_SEVERITY_VALUE = b'"severity":"'
#: the order the handler's encoder and ``json.dumps`` of a completed record write
_PAIR = re.compile(rb'"facility":"([^"\\]*)","severity":"([^"\\]*)"')


class FieldError(ValueError):
    """A ``--field`` that is not ``KEY=VALUE``; ``token`` is the offending text."""

    def __init__(self, token: str, why: str) -> None:
        super().__init__(f"bad field {token!r}: {why}")
        self.token = token


@dataclass(frozen=True)
class FieldMatch:
    """``path`` (``app``, ``fields.order``) equals ``value`` (compared as text)."""

    path: tuple[str, ...]
    value: str

    def matches(self, record: dict[str, Any]) -> bool:
        current: Any = record
        for part in self.path:
            if not isinstance(current, dict) or part not in current:
                return False
            current = current[part]
        return field_text(current) == self.value


def field_text(value: Any) -> str:
    """How a record value compares with a ``--field`` value: JSON-ish text."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_field(token: str) -> FieldMatch:
    """``KEY=VALUE`` (KEY dotted, e.g. ``fields.order``); raises ``FieldError``."""
    key, eq, value = token.partition("=")
    if not eq:
        raise FieldError(token, "expected KEY=VALUE, e.g. app=billing or fields.order=42")
    path = tuple(key.strip().split("."))
    if not all(path):
        raise FieldError(token, f"empty key part in {key!r}")
    return FieldMatch(path, value)


def record_key(record: dict[str, Any], default: str = "") -> str:
    """The canonical, sortable ``ts`` of a record; ``default`` when it has no readable one.

    (The archive files a record without a readable ``ts`` by its arrival, so
    the reader passes the start of the file's partition.)
    """
    ts = record.get("ts")
    if not isinstance(ts, str) or not ts[:4].isdigit() or not ts.isascii():
        return default
    try:
        parsed = datetime.fromisoformat(ts)  # ~150 ns: a key is always a real time
        if len(ts) == 27 and ts[10] == "T" and ts[19] == "." and ts[26] == "Z":
            return ts  # canonical already
        return ts_key(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
    except (ValueError, OverflowError):  # no such time; one UTC cannot hold (year 1, +01:00)
        return default


def _literal(pattern: str) -> bytes | None:
    """The pattern's bytes when it is a plain literal the raw line shows as is."""
    if not pattern or any(c in _REGEX_META or c in '"/' or ord(c) < 0x20 for c in pattern):
        return None
    return pattern.encode("utf-8")


def _raw_value(line: bytes, key: bytes) -> bytes | None:
    """The string value of the only ``"key"`` in a compact line, or None when unsure."""
    first = line.find(key)
    if first < 0 or line.find(key, first + 1) >= 0:
        return None
    start = first + len(key)
    if line[start : start + 2] != b':"':
        return None
    end = line.find(b'"', start + 2)
    value = line[start + 2 : end]
    if end < 0 or b"\\" in value:
        return None
    return value


_first_byte = operator.itemgetter(0)
_E = ord("e")


def _severity_initials(data: bytes, lines: int) -> list[int] | None:
    """The first byte of each line's severity, in line order, when each of the ``lines``
    lines of ``data`` holds exactly one ``"severity"`` token, compact, and no ``\\u``
    escape could spell another (see the module docstring); else None."""
    if b"\\" in data and b"\\u" in data:
        return None
    if data.count(_SEVERITY) != lines:
        return None
    pieces = data.split(_SEVERITY_VALUE)
    if len(pieces) != lines + 1:
        return None  # a "severity" key that is not compact
    del pieces[0]  # each piece now starts with a line's severity value
    return list(map(_first_byte, pieces))


@dataclass(frozen=True)
class RecordFilter:
    """Everything a query selects on; each part is optional."""

    selector: Selector | None = None
    since: datetime | None = None
    until: datetime | None = None
    fields: Sequence[FieldMatch] = ()
    grep: re.Pattern[str] | None = None
    _since_key: str = field(init=False, default="")
    _until_key: str = field(init=False, default="")
    _severities: frozenset[bytes] | None = field(init=False, default=None)
    _literal: bytes | None = field(init=False, default=None)
    #: first bytes of the severities any facility wants (None: all of them)
    _line_initials: frozenset[int] | None = field(init=False, default=None)
    #: first bytes of the wanted severities that name no unwanted one (all but e)
    _initials: frozenset[int] = field(init=False, default=frozenset())
    #: "emerg" or "err" when only one of the two (both start with e) is wanted
    _one_of_e: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "_since_key", ts_key(self.since) if self.since else "")
        set_(self, "_until_key", ts_key(self.until) if self.until else "")
        if self.selector is not None:
            wanted = self.selector.default.union(*(s for _, s in self.selector.named))
            if len(wanted) < len(SEVERITIES):
                set_(self, "_severities", frozenset(sev.encode() for sev in wanted))
                set_(self, "_line_initials", frozenset(sev.encode()[0] for sev in wanted))
        wanted = frozenset(SEVERITIES) if self.selector is None else self.selector.default
        both_e = {"emerg", "err"} <= wanted
        set_(self, "_initials", frozenset(s.encode()[0] for s in wanted if both_e or s[0] != "e"))
        one_of_e = wanted & {"emerg", "err"}
        set_(self, "_one_of_e", next(iter(one_of_e)) if len(one_of_e) == 1 else None)
        if self.grep is not None:
            plain = not self.grep.flags & re.IGNORECASE
            set_(self, "_literal", _literal(self.grep.pattern) if plain else None)

    def candidates(self, data: bytes) -> list[bytes]:
        """The lines of ``data`` (JSON lines) that ``wants_line`` lets through.

        When every line of ``data`` surely holds exactly one compact top-level
        ``"severity":"..."`` (``_severity_initials``; and no blank line), the
        wanted lines are picked by the first byte of that value, all in C.
        """
        parts = data.split(b"\n")
        wanted = self._line_initials
        if wanted is not None and parts[-1] == b"" and parts.count(b"") == 1:
            initials = _severity_initials(data, len(parts) - 1)
            if initials is not None:
                found = list(compress(parts, map(wanted.__contains__, initials)))
                literal = self._literal
                if literal is None:
                    return found
                return [line for line in found if literal in line or b"\\" in line]
        if self._severities is None and self._literal is None:
            return list(filter(None, parts))  # wants_line takes every line
        wants_line = self.wants_line
        return [line for line in parts if line and wants_line(line)]

    def covers(self, first: str, end: str) -> bool:
        """True when every record time in ``[first, end)`` passes ``--since``/``--until``."""
        return (not self._since_key or first >= self._since_key) and (
            not self._until_key or end <= self._until_key
        )

    def count_raw(self, data: bytes) -> int | None:
        """How many records of ``data`` (a member, as the archive writer writes them) the
        selector wants, read off the raw bytes; None when they do not decide it exactly.

        The time range is not tested (see ``covers``); a filter with ``--field`` or
        ``--grep`` always answers None.
        """
        if self.fields or self.grep is not None or data[:1] != b"{" or data[-2:] != b"}\n":
            return None
        lines = data.count(b"\n")
        selector = self.selector
        if selector is not None and selector.named:
            if b"\\" in data and b"\\u" in data:
                return None  # an escape could spell a second key
            if data.count(_SEVERITY) != lines or data.count(_FACILITY) != lines:
                return None  # so that each line holds one of each, the top-level keys
            pairs = _PAIR.findall(data)
            if len(pairs) != lines:
                return None
            return sum(
                count
                for (facility, severity), count in Counter(pairs).items()
                if selector.matches(facility.decode("utf-8", "replace"), severity.decode())
            )
        initials = _severity_initials(data, lines)
        if initials is None:
            return None
        counts = Counter(initials)  # keywords: e is emerg or err
        count = sum(counts[initial] for initial in self._initials)
        if self._one_of_e is not None:
            err = data.count(_SEVERITY_VALUE + b'err"')
            count += err if self._one_of_e == "err" else counts[_E] - err
        return count

    def wants_line(self, line: bytes) -> bool:
        """False only when the raw JSON ``line`` surely fails the filter."""
        if b"\\u" in line:
            return True
        if self._severities is not None:
            value = _raw_value(line, b'"severity"')
            if value is not None and value not in self._severities:
                return False
        literal = self._literal
        return literal is None or literal in line or b"\\" in line

    def wants(self, record: dict[str, Any], key: str) -> bool:
        """Whether the decoded ``record`` (canonical time ``key``) matches."""
        if self._since_key and key < self._since_key:
            return False
        if self._until_key and key >= self._until_key:
            return False
        selector = self.selector
        if selector is not None:
            severity = record.get("severity")
            if not selector.named:
                if severity not in selector.default:
                    return False
            elif not selector.matches(str(record.get("facility")), str(severity)):
                return False
        if self.fields and not all(match.matches(record) for match in self.fields):
            return False
        return self.grep is None or self.grep.search(str(record.get("msg", ""))) is not None
