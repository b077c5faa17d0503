"""The wire format: one log record per AMQP message (schema version 1).

Size (over 400 lines): both directions of the one schema (record parts for the
encoder, total decoding, foreign-publisher headers) stay together so the schema
has one owner; each function is small and pure.

The record's parts (``record_message``, ``record_fields``, ``record_exception``,
``format_ts``, ``encode``) serve the app side's encoder (``logrouter.app.encoder``
builds the body); ``decode`` turns any message found on a queue (ours or foreign)
back into a record dict. All pure; docs/wire-format.md documents the schema.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson

from logrouter.errors import LogrouterError
from logrouter.severity import (
    ALIASES,
    DEFAULT_FACILITY,
    RANK,
    SEVERITIES,
    normalize_facility,
    parse_severity,
    split_routing_key,
)

SCHEMA_VERSION = 1
CONTENT_TYPE = "application/json"
TRUNCATION_MARK = "…[truncated]"
DEFAULT_MAX_MESSAGE = 1 << 20

#: Attributes every LogRecord has; anything else on a record came from ``extra``.
STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "facility",
    "severity",
    "taskName",
}


class UndecodableMessage(LogrouterError, ValueError):
    """A message that cannot be turned into a record; the text says why."""


_ts_prefix: tuple[int, str] = (-1, "")


def format_ts(epoch: float) -> str:
    """RFC 3339 UTC with microseconds and ``Z`` (the second's text is cached)."""
    global _ts_prefix
    second = int(epoch)
    micros = round((epoch - second) * 1e6)
    if second < 0 or micros >= 1_000_000:
        return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    cached = _ts_prefix
    if cached[0] != second:
        cached = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S."))
        _ts_prefix = cached
    return f"{cached[1]}{micros:06d}Z"


def json_safe(value: Any) -> Any:
    """``value`` made JSON-safe: containers recursively, anything else as its repr."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return (
            value if value == value and value not in (float("inf"), float("-inf")) else repr(value)
        )
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    try:
        return repr(value)
    except Exception as exc:  # a broken __repr__ must not break logging
        return f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"


def truncate(text: str, max_bytes: int) -> str:
    """Cut ``text`` to at most ``max_bytes`` UTF-8 bytes, marking the cut."""
    if len(text) * 4 <= max_bytes:
        return text
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= max_bytes:
        return text
    keep = max(0, max_bytes - len(TRUNCATION_MARK.encode()))
    return encoded[:keep].decode("utf-8", "ignore") + TRUNCATION_MARK


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's ``extra`` keys (and a structlog event dict's), JSON-safe."""
    attrs = record.__dict__
    extra = attrs.keys() - STANDARD_ATTRS  # a set operation in C: most records have none
    fields = {k: attrs[k] for k in extra} if extra else {}
    if isinstance(record.msg, dict):  # structlog's wrap_for_formatter / dict messages
        fields.update((k, v) for k, v in record.msg.items() if k != "event")
    return json_safe(fields) if fields else {}


def record_message(record: logging.LogRecord) -> str:
    """The formatted message; a structlog event dict gives its ``event``."""
    if isinstance(record.msg, dict) and "event" in record.msg:
        return str(record.msg["event"])
    try:
        return record.getMessage()
    except Exception as exc:  # bad %-args: keep what we can, never raise
        return (
            f"{record.msg!r} (formatting failed: {type(exc).__name__}: {exc}; args={record.args!r})"
        )


_EXC_FORMATTER = logging.Formatter()


def _format_exception(record: logging.LogRecord) -> str:
    assert record.exc_info is not None
    return _EXC_FORMATTER.formatException(record.exc_info)


def record_exception(record: logging.LogRecord) -> str | None:
    """The record's formatted traceback, if it has one."""
    if record.exc_info and record.exc_info[0] is not None:
        try:
            return _format_exception(record)
        except Exception as err:  # a broken exception must not break logging
            return f"<traceback unavailable: {type(err).__name__}>"
    return record.exc_text or None


def encode(body: dict[str, Any]) -> bytes:
    """JSON bytes of a record dict (UTF-8; lone surrogates escaped, never an error).

    orjson does it ~14x faster than the json module (0.6 vs 8.3 µs for a typical
    record, measured); what orjson refuses (lone surrogates, ints beyond 64 bits)
    takes the json module's path.
    """
    try:
        return orjson.dumps(body, default=repr)
    except orjson.JSONEncodeError:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=repr).encode(
            "utf-8", "backslashreplace"
        )


