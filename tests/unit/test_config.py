"""Routing config: loading, defaults, and an error for every way a config can be wrong."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from logrouter.config import (
    ArchiveOptions,
    ConfigError,
    ConfigIssue,
    ConsoleOptions,
    FileOptions,
    load_config,
    parse_config,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILE = "/etc/lr/routing.toml"

FILE_SINK = """
[sinks.errors]
type = "file"
match = "*.err"
path = "/var/log/lr/{facility}.log"
"""


def issues_of(text: str, env: dict[str, str] | None = None) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, CONFIG_FILE, env=env or {})
    assert str(info.value) == "\n".join(str(issue) for issue in info.value.issues)
    return info.value.issues


def marked_line(text: str) -> int | None:
    """The 1-based number of the line carrying the '#<' marker (None if unmarked)."""
    for number, line in enumerate(text.splitlines(), start=1):
        if "#<" in line:
            return number
    return None


# (id, config text with '#<' on the line the issue must point at, sink, key, words the
#  message must contain -- including what is allowed)
BAD = [
    (
        "unknown-sink-type",
        '[sinks.a]\ntype = "syslog" #<\nmatch = "*.err"\n',
        "a",
        "type",
        ["'syslog'", "allowed: file, console, archive"],
    ),
    (
        "bad-selector-severity",
        '[sinks.a]\ntype = "console"\nmatch = "*.eror" #<\n',
        "a",
        "match",
        ["'eror'", "allowed: emerg alert crit err"],
    ),
    (
        "bad-selector-facility",
        '[sinks.a]\ntype = "console"\nmatch = "Mail.err;*.crit" #<\n',
        "a",
        "match",
        ["'Mail'", "[a-z0-9_-]"],
    ),
    (
        "selector-selects-nothing",
        '[sinks.a]\ntype = "console"\nmatch = "mail.none" #<\n',
        "a",
        "match",
        ["selects nothing"],
    ),
    (
        "missing-match",
        '[sinks.a] #<\ntype = "console"\n',
        "a",
        "match",
        ["missing", 'match = "*.err"'],
    ),
    ("missing-type", '[sinks.a] #<\nmatch = "*.err"\n', "a", "type", ["missing", "type ="]),
    (
        "missing-path",
        '[sinks.a] #<\ntype = "file"\nmatch = "*.err"\n',
        "a",
        "path",
        ["missing", "path ="],
    ),
    (
        "path-escapes-base-dir",
        '[sinks.a]\ntype = "file"\nmatch = "*.err"\npath = "/var/log/{app}/../../etc/x" #<\n',
        "a",
        "path",
        ["'..'", "escape"],
    ),
    (
        "relative-path-escapes",
        '[sinks.a]\ntype = "file"\nmatch = "*.err"\npath = "../{facility}.log" #<\n',
        "a",
        "path",
        ["'..'"],
    ),
    (
        "path-unknown-placeholder",
        '[sinks.a]\ntype = "file"\nmatch = "*.err"\npath = "/var/log/{user}.log" #<\n',
        "a",
        "path",
        ["{user}", "allowed: {facility} {severity} {host} {app}", "%Y"],
    ),
    (
        "path-unknown-time-code",
        '[sinks.a]\ntype = "file"\nmatch = "*.err"\npath = "/var/log/x-%M.log" #<\n',
        "a",
        "path",
        ["%M", "allowed: %Y %m %d %H"],
    ),
    (
        "path-is-a-directory",
        '[sinks.a]\ntype = "file"\nmatch = "*.err"\npath = "/var/log/lr/" #<\n',
        "a",
        "path",
        ["must name a file"],
    ),
    (
        "bad-url-no-host",
        '[broker]\nurl = "amqp://" #<\n' + FILE_SINK,
        None,
        "broker.url",
        ["no host", "amqp://user:pass@host"],
    ),
    (
        "bad-url-scheme",
        '[broker]\nurl = "http://localhost:5672/" #<\n' + FILE_SINK,
        None,
        "broker.url",
        ["amqp:// or amqps://"],
    ),
    (
        "bad-url-port",
        '[broker]\nurl = "amqp://h:99999/" #<\n' + FILE_SINK,
        None,
        "broker.url",
        ["amqp://h:99999/", "Port out of range"],
    ),
    (
        "url-wrong-type",
        "[broker]\nurl = 5672 #<\n" + FILE_SINK,
        None,
        "broker.url",
        ["expected a string", "got an integer"],
    ),
    (
        "duplicate-sink-table",
        FILE_SINK + '[sinks.errors] #<\ntype = "console"\n',
        "errors",
        None,
        ["not valid TOML", "twice", "may appear once"],
    ),
    (
        "duplicate-key",
        FILE_SINK + 'match = "*.crit" #<\n',
        "errors",
        "match",
        ["not valid TOML", "may appear once"],
    ),
    (
        "wrong-type-string-for-int",
        FILE_SINK + 'prefetch = "200" #<\n',
        "errors",
        "prefetch",
        ["expected an integer", "got a string ('200')"],
    ),
    (
        "wrong-type-bool-for-int",
        FILE_SINK + "keep = true #<\n",
        "errors",
        "keep",
        ["expected an integer", "got a boolean"],
    ),
    (
        "wrong-type-string-for-float",
        FILE_SINK + 'batch_interval = "fast" #<\n',
        "errors",
        "batch_interval",
        ["expected a number", "got a string"],
    ),
    (
        "match-is-an-array",
        '[sinks.a]\ntype = "console"\nmatch = ["*.err"] #<\n',
        "a",
        "match",
        ["expected a string", "got an array"],
    ),
    (
        "prefetch-out-of-range",
        FILE_SINK + "prefetch = 0 #<\n",
        "errors",
        "prefetch",
        ["out of range", "allowed: 1..65535"],
    ),
    (
        "max-files-out-of-range",
        FILE_SINK + "max_files = 0 #<\n",
        "errors",
        "max_files",
        ["out of range", "allowed: 1..1000000"],
    ),
    (
        "max-record-bytes-not-a-size",
        FILE_SINK + 'max_record_bytes = "big" #<\n',
        "errors",
        "max_record_bytes",
        ["is not a size"],
    ),
    (
        "compresslevel-out-of-range",
        '[sinks.a]\ntype = "archive"\nmatch = "#"\ndir = "/x"\ncompresslevel = 10 #<\n',
        "a",
        "compresslevel",
        ["allowed: 1..9"],
    ),
    (
        "batch-interval-out-of-range",
        FILE_SINK + "batch_interval = 0 #<\n",
        "errors",
        "batch_interval",
        ["allowed: 0.001..60 seconds"],
    ),
    (
        "unknown-top-level-key",
        FILE_SINK + "[routes] #<\nx = 1\n",
        None,
        "routes",
        ["unknown top-level key", "[broker]", "[sinks.NAME]"],
    ),
    (
        "unknown-broker-key",
        "[broker]\nport = 5672 #<\n" + FILE_SINK,
        None,
        "broker.port",
        ["unknown key", "allowed in [broker]: url, exchange, heartbeat"],
    ),
    (
        "unknown-sink-key",
        '[sinks.a]\ntype = "console"\nmatch = "*.err"\ncolour = "auto" #<\n',
        "a",
        "colour",
        ["unknown key", "allowed for a console sink", "color"],
    ),
    (
        "key-of-another-sink-type",
        '[sinks.a]\ntype = "console"\nmatch = "*.err"\npath = "/x.log" #<\n',
        "a",
        "path",
        ["unknown key", "allowed for a console sink"],
    ),
    ("empty-file", "", None, "sinks", ["no sinks defined", "[sinks.errors]"]),
    ("not-toml", "this is not a config #<\n", None, None, ["not valid TOML"]),
    ("json-not-toml", '{"sinks": {}} #<\n', None, None, ["not valid TOML"]),
    (
        "no-sinks",
        '[broker]\nurl = "amqp://localhost"\n',
        None,
        "sinks",
        ["no sinks defined"],
    ),
    ("sinks-not-a-table", "sinks = 5 #<\n", None, "sinks", ["expected tables [sinks.NAME]"]),
    (
        "bad-sink-name",
        '[sinks.Errors] #<\ntype = "console"\nmatch = "*.err"\n',
        "Errors",
        None,
        ["bad sink name", "a-z 0-9 _ -", "logrouter.NAME"],
    ),
    (
        "reserved-sink-name",
        '[sinks.rejected] #<\ntype = "console"\nmatch = "*.err"\n',
        "rejected",
        None,
        ["reserved", "logrouter.rejected"],
    ),
    (
        "unknown-format-placeholder",
        FILE_SINK + 'format = "{ts} {message}" #<\n',
        "errors",
        "format",
        ["{message}", "allowed:", "{msg}"],
    ),
    (
        "broken-format-braces",
        '[sinks.a]\ntype = "console"\nmatch = "*.err"\nformat = "{ts" #<\n',
        "a",
        "format",
        ["bad format", "literal brace"],
    ),
    (
        "bad-file-mode",
        FILE_SINK + 'file_mode = "rw-r-----" #<\n',
        "errors",
        "file_mode",
        ["not an octal mode", '"0640"'],
    ),
    (
        "file-mode-not-writable",
        FILE_SINK + 'file_mode = "0444" #<\n',
        "errors",
        "file_mode",
        ["owner needs w"],
    ),
    (
        "bad-rotate-interval",
        FILE_SINK + 'rotate_interval = "weekly" #<\n',
        "errors",
        "rotate_interval",
        ["'weekly'", "allowed: none, hour, day"],
    ),
    (
        "archive-rotate-interval-none",
        '[sinks.a]\ntype = "archive"\nmatch = "#"\ndir = "/x"\nrotate_interval = "none" #<\n',
        "a",
        "rotate_interval",
        ["allowed: hour, day"],
    ),
    (
        "quorum-bad-delivery-limit",
        FILE_SINK + 'queue_type = "quorum"\ndelivery_limit = 0 #<\n',
        "errors",
        "delivery_limit",
        ["allowed: 1..1000"],
    ),
    (
        "delivery-limit-on-classic-queue",
        FILE_SINK + "delivery_limit = 3 #<\n",
        "errors",
        "delivery_limit",
        ["quorum queues only"],
    ),
    (
        "bad-queue-type",
        FILE_SINK + 'queue_type = "stream" #<\n',
        "errors",
        "queue_type",
        ["allowed: classic, quorum"],
    ),
    (
        "bad-fsync",
        FILE_SINK + 'fsync = "always" #<\n',
        "errors",
        "fsync",
        ["allowed: batch, interval, never"],
    ),
    (
        "heartbeat-out-of-range",
        "[broker]\nheartbeat = 0 #<\n" + FILE_SINK,
        None,
        "broker.heartbeat",
        ["allowed: 1..300"],
    ),
    (
        "reconnect-max-out-of-range",
        "[broker]\nreconnect_max = 0.1 #<\n" + FILE_SINK,
        None,
        "broker.reconnect_max",
        ["allowed: 0.5..3600 seconds"],
    ),
    (
        "reserved-exchange-name",
        '[broker]\nexchange = "amq.topic" #<\n' + FILE_SINK,
        None,
        "broker.exchange",
        ["not starting with 'amq.'"],
    ),
    (
        "sink-not-a-table",
        "[sinks]\na = 5 #<\n",
        "a",
        None,
        ["expected a table [sinks.a]", "got an integer"],
    ),
    (
        "archive-missing-dir",
        '[sinks.a] #<\ntype = "archive"\nmatch = "#"\n',
        "a",
        "dir",
        ["missing", "dir ="],
    ),
    (
        "archive-bad-compression",
        '[sinks.a]\ntype = "archive"\nmatch = "#"\ndir = "/x"\ncompression = "zstd" #<\n',
        "a",
        "compression",
        ["'zstd'", "allowed: gzip"],
    ),
    (
        "bad-size-string",
        FILE_SINK + 'rotate_bytes = "10 parsecs" #<\n',
        "errors",
        "rotate_bytes",
        ["not a size", '"10MiB"'],
    ),
    (
        "size-too-small",
        FILE_SINK + "rotate_bytes = 10 #<\n",
        "errors",
        "rotate_bytes",
        ["0 = off, or 1KiB..1TiB"],
    ),
    (
        "inline-sink-table-bad-type",
        '[sinks]\na = { type = "pipe", match = "*.err" } #<\n',
        "a",
        "type",
        ["'pipe'", "allowed: file, console, archive"],
    ),
]


@pytest.mark.parametrize(
    ("text", "sink", "key", "says"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_config_names_line_sink_key_and_what_is_allowed(
    text: str, sink: str | None, key: str | None, says: list[str]
) -> None:
    """A broken config raises ConfigError whose issue points at the line, sink and key."""
    issues = issues_of(text)
    assert len(issues) == 1, [str(i) for i in issues]
    issue = issues[0]
    assert issue.file == CONFIG_FILE
    assert (issue.line, issue.sink, issue.key) == (marked_line(text), sink, key), str(issue)
    for words in says:
        assert words in issue.message, str(issue)
    rendered = str(issue)
    assert rendered.startswith(CONFIG_FILE + (f":{issue.line}" if issue.line else "") + ": ")
    if sink:
        assert f"sinks.{sink}" in rendered


def test_issue_renders_file_line_key_message() -> None:
    """str(issue) is 'file:line: sinks.NAME.KEY: message'."""
    text = '[sinks.errors]\ntype = "file"\nmatch = "*.eror"\npath = "/x/y.log"\n'
    (issue,) = issues_of(text)
    assert str(issue).startswith("/etc/lr/routing.toml:3: sinks.errors.match: unknown severity")


def test_every_issue_is_reported_at_once() -> None:
    """Several problems in several sinks are all reported together, in line order."""
    text = (
        '[broker]\nurl = "ftp://x"\n'
        '[sinks.a]\ntype = "file"\nmatch = "*.eror"\n'
        '[sinks.b]\ntype = "console"\nmatch = "*.err"\nstream = "tty"\n'
    )
    issues = issues_of(text)
    assert [(i.line, i.sink, i.key) for i in issues] == [
        (2, None, "broker.url"),
        (3, "a", "path"),
        (5, "a", "match"),
        (9, "b", "stream"),
    ]


def test_bad_logrouter_url_from_environment() -> None:
    """A bad $LOGROUTER_URL is a config error naming the variable."""
    (issue,) = issues_of(FILE_SINK, env={"LOGROUTER_URL": "amqp://u:secret@"})
    assert issue.key == "LOGROUTER_URL" and issue.line is None
    assert "no host" in issue.message
    assert "secret" not in str(issue)


def test_bad_url_message_hides_the_password() -> None:
    """The password of a bad broker URL never appears in the error."""
    for url in ("amqp://user:hunter2@h:99999/", "http://user:hunter2@h/"):
        issues = issues_of(f'[broker]\nurl = "{url}"\n' + FILE_SINK)
        assert "hunter2" not in "\n".join(str(i) for i in issues)
        assert "user:***@h" in issues[0].message


def test_missing_file(tmp_path: Path) -> None:
    """A config file that does not exist is a ConfigError naming the path."""
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, env={})
    assert str(missing) in str(info.value)
    assert "No such file" in str(info.value)


def test_not_utf8(tmp_path: Path) -> None:
    """A binary file is reported as not a TOML file, with the line of the bad byte."""
    path = tmp_path / "bin.toml"
    path.write_bytes(b"[sinks.a]\n\xff\xfe\x00garbage")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    (issue,) = info.value.issues
    assert issue.line == 2 and "not UTF-8" in issue.message


# --- good configs ---------------------------------------------------------------------------


def test_defaults() -> None:
    """A minimal config gets every documented default."""
    config = parse_config(FILE_SINK, CONFIG_FILE, env={})
    assert config.broker.urls == ("amqp://guest:guest@localhost:5672/%2F",)
    assert config.broker.exchange == "logs" and config.broker.heartbeat == 10
    assert config.broker.reconnect_max == 30.0
    sink = config.sinks["errors"]
    assert (sink.name, sink.type, sink.match, sink.queue) == (
        "errors",
        "file",
        "*.err",
        "logrouter.errors",
    )
    assert sink.selector.bindings == ("*.alert", "*.crit", "*.emerg", "*.err")
    assert (sink.queue_type, sink.delivery_limit, sink.prefetch) == ("classic", 5, 200)
    assert (sink.batch_size, sink.batch_interval) == (500, 0.2)
    assert (sink.fsync, sink.fsync_interval, sink.dedup_window) == ("batch", 1.0, 100_000)
    assert sink.options == FileOptions(
        path="/var/log/lr/{facility}.log",
        base_dir=Path("/var/log/lr"),
        format="{ts} {host} {app}[{pid}] {facility}.{severity} {logger}: {msg}",
        rotate_bytes=0,
        rotate_interval=None,
        keep=7,
        max_open_files=64,
        file_mode=0o640,
    )


def test_a_sender_placeholder_is_valid_in_path_and_format() -> None:
    """{sender} (the broker-validated login) is a placeholder of file paths and of line
    formats; a key of a record's fields ({request_id}) is not one."""
    text = (
        '[sinks.apps]\ntype = "file"\nmatch = "*.*"\n'
        'path = "/var/log/apps/{sender}/{app}.log"\nformat = "{ts} {sender} {app}: {msg}"\n'
    )
    options = parse_config(text, CONFIG_FILE, env={}).sinks["apps"].options
    assert isinstance(options, FileOptions)
    assert (options.path, options.format) == (
        "/var/log/apps/{sender}/{app}.log",
        "{ts} {sender} {app}: {msg}",
    )
    with pytest.raises(ConfigError, match=r"\{request_id\}"):
        parse_config(FILE_SINK + 'format = "{ts} {request_id} {msg}"\n', CONFIG_FILE, env={})


