"""Rendering records as text: file lines and console columns (pure)."""

from __future__ import annotations

import pytest

from logrouter.render import (
    DEFAULT_LINE_FORMAT,
    RESET,
    SEVERITY_COLORS,
    compile_format,
    render_console,
    render_line,
    render_output,
    use_color,
)

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


def test_colour_only_on_a_terminal_without_no_color_or_dumb_term() -> None:
    """Colour needs a TTY, an unset/empty $NO_COLOR and a $TERM other than dumb."""

    class Tty:
        def isatty(self) -> bool:
            return True

    assert use_color(Tty(), {"TERM": "xterm"}) is True
    assert use_color(Tty(), {"NO_COLOR": ""}) is True
    assert use_color(Tty(), {"NO_COLOR": "1"}) is False
    assert use_color(Tty(), {"TERM": "dumb"}) is False
    assert use_color(object(), {}) is False


HOSTILE = "a\x1b[2Jb\x9b31mc\x85d\u202eevil\u2066e\x7ff\u200fg\x00h\ti"


def test_every_control_and_bidi_character_is_escaped_visibly() -> None:
    """ESC, C1 (CSI, NEL), DEL, NUL, bidi overrides/isolates/marks: escaped; TAB kept."""
    from logrouter.render import escape

    assert escape(HOSTILE) == (
        "a\\x1b[2Jb\\x9b31mc\\x85d\\u202eevil\\u2066e\\x7ff\\u200fg\\x00h\ti"
    )


@pytest.mark.parametrize("key", ["msg", "host", "app", "logger", "facility"])
def test_file_and_console_lines_never_hold_a_raw_control(key: str) -> None:
    """Whatever field carries the hostile text, the rendered line holds no raw control/bidi."""
    record = {"ts": "2026-01-01T00:00:00Z", "facility": "auth", "severity": "err", "msg": "m"}
    record[key] = HOSTILE
    raw = "\x1b\x9b\x85\u202e\u2066\x7f\u200f\x00"
    line = render_line(record)
    assert not set(raw) & set(line), line
    # colour codes are ours: with them removed, no ESC (or other control) is left
    console = render_console(record, color=True)
    for code in (*SEVERITY_COLORS.values(), RESET):
        console = console.replace(code, "") if code else console
    assert not set(raw) & set(console), console


def test_json_line_escapes_what_a_terminal_would_act_on() -> None:
    """tail --json: C1/bidi/DEL become \\uNNNN escapes; the line is still the same JSON."""
    import json

    from logrouter.render import json_line

    record = {"msg": HOSTILE, "fields": {"k\u202e": ["\x9b"]}}
    line = json_line(record)
    assert json.loads(line) == record
    assert all(ord(c) >= 0x20 and not 0x7F <= ord(c) <= 0x9F for c in line)
    assert "\u202e" not in line and "\u2066" not in line and "\u200f" not in line


def test_too_deep_values_render_without_an_exception() -> None:
    """A field nested past the encoder's limit renders as a marker, never an exception."""
    from logrouter.render import TOO_DEEP, json_line

    deep: list[object] = []
    for _ in range(5000):
        deep = [deep]
    record = {"ts": "t", "facility": "a", "severity": "info", "msg": "m", "fields": {"d": deep}}
    assert TOO_DEEP in render_line(record, "{msg} {fields}")
    assert json_line(record) == f'"{TOO_DEEP}"'


MANY_FORMATS = [
    DEFAULT_LINE_FORMAT,
    "{severity:<7}|{pid:>6}|{file}:{line}|{fields}|{user}|{msg}",
    "{msg}",
    "no placeholder",
]


def _variants() -> list[dict[str, object]]:
    """Records whose values take every way the line format has: text, integers, a bool,
    None, empty text, missing keys, nested values, controls, non-ASCII, a traceback."""
    base = dict(RECORD)
    return [
        base,
        {**base, "pid": True},
        {**base, "pid": "77", "host": ""},
        {**base, "app": None, "logger": 3.5},
        {key: value for key, value in base.items() if key not in ("host", "src")},
        {**base, "msg": "caf\u00e9 \u2028 next"},
        {**base, "msg": "tab\tand\x1b[31m red"},
        {**base, "msg": "two\nlines", "exc": "Traceback\n  boom"},
        {**base, "fields": {"user": ["a", 1], "tries": None}},
        {**base, "pid": 10**30},
    ]


@pytest.mark.parametrize("fmt", MANY_FORMATS)
def test_render_many_gives_each_records_render(fmt: str) -> None:
    """A batch rendered at once (a column at a time, one control check) gives exactly
    the lines of rendering each record alone, for any mix of values, and for batches of
    clean records only."""
    line_format = compile_format(fmt)
    variants = _variants()
    for batch in ([variants[0]] * 5, variants, variants[:2], variants[2:4], variants[5:7]):
        assert line_format.render_many(batch) == [line_format.render(r) for r in batch]
    assert line_format.render_many([]) == []


def test_control_check_agrees_with_the_escape_pattern() -> None:
    """has_control says what the escape pattern finds, for every character below
    U+0100 and the bidi and separator characters, alone and inside ASCII text."""
    from logrouter.render import _CONTROL, has_control

    for code in [*range(0x100), 0x061C, 0x200E, 0x2028, 0x2029, 0x202A, 0x2066, 0x20AC]:
        for text in (chr(code), f"plain text {chr(code)} more"):
            assert has_control(text) == (_CONTROL.search(text) is not None), hex(code)


def test_json_outputs_of_a_record_too_deep_to_encode() -> None:
    """A record nested deeper than json.dumps goes (any sender can archive one): -o jsonl
    prints its archived line when there is one, else a stub naming its id; it never
    raises (query used to stop there with a traceback)."""
    nested: list[object] = []
    for _ in range(5000):
        nested = [nested]
    record = {"id": "r1", "msg": "deep", "fields": {"x": nested}}
    line = b'{"id":"r1","msg":"deep"}\n'
    assert render_output(record, "jsonl", raw=line) == '{"id":"r1","msg":"deep"}'
    assert (
        render_output(record, "jsonl") == '{"id": "r1", "error": "record nested too deep to print"}'
    )
    assert render_output(record, "json") == '{"id":"r1","error":"record nested too deep to print"}'