def decode(
    body: bytes,
    routing_key: str,
    *,
    timestamp: float | None = None,
    message_id: str | None = None,
    app_id: str | None = None,
    arrival: float | None = None,
    headers: Mapping[Any, Any] | None = None,
) -> dict[str, Any]:
    """Any message into a record dict with at least ts, facility, severity, msg.

    Our JSON is taken as it is; what it lacks comes from the AMQP ``headers``
    syslog daemons send (``fill_from_headers``), then from the routing key and
    properties. A foreign text body becomes ``msg``. Total: raises
    ``UndecodableMessage`` (and nothing else) when neither the body, the headers
    nor the key gives a facility and severity, or the body is a JSON object nested
    deeper than ``MAX_DEPTH``.
    """
    try:
        record = parse_object(body)
        if record is None:
            record = {"msg": body.decode("utf-8", "replace").rstrip("\r\n")}
        if headers:
            fill_from_headers(record, headers, arrival)
        complete(record, routing_key, timestamp, message_id, app_id, arrival)
    except UndecodableMessage:
        raise
    except Exception as exc:  # RecursionError, MemoryError-free oddities: a reader goes on
        raise UndecodableMessage(f"cannot decode the body: {type(exc).__name__}") from None
    return record


_scan_once: Any = getattr(json.JSONDecoder(), "scan_once")  # noqa: B009  (no stub)

#: orjson's nesting limit; the standard library's (the recursion limit) is lower.
MAX_DEPTH = 1024
TOO_DEEP = f"JSON body nested deeper than the decoder allows (at most {MAX_DEPTH} levels)"


def parse_json(body: bytes) -> Any:
    """The JSON value of ``body``: total, for any bytes (pure).

    Raises ``UndecodableMessage`` (only that) saying why when the body is not
    UTF-8 JSON or is nested too deeply: a body of 100,000 ``[`` is refused, never a
    ``RecursionError``.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc) or "recursion" in str(exc).lower():
            raise UndecodableMessage(TOO_DEEP) from None
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UndecodableMessage(f"not UTF-8 (byte {exc.start})") from None
    parsed = parse_object_slow(body, whole=True)
    if parsed is _INVALID:
        raise UndecodableMessage("not JSON")
    return parsed


def parse_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is not a non-empty one (pure).

    Exactly ``json.loads(body.decode("utf-8", "replace"))`` for bodies that start
    with ``{``; orjson takes the common case (valid UTF-8, nothing it refuses),
    the standard library everything else (NaN, lone surrogates, huge integers).
    Raises ``UndecodableMessage`` for a body nested deeper than ``MAX_DEPTH``.
    """
    if body[:1] != b"{":
        body = unpadded(body)
        if body[:1] != b"{":
            return None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = parse_object_slow(body)
    return parsed if isinstance(parsed, dict) and parsed else None


#: What a foreign publisher may put before its JSON object: a UTF-8 byte order mark
#: (.NET's StreamWriter, PowerShell) and whitespace.
_BOM = b"\xef\xbb\xbf"


def unpadded(body: bytes) -> bytes:
    """``body`` without a leading byte order mark and whitespace (pure; ``body`` itself
    when it has neither: the common case costs one comparison)."""
    if body[:1] not in (b"\xef", b" ", b"\t", b"\r", b"\n"):
        return body
    if body.startswith(_BOM):
        body = body[3:]
    return body.lstrip(b" \t\r\n")


_INVALID: Any = object()


def parse_object_slow(body: bytes, *, whole: bool = False) -> Any:
    """``json.loads`` of the body decoded with replacement characters (None if invalid).

    With ``whole``, an invalid body gives the ``_INVALID`` marker instead of None
    (so a JSON ``null`` can be told apart). Raises ``UndecodableMessage`` when the
    body is nested too deeply for the decoder (never ``RecursionError``).
    """
    invalid = _INVALID if whole else None
    text = body.decode("utf-8", "replace")
    start = len(text) - len(text.lstrip(" \t\n\r")) if whole else 0
    try:
        parsed, end = _scan_once(text, start)
    except RecursionError:
        raise UndecodableMessage(TOO_DEEP) from None
    except (ValueError, StopIteration):
        return invalid
    if end != len(text) and text[end:].strip(" \t\n\r"):
        return invalid  # json.loads: "Extra data"
    return parsed


_CACHE_MAX = 4096
_V = TypeVar("_V")


class _Memo(dict[str, _V]):
    """``memo[key]`` is ``compute(key)``, computed once; emptied when it holds ``_CACHE_MAX``.

    A dict hit costs no Python call: this is on every record's decode path.
    """

    def __init__(self, compute: Callable[[str], _V]) -> None:
        super().__init__()
        self.compute = compute

    def __missing__(self, key: str) -> _V:
        value = self.compute(key)
        if len(self) >= _CACHE_MAX:
            self.clear()
        self[key] = value
        return value


#: routing key -> split_routing_key(key); facility -> normalize_facility(facility)
_split_key = _Memo(split_routing_key).__getitem__
_facility = _Memo(normalize_facility).__getitem__


#: ``complete`` results: nothing changed, only ``id`` added, anything else changed
UNCHANGED, ID_ADDED, CHANGED = 0, 1, 2


