"""The one way to render a record as text: file lines, the console, ``logrouter tail``.

Size (over 400 lines): it owns the rendering vocabulary on purpose (placeholders,
default formats, escaping, colours, output formats), so that no other module defines
any of it; each function is small and pure.

A record is a ``wire.decode()`` dict; any key may be missing (foreign
messages), and a missing or null value renders as ``-``. Rendering never
raises on record content.

A rendered record is one line, plus its traceback (``exc``, then ``stack``)
as following lines indented by four spaces. A message that contains line
breaks keeps them, but every continuation line is indented by four spaces too,
so no record can fake the start of another (records always start in column
0). Every other control or bidi character is escaped visibly, as journalctl
and less do: C0 controls but TAB (CR, ESC, NUL ...), DEL, C1 controls
(U+0080-U+009F), the bidi overrides, embeddings and isolates (U+202A-U+202E,
U+2066-U+2069) and marks (U+061C, U+200E, U+200F), and the Unicode line and
paragraph separators, as ``\\xNN`` (below U+0100) or ``\\uNNNN``. So a record can
neither fake lines, nor drive a terminal, nor reorder what is shown.
``escape`` is the one function every text output uses (files, console,
``tail``, ``stats``, ``reload``); ``json_line`` is its JSON twin (``tail --json``).
"""

from __future__ import annotations

import json
import os
import re
import string
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from itertools import repeat
from typing import Any

#: The default file line: time, host, app[pid], facility.severity, logger, message.
DEFAULT_LINE_FORMAT = "{ts} {host} {app}[{pid}] {facility}.{severity} {logger}: {msg}"
#: The console sink's default ``format`` (rendered as aligned columns, see ``render_console``).
DEFAULT_CONSOLE_FORMAT = "{ts} {severity:<7} {host} {facility} {app}[{pid}] {logger}: {msg}"

#: Placeholders of a file ``path`` template filled from each record (``sender``: the
#: broker-validated login that published it, ``wire.SENDER``; any other value is the
#: sender's claim) ...
PATH_PLACEHOLDERS = ("facility", "severity", "host", "app", "level", "logger", "sender")
#: ... the one fixed for a writer's life (its instance id, ``<host>-<slot>``) ...
PATH_INSTANCE = "instance"
#: ... and the strftime codes a path may use (UTC, from the record's ``ts``).
PATH_TIME_CODES = "YmdH"

#: Placeholders with a meaning of their own; any other name is looked up in
#: the record's ``fields`` (then at the top level of the record).
PLACEHOLDERS = frozenset(
    {
        "ts",
        "host",
        "app",
        "pid",
        "facility",
        "severity",
        "logger",
        "msg",
        "level",
        "thread",
        "file",
        "line",
        "func",
        "id",
        "fields",
        "sender",
    }
)

MISSING = "-"
INDENT = "    "

