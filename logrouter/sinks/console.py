"""The console output: records rendered for a human on stdout (or stderr).

Aligned, coloured columns (``render.render_console``) when colour is on;
plain text otherwise. ``color = "auto"`` means: the stream is a terminal,
``NO_COLOR`` is unset (or empty) and ``TERM`` is not ``dumb``. A ``format``
other than the default replaces the columns with a line format
(``render.render_line``), coloured as a whole by severity.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TextIO

from logrouter.render import (
    DEFAULT_CONSOLE_FORMAT,
    RESET,
    SEVERITY_COLORS,
    compile_format,
    render_console,
    use_color,
)
from logrouter.sinks.base import Record, Refused, WriteError

if TYPE_CHECKING:
    from logrouter.config import ConsoleOptions

#: Formats that mean "the aligned columns of render_console" (the config's default included).
COLUMNS_FORMATS = frozenset({"", "columns", "console", DEFAULT_CONSOLE_FORMAT})


def want_color(setting: str, stream: TextIO, env: Mapping[str, str] | None = None) -> bool:
    """Whether to colour ``stream``: ``always``, ``never``, or ``auto`` (TTY and no NO_COLOR)."""
    if setting == "always":
        return True
    if setting == "never":
        return False
    return use_color(stream, env)


class ConsoleWriter:
    """Renders a batch in ``write`` and puts it on the stream in ``flush``."""

    def __init__(
        self,
        options: ConsoleOptions,
        *,
        stream: TextIO | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if stream is None:
            stream = sys.stderr if options.stream == "stderr" else sys.stdout
        self.stream = stream
        self.name = getattr(stream, "name", options.stream)
        self.color = want_color(options.color, stream, env)
        fmt = options.format or ""
        self._format = None if fmt in COLUMNS_FORMATS else compile_format(fmt)
        self._pending: list[str] = []

    def render(self, record: Record) -> str:
        """One record as the console shows it (no trailing newline)."""
        if self._format is None:
            return render_console(record, self.color)
        text = self._format.render(record)
        code = SEVERITY_COLORS.get(str(record.get("severity")), "") if self.color else ""
        return f"{code}{text}{RESET}" if code else text

    def write(self, records: Sequence[Record]) -> list[Refused]:
        """Render ``records``; they reach the stream in ``flush``; none is refused."""
        render = self.render
        for record in records:
            self._pending.append(render(record))
            self._pending.append("\n")
        return []

    def flush(self, fsync: bool) -> None:
        """Write what is pending (one write) and flush the stream; ``fsync`` is ignored."""
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        try:
            buffer = getattr(self.stream, "buffer", None)
            if buffer is not None:
                self.stream.flush()
                encoding = getattr(self.stream, "encoding", None) or "utf-8"
                buffer.write(text.encode(encoding, "replace"))
                buffer.flush()
            else:
                self.stream.write(text)
                self.stream.flush()
        except OSError as exc:
            raise WriteError(str(self.name), exc) from exc

    def checkpoint(self) -> dict[str, int]:
        """No files: ``{}``."""
        return {}

    def rollback(self, checkpoint: dict[str, int]) -> None:
        """Nothing to roll back on a terminal."""

    def reopen(self) -> None:
        """Nothing to reopen."""

    def close(self) -> None:
        """Write what is pending; the stream itself stays open (it is not ours)."""
        with contextlib.suppress(OSError):
            self.flush(False)
