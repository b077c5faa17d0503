"""The writer interface every sink output implements, and the dispatcher.

The consumer loop (``logrouter.sinks.consumer``) calls a writer like this:
``write(batch)`` then ``flush(fsync)`` then ``checkpoint()`` (for its crash
journal), and only then acks. Any ``OSError`` from ``write`` or ``flush`` means
"nothing of this batch is safe": the consumer does not ack, backs off, and may
``rollback`` to the last checkpoint before retrying.
"""

from __future__ import annotations

import errno as errno_mod
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from logrouter.errors import LogrouterError

#: A decoded record: ``wire.decode()`` output (ts, host, app, pid, logger,
#: facility, severity, level, msg, exc, stack, src, fields, id ...). Foreign
#: records may lack most keys.
Record = dict[str, Any]
#: ``(index in the batch, reason)`` of a record a writer refused to write (its target
#: is not a file the sink may write); the consumer rejects it with that reason
Refused = tuple[int, str]


def run_inline(step: Callable[[], None]) -> None:
    """Run ``step`` now, in this thread: the default of the hooks that may hand a step
    to another thread (a writer's ``offload``, the output's ``durable``)."""
    step()


class Writer(Protocol):
    """One output of a sink (file, console, archive)."""

    def write(self, records: Sequence[Record]) -> list[Refused]:
        """Append a batch but the refused records (returned); raise OSError on failure
        (then nothing is acked)."""

    def flush(self, fsync: bool) -> None:
        """Push buffered bytes to the kernel; fsync when asked; raise OSError."""

    def checkpoint(self) -> dict[str, int]:
        """``{absolute path: size}`` of every file touched since the last checkpoint.

        Call after ``flush``. ``{}`` for writers without files (console).
        """

    def rollback(self, checkpoint: dict[str, int]) -> None:
        """Truncate those files back to the given sizes (unacked bytes past them)."""

    def reopen(self) -> None:
        """SIGHUP/logrotate: close files; they are reopened lazily on the next write."""

    def close(self) -> None:
        """Flush what is buffered (no fsync) and close everything."""


class WriteError(LogrouterError, OSError):
    """An OSError whose message names the path and the errno."""

    def __init__(self, path: str | os.PathLike[str], cause: OSError, action: str = "write") -> None:
        code = cause.errno if cause.errno is not None else errno_mod.EIO
        name = errno_mod.errorcode.get(code, str(code))
        reason = cause.strerror or str(cause)
        super().__init__(code, f"cannot {action} {os.fspath(path)}: {reason} ({name})")
        self.filename = os.fspath(path)
        self.cause = cause

    def __str__(self) -> str:
        return str(self.strerror)


#: ``intent(path, size)``: called by a writer before the first write to ``path``
#: since its last checkpoint, with the size the file has then (``ABSENT`` when the
#: writer just created it). The consumer journals it, so a crash before the batch
#: is committed can cut the file back even when no checkpoint knows it yet.
IntentHook = Callable[[str, int], None]
ABSENT = -1