# C0 controls except TAB, DEL, C1, bidi controls and the Unicode line/paragraph
# separators: everything a reader (or str.splitlines, or a terminal) could take
# as a line break or an escape sequence, or that reorders the text shown.
# LF is handled separately (indent or escape).
_UNSAFE = "\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[\x00-\x08\x0a-\x1f{_UNSAFE}]")
_CONTROL_NO_LF = re.compile(f"[\x00-\x08\x0b-\x1f{_UNSAFE}]")
#: the ASCII characters _CONTROL does not match (TAB and the printable ones)
_SAFE_ASCII = bytes([0x09, *range(0x20, 0x7F)])
# What json.dumps(ensure_ascii=False) leaves raw but a terminal would act on.
_JSON_UNSAFE = re.compile(f"[{_UNSAFE}]")
#: What a value too deeply nested to render shows as (never an exception).
TOO_DEEP = "<nested too deeply to render>"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def has_control(text: str) -> bool:
    """``_CONTROL.search(text) is not None``; ASCII text (the common case) checked by
    deleting its safe bytes, ~10x the regex on a batch's lines."""
    if text.isascii():
        return bool(text.encode("ascii").translate(None, _SAFE_ASCII))
    return _CONTROL.search(text) is not None


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\n":
        return "\\n"
    if char == "\r":
        return "\\r"
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` on one line: line breaks and other control characters escaped."""
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(_escape_char, text)


def escape_multiline(text: str, indent: str = INDENT) -> str:
    """``text`` with control characters escaped and continuation lines indented."""
    if _CONTROL.search(text) is None:
        return text
    text = text.replace("\r\n", "\n")
    if _CONTROL_NO_LF.search(text) is not None:
        text = _CONTROL_NO_LF.sub(_escape_char, text)
    return text.replace("\n", "\n" + indent)


def json_line(value: Any) -> str:
    """``value`` as one line of JSON, safe on a terminal; total (never raises).

    ``json.dumps`` escapes C0 controls; every other character ``escape`` would
    escape becomes a ``\\uNNNN`` escape too, so the line is still the same JSON.
    """
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (RecursionError, ValueError):
        text = json.dumps(TOO_DEEP)
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _text(value: Any) -> str:
    if value is None or value == "":
        return MISSING
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json_value(value)
    return str(value)


def _fields_text(record: dict[str, Any]) -> str:
    fields = record.get("fields")
    if not isinstance(fields, dict) or not fields:
        return MISSING
    return " ".join(
        f"{k}={_text(v) if isinstance(v, str) else _text(json_value(v))}" for k, v in fields.items()
    )


def json_value(value: Any) -> str:
    """A non-string field value as compact JSON (repr for what JSON cannot hold).

    Total: a value nested too deeply for the encoder renders as ``TOO_DEEP``.
    """
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=repr)
    except (RecursionError, ValueError):
        return TOO_DEEP


Getter = Callable[[dict[str, Any]], str]


def _src_getter(key: str) -> Getter:
    def get(record: dict[str, Any]) -> str:
        src = record.get("src")
        return escape(_text(src.get(key))) if isinstance(src, dict) else MISSING

    return get


def _key_getter(key: str) -> Getter:
    def get(record: dict[str, Any]) -> str:
        return escape(_text(record.get(key)))

    return get


def _msg_getter(record: dict[str, Any]) -> str:
    return escape_multiline(_text(record.get("msg")))


def _fields_getter(record: dict[str, Any]) -> str:
    return escape(_fields_text(record))


def _field_getter(key: str) -> Getter:
    def get(record: dict[str, Any]) -> str:
        fields = record.get("fields")
        if isinstance(fields, dict) and key in fields:
            return escape(_text(fields[key]))
        return escape(_text(record.get(key)))

    return get


def _raw_getter(name: str) -> Getter:
    """The placeholder's text before escaping (``_getter`` minus ``escape``)."""
    if name in ("file", "line", "func"):

        def get_src(record: dict[str, Any]) -> str:
            src = record.get("src")
            return _text(src.get(name)) if isinstance(src, dict) else MISSING

        return get_src
    if name == "fields":
        return _fields_text
    if name in PLACEHOLDERS:

        def get_key(record: dict[str, Any]) -> str:
            value = record.get(name)
            return value if value.__class__ is str and value else _text(value)

        return get_key

    def get_field(record: dict[str, Any]) -> str:
        fields = record.get("fields")
        if isinstance(fields, dict) and name in fields:
            return _text(fields[name])
        return _text(record.get(name))

    return get_field


def _compile_raw(template: str, names: list[str], getters: list[Getter]) -> Getter:
    """One function rendering the unescaped line of a format (plain keys inlined).

    Generated source: names are identifiers (checked by the caller) and go in
    as string literals; the template is passed in, never pasted into the code.
    """
    lines = ["def render(record):", "    get = record.get"]
    args = []
    for index, name in enumerate(names):
        if _plain(name):
            lines.append(f"    v{index} = get({name!r})")
            lines.append(
                f"    if v{index}.__class__ is not str or not v{index}: "
                f"v{index} = str(v{index}) if v{index}.__class__ is int else _text(v{index})"
            )
        else:
            lines.append(f"    v{index} = g{index}(record)")
        args.append(f"v{index}")
    lines.append(f"    return _format({', '.join(args)})")
    namespace: dict[str, Any] = {"_text": _text, "_format": template.format}
    namespace.update((f"g{i}", get) for i, get in enumerate(getters))
    exec("\n".join(lines), namespace)
    render: Getter = namespace["render"]
    return render


def _getter(name: str) -> Getter:
    if name == "msg":
        return _msg_getter
    if name in ("file", "line", "func"):
        return _src_getter(name)
    if name == "fields":
        return _fields_getter
    if name in PLACEHOLDERS:
        return _key_getter(name)
    return _field_getter(name)


class LineFormat:
    """A precompiled line format (``str.format`` syntax on placeholder names).

    Format specs work on the rendered text (``{severity:<7}``); attribute and
    index access (``{msg.x}``, ``{src[0]}``) and conversions are refused.
    """

    __slots__ = ("_columns", "_getters", "_raw_getters", "_template", "row_keys", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        parts: list[str] = []
        getters: list[Getter] = []
        raw_getters: list[Getter] = []
        names: list[str] = []
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise ValueError(f"bad line format {text!r}: {exc}") from None
        for literal, name, spec, conversion in parsed:
            parts.append(literal.replace("{", "{{").replace("}", "}}"))
            if name is None:
                continue
            if not _IDENT.match(name):
                raise ValueError(f"bad placeholder {{{name}}} in line format {text!r}")
            if conversion:
                raise ValueError(f"conversion !{conversion} not allowed in line format {text!r}")
            if spec and ("{" in spec or "}" in spec):
                raise ValueError(f"nested placeholder in {{{name}:{spec}}} of line format {text!r}")
            try:
                format("-", spec or "")
            except ValueError as exc:
                raise ValueError(f"bad format spec in {{{name}:{spec}}}: {exc}") from None
            parts.append(f"{{{len(getters)}:{spec}}}" if spec else f"{{{len(getters)}}}")
            getters.append(_getter(name))
            raw_getters.append(_raw_getter(name))
            names.append(name)
        self._template = "".join(parts)
        self._getters = tuple(getters)
        self._raw_getters = _compile_raw(self._template, names, raw_getters)
        #: per placeholder: its name and, unless the value is the record's own key
        #: read as is, the getter that computes its text
        self._columns = tuple(
            (name, None if _plain(name) else raw)
            for name, raw in zip(names, raw_getters, strict=True)
        )
        #: for a format of two or more plain keys without format specs, the keys in
        #: order: ``template.format(*values)`` is the line of a record whose values are
        #: all non-empty text or integers and that has no traceback and nothing to
        #: escape (``FileWriter.write_rows``); else None
        self.row_keys: tuple[str, ...] | None = None
        if (
            len(names) > 1
            and all(_plain(name) for name in names)
            and not any(spec for _, name, spec, _ in parsed if name is not None)
        ):
            self.row_keys = tuple(names)

    @property
    def template(self) -> str:
        """The format with the placeholders numbered in order (``str.format`` text)."""
        return self._template

    def render(self, record: dict[str, Any]) -> str:
        """``record`` as text: the line, then its traceback lines indented."""
        # Fast path: when the line holds no character to escape, no value did
        # (escaping only ever replaces such characters), so escaping each value
        # first would give the same line.
        line = self._raw_getters(record)
        if _CONTROL.search(line) is not None:
            line = self._template.format(*[get(record) for get in self._getters])
        if "exc" in record or "stack" in record:
            return line + traceback_text(record)
        return line

    def render_many(self, records: Sequence[dict[str, Any]]) -> list[str]:
        """``[render(record) for record in records]``, checked for characters to escape
        and for tracebacks once for the whole batch instead of per record."""
        lines = self._by_columns(records)
        if lines is None:
            lines = list(map(self._raw_getters, records))
        has = dict.__contains__
        if (
            has_control("".join(lines))
            or any(map(has, records, repeat("exc")))
            or any(map(has, records, repeat("stack")))
        ):
            return [self.render(record) for record in records]
        return lines

    def _by_columns(self, records: Sequence[dict[str, Any]]) -> list[str] | None:
        """The unescaped lines of ``records`` a column at a time: each plain key read
        for every record by one ``map``, the lines by ``map`` of the template's
        ``format`` (no Python frame per record). None when a plain key's values are
        not all non-empty text or all integers (``_compile_raw`` then decides each)."""
        if not self._columns or not records:
            return None
        columns: list[list[Any]] = []
        get: Callable[[dict[str, Any], str], Any] = dict.get
        try:
            for name, raw in self._columns:
                if raw is not None:
                    columns.append(list(map(raw, records)))
                    continue
                column = list(map(get, records, repeat(name)))
                kinds = set(map(type, column))
                if kinds == {str}:
                    if "" in column:
                        return None
                elif kinds == {int}:
                    column = list(map(str, column))
                else:
                    return None
                columns.append(column)
        except TypeError:  # a record that is not a dict
            return None
        return list(map(self._template.format, *columns))


def _plain(name: str) -> bool:
    """Whether ``_compile_raw`` reads placeholder ``name`` as the record's own key."""
    return name in PLACEHOLDERS and name not in ("file", "line", "func", "fields")


def traceback_text(record: dict[str, Any]) -> str:
    """``exc`` and ``stack`` of ``record`` as lines indented by four spaces ("" if none)."""
    out = ""
    for key in ("exc", "stack"):
        value = record.get(key)
        if value:
            text = escape_multiline(str(value).rstrip("\r\n"))
            out += "\n" + INDENT + text
    return out


@lru_cache(maxsize=64)
def compile_format(fmt: str) -> LineFormat:
    """The compiled ``fmt`` (cached). Raises ``ValueError`` for a bad format."""
    return LineFormat(fmt)


def render_line(record: dict[str, Any], fmt: str = DEFAULT_LINE_FORMAT) -> str:
    """``record`` rendered with ``fmt``; no trailing newline.

    Placeholders: {ts} {host} {app} {pid} {facility} {severity} {logger} {msg}
    {level} {thread} {file} {line} {func} {id} {fields} {sender}, and any key of
    the record's ``fields`` (a sink's ``format`` takes only the named ones).
    Traceback lines follow, indented by four spaces.
    """
    return compile_format(fmt).render(record)


# --- console ---------------------------------------------------------------

RESET = "\x1b[0m"
SEVERITY_COLORS: dict[str, str] = {
    "emerg": "\x1b[1;31m",
    "alert": "\x1b[1;31m",
    "crit": "\x1b[1;31m",
    "err": "\x1b[31m",
    "warning": "\x1b[33m",
    "notice": "\x1b[36m",
    "info": "",
    "debug": "\x1b[2m",
}
SEVERITY_WIDTH = 7  # len("warning")
HOST_WIDTH = 12
FACILITY_WIDTH = 8
LOGGER_WIDTH = 16


def console_time(ts: Any) -> str:
    """``HH:MM:SS.mmm`` of an RFC 3339 timestamp (UTC, as in the record)."""
    if isinstance(ts, str) and len(ts) >= 19 and ts[10] in "T ":
        clock = ts[11:23] if len(ts) >= 23 and ts[19] == "." else ts[11:19] + ".000"
        return escape(clock.ljust(12))
    return escape(_text(ts))[:12].ljust(12)


def render_console(record: dict[str, Any], color: bool) -> str:
    """``record`` in aligned columns for a terminal; no trailing newline.

    ``HH:MM:SS.mmm severity host facility logger msg`` then traceback lines: the
    host always (a fleet's records are read side by side), the app in the logger
    column when a record has no logger (syslog daemons' records). With
    ``color``, ANSI colours by severity: red for err and worse (bold for
    crit and worse), yellow warning, cyan notice, default info, dim debug.
    """
    severity = _text(record.get("severity"))
    clock = console_time(record.get("ts"))
    sev = f"{escape(severity):<{SEVERITY_WIDTH}}"
    rest = (
        f" {escape(_text(record.get('host'))):<{HOST_WIDTH}}"
        f" {escape(_text(record.get('facility'))):<{FACILITY_WIDTH}}"
        f" {escape(_text(record.get('logger') or record.get('app'))):<{LOGGER_WIDTH}} "
    )
    body = escape_multiline(_text(record.get("msg"))) + traceback_text(record)
    code = SEVERITY_COLORS.get(severity, "") if color else ""
    if not code:
        return f"{clock} {sev}{rest}{body}"
    if severity == "debug":
        return f"{code}{clock} {sev}{rest}{body}{RESET}"
    # colour the severity word and the message; time, facility and logger stay plain
    body = body.replace("\n", RESET + "\n" + code)
    return f"{clock} {code}{sev}{RESET}{rest}{code}{body}{RESET}"


# --- command output (query, replay --dry-run) -------------------------------

#: ``-o`` choices: console columns, the file line, the archived JSON as is,
#: the decoded record as JSON (as ``tail --json``), the message alone.
OUTPUTS = ("short", "long", "json", "jsonl", "cat")


def render_output(
    record: dict[str, Any], output: str, *, color: bool = False, raw: bytes | None = None
) -> str:
    """``record`` in one of ``OUTPUTS``; ``raw`` is its archived JSON line, if known.

    Raises ``ValueError`` for an unknown output name.
    """
    if output == "short":
        return render_console(record, color)
    if output == "long":
        return render_line(record)
    if output in ("json", "jsonl"):
        if raw is not None and output == "json":
            return raw.decode("utf-8", "replace").rstrip("\n")
        compact = (",", ":") if output == "json" else None
        try:
            return json.dumps(record, ensure_ascii=False, separators=compact, default=repr)
        except RecursionError:  # nested deeper than the encoder goes: any sender can
            if raw is not None:
                return raw.decode("utf-8", "replace").rstrip("\n")
            stub = {"id": record.get("id"), "error": "record nested too deep to print"}
            return json.dumps(stub, ensure_ascii=False, separators=compact, default=repr)
    if output == "cat":
        return escape_multiline(_text(record.get("msg"))) + traceback_text(record)
    raise ValueError(f"unknown output {output!r} (choose from {', '.join(OUTPUTS)})")


def use_color(stream: Any, env: Mapping[str, str] | None = None) -> bool:
    """The one colour decision: ``stream`` is a terminal, ``$NO_COLOR`` is unset or empty,
    and ``$TERM`` is not ``dumb`` (``env`` defaults to the process environment)."""
    env = os.environ if env is None else env
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False