def test_console_and_archive_defaults() -> None:
    """Console and archive sinks get their documented defaults."""
    text = (
        '[sinks.c]\ntype = "console"\nmatch = "*.=info"\n'
        '[sinks.z]\ntype = "archive"\nmatch = "*.*"\ndir = "/var/lib/lr"\n'
    )
    config = parse_config(text, CONFIG_FILE, env={})
    console = config.sinks["c"].options
    assert isinstance(console, ConsoleOptions)
    assert (console.stream, console.color) == ("stdout", "auto")
    assert "{msg}" in console.format
    assert config.sinks["z"].options == ArchiveOptions(
        dir=Path("/var/lib/lr"),
        compression="gzip",
        compresslevel=6,
        rotate_bytes=64 * 1024 * 1024,
        rotate_interval="hour",
    )


def test_every_option_set() -> None:
    """Explicit values of every key are taken as written (sizes, modes, quorum)."""
    text = """
[broker]
url = "amqp://a:b@h1:5672/%2F amqps://a:b@h2/%2F"
exchange = "applogs"
heartbeat = 15
reconnect_max = 2

[sinks.errors]
type = "file"
match = "*.err;mail.none"
path = "/srv/log/%Y/%m/{host}-{app}.log"
format = "{ts} {msg} {fields}"
rotate_bytes = "100MiB"
rotate_interval = "day"
keep = 0
max_open_files = 8
file_mode = 0o600
queue_type = "quorum"
delivery_limit = 3
prefetch = 300
batch_size = 100
batch_interval = 0.5
fsync = "interval"
fsync_interval = 2
dedup_window = 0
"""
    config = parse_config(text, CONFIG_FILE, env={})
    assert config.broker.urls == ("amqp://a:b@h1:5672/%2F", "amqps://a:b@h2/%2F")
    assert (config.broker.exchange, config.broker.heartbeat) == ("applogs", 15)
    assert config.broker.reconnect_max == 2.0
    sink = config.sinks["errors"]
    assert not sink.selector.exact and not sink.selector.matches("mail", "err")
    assert (sink.queue_type, sink.delivery_limit, sink.prefetch, sink.batch_size) == (
        "quorum",
        3,
        300,
        100,
    )
    assert (sink.batch_interval, sink.fsync, sink.fsync_interval, sink.dedup_window) == (
        0.5,
        "interval",
        2.0,
        0,
    )
    options = sink.options
    assert isinstance(options, FileOptions)
    assert options.base_dir == Path("/srv/log")
    assert (options.rotate_bytes, options.rotate_interval, options.keep) == (
        100 * 1024 * 1024,
        "day",
        0,
    )
    assert (options.max_open_files, options.file_mode) == (8, 0o600)


