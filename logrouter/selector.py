"""The selector language (syslog/rsyslog selectors) compiled to AMQP bindings (pure).

A selector is one or more parts separated by ``;``. Each part is
``FACILITIES.SEVERITY``:

* ``FACILITIES`` is ``*`` (every facility) or a comma-separated list of
  facility words (``[a-z0-9_-]+``).
* ``SEVERITY`` is a keyword or alias with an optional prefix:
  ``err`` (err and more severe), ``=err`` (exactly err), ``!err`` (less severe
  than err: removes err and more severe), ``!=err`` (removes exactly err),
  ``*`` (every severity) or ``none`` (removes every severity).

Parts are applied left to right (rsyslog rules): a positive part adds to what
the earlier parts selected for its facilities, a negative part (``!``, ``!=``,
``none``) removes from it. A selector whose *first* part is negative starts
from every severity of that part's facilities, so ``*.!err`` means "less
severe than err" and ``*.!=debug`` "all but debug". ``#`` alone (like ``*.*``)
selects everything.

The compiled bindings are the smallest set of AMQP topic patterns that covers
every key the selector accepts. Where AMQP cannot express the selector exactly
(a facility excluded from ``*``), the bindings are a superset and
``Selector.exact`` is false: sinks re-check every record with ``matches``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from logrouter.errors import UsageError
from logrouter.severity import ALIASES, RANK, SEVERITIES

ALL: frozenset[str] = frozenset(SEVERITIES)
_FACILITY_WORD = re.compile(r"[a-z0-9_-]+\Z")
_ALLOWED_SEVERITIES = " ".join(SEVERITIES)
_ALLOWED_ALIASES = " ".join(sorted(ALIASES))


class SelectorError(UsageError, ValueError):
    """A selector that cannot be compiled; ``word`` is the offending word (or None)."""

    def __init__(self, message: str, word: str | None = None) -> None:
        super().__init__(message)
        self.word = word


@dataclass(frozen=True)
class _Part:
    facilities: frozenset[str] | None  # None = every facility ("*")
    add: bool  # positive part (adds) or negative part (removes)
    severities: frozenset[str]


@dataclass(frozen=True)
class Selector:
    """A compiled selector: its AMQP bindings and the exact matcher."""

    text: str
    bindings: tuple[str, ...]
    #: True when the bindings select exactly what the selector accepts.
    exact: bool = True
    #: severities accepted for every facility not named in the selector
    default: frozenset[str] = field(default=frozenset(), repr=False)
    #: severities accepted per facility named in the selector
    named: tuple[tuple[str, frozenset[str]], ...] = field(default=(), repr=False)

    def severities_for(self, facility: str) -> frozenset[str]:
        """The severities this selector accepts for ``facility``."""
        for name, severities in self.named:
            if name == facility:
                return severities
        return self.default

    def matches(self, facility: str, severity: str) -> bool:
        """True when a record of ``facility`` and ``severity`` (canonical words) is selected."""
        return severity in self.severities_for(facility)


def _parse_facilities(text: str, part: str) -> frozenset[str] | None:
    if text == "*":
        return None
    words = text.split(",")
    result: set[str] = set()
    for raw in words:
        word = raw.strip()
        if word == "*":
            raise SelectorError(
                f"in {part!r}: '*' cannot be part of a facility list (use '*' alone)", word
            )
        if not word:
            raise SelectorError(f"in {part!r}: empty facility name", None)
        if not _FACILITY_WORD.match(word):
            hint = ""
            if _FACILITY_WORD.match(word.lower()):
                hint = f" (did you mean {word.lower()!r}?)"
            raise SelectorError(
                f"bad facility {word!r} in {part!r}: facilities are words of [a-z0-9_-]{hint}",
                word,
            )
        result.add(word)
    return frozenset(result)


def _severity_word(word: str, part: str) -> str:
    lowered = word.lower()
    if lowered in RANK:
        return lowered
    if lowered in ALIASES:
        return ALIASES[lowered]
    raise SelectorError(
        f"unknown severity {word!r} in {part!r} (allowed: {_ALLOWED_SEVERITIES}, "
        f"aliases {_ALLOWED_ALIASES}, '*' or 'none', with an optional prefix = ! !=)",
        word,
    )


def _at_least(severity: str) -> frozenset[str]:
    """``severity`` and every more severe one."""
    return frozenset(SEVERITIES[: RANK[severity] + 1])


def _parse_severity(text: str, part: str) -> tuple[bool, frozenset[str]]:
    """(adds?, severities) of the severity half of a part."""
    word = text.strip()
    negate = word.startswith("!")
    if negate:
        word = word[1:]
    exact = word.startswith("=")
    if exact:
        word = word[1:]
    lowered = word.lower()
    if lowered in ("*", "none"):
        if negate or exact:
            raise SelectorError(
                f"in {part!r}: {word!r} takes no prefix "
                "('*' is every severity, 'none' no severity)",
                text.strip(),
            )
        return (lowered == "*", ALL)
    if not word:
        raise SelectorError(f"in {part!r}: severity missing after the prefix", text.strip() or None)
    severity = _severity_word(word, part)
    chosen = frozenset({severity}) if exact else _at_least(severity)
    return (not negate, chosen)


def _parse_part(part: str) -> _Part:
    facilities_text, dot, severity_text = part.rpartition(".")
    if not dot or not facilities_text.strip():
        raise SelectorError(
            f"bad selector part {part!r}: expected FACILITY.SEVERITY (e.g. '*.err', 'mail.*')",
            part,
        )
    facilities = _parse_facilities(facilities_text.strip(), part)
    add, severities = _parse_severity(severity_text, part)
    return _Part(facilities, add, severities)


def _parse_parts(text: str) -> list[_Part]:
    """The parts of a selector, validated; ``#`` is everything."""
    stripped = text.strip()
    if not stripped:
        raise SelectorError("empty selector (e.g. '*.err', '*.*' or '#')")
    if stripped == "#":
        return [_Part(None, True, ALL)]
    parts = []
    for raw in stripped.split(";"):
        part = raw.strip()
        if not part:
            raise SelectorError(f"empty part in selector {text!r} (stray ';')")
        parts.append(_parse_part(part))
    first = parts[0]
    if not first.add:
        # A leading negative part starts from every severity of its facilities.
        parts.insert(0, _Part(first.facilities, True, ALL))
    return parts