def complete(
    record: dict[str, Any],
    routing_key: str,
    timestamp: float | None = None,
    message_id: str | None = None,
    app_id: str | None = None,
    arrival: float | None = None,
) -> int:
    """Fill a parsed body into a record in place (``decode``'s second half).

    Returns UNCHANGED, ID_ADDED (only ``id`` was added, at the end) or CHANGED,
    so a writer can reuse the body bytes when the record is still the body.
    Raises ``UndecodableMessage`` as ``decode`` does.
    """
    changed = UNCHANGED
    msg = record.get("msg")
    if not isinstance(msg, str):
        record["msg"] = str(record.get("msg", record.get("message", "")))
        changed = CHANGED
    facility = record.get("facility")
    severity = record.get("severity")
    if isinstance(severity, str) and severity in RANK:
        pass  # already a keyword: the common case
    elif isinstance(severity, str):
        try:
            severity = parse_severity(severity)
        except ValueError:
            severity = None
    else:
        severity = None
    if severity is None or not isinstance(facility, str) or not facility:
        from_key = _split_key(routing_key)
        if severity is None and from_key:
            severity = from_key[1]
        if not isinstance(facility, str) or not facility:
            facility = from_key[0] if from_key else None
        if severity is None or facility is None:
            raise UndecodableMessage(
                f"routing key {routing_key!r} is not facility.severity and the body names neither"
            )
    facility = _facility(facility or DEFAULT_FACILITY)
    if facility != record.get("facility"):
        record["facility"] = facility
        changed = CHANGED
    if severity != record.get("severity"):
        record["severity"] = severity
        changed = CHANGED
    if not isinstance(record.get("ts"), str):
        received = arrival or time.time()
        try:
            record["ts"] = format_ts(timestamp if timestamp else received)
        except (OverflowError, OSError, ValueError):  # a timestamp property past year 9999
            record["ts"] = format_ts(received)
        changed = CHANGED
    if message_id and "id" not in record:
        record["id"] = message_id
        changed = changed or ID_ADDED
    if app_id and not isinstance(record.get("app"), str):
        record["app"] = app_id
        changed = CHANGED
    return changed


#: The record key a sink owns: the login that published the message, as the broker
#: validated it (its ``user_id`` property: RabbitMQ refuses one that is not the
#: publisher's login); absent when the message had none. Whatever a body says under
#: this key is never kept (``set_sender``), so no sender can claim another's login.
SENDER = "sender"


def message_sender(properties: Any) -> str | None:
    """The broker-validated sender of a message: its ``user_id`` (None without one)."""
    return login_or_none(getattr(properties, "user_id", None))


def login_or_none(user_id: Any) -> str | None:
    """A ``user_id`` property's value as a sender: a non-empty string, else None."""
    return user_id if isinstance(user_id, str) and user_id else None


_ABSENT: Any = object()


def set_sender(record: dict[str, Any], sender: str | None) -> bool:
    """Make ``record[SENDER]`` the validated ``sender`` (no such key when None), whatever
    the body said under it. True when the body had the key: its bytes are then not the
    record (the claim must not be written, so its line is encoded again)."""
    claimed = record.pop(SENDER, _ABSENT) is not _ABSENT
    if sender is not None:
        record[SENDER] = sender  # the last key, as the archive's spliced lines have it
    return claimed


# --- foreign publishers' AMQP headers ----------------------------------------

#: Header names (compared case-insensitively) that syslog daemons put their
#: metadata in, per record key, first match wins. syslog-ng's ``amqp()`` sends
#: HOST PROGRAM PID DATE FACILITY PRIORITY MESSAGE (docs/wire-format.md).
FOREIGN_HEADERS: dict[str, tuple[str, ...]] = {
    "host": ("host", "hostname", "fromhost"),
    "app": ("program", "programname", "app_name", "app"),
    "pid": ("pid", "procid"),
    "ts": ("isodate", "date", "timestamp", "timereported"),
    "facility": ("facility",),
    "severity": ("level", "priority", "severity"),
    "msg": ("message", "msg"),
}
#: Longest host / app / facility text taken from a header (longer is cut).
MAX_HEADER_WORD = 255
#: Facility names of syslog's numeric codes (RFC 5424 section 6.2.1, syslog-ng's words).
# fmt: off
SYSLOG_FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "security", "console", "solaris-cron",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# fmt: on

_LEGACY_DATE = re.compile(
    f"({'|'.join(MONTHS)}) +(\\d{{1,2}}) (\\d{{2}}):(\\d{{2}}):(\\d{{2}})(?:\\.(\\d{{1,9}}))?\\Z",
    re.ASCII,
)
_SEVERITY_WORDS = frozenset(RANK) | frozenset(ALIASES)
_MONTHS = {name: index for index, name in enumerate(MONTHS, 1)}


