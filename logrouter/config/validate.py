"""The validator: reads the parsed TOML tables into the model, collecting every issue
(file, line, sink, key, message) instead of stopping at the first."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from logrouter.config import checks
from logrouter.config.model import (
    BROKER_KEYS,
    COMMON_KEYS,
    CONTROL_KEYS,
    DEFAULT_BATCH_INTERVAL,
    DEFAULT_BATCH_SIZE,
    DEFAULT_DEDUP_WINDOW,
    DEFAULT_DELIVERY_LIMIT,
    DEFAULT_FILE_FORMAT,
    DEFAULT_FILE_MODE,
    DEFAULT_FSYNC,
    DEFAULT_FSYNC_INTERVAL,
    DEFAULT_HEARTBEAT,
    DEFAULT_MAX_FILES,
    DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_PREFETCH,
    DEFAULT_QUEUE_TYPE,
    DEFAULT_RECONNECT_MAX,
    MIB,
    QUEUE_PREFIX,
    RESERVED_SINK_NAMES,
    TYPE_KEYS,
    ArchiveOptions,
    ConfigIssue,
    ConsoleOptions,
    ControlSettings,
    FileOptions,
    SinkConfig,
)
from logrouter.config.positions import LineIndex
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
from logrouter.render import DEFAULT_CONSOLE_FORMAT
from logrouter.selector import SelectorError

T = TypeVar("T")
SINK_NAME = re.compile(r"[a-z0-9_-]{1,100}\Z")


class Validator:
    """Collects issues while reading the parsed TOML."""

    def __init__(self, file: str, text: str, config_dir: str) -> None:
        self.file = file
        self.index = LineIndex(text)
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
                None, "broker", f"expected a table [broker], got {checks.type_name(raw)}", "broker"
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
        exchange = self._broker_value(raw, "exchange", checks.exchange_name, DEFAULT_EXCHANGE)
        heartbeat = self._broker_value(
            raw, "heartbeat", checks.int_range(1, 300), DEFAULT_HEARTBEAT
        )
        queue_type = self._broker_value(
            raw, "queue_type", checks.choice("classic", "quorum"), DEFAULT_QUEUE_TYPE
        )
        reconnect_max = self._broker_value(
            raw, "reconnect_max", checks.float_range(0.5, 3600), DEFAULT_RECONNECT_MAX
        )
        self.queue_type = queue_type
        if len(self.issues) != before or urls is None:
            return None
        if env.get(URL_ENV):
            urls = split_urls(env[URL_ENV])
        return BrokerSettings(
            urls=urls,
            exchange=exchange,
            heartbeat=heartbeat,
            queue_type=queue_type,
            reconnect_max=reconnect_max,
        )

    def _broker_value(
        self, raw: Mapping[str, Any], key: str, check: Callable[[object], T], default: T
    ) -> T:
        if key not in raw:
            return default
        try:
            return check(raw[key])
        except checks.Invalid as exc:
            self.issue(None, f"broker.{key}", str(exc), "broker", key)
            return default

    def _urls(self, value: object, key: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
        example = 'e.g. "amqp://user:pass@host:5672/%2F", several separated by spaces'
        if not isinstance(value, str):
            self.issue(
                None, key, f"expected a string ({example}), got {checks.type_name(value)}", *path
            )
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
                None,
                "control",
                f"expected a table [control], got {checks.type_name(raw)}",
                "control",
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
            message = f"expected tables [sinks.NAME], got {checks.type_name(raw)}"
            self.issue(None, "sinks", message, "sinks")
            return {}
        result: dict[str, SinkConfig] = {}
        for name, table in raw.items():
            sink = SinkReader(self, name, table).read()
            if sink is not None:
                result[name] = sink
        return result


class SinkReader:
    """Reads one [sinks.NAME] table, reporting issues to the validator."""

    def __init__(self, validator: Validator, name: str, table: object) -> None:
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
        except checks.Invalid as exc:
            self.fail(key, str(exc))
            return default

    def required(self, key: str, check: Callable[[object], T], example: str) -> T | None:
        if key not in self.table:
            self.fail(key, f"missing (e.g. {key} = {example})")
            return None
        try:
            return check(self.table[key])
        except (checks.Invalid, SelectorError) as exc:
            self.fail(key, str(exc))
            return None

    def check_name(self) -> None:
        name = self.name
        if not SINK_NAME.match(name):
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
            self.fail(
                None, f"expected a table [sinks.{self.name}], got {checks.type_name(self.raw)}"
            )
            return None
        kind = self.required("type", checks.sink_type, '"file"')
        self.check_keys(kind)
        match = self.required("match", checks.expect_str, '"*.err"')
        selector = (
            self.required("match", checks.selector_value, '"*.err"') if match is not None else None
        )
        queue_type = self.get(
            "queue_type", checks.choice("classic", "quorum"), self.validator.queue_type
        )
        delivery_limit = self.get(
            "delivery_limit", checks.int_range(1, 1000), DEFAULT_DELIVERY_LIMIT
        )
        if "delivery_limit" in self.table and queue_type != "quorum":
            message = 'applies to quorum queues only (set queue_type = "quorum", or remove it)'
            self.fail("delivery_limit", message)
        prefetch = self.get("prefetch", checks.int_range(1, 65535), DEFAULT_PREFETCH)
        batch_size = self.get("batch_size", checks.int_range(1, 100_000), DEFAULT_BATCH_SIZE)
        batch_interval = self.get(
            "batch_interval", checks.float_range(0.001, 60), DEFAULT_BATCH_INTERVAL
        )
        fsync = self.get("fsync", checks.choice("batch", "interval", "never"), DEFAULT_FSYNC)
        fsync_interval = self.get(
            "fsync_interval", checks.float_range(0.01, 3600), DEFAULT_FSYNC_INTERVAL
        )
        dedup_window = self.get(
            "dedup_window", checks.int_range(0, 10_000_000), DEFAULT_DEDUP_WINDOW
        )
        max_record_bytes = self.get("max_record_bytes", checks.size_value, DEFAULT_MAX_RECORD_BYTES)
        fast_deliveries = self.get("fast_deliveries", checks.boolean, True)
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
            fast_deliveries=fast_deliveries,
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
            return checks.path_template(value, self.config_dir)

        path = self.required("path", template, '"/var/log/logrouter/{facility}.log"')
        interval = self.get("rotate_interval", checks.choice("none", "hour", "day"), "none")
        default_keep: int | float = 7
        keep = self.get("keep", checks.keep_count_or_age, default_keep)
        options = FileOptions(
            path=path[0] if path else "",
            base_dir=path[1] if path else Path(),
            format=self.get("format", checks.line_format, DEFAULT_FILE_FORMAT),
            rotate_bytes=self.get("rotate_bytes", checks.size_value, 0),
            rotate_interval=None if interval == "none" else interval,
            keep=keep if isinstance(keep, int) else 0,
            keep_age=keep if isinstance(keep, float) else None,
            max_open_files=self.get("max_open_files", checks.int_range(1, 4096), 64),
            file_mode=self.get("file_mode", checks.file_mode, DEFAULT_FILE_MODE),
            max_files=self.get("max_files", checks.int_range(1, 1_000_000), DEFAULT_MAX_FILES),
        )
        return options if path else None

    def console_options(self) -> ConsoleOptions:
        return ConsoleOptions(
            stream=self.get("stream", checks.choice("stdout", "stderr"), "stdout"),
            color=self.get("color", checks.choice("auto", "always", "never"), "auto"),
            format=self.get("format", checks.line_format, DEFAULT_CONSOLE_FORMAT),
        )

    def archive_options(self) -> ArchiveOptions | None:
        def directory(value: object) -> Path:
            return checks.directory(value, self.config_dir)

        path = self.required("dir", directory, '"/var/lib/logrouter/archive"')
        options = ArchiveOptions(
            dir=path or Path(),
            compression=self.get("compression", checks.choice("gzip"), "gzip"),
            compresslevel=self.get("compresslevel", checks.int_range(1, 9), 6),
            rotate_bytes=self.get("rotate_bytes", checks.size_value, 64 * MIB),
            rotate_interval=self.get("rotate_interval", checks.choice("hour", "day"), "hour"),
            keep_age=self.get("keep", checks.keep_age, None),
        )
        return options if path else None