def test_logrouter_url_overrides_config() -> None:
    """$LOGROUTER_URL replaces [broker].url (several URLs allowed)."""
    text = '[broker]\nurl = "amqp://file-host/%2F"\n' + FILE_SINK
    env = {"LOGROUTER_URL": "amqp://env1/%2F amqp://env2/%2F"}
    config = parse_config(text, CONFIG_FILE, env=env)
    assert config.broker.urls == ("amqp://env1/%2F", "amqp://env2/%2F")


def test_relative_paths_resolve_against_config_dir(tmp_path: Path) -> None:
    """Relative file paths and archive dirs resolve against the config file's directory."""
    path = tmp_path / "conf" / "routing.toml"
    path.parent.mkdir()
    path.write_text(
        '[sinks.f]\ntype = "file"\nmatch = "*.err"\npath = "logs/{facility}/%Y-%m-%d.log"\n'
        '[sinks.a]\ntype = "archive"\nmatch = "#"\ndir = "./archive"\n'
    )
    config = load_config(path, env={})
    options = config.sinks["f"].options
    assert isinstance(options, FileOptions)
    assert options.path == f"{path.parent}/logs/{{facility}}/%Y-%m-%d.log"
    assert options.base_dir == path.parent / "logs"
    archive = config.sinks["a"].options
    assert isinstance(archive, ArchiveOptions) and archive.dir == path.parent / "archive"


