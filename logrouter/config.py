"""Load and validate the routing config (TOML) into a ``RoutingConfig``.

Every problem found becomes a ``ConfigIssue`` naming the file, the line (where
one can be found), the sink and the key, and saying what is allowed; all of
them are raised together as one ``ConfigError``. Unknown keys are errors.

tomllib gives no positions for values, so ``_LineIndex`` scans the text for
table headers and ``key =`` lines to point issues at the right line.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import string
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from logrouter.connection import (
    DEFAULT_EXCHANGE,
    DEFAULT_URL,
    URL_ENV,
    BadURL,
    BrokerSettings,
    redact,
    split_urls,
    validate_url,
)
from logrouter.selector import Selector, SelectorError, compile_selector

T = TypeVar("T")

SINK_TYPES = ("file", "console", "archive")
QUEUE_PREFIX = "logrouter."
RESERVED_SINK_NAMES = frozenset({"rejected"})  # logrouter.rejected is the dead-letter queue
_SINK_NAME = re.compile(r"[a-z0-9_-]{1,100}\Z")
_EXCHANGE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,255}\Z")

#: Placeholders of a line format (``format`` of file and console sinks).
# fmt: off
FORMAT_FIELDS = frozenset({
    "ts", "host", "app", "pid", "thread", "logger", "facility", "severity", "level", "msg",
    "file", "line", "func", "id", "fields",
})
# fmt: on
#: Placeholders of a file ``path`` template, and its strftime parts.
PATH_FIELDS = ("facility", "severity", "host", "app", "instance")
PATH_TIME_CODES = "YmdH"

DEFAULT_FILE_FORMAT = "{ts} {host} {app}[{pid}] {facility}.{severity} {logger}: {msg}"
DEFAULT_CONSOLE_FORMAT = "{ts} {severity:<7} {host} {facility} {app}[{pid}] {logger}: {msg}"
DEFAULT_FILE_MODE = 0o640
KIB = 1024
MIB = 1024 * KIB

# Common sink defaults.
DEFAULT_QUEUE_TYPE = "classic"
DEFAULT_DELIVERY_LIMIT = 5
DEFAULT_PREFETCH = 200
DEFAULT_BATCH_SIZE = 500
DEFAULT_BATCH_INTERVAL = 0.2
DEFAULT_FSYNC = "batch"
DEFAULT_FSYNC_INTERVAL = 1.0
DEFAULT_DEDUP_WINDOW = 100_000
DEFAULT_MAX_RECORD_BYTES = MIB
DEFAULT_MAX_FILES = 1000
DEFAULT_HEARTBEAT = 10

COMMON_KEYS = (
    "type",
    "match",
    "queue_type",
    "delivery_limit",
    "prefetch",
    "batch_size",
    "batch_interval",
    "fsync",
    "fsync_interval",
    "dedup_window",
    "max_record_bytes",
)
TYPE_KEYS: dict[str, tuple[str, ...]] = {
    "file": (
        "path",
        "format",
        "rotate_bytes",
        "rotate_interval",
        "keep",
        "max_open_files",
        "file_mode",
        "max_files",
    ),
    "console": ("stream", "color", "format"),
    "archive": ("dir", "compression", "compresslevel", "rotate_bytes", "rotate_interval"),
}
BROKER_KEYS = ("url", "exchange", "heartbeat", "queue_type")
TOP_KEYS = ("broker", "sinks", "control")
CONTROL_KEYS = ("allow_users",)


class ConfigIssue(NamedTuple):
    """One problem of a config.

    ``key`` is the key inside its sink table when ``sink`` is set (``"match"``),
    else the dotted key (``"broker.url"``) or the environment variable.
    """

    file: str
    line: int | None
    sink: str | None
    key: str | None
    message: str

    def where(self) -> str:
        if self.sink is not None:
            return f"sinks.{self.sink}.{self.key}" if self.key else f"sinks.{self.sink}"
        return self.key or ""

    def __str__(self) -> str:
        location = f"{self.file}:{self.line}" if self.line is not None else self.file
        where = self.where()
        return f"{location}: {where}: {self.message}" if where else f"{location}: {self.message}"


class ConfigError(Exception):
    """A config that cannot be used; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        super().__init__("\n".join(str(issue) for issue in issues))
        self.issues = issues


