"""The routing config's model: its keys, defaults and dataclasses, and the issue/error
types a config problem is reported with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from logrouter.connection import BrokerSettings
from logrouter.errors import ConfigurationError
from logrouter.render import (
    DEFAULT_LINE_FORMAT,
    PATH_INSTANCE,
    PATH_PLACEHOLDERS,
    PLACEHOLDERS,
)
from logrouter.selector import Selector

__all__ = [
    "BROKER_KEYS",
    "COMMON_KEYS",
    "CONTROL_KEYS",
    "DEFAULT_BATCH_INTERVAL",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_DEDUP_WINDOW",
    "DEFAULT_DELIVERY_LIMIT",
    "DEFAULT_FILE_FORMAT",
    "DEFAULT_FILE_MODE",
    "DEFAULT_FSYNC",
    "DEFAULT_FSYNC_INTERVAL",
    "DEFAULT_HEARTBEAT",
    "DEFAULT_MAX_FILES",
    "DEFAULT_MAX_RECORD_BYTES",
    "DEFAULT_PREFETCH",
    "DEFAULT_QUEUE_TYPE",
    "DEFAULT_RECONNECT_MAX",
    "FORMAT_FIELDS",
    "KIB",
    "MIB",
    "PATH_FIELDS",
    "QUEUE_PREFIX",
    "RESERVED_SINK_NAMES",
    "SINK_TYPES",
    "TOP_KEYS",
    "TYPE_KEYS",
    "ArchiveOptions",
    "ConfigError",
    "ConfigIssue",
    "ConsoleOptions",
    "ControlSettings",
    "FileOptions",
    "RoutingConfig",
    "SinkConfig",
]

SINK_TYPES = ("file", "console", "archive")
QUEUE_PREFIX = "logrouter."
RESERVED_SINK_NAMES = frozenset({"rejected"})  # logrouter.rejected is the dead-letter queue

#: Placeholders of a line format (``format`` of file and console sinks); render owns them.
FORMAT_FIELDS = PLACEHOLDERS
#: Placeholders of a file ``path`` template: the file sink's, plus its instance id.
PATH_FIELDS = (*PATH_PLACEHOLDERS, PATH_INSTANCE)
DEFAULT_FILE_FORMAT = DEFAULT_LINE_FORMAT
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
#: longest pause (s) between a sink's attempts to reach the broker (0.5 s doubling up to it)
DEFAULT_RECONNECT_MAX = 30.0

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
    "fast_deliveries",
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
    "archive": ("dir", "compression", "compresslevel", "rotate_bytes", "rotate_interval", "keep"),
}
BROKER_KEYS = ("url", "exchange", "heartbeat", "queue_type", "reconnect_max")
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


class ConfigError(ConfigurationError):
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
    keep_age: float | None = None  # keep = "30d": rotated files older than this are deleted


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
    keep_age: float | None = None  # keep = "30d": partitions older than this are deleted


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
    #: whole deliveries decoded by sinks/deliveries.py (False: pika's own path); from the
    #: next connection on after a reload
    fast_deliveries: bool = True


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