def _evaluate(parts: list[_Part]) -> tuple[frozenset[str], dict[str, frozenset[str]]]:
    """Apply the parts: severities for unnamed facilities, and per named facility."""
    default: frozenset[str] = frozenset()
    named: dict[str, frozenset[str]] = {}
    for part in parts:
        if part.facilities is None:
            targets = list(named)
        else:
            for facility in part.facilities:
                named.setdefault(facility, default)
            targets = list(part.facilities)
        for facility in targets:
            current = named[facility]
            named[facility] = current | part.severities if part.add else current - part.severities
        if part.facilities is None:
            default = default | part.severities if part.add else default - part.severities
    return default, named


def _bindings(
    default: frozenset[str], named: dict[str, frozenset[str]]
) -> tuple[tuple[str, ...], bool]:
    """Minimal binding keys and whether they are exact."""
    exact = all(default <= severities for severities in named.values())
    if default == ALL:
        return ("#",), exact
    keys = {f"*.{severity}" for severity in default}
    for facility, severities in named.items():
        missing = severities - default
        if not missing:
            continue
        if severities == ALL:
            keys.add(f"{facility}.*")
        else:
            keys.update(f"{facility}.{severity}" for severity in missing)
    return tuple(sorted(keys)), exact


def compile_selector(text: str) -> Selector:
    """Compile ``text``; raises ``SelectorError`` naming the bad word.

    A selector that selects nothing at all (e.g. ``mail.none``) is an error too.
    """
    default, named = _evaluate(_parse_parts(text))
    bindings, exact = _bindings(default, named)
    if not bindings:
        raise SelectorError(f"selector {text!r} selects nothing")
    # Named facilities that behave like the default need no entry of their own.
    kept = tuple(sorted((f, s) for f, s in named.items() if s != default))
    return Selector(text=text, bindings=bindings, exact=exact, default=default, named=kept)
