"""The wire format: one log record per AMQP message (schema version 1).

``record_to_dict`` turns a ``logging.LogRecord`` into the JSON body; ``decode``
turns any message found on a queue (ours or foreign) back into a record dict.
Both are pure; docs/wire-format.md documents the schema.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from logrouter.severity import (
    DEFAULT_FACILITY,
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


class UndecodableMessage(ValueError):
    """A message that cannot be turned into a record; the text says why."""


def format_ts(epoch: float) -> str:
    """RFC 3339 UTC with microseconds and ``Z``."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
    fields = {k: v for k, v in record.__dict__.items() if k not in STANDARD_ATTRS}
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


def record_to_dict(
    record: logging.LogRecord,
    *,
    facility: str,
    severity: str,
    host: str,
    app: str,
    max_message: int = DEFAULT_MAX_MESSAGE,
    message: str | None = None,
    exc: str | None = None,
) -> dict[str, Any]:
    """Body of the message for ``record`` (facility and severity already chosen).

    ``message`` and ``exc`` are the formatted message and traceback when the
    caller captured them already (the handler does, in the logging thread).
    """
    body: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "ts": format_ts(record.created),
        "host": host,
        "app": app,
        "pid": record.process,
        "thread": record.threadName,
        "logger": record.name,
        "facility": facility,
        "severity": severity,
        "level": record.levelname,
        "msg": truncate(record_message(record) if message is None else message, max_message),
        "src": {"file": record.pathname, "line": record.lineno, "func": record.funcName},
        "fields": record_fields(record),
    }
    if exc is not None:
        body["exc"] = truncate(exc, max_message)
    elif record.exc_info and record.exc_info[0] is not None:
        body["exc"] = truncate(_format_exception(record), max_message)
    elif record.exc_text:
        body["exc"] = truncate(record.exc_text, max_message)
    if record.stack_info:
        body["stack"] = truncate(record.stack_info, max_message)
    return body


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
    """JSON bytes of a record dict (UTF-8; lone surrogates escaped, never an error)."""
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
) -> dict[str, Any]:
    """Any message into a record dict with at least ts, facility, severity, msg.

    Our JSON is taken as it is (missing keys filled from the routing key and
    properties); a foreign text body becomes ``msg``. Raises
    ``UndecodableMessage`` only when neither the body nor the key gives a
    facility and severity.
    """
    text = body.decode("utf-8", "replace")
    record: dict[str, Any] = {}
    if body[:1] == b"{":
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            record = parsed
    if not record:
        record = {"msg": text.rstrip("\r\n")}
    elif not isinstance(record.get("msg"), str):
        record["msg"] = str(record.get("msg", record.get("message", "")))

    from_key = split_routing_key(routing_key)
    facility = record.get("facility")
    severity = record.get("severity")
    try:
        severity = parse_severity(severity) if isinstance(severity, str) else None
    except ValueError:
        severity = None
    if severity is None and from_key:
        severity = from_key[1]
    if not isinstance(facility, str) or not facility:
        facility = from_key[0] if from_key else None
    if severity is None or facility is None:
        raise UndecodableMessage(
            f"routing key {routing_key!r} is not facility.severity and the body names neither"
        )
    record["facility"] = normalize_facility(facility or DEFAULT_FACILITY)
    record["severity"] = severity
    if not isinstance(record.get("ts"), str):
        record["ts"] = format_ts(timestamp if timestamp else (arrival or time.time()))
    if message_id and "id" not in record:
        record["id"] = message_id
    if app_id and not isinstance(record.get("app"), str):
        record["app"] = app_id
    return record