@dataclass(frozen=True)
class FileOptions:
    path: str  # template, absolute after resolution
    base_dir: Path  # fixed directory part before the first placeholder
    format: str
    rotate_bytes: int  # 0 = no size rotation
    rotate_interval: str | None  # None | "hour" | "day"
    keep: int  # rotated files kept; 0 = keep all
    max_open_files: int
    file_mode: int
    max_files: int = DEFAULT_MAX_FILES  # distinct placeholder values; then the overflow file


@dataclass(frozen=True)
class ConsoleOptions:
    stream: str  # "stdout" | "stderr"
    color: str  # "auto" | "always" | "never"
    format: str


@dataclass(frozen=True)
class ArchiveOptions:
    dir: Path
    compression: str  # "gzip"
    compresslevel: int
    rotate_bytes: int  # 0 = no size rotation
    rotate_interval: str  # "hour" | "day"


@dataclass(frozen=True)
class SinkConfig:
    name: str
    type: str  # "file" | "console" | "archive"
    match: str
    selector: Selector
    queue: str  # "logrouter.<name>"
    queue_type: str  # "classic" | "quorum"
    delivery_limit: int  # x-delivery-limit for quorum queues
    prefetch: int  # basic.qos prefetch_count
    batch_size: int  # max records per write+ack batch
    batch_interval: float  # max seconds before a partial batch is written
    fsync: str  # "batch" | "interval" | "never"
    fsync_interval: float
    dedup_window: int  # message_ids remembered
    options: FileOptions | ConsoleOptions | ArchiveOptions
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES  # larger bodies are rejected; 0 = no cap


@dataclass(frozen=True)
class ControlSettings:
    """``[control]``: who may send ``status``/``reload`` requests to the sinks."""

    #: Broker logins whose requests are answered; empty = the broker URLs' own logins.
    allow_users: tuple[str, ...] = ()


@dataclass(frozen=True)
class RoutingConfig:
    path: Path
    broker: BrokerSettings  # LOGROUTER_URL overrides [broker].url
    sinks: dict[str, SinkConfig]
    digest: str  # sha256 of the file bytes: the "config version"
    control: ControlSettings = field(default_factory=ControlSettings)


# --- where is a key? ----------------------------------------------------------------------

_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_KEY_LINE = re.compile(rf"\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")
_HEADER_LINE = re.compile(rf"\s*(\[\[?)\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*\]")
_PART = re.compile(_KEY_PART)


def _key_path(text: str) -> tuple[str, ...]:
    parts = []
    for raw in _PART.findall(text):
        if raw[0] in "\"'":
            parts.append(raw[1:-1])
        else:
            parts.append(raw)
    return tuple(parts)


class _LineIndex:
    """First line of every table header and key of a TOML text (best effort)."""

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[str, ...], int] = {}
        self.duplicates: list[tuple[tuple[str, ...], int]] = []
        table: tuple[str, ...] = ()
        closing: str | None = None  # delimiter of the multi-line string we are in
        for number, line in enumerate(text.splitlines(), start=1):
            if closing is not None:
                if line.count(closing) % 2 == 1:
                    closing = None
                continue
            header = _HEADER_LINE.match(line)
            if header:
                table = _key_path(header.group(2))
                self.lines.setdefault(table, number)
                continue
            key = _KEY_LINE.match(line)
            if not key:
                continue
            path = table + _key_path(key.group(1))
            if path in self.lines:
                self.duplicates.append((path, number))
            self.lines.setdefault(path, number)
            value = line[key.end() :]
            for delimiter in ('"""', "'''"):
                if value.count(delimiter) % 2 == 1:
                    closing = delimiter
                    break

    def line(self, *path: str) -> int | None:
        """The line of ``path``, else of its nearest enclosing table/key found."""
        for end in range(len(path), 0, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return None


# --- value checks -----------------------------------------------------------------------


class _Invalid(ValueError):
    """A value that is not allowed; the message says what is."""


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime | date | time):
        return "a date/time"
    return type(value).__name__