def test_base_dir_stops_before_first_placeholder() -> None:
    """base_dir is the fixed directory part before the first placeholder or time code."""
    text = '[sinks.f]\ntype = "file"\nmatch = "*.err"\npath = "/var/log/lr-{app}/x.log"\n'
    options = parse_config(text, CONFIG_FILE, env={}).sinks["f"].options
    assert isinstance(options, FileOptions) and options.base_dir == Path("/var/log")


def test_digest_is_sha256_of_file_bytes(tmp_path: Path) -> None:
    """digest is the sha256 of the file bytes and changes when the file changes."""
    path = tmp_path / "routing.toml"
    path.write_text(FILE_SINK)
    first = load_config(path, env={})
    assert first.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert first.path == path
    path.write_text(FILE_SINK + "prefetch = 100\n")
    assert load_config(path, env={}).digest != first.digest


def test_shipped_default_config_loads() -> None:
    """config/routing.toml loads: errors file, info console, everything archive."""
    config = load_config(ROOT / "config" / "routing.toml", env={})
    assert list(config.sinks) == ["errors", "console", "archive"]
    errors, console, archive = config.sinks.values()
    assert errors.type == "file" and errors.match == "*.err"
    assert isinstance(errors.options, FileOptions)
    assert errors.options.path == "/var/log/logrouter/{facility}.err.log"
    assert console.type == "console" and console.selector.bindings == ("*.info",)
    assert archive.type == "archive" and archive.selector.bindings == ("#",)
    assert isinstance(archive.options, ArchiveOptions)
    assert archive.options.dir == Path("/var/lib/logrouter/archive")
    assert config.broker.exchange == "logs"


