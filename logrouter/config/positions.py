"""Where in the TOML text a key is: the line of every table header and ``key =`` line
(tomllib gives no positions for values), and the position of a TOML syntax error.

Python 3.14's ``TOMLDecodeError`` carries ``msg``/``lineno``/``colno`` and they are
used when present; 3.11-3.13 (measured: 3.11 has none of them) only put
"(at line N, column M)" at the end of the message, so that is parsed as the fallback.
"""

from __future__ import annotations

import re
import tomllib

from logrouter.config.model import ConfigIssue

_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_KEY_LINE = re.compile(rf"\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")
_HEADER_LINE = re.compile(rf"\s*(\[\[?)\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*\]")
_PART = re.compile(_KEY_PART)


def key_path(text: str) -> tuple[str, ...]:
    parts = []
    for raw in _PART.findall(text):
        if raw[0] in "\"'":
            parts.append(raw[1:-1])
        else:
            parts.append(raw)
    return tuple(parts)


class LineIndex:
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
                table = key_path(header.group(2))
                self.lines.setdefault(table, number)
                continue
            key = _KEY_LINE.match(line)
            if not key:
                continue
            path = table + key_path(key.group(1))
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


_TOML_POSITION = re.compile(r"^(.*?) \((?:at line (\d+), column (\d+)|at end of document)\)$")
_TOML_TABLE = re.compile(r"\('sinks', '([^']*)'")


def toml_position(exc: tomllib.TOMLDecodeError) -> tuple[str, int | None, int | None]:
    """(message without position, line, column) of a TOML syntax error."""
    lineno, colno = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    if isinstance(lineno, int) and isinstance(colno, int):  # Python >= 3.14
        return str(getattr(exc, "msg", exc)), lineno, colno
    text = str(exc)
    found = _TOML_POSITION.match(text)
    if not found:
        return text, None, None
    if found.group(2) is None:  # "at end of document"
        return found.group(1), None, None
    return found.group(1), int(found.group(2)), int(found.group(3))


def toml_issue(file: str, exc: tomllib.TOMLDecodeError, index: LineIndex) -> ConfigIssue:
    """The issue for a TOML syntax error: message, line and column, and for a duplicate
    table or key the sink and key it names (from ``index``)."""
    message, line, colno = toml_position(exc)
    column = f" at column {colno}" if colno is not None else ""
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
