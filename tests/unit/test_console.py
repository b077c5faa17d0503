"""The console writer: colour on a terminal, plain elsewhere, NO_COLOR, forced modes."""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any

import pytest

from logrouter.config import DEFAULT_CONSOLE_FORMAT, ConsoleOptions
from logrouter.render import render_console
from logrouter.sinks.console import ConsoleWriter

RECORD: dict[str, Any] = {
    "ts": "2024-05-01T10:11:12.345678Z",
    "host": "web1",
    "app": "billing",
    "pid": 7,
    "logger": "billing.api",
    "facility": "auth",
    "severity": "err",
    "msg": "login failed",
}


def opts(color: str = "auto", fmt: str = DEFAULT_CONSOLE_FORMAT) -> ConsoleOptions:
    """ConsoleOptions as the config gives them by default."""
    return ConsoleOptions(stream="stdout", color=color, format=fmt)


def through_pty(options: ConsoleOptions, env: dict[str, str]) -> str:
    """What the writer prints to a pseudo-terminal."""
    master, slave = os.openpty()
    try:
        with open(slave, "w", encoding="utf-8", closefd=False) as stream:
            writer = ConsoleWriter(options, stream=stream, env=env)
            writer.write([RECORD])
            writer.flush(False)
        return os.read(master, 65536).decode()
    finally:
        os.close(master)
        os.close(slave)


def test_tty_gets_colour() -> None:
    """color=auto on a terminal with NO_COLOR unset: ANSI colours."""
    out = through_pty(opts(), env={})
    assert "\x1b[31m" in out and "login failed" in out


def test_no_color_env_disables_colour_on_a_tty() -> None:
    """NO_COLOR=1 turns colour off even on a terminal."""
    out = through_pty(opts(), env={"NO_COLOR": "1"})
    assert "login failed" in out and "\x1b[" not in out


def test_never_disables_colour_on_a_tty() -> None:
    """color=never: plain even on a terminal."""
    assert "\x1b[" not in through_pty(opts("never"), env={})


def test_not_a_tty_is_plain_columns() -> None:
    """A pipe or file gets the plain aligned columns, one line per record."""
    stream = io.StringIO()
    writer = ConsoleWriter(opts(), stream=stream, env={})
    writer.write([RECORD, {**RECORD, "severity": "info", "msg": "ok"}])
    assert stream.getvalue() == ""  # nothing before flush
    writer.flush(False)
    assert stream.getvalue() == (
        render_console(RECORD, color=False)
        + "\n"
        + render_console({**RECORD, "severity": "info", "msg": "ok"}, color=False)
        + "\n"
    )
    assert writer.checkpoint() == {}


def test_always_forces_colour_on_a_pipe() -> None:
    """color=always colours even when the stream is not a terminal."""
    stream = io.StringIO()
    writer = ConsoleWriter(opts("always"), stream=stream, env={"NO_COLOR": "1"})
    writer.write([RECORD])
    writer.flush(False)
    assert stream.getvalue() == render_console(RECORD, color=True) + "\n"


def test_custom_format_is_used() -> None:
    """A format other than the default replaces the columns."""
    stream = io.StringIO()
    writer = ConsoleWriter(opts("never", "{severity}: {msg}"), stream=stream, env={})
    writer.write([RECORD])
    writer.close()
    assert stream.getvalue() == "err: login failed\n"


def test_stream_errors_are_oserrors() -> None:
    """A pipe whose reader is gone surfaces as OSError (the consumer then does not ack)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = open(write_end, "w", encoding="utf-8")  # noqa: SIM115
    try:
        writer = ConsoleWriter(opts("never"), stream=stream, env={})
        writer.write([RECORD])
        with pytest.raises(OSError):
            writer.flush(False)
    finally:
        with contextlib.suppress(OSError):
            stream.close()