def _show(value: object) -> str:
    if isinstance(value, dict | list):
        return ""
    text = repr(value) if not isinstance(value, bool) else str(value).lower()
    return f" ({text})"


def _expect_str(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_type_name(value)}{_show(value)}")
    return value


def _choice(*allowed: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        text = _expect_str(value)
        if text not in allowed:
            raise _Invalid(f"{text!r} is not allowed (allowed: {', '.join(allowed)})")
        return text

    return check


def _int_range(low: int, high: int) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"expected an integer, got {_type_name(value)}{_show(value)}")
        if not low <= value <= high:
            raise _Invalid(f"{value} is out of range (allowed: {low}..{high})")
        return value

    return check


def _float_range(low: float, high: float) -> Callable[[object], float]:
    def check(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(f"expected a number, got {_type_name(value)}{_show(value)}")
        number = float(value)
        if not low <= number <= high:
            raise _Invalid(f"{value} is out of range (allowed: {low:g}..{high:g} seconds)")
        return number

    return check


_SIZE = re.compile(r"\s*(\d+)\s*([kmg]?)(?:i?b)?\s*\Z", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": KIB, "m": MIB, "g": 1024 * MIB}
MAX_BYTES = 1024**4


def _size(value: object) -> int:
    """Bytes: an integer, or a string like "64MiB", "10M", "512k" (binary units); 0 = off."""
    if isinstance(value, str):
        found = _SIZE.match(value)
        if not found:
            raise _Invalid(f'{value!r} is not a size (e.g. 10485760, "10MiB", "512K", 0 = off)')
        number = int(found.group(1)) * _SIZE_UNITS[found.group(2).lower()]
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise _Invalid(
            f"expected an integer or a size string, got {_type_name(value)}{_show(value)}"
        )
    if number != 0 and not KIB <= number <= MAX_BYTES:
        raise _Invalid(f"{number} bytes is out of range (allowed: 0 = off, or 1KiB..1TiB)")
    return number


def _file_mode(value: object) -> int:
    """A permission mode: a string of octal digits ("0640") or a TOML octal (0o640)."""
    if isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        if not re.fullmatch(r"[0-7]{3,4}", text):
            raise _Invalid(f'{value!r} is not an octal mode (e.g. "0640" or "0600")')
        mode = int(text, 8)
    elif isinstance(value, int) and not isinstance(value, bool):
        mode = value
    else:
        raise _Invalid(f'expected a string like "0640", got {_type_name(value)}{_show(value)}')
    if not 0 <= mode <= 0o777:
        raise _Invalid(f"mode {mode:o} is out of range (allowed: 0000..0777, no setuid/sticky)")
    if not mode & 0o200:
        raise _Invalid(f'mode {mode:04o} does not let the sink write (owner needs w, e.g. "0640")')
    return mode


def _line_format(value: object) -> str:
    """A line format: ``str.format`` placeholders among FORMAT_FIELDS, string format specs."""
    text = _expect_str(value)
    allowed = " ".join("{" + name + "}" for name in sorted(FORMAT_FIELDS))
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise _Invalid(
            f"bad format {text!r}: {exc} (write a literal brace as {{{{ or }}}})"
        ) from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in FORMAT_FIELDS:
            raise _Invalid(f"unknown placeholder {{{name}}} (allowed: {allowed})")
        if conversion:
            raise _Invalid(f"conversion !{conversion} in {{{name}}} is not allowed")
        if spec:
            try:
                format("-", spec)
            except ValueError as exc:
                raise _Invalid(f"bad format spec {{{name}:{spec}}}: {exc}") from None
    return text


def _path_template(value: object, config_dir: str) -> tuple[str, Path]:
    """The absolute path template and its base directory."""
    text = _expect_str(value).strip()
    allowed = " ".join("{" + name + "}" for name in PATH_FIELDS)
    times = " ".join("%" + code for code in PATH_TIME_CODES)
    if not text:
        raise _Invalid('empty path (e.g. "/var/log/logrouter/{facility}.log")')
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise _Invalid(f"bad path template {text!r}: {exc}") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in PATH_FIELDS or spec or conversion:
            raise _Invalid(
                f"unknown placeholder {{{name}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}} in path (allowed: {allowed} and {times})"
            )
    for match in re.finditer(r"%(.?)", text):
        if match.group(1) not in PATH_TIME_CODES + "%":
            raise _Invalid(
                f"unknown time code %{match.group(1)} in path (allowed: {times}, %% for '%')"
            )
    components = text.split("/")
    if ".." in components:
        raise _Invalid(f"path {text!r} contains '..': it could escape its base directory")
    if text.endswith("/") or components[-1] in ("", "."):
        raise _Invalid(f"path {text!r} names a directory; it must name a file")
    full = text if text.startswith("/") else posixpath.join(config_dir, text)
    full = posixpath.normpath(full)
    fixed = re.split(r"[{%]", full, maxsplit=1)[0]
    base = fixed.rpartition("/")[0] or "/"
    return full, Path(base)


def _directory(value: object, config_dir: str) -> Path:
    text = _expect_str(value).strip()
    if not text:
        raise _Invalid('empty directory (e.g. "/var/lib/logrouter/archive")')
    if ".." in text.split("/"):
        raise _Invalid(f"directory {text!r} contains '..' (write the directory it means)")
    full = text if text.startswith("/") else posixpath.join(config_dir, text)
    return Path(posixpath.normpath(full))


def _sink_type(value: object) -> str:
    try:
        return _choice(*SINK_TYPES)(value)
    except _Invalid as exc:
        raise _Invalid(f"unknown sink type: {exc}") from None


def _selector(value: object) -> Selector:
    return compile_selector(_expect_str(value))


def _exchange_name(value: object) -> str:
    name = _expect_str(value)
    if not _EXCHANGE_NAME.match(name) or name.startswith("amq."):
        raise _Invalid(
            f"{name!r} is not a usable exchange name "
            "(allowed: 1-255 of A-Z a-z 0-9 _ . : -, not starting with 'amq.')"
        )
    return name


# --- the validator ------------------------------------------------------------------------


class _Validator:
    """Collects issues while reading the parsed TOML."""

    def __init__(self, file: str, text: str, config_dir: str) -> None:
        self.file = file
        self.index = _LineIndex(text)
        self.config_dir = config_dir
        self.issues: list[ConfigIssue] = []
        self.queue_type = DEFAULT_QUEUE_TYPE  # [broker] queue_type: the sinks' default

    def issue(self, sink: str | None, key: str | None, message: str, *path: str) -> None:
        line = self.index.line(*path) if path else None
        self.issues.append(ConfigIssue(self.file, line, sink, key, message))

    # -- broker

    def broker(self, data: Mapping[str, Any], env: Mapping[str, str]) -> BrokerSettings | None:
        raw = data.get("broker", {})
        if not isinstance(raw, dict):
            self.issue(
                None, "broker", f"expected a table [broker], got {_type_name(raw)}", "broker"
            )
            return None
        before = len(self.issues)
        for key in raw:
            if key not in BROKER_KEYS:
                allowed = ", ".join(BROKER_KEYS)
                message = f"unknown key (allowed in [broker]: {allowed})"
                self.issue(None, f"broker.{key}", message, "broker", key)
        urls: tuple[str, ...] | None = (DEFAULT_URL,)
        if "url" in raw:
            urls = self._urls(raw["url"], "broker.url", ("broker", "url"))
        if env.get(URL_ENV):
            urls = self._urls(env[URL_ENV], URL_ENV, ()) and urls
        exchange = self._broker_value(raw, "exchange", _exchange_name, DEFAULT_EXCHANGE)
        heartbeat = self._broker_value(raw, "heartbeat", _int_range(1, 300), DEFAULT_HEARTBEAT)
        queue_type = self._broker_value(
            raw, "queue_type", _choice("classic", "quorum"), DEFAULT_QUEUE_TYPE
        )
        self.queue_type = queue_type
        if len(self.issues) != before or urls is None:
            return None
        if env.get(URL_ENV):
            urls = split_urls(env[URL_ENV])
        return BrokerSettings(
            urls=urls, exchange=exchange, heartbeat=heartbeat, queue_type=queue_type
        )

    def _broker_value(
        self, raw: Mapping[str, Any], key: str, check: Callable[[object], T], default: T
    ) -> T:
        if key not in raw:
            return default
        try:
            return check(raw[key])
        except _Invalid as exc:
            self.issue(None, f"broker.{key}", str(exc), "broker", key)
            return default

    def _urls(self, value: object, key: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
        example = 'e.g. "amqp://user:pass@host:5672/%2F", several separated by spaces'
        if not isinstance(value, str):
            self.issue(None, key, f"expected a string ({example}), got {_type_name(value)}", *path)
            return None
        urls = split_urls(value)
        if not urls:
            self.issue(None, key, f"empty URL ({example})", *path)
            return None
        for url in urls:
            try:
                validate_url(url)
            except BadURL as exc:
                self.issue(None, key, f"{redact(str(exc))} ({example})", *path)
                return None
        return urls

    # -- control

    def control(self, data: Mapping[str, Any]) -> ControlSettings:
        raw = data.get("control", {})
        if not isinstance(raw, dict):
            self.issue(
                None, "control", f"expected a table [control], got {_type_name(raw)}", "control"
            )
            return ControlSettings()
        for key in raw:
            if key not in CONTROL_KEYS:
                allowed = ", ".join(CONTROL_KEYS)
                self.issue(
                    None,
                    f"control.{key}",
                    f"unknown key (allowed in [control]: {allowed})",
                    "control",
                    key,
                )
        users = raw.get("allow_users", [])
        if not isinstance(users, list) or not all(
            isinstance(user, str) and user.strip() for user in users
        ):
            self.issue(
                None,
                "control.allow_users",
                'expected a list of broker logins (e.g. ["logrouter", "ops"])',
                "control",
                "allow_users",
            )
            return ControlSettings()
        return ControlSettings(allow_users=tuple(dict.fromkeys(users)))

    # -- sinks

    def sinks(self, data: Mapping[str, Any]) -> dict[str, SinkConfig]:
        raw = data.get("sinks")
        if not raw:
            example = (
                '[sinks.errors] with type = "file", match = "*.err", '
                'path = "/var/log/logrouter/{facility}.err.log"'
            )
            self.issue(None, "sinks", f"no sinks defined (add e.g. {example})", "sinks")
            return {}
        if not isinstance(raw, dict):
            message = f"expected tables [sinks.NAME], got {_type_name(raw)}"
            self.issue(None, "sinks", message, "sinks")
            return {}
        result: dict[str, SinkConfig] = {}
        for name, table in raw.items():
            sink = _SinkReader(self, name, table).read()
            if sink is not None:
                result[name] = sink
        return result


class _SinkReader:
    """Reads one [sinks.NAME] table, reporting issues to the validator."""

    def __init__(self, validator: _Validator, name: str, table: object) -> None:
        self.validator = validator
        self.name = name
        self.raw = table
        self.table: Mapping[str, Any] = table if isinstance(table, dict) else {}
        self.config_dir = validator.config_dir

    def fail(self, key: str | None, message: str) -> None:
        path = ("sinks", self.name, key) if key else ("sinks", self.name)
        self.validator.issue(self.name, key, message, *path)

    def get(self, key: str, check: Callable[[object], T], default: T) -> T:
        if key not in self.table:
            return default
        try:
            return check(self.table[key])
        except _Invalid as exc:
            self.fail(key, str(exc))
            return default

    def required(self, key: str, check: Callable[[object], T], example: str) -> T | None:
        if key not in self.table:
            self.fail(key, f"missing (e.g. {key} = {example})")
            return None
        try:
            return check(self.table[key])
        except (_Invalid, SelectorError) as exc:
            self.fail(key, str(exc))
            return None

    def check_name(self) -> None:
        name = self.name
        if not _SINK_NAME.match(name):
            self.fail(
                None,
                f"bad sink name {name!r} (allowed: 1-100 of a-z 0-9 _ -; "
                f"it becomes the queue name {QUEUE_PREFIX}NAME)",
            )
        elif name in RESERVED_SINK_NAMES:
            self.fail(None, f"sink name {name!r} is reserved ({QUEUE_PREFIX}{name} is the DLQ)")

    def check_keys(self, kind: str | None) -> None:
        if kind:
            allowed, what = COMMON_KEYS + TYPE_KEYS[kind], f"a {kind} sink"
        else:
            every = (key for keys in TYPE_KEYS.values() for key in keys)
            allowed, what = COMMON_KEYS + tuple(dict.fromkeys(every)), "a sink"
        for key in self.table:
            if key not in allowed:
                self.fail(key, f"unknown key (allowed for {what}: {', '.join(allowed)})")

    def read(self) -> SinkConfig | None:
        before = len(self.validator.issues)
        self.check_name()
        if not isinstance(self.raw, dict):
            self.fail(None, f"expected a table [sinks.{self.name}], got {_type_name(self.raw)}")
            return None
        kind = self.required("type", _sink_type, '"file"')
        self.check_keys(kind)
        match = self.required("match", _expect_str, '"*.err"')
        selector = self.required("match", _selector, '"*.err"') if match is not None else None
        queue_type = self.get("queue_type", _choice("classic", "quorum"), self.validator.queue_type)
        delivery_limit = self.get("delivery_limit", _int_range(1, 1000), DEFAULT_DELIVERY_LIMIT)
        if "delivery_limit" in self.table and queue_type != "quorum":
            message = 'applies to quorum queues only (set queue_type = "quorum", or remove it)'
            self.fail("delivery_limit", message)
        prefetch = self.get("prefetch", _int_range(1, 65535), DEFAULT_PREFETCH)
        batch_size = self.get("batch_size", _int_range(1, 100_000), DEFAULT_BATCH_SIZE)
        batch_interval = self.get("batch_interval", _float_range(0.001, 60), DEFAULT_BATCH_INTERVAL)
        fsync = self.get("fsync", _choice("batch", "interval", "never"), DEFAULT_FSYNC)
        fsync_interval = self.get(
            "fsync_interval", _float_range(0.01, 3600), DEFAULT_FSYNC_INTERVAL
        )
        dedup_window = self.get("dedup_window", _int_range(0, 10_000_000), DEFAULT_DEDUP_WINDOW)
        max_record_bytes = self.get("max_record_bytes", _size, DEFAULT_MAX_RECORD_BYTES)
        options = self.options(kind)
        if len(self.validator.issues) != before:
            return None
        assert kind is not None and match is not None and selector is not None
        assert options is not None
        return SinkConfig(
            name=self.name,
            type=kind,
            match=match,
            selector=selector,
            queue=QUEUE_PREFIX + self.name,
            queue_type=queue_type,
            delivery_limit=delivery_limit,
            prefetch=prefetch,
            batch_size=batch_size,
            batch_interval=batch_interval,
            fsync=fsync,
            fsync_interval=fsync_interval,
            dedup_window=dedup_window,
            options=options,
            max_record_bytes=max_record_bytes,
        )

    def options(self, kind: str | None) -> FileOptions | ConsoleOptions | ArchiveOptions | None:
        if kind == "file":
            return self.file_options()
        if kind == "console":
            return self.console_options()
        if kind == "archive":
            return self.archive_options()
        return None

    def file_options(self) -> FileOptions | None:
        def template(value: object) -> tuple[str, Path]:
            return _path_template(value, self.config_dir)

        path = self.required("path", template, '"/var/log/logrouter/{facility}.log"')
        interval = self.get("rotate_interval", _choice("none", "hour", "day"), "none")
        options = FileOptions(
            path=path[0] if path else "",
            base_dir=path[1] if path else Path(),
            format=self.get("format", _line_format, DEFAULT_FILE_FORMAT),
            rotate_bytes=self.get("rotate_bytes", _size, 0),
            rotate_interval=None if interval == "none" else interval,
            keep=self.get("keep", _int_range(0, 10_000), 7),
            max_open_files=self.get("max_open_files", _int_range(1, 4096), 64),
            file_mode=self.get("file_mode", _file_mode, DEFAULT_FILE_MODE),
            max_files=self.get("max_files", _int_range(1, 1_000_000), DEFAULT_MAX_FILES),
        )
        return options if path else None

    def console_options(self) -> ConsoleOptions:
        return ConsoleOptions(
            stream=self.get("stream", _choice("stdout", "stderr"), "stdout"),
            color=self.get("color", _choice("auto", "always", "never"), "auto"),
            format=self.get("format", _line_format, DEFAULT_CONSOLE_FORMAT),
        )

    def archive_options(self) -> ArchiveOptions | None:
        def directory(value: object) -> Path:
            return _directory(value, self.config_dir)

        path = self.required("dir", directory, '"/var/lib/logrouter/archive"')
        options = ArchiveOptions(
            dir=path or Path(),
            compression=self.get("compression", _choice("gzip"), "gzip"),
            compresslevel=self.get("compresslevel", _int_range(1, 9), 6),
            rotate_bytes=self.get("rotate_bytes", _size, 64 * MIB),
            rotate_interval=self.get("rotate_interval", _choice("hour", "day"), "hour"),
        )
        return options if path else None


_TOML_POSITION = re.compile(r"^(.*?) \((?:at line (\d+), column (\d+)|at end of document)\)$")
_TOML_TABLE = re.compile(r"\('sinks', '([^']*)'")


def _toml_issue(file: str, exc: tomllib.TOMLDecodeError, index: _LineIndex) -> ConfigIssue:
    text = str(exc)
    found = _TOML_POSITION.match(text)
    message = found.group(1) if found else text
    line = int(found.group(2)) if found and found.group(2) else None
    column = f" at column {found.group(3)}" if found and found.group(3) else ""
    sink: str | None = None
    key: str | None = None
    if message.startswith(("Cannot declare", "Cannot overwrite")):
        table = _TOML_TABLE.search(message)
        if table:
            sink = table.group(1)
        if message.startswith("Cannot overwrite") and index.duplicates:
            path, line = index.duplicates[0]
            if path[:1] == ("sinks",) and len(path) >= 2:
                sink = path[1]
                key = ".".join(path[2:]) or None
            else:
                key = ".".join(path)
            column = ""
        message += " (each table and key may appear once)"
    return ConfigIssue(file, line, sink, key, f"not valid TOML: {message}{column}")


def parse_config(
    text: str,
    path: Path | str = "<string>",
    *,
    env: Mapping[str, str] | None = None,
) -> RoutingConfig:
    """Validate the TOML ``text`` read from ``path``; raises ``ConfigError`` with every issue.

    Relative paths in sinks resolve against the directory of ``path`` (the current
    directory for ``"<string>"``). ``$LOGROUTER_URL`` in ``env`` (default
    ``os.environ``) overrides ``[broker].url``.
    """
    file = str(path)
    environment = os.environ if env is None else env
    config_dir = os.path.dirname(os.path.abspath(file)) if file != "<string>" else os.getcwd()
    validator = _Validator(file, text, config_dir)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_toml_issue(file, exc, validator.index)]) from None
    for key in data:
        if key not in TOP_KEYS:
            validator.issue(
                None,
                key,
                "unknown top-level key (allowed: [broker], [control] and [sinks.NAME] tables)",
                key,
            )
    broker = validator.broker(data, environment)
    control = validator.control(data)
    sinks = validator.sinks(data)
    if validator.issues or broker is None:
        issues = sorted(validator.issues, key=lambda issue: (issue.line is not None, issue.line))
        raise ConfigError(issues)
    return RoutingConfig(
        path=Path(path),
        broker=broker,
        sinks=sinks,
        digest=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        control=control,
    )


def load_config(
    path: Path | str, *, env: Mapping[str, str] | None = None, url: str | None = None
) -> RoutingConfig:
    """Read and validate the config file at ``path`` (see ``parse_config``).

    ``url`` (a command's ``--url``) takes the place of ``$LOGROUTER_URL``.
    """
    if url:
        env = {**(os.environ if env is None else env), URL_ENV: url}
    file = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        issue = ConfigIssue(file, None, None, None, f"cannot read config: {reason}")
        raise ConfigError([issue]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            [
                ConfigIssue(
                    file, line, None, None, f"not UTF-8 text (byte {exc.start}): not a TOML file"
                )
            ]
        ) from None
    return parse_config(text, path, env=env)
