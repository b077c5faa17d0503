"""Rendering records as text: file lines and console columns (pure)."""

from __future__ import annotations

import pytest

from logrouter.render import DEFAULT_LINE_FORMAT, compile_format, render_console, render_line

RECORD = {
    "ts": "2024-05-01T10:11:12.345678Z",
    "host": "web1",
    "app": "billing",
    "pid": 4242,
    "thread": "MainThread",
    "logger": "billing.api",
    "facility": "auth",
    "severity": "err",
    "level": "ERROR",
    "msg": "login failed",
    "src": {"file": "/srv/api.py", "line": 17, "func": "login"},
    "fields": {"user": "bob", "tries": 3},
    "id": "abc",
}


def test_default_line_has_time_host_app_pid_key_logger_msg() -> None:
    """The default line is: ts host app[pid] facility.severity logger: msg."""
    assert render_line(RECORD) == (
        "2024-05-01T10:11:12.345678Z web1 billing[4242] auth.err billing.api: login failed"
    )
    assert render_line(RECORD, DEFAULT_LINE_FORMAT) == render_line(RECORD)


def test_missing_keys_render_as_dash() -> None:
    """A foreign record with only msg renders every other placeholder as '-'."""
    assert render_line({"msg": "hello"}) == "- - -[-] -.- -: hello"


def test_custom_format_src_fields_and_specs() -> None:
    """Placeholders for src parts, thread, level and field names work; format specs pad."""
    fmt = "{severity:<7}|{level}|{thread}|{file}:{line} {func}|{user}|{tries}|{nope}|{fields}"
    assert render_line(RECORD, fmt) == (
        "err    |ERROR|MainThread|/srv/api.py:17 login|bob|3|-|user=bob tries=3"
    )


def test_traceback_lines_are_indented() -> None:
    """exc then stack follow the line, each line indented by four spaces."""
    record = {**RECORD, "exc": "Traceback (most recent call last):\n  x\nValueError: no\n"}
    record["stack"] = "Stack (most recent call last):\n  y"
    lines = render_line(record, "{msg}").split("\n")
    assert lines == [
        "login failed",
        "    Traceback (most recent call last):",
        "      x",
        "    ValueError: no",
        "    Stack (most recent call last):",
        "      y",
    ]


def test_newlines_in_msg_cannot_fake_a_record() -> None:
    """Continuation lines of msg are indented; CR, ESC and Unicode separators are escaped."""
    fake = "2024-05-01T10:11:12.345678Z web1 evil[1] auth.crit x: forged"
    record = {**RECORD, "msg": f"first\n{fake}\r\n{fake}\rX\x1b[31m\u2028Y\x00"}
    text = render_line(record)
    lines = text.splitlines()
    assert lines[0].endswith("first")
    assert all(line.startswith("    ") for line in lines[1:])
    assert len(lines) == 3
    assert "\\r" in text and "\\x1b[31m" in text and "\\u2028" in text and "\\x00" in text


def test_newlines_in_other_fields_are_escaped() -> None:
    """Line breaks in host/logger/fields never break the line."""
    record = {**RECORD, "host": "a\nb", "logger": "l\r\nm", "fields": {"k": "v\nw"}}
    text = render_line(record, "{host} {logger} {k} {fields}")
    assert text == "a\\nb l\\r\\nm v\\nw k=v\\nw"


@pytest.mark.parametrize("fmt", ["{msg.__class__}", "{src[0]}", "{msg!r}", "{msg", "{pid:d}"])
def test_bad_formats_are_refused(fmt: str) -> None:
    """Attribute/index access, conversions, broken braces, numeric specs are ValueErrors."""
    with pytest.raises(ValueError):
        compile_format(fmt)


def test_console_columns_plain() -> None:
    """Console: HH:MM:SS.mmm, severity padded, host, facility, logger, msg; no ANSI when off."""
    text = render_console(RECORD, color=False)
    assert text.startswith(
        "10:11:12.345 err     web1         auth     billing.api      login failed"
    )
    assert "\x1b" not in text
    info = render_console({**RECORD, "severity": "info", "msg": "ok"}, color=False)
    assert info.index("ok") == text.index("login failed")


@pytest.mark.parametrize(
    ("severity", "code"),
    [
        ("emerg", "\x1b[1;31m"),
        ("crit", "\x1b[1;31m"),
        ("err", "\x1b[31m"),
        ("warning", "\x1b[33m"),
        ("notice", "\x1b[36m"),
        ("debug", "\x1b[2m"),
    ],
)
def test_console_colour_by_severity(severity: str, code: str) -> None:
    """Red for err and worse, yellow warning, cyan notice, dim debug, reset at the end."""
    text = render_console({**RECORD, "severity": severity}, color=True)
    assert code in text
    assert text.endswith("\x1b[0m")


def test_console_shows_the_host_and_the_app_of_a_record_without_logger() -> None:
    """A syslog daemon's record (no logger) shows its host and its program (app)."""
    sshd = {"ts": "2024-05-01T10:11:12.345678Z", "host": "db-2", "app": "sshd", "pid": 99,
            "facility": "auth", "severity": "info", "msg": "Accepted publickey"}  # fmt: skip
    assert render_console(sshd, color=False) == (
        "10:11:12.345 info    db-2         auth     sshd             Accepted publickey"
    )


def test_console_info_has_no_colour() -> None:
    """info stays in the terminal's default colour."""
    assert "\x1b" not in render_console({**RECORD, "severity": "info"}, color=True)


def test_console_escapes_terminal_sequences_in_msg() -> None:
    """An ESC inside a message is shown escaped, never sent to the terminal."""
    text = render_console({**RECORD, "severity": "info", "msg": "\x1b]0;pwned\x07"}, color=True)
    assert "\x1b" not in text and "\\x1b]0;pwned\\x07" in text