def test_line_found_after_multiline_strings_and_comments() -> None:
    """Lines are found past multi-line strings, comments with '=' and quoted table names."""
    text = (
        "# a comment with key = value\n"
        '[sinks."errors"]\n'
        'type = "file"\n'
        'format = """{ts}\n'
        'prefetch = "not a key, inside the string"\n'
        '{msg}"""\n'
        'match = "*.err"   # trailing = comment\n'
        'path = "/var/log/x.log"\n'
        'prefetch = "200"\n'
    )
    (issue,) = issues_of(text)
    assert (issue.line, issue.sink, issue.key) == (9, "errors", "prefetch")


def test_dotted_keys_inside_sinks_table_point_at_their_line() -> None:
    """A dotted key like 'errors.match = ...' under [sinks] is located on its own line."""
    text = '[sinks]\nerrors.type = "file"\nerrors.path = "/x/y.log"\nerrors.match = "*.bogus"\n'
    (issue,) = issues_of(text)
    assert (issue.line, issue.sink, issue.key) == (4, "errors", "match")


@pytest.mark.parametrize(
    "name", ["facility", "severity", "host", "app", "level", "logger", "instance"]
)
def test_path_accepts_every_placeholder_the_file_sink_fills(name: str) -> None:
    """A file path may use each placeholder the file sink fills ({level} and {logger} too)."""
    text = f'[sinks.f]\ntype = "file"\nmatch = "*.err"\npath = "/var/log/lr/{{{name}}}.log"\n'
    options = parse_config(text, CONFIG_FILE, env={}).sinks["f"].options
    assert isinstance(options, FileOptions) and options.path == f"/var/log/lr/{{{name}}}.log"


