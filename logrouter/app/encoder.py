"""Record -> wire bytes: the one place that builds a record's JSON body.

``record_body`` is the schema-v1 body (docs/wire-format.md) in its canonical key
order; the handler's records (``record_to_dict``), its fallbacks for huge or
unrenderable records, and ``logrouter send`` all go through it. ``Encoder`` adds
what the handler decides per record: facility (extra, logger map, default),
severity (extra, level), message id and routing key. ``freeze`` is what ``emit()``
keeps of a record until the I/O thread encodes it.

Size (just over 400 lines): what emit keeps, the dict path and the fast path that
must equal it byte for byte stay in one module, with one owner.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import orjson

from logrouter import severity as sev
from logrouter import wire
from logrouter.connection import redact


class Captured(NamedTuple):
    """What ``emit()`` froze of a record that is not plain: the record itself."""

    seq: int
    record: logging.LogRecord
    message: str
    exc: str | None


#: What ``emit()`` froze of a plain record (see ``freeze``): seq, message, created, then
#: the record's kind: name, levelno, levelname, threadName, process, pathname, lineno,
#: funcName. One tuple of atoms: the LogRecord, its dict and its args go at once.
Plain = tuple[int, str, float, str, int, str, str | None, int | None, str, int, str]
#: What waits in the outbox's buffer.
Frozen = Captured | Plain


class Encoded(NamedTuple):
    """An encoded record, ready to publish or spool.

    ``run`` and ``seq`` give its logging order; ``spool_id`` is its spool row
    (None while it lives only in memory). ``checked``: the encoder's fast path made
    it, so its body is a one-line compact JSON object and its id hex (the packer
    need not check that it can be a batch line).
    """

    run: int
    seq: int
    routing_key: str
    message_id: str
    timestamp: int
    body: bytes
    spool_id: int | None = None
    checked: bool = False


def record_body(
    *,
    ts: float,
    host: str,
    app: str,
    facility: str,
    severity: str,
    msg: str,
    pid: int | None = None,
    thread: str | None = None,
    logger: str | None = None,
    level: str | None = None,
    src: dict[str, Any] | None = None,
    fields: dict[str, Any] | None = None,
    exc: str | None = None,
    stack: str | None = None,
) -> dict[str, Any]:
    """The schema-v1 body; keys given as None are left out (the schema's optional keys)."""
    body: dict[str, Any] = {"v": wire.SCHEMA_VERSION, "ts": wire.format_ts(ts), "host": host}
    optional = (
        ("app", app),
        ("pid", pid),
        ("thread", thread),
        ("logger", logger),
        ("facility", facility),
        ("severity", severity),
        ("level", level),
        ("msg", msg),
        ("src", src),
        ("fields", fields),
        ("exc", exc),
        ("stack", stack),
    )
    body.update((key, value) for key, value in optional if value is not None)
    return body


def record_to_dict(
    record: logging.LogRecord,
    *,
    facility: str,
    severity: str,
    host: str,
    app: str,
    max_message: int = wire.DEFAULT_MAX_MESSAGE,
    message: str | None = None,
    exc: str | None = None,
) -> dict[str, Any]:
    """Body of the message for ``record`` (facility and severity already chosen).

    ``message`` and ``exc`` are the formatted message and traceback when the
    caller captured them already (the handler does, in the logging thread).
    """
    if exc is None and record.exc_info and record.exc_info[0] is not None:
        exc = wire.record_exception(record)
    elif exc is None and record.exc_text:
        exc = record.exc_text
    return record_body(
        ts=record.created,
        host=host,
        app=app,
        pid=record.process,
        thread=record.threadName,
        logger=record.name,
        facility=facility,
        severity=severity,
        level=record.levelname,
        msg=wire.truncate(wire.record_message(record) if message is None else message, max_message),
        src={"file": record.pathname, "line": record.lineno, "func": record.funcName},
        fields=wire.record_fields(record),
        exc=None if exc is None else wire.truncate(exc, max_message),
        stack=wire.truncate(record.stack_info, max_message) if record.stack_info else None,
    )


#: What the body of a record too big to send keeps (the message truncated as always):
#: who, when and what, without thread, source, fields, traceback and stack.
_KEPT_WHEN_HUGE = frozenset(
    {"v", "ts", "host", "app", "pid", "logger", "facility", "severity", "level", "msg"}
)

#: Constant parts cached per Encoder, at most (cleared when full).
_PARTS_MAX = 4096
#: A LogRecord's attribute count: more means ``extra`` keys (fields), so the slow path.
_BASE_ATTRS = len(logging.LogRecord("", 0, "", 0, "", None, None).__dict__)
_MISSING: Any = object()
#: The fast path's body: time (second's text, microseconds), the constant bytes from
#: "host" to "msg":, the message, the constant bytes after it.
_FAST_BODY = b'{"v":1,"ts":"%b%06dZ",%b%b%b'
_new_tuple = tuple.__new__


def freeze(seq: int, record: logging.LogRecord) -> Frozen:
    """What ``emit()`` keeps of a record, in the logging thread: the formatted message
    and traceback (they cannot wait), and for a plain record (no extra, traceback,
    stack or dict message: the common case) only the attributes its body is built
    from. A buffered record then costs the garbage collector nothing: a tuple of
    atoms is untracked at its first collection, a LogRecord is traced until it goes.
    """
    if (
        record.exc_info
        or record.exc_text
        or record.stack_info
        or isinstance(record.msg, dict)
        or len(record.__dict__) != _BASE_ATTRS
    ):
        message = wire.record_message(record)
        exc = wire.record_exception(record) if record.exc_info or record.exc_text else None
        return Captured(seq, record, message, exc)
    try:
        message = record.getMessage()
    except Exception:  # bad %-args: what record_message says of them
        message = wire.record_message(record)
    return (
        seq,
        message,
        record.created,
        record.name,
        record.levelno,
        record.levelname,
        record.threadName,
        record.process,
        record.pathname,
        record.lineno,
        record.funcName,
    )


def _thaw(plain: Plain) -> logging.LogRecord:
    """A LogRecord again from a plain capture (for the general path: a rare record)."""
    _, message, created, name, levelno, levelname, thread, pid, path, line, func = plain
    record = logging.LogRecord(name, levelno, path, line, message, None, None, func)
    record.created, record.levelname, record.threadName, record.process = (
        created,
        levelname,
        thread,
        pid,
    )
    return record


def parse_facilities(value: Mapping[str, str] | str | None) -> dict[str, str]:
    """Logger-name prefix -> facility from a dict or an ``"a=b,c=d"`` string.

    Raises ValueError for a part that is not ``prefix=facility``.
    """
    if not value:
        return {}
    if isinstance(value, str):
        pairs: dict[str, str] = {}
        for part in value.replace(";", ",").split(","):
            if not part.strip():
                continue
            prefix, eq, facility = part.partition("=")
            if not eq:
                raise ValueError(f"facilities: {part.strip()!r} is not prefix=facility")
            pairs[prefix.strip()] = facility.strip()
        value = pairs
    return {str(k): sev.normalize_facility(str(v)) for k, v in value.items()}


class Encoder:
    """A frozen record (``freeze``) -> ``Encoded`` (runs in the I/O thread, or in emit on overflow).

    Never raises: a record that cannot be rendered still goes out, as an ``err``
    record saying why.
    """

    def __init__(
        self,
        *,
        host: str,
        app: str,
        facility: str,
        facilities: Mapping[str, str],
        max_message: int,
        run: int,
        id_prefix: str,
    ) -> None:
        self.host = host
        self.app = app
        self.facility = facility
        self.facilities = dict(facilities)
        self.max_message = max_message
        self.run = run
        self.id_prefix = id_prefix
        self._facility_cache: dict[str, str] = {}
        #: (logger, level, thread, pid, call site) -> (routing key, the body's bytes from
        #: "host" to "msg":, the bytes after the message); None: not for the fast path
        self._parts: dict[tuple[Any, ...], tuple[str, bytes, bytes] | None] = {}
        #: the same kinds -> their batch line's form (``line_form``)
        self.line_forms: dict[tuple[Any, ...], tuple[str, bytes, int] | None] = {}

    def facility_for(self, name: str) -> str:
        """Facility of a logger name: longest matching prefix of the map, else the default."""
        cached = self._facility_cache.get(name)
        if cached is not None:
            return cached
        best = self.facility
        best_len = -1
        for prefix, facility in self.facilities.items():
            matches = name == prefix or name.startswith(prefix + ".") or prefix == ""
            if matches and len(prefix) > best_len:
                best, best_len = facility, len(prefix)
        if len(self._facility_cache) < 10_000:
            self._facility_cache[name] = best
        return best

    def key_words(self, record: logging.LogRecord) -> tuple[str, str]:
        """(facility, severity) of a record: its extras win over the map and the level."""
        extra_facility = record.__dict__.get("facility")
        facility = (
            sev.normalize_facility(str(extra_facility))
            if extra_facility
            else self.facility_for(record.name)
        )
        extra_severity = record.__dict__.get("severity")
        if isinstance(extra_severity, str):
            try:
                return facility, sev.parse_severity(extra_severity)
            except ValueError:
                pass
        return facility, sev.severity_for_level(record.levelno, record.levelname)

    def encode(self, captured: Frozen) -> Encoded:
        return self.encode_many((captured,))[0]

    def encode_many(self, captures: Iterable[Frozen]) -> list[Encoded]:
        """``[encode(c) for c in captures]`` in one tight loop (the I/O thread's hot path).

        A plain record (``freeze``) is built from cached bytes of its kind, byte for
        byte what ``wire.encode(record_to_dict(...))`` gives; a ``Captured`` record
        takes that general path. The I/O thread shares the GIL with the app, so this
        is the app's time too: no call and one new tuple per plain record.
        """
        out: list[Encoded] = []
        append = out.append
        cache = self._parts
        cached_get = cache.get
        dumps = orjson.dumps
        run, id_prefix, max_chars = self.run, self.id_prefix, self.max_message // 4
        checked = id_prefix.isascii() and id_prefix.isalnum()  # then every id is alnum
        id_format = "%s%x"  # f"{id_prefix}{seq:x}", a little cheaper
        second_cached, second_text = -1, b""
        last_kind: tuple[Any, ...] = ()  # and its parts: no dict lookup for a repeat
        last_parts: tuple[str, bytes, bytes] | None = None
        for captured in captures:
            if isinstance(captured, Captured):
                append(self._encode(*captured))
                continue
            try:
                kind = captured[3:]
                if kind != last_kind:  # a busy loop logs one kind after another
                    parts = cached_get(kind, _MISSING)
                    if parts is _MISSING:
                        parts = self._parts_for(*kind)
                        if len(cache) >= _PARTS_MAX:
                            cache.clear()
                        cache[kind] = parts
                    last_kind, last_parts = kind, parts
                else:
                    parts = last_parts
                seq, message, created = captured[0], captured[1], captured[2]
                second = int(created)
                exact = (created - second) * 1e6
                micros = int(exact)  # then round() as format_ts does, without its lookup:
                half = exact - micros  # exact, and micros is its floor (when second >= 0)
                if half > 0.5 or (half == 0.5 and micros & 1):
                    micros += 1
                if (
                    parts is not None
                    and len(message) <= max_chars
                    and second >= 0
                    and micros < 1_000_000
                ):
                    if second != second_cached:  # the text first: format_ts may raise
                        second_text = self.second_text(second)
                        second_cached = second
                    body = _FAST_BODY % (second_text, micros, parts[1], dumps(message), parts[2])
                    fields = (
                        run,
                        seq,
                        parts[0],
                        id_format % (id_prefix, seq),
                        second,
                        body,
                        None,
                        checked,
                    )
                    append(_new_tuple(Encoded, fields))
                    continue
            except Exception:  # lone surrogates, a bogus created: the general path
                pass
            append(self._encode(captured[0], _thaw(captured), captured[1], None))
        return out

    def record_id(self, seq: int) -> str:
        """The message id of the record numbered ``seq``."""
        return "%s%x" % (self.id_prefix, seq)  # noqa: UP031  # as encode_many writes it

    @staticmethod
    def second_text(second: int) -> bytes:
        """A body's time up to its fraction: ``2026-12-01T11:17:00.`` for ``second``."""
        return wire.format_ts(second)[:-7].encode()

    def line_form(self, kind: tuple[Any, ...]) -> tuple[str, bytes, int] | None:
        """(routing key, template, fixed size) of a batch line of a plain record of
        this ``kind`` (``freeze``'s fields from the logger name on), cached; None when
        its body does not take the fast path.

        ``template % (second_text, microseconds, JSON of the message, seq)`` is the
        record's batch line, byte for byte ``batchwire.encode_records`` of its body
        and id (separators not escaped yet); the line is ``fixed size`` bytes plus
        the message's JSON and the id's hex digits.
        """
        forms = self.line_forms
        if kind in forms:
            return forms[kind]
        parts = self._parts_for(*kind)
        prefix = self.id_prefix
        if parts is None or not (prefix.isascii() and prefix.isalnum()):
            form: tuple[str, bytes, int] | None = None
        else:
            key, middle, tail = parts
            template = b"".join(
                (
                    b'{"v":1,"ts":"%b%06dZ",',
                    middle.replace(b"%", b"%%"),
                    b"%b",
                    tail[:-1].replace(b"%", b"%%"),
                    b',"id":"',
                    prefix.encode(),
                    b'%x"}\n',
                )
            )
            fixed = len(template % (self.second_text(0), 0, b"", 0)) - 1  # the id's "0"
            form = (key, template, fixed)
        if len(forms) >= _PARTS_MAX:
            forms.clear()
        forms[kind] = form
        return form

    def _parts_for(
        self,
        name: str,
        levelno: int,
        levelname: str,
        thread: str | None,
        pid: int | None,
        path: str,
        line: int,
        func: str,
    ) -> tuple[str, bytes, bytes] | None:
        """The constant bytes around the time and the message for this kind of record."""
        if pid is None or thread is None:
            return None  # keys the dict path leaves out
        facility = self.facility_for(name)
        severity = sev.severity_for_level(levelno, levelname)
        try:
            middle = orjson.dumps(
                {
                    "host": self.host,
                    "app": self.app,
                    "pid": pid,
                    "thread": thread,
                    "logger": name,
                    "facility": facility,
                    "severity": severity,
                    "level": levelname,
                    "msg": None,
                }
            )[1 : -len(b"null}")]
            src = {"file": path, "line": line, "func": func}
            tail = b"," + orjson.dumps({"src": src, "fields": {}})[1:]
        except orjson.JSONEncodeError:  # lone surrogates in a name: the dict path
            return None
        return f"{facility}.{severity}", middle, tail

    def _encode(
        self, seq: int, record: logging.LogRecord, message: str, exc: str | None
    ) -> Encoded:
        """The general path: the record's dict, encoded; never raises."""
        try:
            timestamp = int(record.created)
            facility, severity = self.key_words(record)
            full = record_to_dict(
                record,
                facility=facility,
                severity=severity,
                host=self.host,
                app=self.app,
                max_message=self.max_message,
                message=message,
                exc=exc,
            )
            body = wire.encode(full)
            if len(body) > self.max_message * 2 + 65536:  # huge fields: keep what matters
                kept = {key: value for key, value in full.items() if key in _KEPT_WHEN_HUGE}
                kept["fields"] = {"_truncated": f"record was {len(body)} bytes"}
                body = wire.encode(kept)
        except Exception as err:  # never lose a record to a rendering bug
            timestamp = int(time.time())
            facility, severity = self.facility, "err"
            body = wire.encode(
                record_body(
                    ts=time.time(),
                    host=self.host,
                    app=self.app,
                    facility=facility,
                    severity=severity,
                    msg=redact(f"{message} (record not renderable: {type(err).__name__}: {err})"),
                )
            )
        return Encoded(
            self.run,
            seq,
            f"{facility}.{severity}",
            f"{self.id_prefix}{seq:x}",
            timestamp,
            body,
        )
