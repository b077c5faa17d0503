"""The common batch message classified at C speed (pure).

``batch.classify_pending`` takes a batch message (``logrouter.batchwire``) line
by line: decode, complete, dedup, selector, one ``Delivery`` per rejected line.
Almost every batch a sink sees is a handler's: compact JSON records of one
routing key, each with its own id, nothing to fill in, none seen before. For
those, ``whole_batch`` does the same work per message instead of per record:
one split, one decoding pass, type checks over whole columns, the selector
asked once per distinct (facility, severity), dedup as set operations; each
line stays the record's archive line as it came, plus the message's validated
sender (``wire.SENDER``) as its last key (``archive.sender_tail``: one C map over
the body). It takes the message only when the per-line path would write every
record alike; on anything else (a bad or blank line, a line to fill in, a
duplicate, a filtered record, a record that names no id, a record that names a
``sender`` of its own) it returns False and the per-line path decides, so the
outcome is the same either way (tests/unit/test_fastbatch.py checks it).

An archive needs only each record's line and its ``ts`` (the partition): for
it (``keep_lines``) the lines are validated with msgspec against the few keys
the sink reads, without building the records; the record it gets is
``{"ts": ...}``. A file writer whose line format and path read plain keys alone
(``FileWriter.row_keys``) gets rows (``row_type``): just those keys, typed so that
the line is ``format`` of them (``FileWriter.write_rows``); a record that does not
fit one (a key missing, a traceback, a value of another type) makes the message
decoded whole. Every other writer renders records, so they are decoded whole
(msgspec too: one call per message). Rows and records decoded hold the sender.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import repeat
from operator import add, attrgetter, is_not, itemgetter
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from logrouter.batchwire import MAX_LINES, count_problem, declared_count, has_separator
from logrouter.severity import RANK, normalize_facility
from logrouter.sinks.archive import known_hour, sender_tail
from logrouter.sinks.dedup import DedupKey
from logrouter.wire import SENDER

if TYPE_CHECKING:
    from logrouter.sinks.batch import Delivery, Outcome


_Text = Annotated[str, msgspec.Meta(min_length=1)]


class _Essentials(msgspec.Struct, gc=False, kw_only=True):
    """What an archive reads of a record, typed as ``whole_batch`` takes it (an ``id``
    that is non-empty text ...); msgspec still checks the whole line is JSON. ``sender``
    only says whether the line names one of its own (it must not: per line then)."""

    id: _Text
    facility: str
    severity: str
    ts: str
    msg: str
    sender: Any = msgspec.UNSET


class _EssentialsWithApp(_Essentials, gc=False, kw_only=True):
    """``_Essentials`` of a message with an app_id: each record names its ``app`` (else
    the app_id fills it in: the per-line path)."""

    app: str


_LINES = msgspec.json.Decoder(_Essentials)
_LINES_WITH_APP = msgspec.json.Decoder(_EssentialsWithApp)
_OF_ESSENTIALS = attrgetter("id", "facility", "severity", "ts")
_OF_ESSENTIALS_WITH_APP = attrgetter("id", "facility", "severity", "ts", "app")
#: placeholder keys a row holds as an integer (every other one as non-empty text)
_INTEGER_KEYS = frozenset({"pid", "v"})


def row_type(keys: tuple[str, ...]) -> type[msgspec.Struct]:
    """A record's ``keys`` as a row (``FileWriter.row_keys``): non-empty text, or an
    integer for ``_INTEGER_KEYS``, as the line format renders them as they are; no
    traceback (``exc``/``stack`` absent or null). A record whose values do not fit is
    decoded whole instead. The essentials (``whole_batch``'s checks) are always in it."""
    fields: dict[str, Any] = {
        "id": str,
        "facility": str,
        "severity": str,
        "ts": str,
        "msg": str,
    }
    for key in keys:
        fields[key] = int if key in _INTEGER_KEYS else _Text
    spec: list[Any] = [(key, kind) for key, kind in fields.items()]
    if "app" not in fields:
        spec.append(("app", Any, None))
    spec += [("exc", None, None), ("stack", None, None)]
    # whatever a line says under it (per line then); the sink sets it (``whole_batch``)
    spec = [item for item in spec if item[0] != SENDER] + [(SENDER, Any, msgspec.UNSET)]
    return msgspec.defstruct("Row", spec, gc=False)


@lru_cache(maxsize=16)
def _rows_decoder(keys: tuple[str, ...]) -> msgspec.json.Decoder[Any]:
    """The decoder of ``row_type(keys)`` rows, one per set of keys (a writer's)."""
    return msgspec.json.Decoder(row_type(keys))


#: whole records (untyped: dicts), ~1.4x orjson.loads per line, and JSON's own
#: integers (orjson makes a float of an integer beyond 64 bits)
_RECORDS = msgspec.json.Decoder()
_OF_STRUCT = attrgetter("id", "facility", "severity", "ts", "app")
_OF_DICT = itemgetter("id", "facility", "severity", "ts", "msg")
SUMMARY_MARK = b'"rate_limit_summary"'
_FIRST_BYTE = itemgetter(0)
_BYTE_BEFORE_END = itemgetter(-2)
#: a line "{...}\n" without its closing "}\n"
_BEFORE_END = itemgetter(slice(None, -2))


def _decode(
    body: bytes,
    count: int,
    keep_lines: bool,
    row_keys: tuple[str, ...] | None = None,
    *,
    with_app: bool = False,
) -> tuple[list[Any], list[Any]] | None:
    """``(records, columns)`` of a body of ``count`` one-line records, or None. With
    ``row_keys`` the records are rows (``row_type``) when every record fits one. With
    ``keep_lines``, the columns are typed (``_Essentials``) and the ``app`` column is
    read only ``with_app`` (else empty)."""
    if keep_lines:
        return _decode_essentials(body, count, with_app)
    if row_keys is not None:
        try:
            if not body.isascii():
                body.decode("utf-8")  # msgspec does not check the keys it skips
            rows = _rows_decoder(row_keys).decode_lines(body)
        except Exception:  # UnicodeDecodeError, DecodeError, ValidationError, RecursionError
            rows = None  # decoded whole: the per-line path decides
        if rows is not None and len(rows) == count:
            if _claim_sender(rows):
                return None
            return rows, list(zip(*map(_OF_STRUCT, rows), strict=True))
    try:
        records = _RECORDS.decode_lines(body)
        if len(records) != count or set(map(type, records)) != {dict}:
            return None
        if any(map(dict.__contains__, records, repeat(SENDER))):
            return None  # a record naming a sender of its own: per line
        columns = list(zip(*map(_OF_DICT, records), strict=True))
    except Exception:  # DecodeError, ValidationError, RecursionError, KeyError (no id ...)
        return None
    if set(map(type, columns[4])) != {str}:  # msg
        return None
    columns[4] = tuple(map(dict.get, records, repeat("app")))
    return records, columns


def _decode_essentials(
    body: bytes, count: int, with_app: bool
) -> tuple[list[Any], list[Any]] | None:
    """``_decode`` for an archive (``keep_lines``)."""
    if not body.isascii():
        try:
            body.decode("utf-8")  # msgspec does not check the keys it skips
        except UnicodeDecodeError:
            return None
    try:
        parsed = (_LINES_WITH_APP if with_app else _LINES).decode_lines(body)
    except Exception:  # DecodeError, ValidationError, RecursionError (deep nesting)
        return None
    if len(parsed) != count:
        return None  # two values on one line (no value spans lines: each starts "{")
    if _claim_sender(parsed):
        return None
    if with_app:
        columns = list(zip(*map(_OF_ESSENTIALS_WITH_APP, parsed), strict=True))
    else:
        columns = [*zip(*map(_OF_ESSENTIALS, parsed), strict=True), ()]
    return _stamps(columns[3]), columns


_SENDER_OF = attrgetter(SENDER)


def _claim_sender(parsed: list[Any]) -> bool:
    """Whether a decoded line (``_Essentials``, a row) names a ``sender`` of its own:
    the message is then taken per line, where each such record is encoded again."""
    return any(map(is_not, map(_SENDER_OF, parsed), repeat(msgspec.UNSET)))


def _stamps(stamps: tuple[str, ...]) -> list[dict[str, Any]]:
    """The records an archive gets of a message: ``{"ts": ...}`` each, or one such
    record shared by all when every ``ts`` is of one UTC hour the archive already
    knows (``archive.known_hour``): the partition is that hour's either way, and the
    archive finds it once (``ArchiveWriter._one_partition``)."""
    first, last = min(stamps), max(stamps)  # every ts between shares their prefix
    if (
        first[:13] == last[:13]
        and known_hour(first[:13])
        and all(map(str.endswith, stamps, repeat("Z")))
    ):
        return [{"ts": first}] * len(stamps)
    return [{"ts": ts} for ts in stamps]


@dataclass
class Classifying:
    """What classifying one sink batch reads, and keeps from one message to the next."""

    matches: Callable[[str, str], bool]
    #: only read: keys enter the window when the batch is committed
    dedup: Container[DedupKey]
    keep_lines: bool
    max_record_bytes: int
    #: keys of the records of this batch taken so far
    in_batch: set[DedupKey] = field(default_factory=set)
    #: the selector's verdict per (facility, severity)
    verdicts: dict[tuple[str, str], bool] = field(default_factory=dict)
    #: the keys of a row (``row_type``) the writer renders from (``FileWriter.row_keys``)
    row_keys: tuple[str, ...] | None = None

    def selects(self, facility: str, severity: str) -> bool:
        """Whether the selector takes records of this facility and severity (asked once)."""
        pair = (facility, severity)
        wanted = self.verdicts.get(pair)
        if wanted is None:
            wanted = self.verdicts[pair] = self.matches(facility, severity)
        return wanted


def whole_batch(
    delivery: Delivery, outcome: Outcome, batch: Classifying, user: str, sender: str | None
) -> bool:
    """Add every record of batch message ``delivery`` to ``outcome`` at once and return
    True, when the per-line path would write them all unchanged but for the validated
    ``sender`` (``wire.message_sender``) it gives each; else False (see the module
    docstring)."""
    max_record_bytes = batch.max_record_bytes
    keep_lines = batch.keep_lines
    body = delivery.body
    summary = SUMMARY_MARK in body  # one scan of the body, read three times below
    # Every line is "{...}\n": no blank line, no CR, no text around a record. The body
    # starts "{" and ends "}\n" and holds no CR (bytes split lines on CR too), so each
    # line ends "\n" (``_framed`` checks the bytes around it).
    if (
        body[:1] != b"{"
        or body[-2:] != b"}\n"
        or b"\r" in body
        or has_separator(body)
        or (keep_lines and summary)  # its records are counted: decode them
    ):
        return False
    lines = body.splitlines(keepends=True)  # without CR: one line per "\n"
    count = len(lines)
    if count > MAX_LINES or not _framed(lines):
        return False  # over MAX_LINES: the per-line path rejects the message whole
    # a body no longer than the cap cannot hold a line over it
    if (
        max_record_bytes
        and len(body) > max_record_bytes + 1
        and max(map(len, lines)) > max_record_bytes + 1
    ):
        return False
    app_id = getattr(delivery.properties, "app_id", None)
    app_id = app_id if isinstance(app_id, str) and app_id else ""
    # rows for a writer that renders them, unless a summary's records are to be counted
    # or a row would have no sender to render
    row_keys = batch.row_keys
    if summary or (sender is None and row_keys is not None and SENDER in row_keys):
        row_keys = None
    decoded = _decode(body, count, keep_lines, row_keys, with_app=bool(app_id))
    if decoded is None:
        return False
    records, (ids, facilities, severities, stamps, apps) = decoded
    # typed by msgspec when keep_lines (_Essentials)
    if not keep_lines and not _typed(ids, facilities, severities, stamps, apps, app_id):
        return False
    for facility, severity in _pairs(facilities, severities):
        if severity not in RANK or not facility or normalize_facility(facility) != facility:
            return False  # the per-line path completes (changes) such a record
        if not batch.selects(facility, severity):
            return False  # filtered records: per line
    keys = list(zip(repeat(user, count), repeat(app_id, count), ids, strict=False))
    # each key hashed once: set-to-set operations reuse the hashes the set stores
    fresh = set(keys)
    in_batch = batch.in_batch
    if len(fresh) != count or not fresh.isdisjoint(in_batch) or _seen_any(batch.dedup, fresh):
        return False  # duplicates: per line
    in_batch.update(fresh)
    if sender is not None:  # each line "{...}\n" (checked above) ends with the key instead
        lines = list(map(add, map(_BEFORE_END, lines), repeat(sender_tail(sender))))
        if not keep_lines:
            _set_sender(records, sender, row_keys)
    outcome.records += records
    outcome.sources += repeat(delivery, count)
    outcome.keys += keys
    outcome.lines += lines
    if not keep_lines and type(records[0]) is not dict:
        outcome.rows += count
    elif summary:
        outcome.suppressed += suppressed_in(records)
    note_count(delivery, count, outcome)
    return True


def _set_sender(records: list[Any], sender: str, row_keys: tuple[str, ...] | None) -> None:
    """Give each decoded record (dicts, or rows) the message's validated sender."""
    if type(records[0]) is dict:
        for record in records:
            record[SENDER] = sender
    elif row_keys is not None and SENDER in row_keys:
        for row in records:
            row.sender = sender


def note_count(delivery: Delivery, found: int, outcome: Outcome) -> None:
    """Note a batch message holding another number of lines than its header declares."""
    declared = declared_count(getattr(delivery.properties, "headers", None))
    problem = count_problem(declared, found)
    if problem is not None:
        outcome.miscounted.append((delivery, problem))


def _typed(
    ids: Sequence[Any],
    facilities: Sequence[Any],
    severities: Sequence[Any],
    stamps: Sequence[Any],
    apps: Sequence[Any],
    app_id: str,
) -> bool:
    """Whether the columns hold what ``whole_batch`` takes: ids of non-empty text, text
    facilities, severities and stamps, and text apps when the message has an app_id
    (else the app_id fills them in)."""
    return (
        set(map(type, ids)) == {str}
        and "" not in ids
        and {*map(type, facilities), *map(type, severities), *map(type, stamps)} == {str}
        and (not app_id or set(map(type, apps)) == {str})
    )


def _pairs(facilities: Sequence[str], severities: Sequence[str]) -> set[tuple[str, str]]:
    """The distinct (facility, severity) pairs of the records, without a tuple per record
    when one of the two columns holds a single value (the common case)."""
    kinds, levels = set(facilities), set(severities)
    if len(kinds) == 1:
        return set(zip(repeat(kinds.pop()), levels))
    if len(levels) == 1:
        return set(zip(kinds, repeat(levels.pop())))
    return set(zip(facilities, severities, strict=True))


def _framed(lines: list[bytes]) -> bool:
    """Whether every line (each ends "\\n") is "{...}\\n": its first byte "{" and the one
    before its "\\n" "}". Two C passes over the lines, one byte each: cheaper than a
    search of the body for "}\\n{" (which reads every byte)."""
    count = len(lines)
    return (
        bytes(map(_FIRST_BYTE, lines)).count(b"{") == count
        # no IndexError: a line of one byte ("\n") has failed the first check
        and bytes(map(_BYTE_BEFORE_END, lines)).count(b"}") == count
    )


def _seen_any(dedup: Container[DedupKey], keys: set[DedupKey]) -> bool:
    isdisjoint = getattr(dedup, "isdisjoint", None)
    if isdisjoint is not None:
        return not isdisjoint(keys)
    return any(key in dedup for key in keys)


#: More than a handler can count in a summary (~2**53 records at 1 GHz is 100 days):
#: a larger count is forged, and would make the metrics a number of hundreds of digits.
_MAX_SUPPRESSED = 2**53


def suppressed_in(records: Iterable[dict[str, Any]]) -> int:
    """Records apps suppressed (``rate_limit``), as the summary records among these say."""
    total = 0
    for record in records:
        fields = record.get("fields")
        if fields and isinstance(fields, dict) and fields.get("rate_limit_summary") is True:
            count = fields.get("suppressed")
            if type(count) is int and 0 < count <= _MAX_SUPPRESSED:
                total += count
    return total


def whole_records(records: list[Any], lines: list[bytes | None]) -> list[dict[str, Any]]:
    """``records`` with each row (``row_type``) replaced by its line decoded whole: the
    record ``whole_batch`` gives without ``row_keys``."""
    return [
        record if type(record) is dict else _RECORDS.decode(lines[index] or b"")
        for index, record in enumerate(records)
    ]
