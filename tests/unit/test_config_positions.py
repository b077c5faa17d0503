"""Where a TOML syntax error is: line and column, from the exception or its message."""

from __future__ import annotations

import tomllib

import pytest

from logrouter.config import ConfigError, parse_config
from logrouter.config.positions import toml_position


def test_position_from_the_message_on_this_python() -> None:
    """Without lineno/colno attributes (3.11-3.13) the "(at line N, column M)" suffix is used."""
    with pytest.raises(tomllib.TOMLDecodeError) as caught:
        tomllib.loads('a = 1\nb = "x\n')
    message, line, column = toml_position(caught.value)
    assert (line, column) == (2, 7)
    assert "at line" not in message


def test_position_from_attributes_when_present() -> None:
    """A TOMLDecodeError with msg/lineno/colno (Python 3.14) is read from them."""
    exc = tomllib.TOMLDecodeError("Invalid value (at line 9, column 9)")
    exc.msg, exc.lineno, exc.colno = "Invalid value", 3, 5  # type: ignore[attr-defined]
    assert toml_position(exc) == ("Invalid value", 3, 5)


def test_syntax_error_issue_names_line_and_column() -> None:
    """A config that is not TOML is refused naming the file, line and column."""
    with pytest.raises(ConfigError) as caught:
        parse_config('[sinks.a]\ntype = "file\n', "routing.toml")
    (issue,) = caught.value.issues
    assert issue.line == 2
    assert str(issue).startswith("routing.toml:2: not valid TOML: ")
    assert "at column" in str(issue)