def test_fast_deliveries_defaults_on_and_takes_a_boolean() -> None:
    """fast_deliveries is on by default, off when set false, and anything but a boolean
    is refused with the key named."""
    assert parse_config(FILE_SINK, CONFIG_FILE, env={}).sinks["errors"].fast_deliveries
    off = parse_config(FILE_SINK + "fast_deliveries = false\n", CONFIG_FILE, env={})
    assert off.sinks["errors"].fast_deliveries is False
    with pytest.raises(ConfigError, match="fast_deliveries"):
        parse_config(FILE_SINK + 'fast_deliveries = "no"\n', CONFIG_FILE, env={})


def test_hostile_input_limits_have_defaults_and_can_be_set() -> None:
    """max_files (file sinks) defaults to 1000 and max_record_bytes to 1 MiB; both take
    the values written (a size string for bytes)."""
    default = parse_config(FILE_SINK, CONFIG_FILE, env={}).sinks["errors"]
    assert default.max_record_bytes == 1024 * 1024
    assert isinstance(default.options, FileOptions)
    assert default.options.max_files == 1000
    text = FILE_SINK + 'max_files = 50\nmax_record_bytes = "64KiB"\n'
    sink = parse_config(text, CONFIG_FILE, env={}).sinks["errors"]
    assert isinstance(sink.options, FileOptions)
    assert (sink.options.max_files, sink.max_record_bytes) == (50, 64 * 1024)
