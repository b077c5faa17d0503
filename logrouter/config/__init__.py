"""The routing config (TOML): ``load_config`` / ``parse_config`` give a ``RoutingConfig``
or raise ``ConfigError`` listing every issue (file, line, sink, key, message).

The package splits the work: ``model`` (keys, defaults, dataclasses, issue and
error types), ``positions`` (where a key is in the text; TOML syntax error
positions), ``checks`` (one function per kind of value), ``validate`` (the
tables into the model, every issue collected) and ``loader`` (file -> text ->
TOML -> validator). Everything a caller needs is importable from here.
"""

from logrouter.config.loader import load_config, parse_config
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
    FORMAT_FIELDS,
    KIB,
    MIB,
    PATH_FIELDS,
    QUEUE_PREFIX,
    RESERVED_SINK_NAMES,
    SINK_TYPES,
    TOP_KEYS,
    TYPE_KEYS,
    ArchiveOptions,
    ConfigError,
    ConfigIssue,
    ConsoleOptions,
    ControlSettings,
    FileOptions,
    RoutingConfig,
    SinkConfig,
)
from logrouter.render import DEFAULT_CONSOLE_FORMAT, PATH_TIME_CODES

__all__ = [
    "BROKER_KEYS",
    "COMMON_KEYS",
    "CONTROL_KEYS",
    "DEFAULT_BATCH_INTERVAL",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CONSOLE_FORMAT",
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
    "FORMAT_FIELDS",
    "KIB",
    "MIB",
    "PATH_FIELDS",
    "PATH_TIME_CODES",
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
    "load_config",
    "parse_config",
]