def header_text(value: Any) -> str | None:
    """A header value as stripped text (bytes decoded with replacement); None for no text."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def parse_syslog_date(value: Any, now: float | None = None) -> str | None:
    """A foreign time as our ``ts`` text (RFC 3339 UTC, microseconds, ``Z``), or None.

    Takes ISO 8601 / RFC 3339 (syslog-ng ``ts-format(iso)``, rsyslog
    ``date-rfc3339``; no offset means UTC), the legacy BSD form
    ``Nov 30 12:20:06`` (with optional fraction: syslog-ng's default ``DATE``;
    no year and no zone, so UTC and the year that puts it at most a day after
    ``now``), epoch seconds, and a ``datetime``. Anything else: None, never raises.
    """
    try:
        if isinstance(value, datetime):
            parsed = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            epoch = float(value)
            return format_ts(epoch) if 0 <= epoch < 253402300800 else None
        else:
            text = header_text(value)
            if text is None or len(text) > 64:
                return None
            legacy = _LEGACY_DATE.match(text)
            if legacy is not None:
                return _legacy_ts(legacy, time.time() if now is None else now)
            parsed = datetime.fromisoformat(text.replace("z", "Z"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return format_ts(parsed.timestamp())
    except (ValueError, OverflowError, OSError):
        return None


def _legacy_ts(match: re.Match[str], now: float) -> str | None:
    month, day, hour, minute, second, fraction = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    year = datetime.fromtimestamp(now, UTC).year
    for candidate in (year + 1, year, year - 1):  # Dec 31 read on Jan 1, Jan 1 read on Dec 31
        try:
            when = datetime(
                candidate, _MONTHS[month], int(day), int(hour), int(minute), int(second), micros,
                tzinfo=UTC,
            )  # fmt: skip
        except ValueError:  # Feb 29 of a year that has none, day 31 of a short month
            continue
        if when.timestamp() <= now + timedelta(days=1).total_seconds():
            return format_ts(when.timestamp())
    return None


def _header_severity(value: Any) -> tuple[str | None, str | None]:
    """(severity, facility) of a severity header: a word, an alias, 0-7, or a numeric PRI."""
    text = header_text(value)
    if text is None:
        return None, None
    if text.isascii() and text.isdigit() and len(text) <= 3:
        number = int(text)
        if number < 8:
            return SEVERITIES[number], None
        code = number // 8
        facility = SYSLOG_FACILITIES[code] if code < len(SYSLOG_FACILITIES) else None
        return SEVERITIES[number % 8], facility
    try:
        return parse_severity(text), None
    except ValueError:
        return None, None


def _missing(record: dict[str, Any], key: str) -> bool:
    value = record.get(key)
    if key == "severity":
        return not (isinstance(value, str) and (value in RANK or value.lower() in _SEVERITY_WORDS))
    if key == "pid":
        return value is None or value == ""
    return not (isinstance(value, str) and value)


def fill_from_headers(
    record: dict[str, Any], headers: Mapping[Any, Any], now: float | None = None
) -> bool:
    """Fill what ``record`` lacks from a foreign publisher's AMQP headers, in place (pure).

    The body always wins: only keys the record lacks (or holds empty) are
    taken: host, app (PROGRAM), pid, ts (DATE, parsed by ``parse_syslog_date``),
    facility, severity (LEVEL / PRIORITY: a word, 0-7 or a numeric PRI), and
    ``msg`` (MESSAGE) when the body gave no text. A header that cannot be read
    is ignored. Returns whether anything changed; never raises on header content.
    """
    wanted = [key for key in FOREIGN_HEADERS if _missing(record, key)]
    if not wanted:
        return False
    lowered: dict[str, Any] = {}
    for name, value in headers.items():
        if isinstance(name, str):
            lowered.setdefault(name.lower(), value)
    changed = False
    for key in wanted:
        for name in FOREIGN_HEADERS[key]:
            if name not in lowered:
                continue
            value = _header_value(key, lowered[name], now)
            if value is None:
                continue
            if key == "severity":
                severity, facility = value
                record["severity"] = severity
                if facility and _missing(record, "facility"):
                    record["facility"] = facility
            else:
                record[key] = value
            changed = True
            break
    return changed


def _header_value(key: str, raw: Any, now: float | None) -> Any:
    """The record value of header ``raw`` for ``key``, or None when it gives none."""
    if key == "ts":
        return parse_syslog_date(raw, now)
    if key == "severity":
        severity, facility = _header_severity(raw)
        return None if severity is None else (severity, facility)
    text = header_text(raw)
    if text is None:
        return None
    if key == "pid":
        return int(text) if text.isascii() and text.isdigit() and len(text) <= 10 else None
    if key == "msg":
        return text
    return text[:MAX_HEADER_WORD]
