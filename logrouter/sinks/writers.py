"""Which writer each sink ``type`` uses: an explicit map, imported by the consumer."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from logrouter.sinks.archive import ArchiveWriter
from logrouter.sinks.base import Writer
from logrouter.sinks.console import ConsoleWriter
from logrouter.sinks.file import FileWriter

if TYPE_CHECKING:
    from logrouter.config import SinkConfig

#: sink type -> ``factory(options, instance)``
WRITERS: dict[str, Callable[[Any, str], Writer]] = {
    "file": lambda options, instance: FileWriter(options, instance=instance),
    "console": lambda options, _instance: ConsoleWriter(options),
    "archive": lambda options, instance: ArchiveWriter(options, instance=instance),
}


def make_writer(sink: SinkConfig, *, instance: str = "") -> Writer:
    """The writer for ``sink`` (by ``sink.type``); raises ValueError for an unknown type.

    ``instance`` is a per-process id (e.g. ``host-slot``) used in file names so two
    processes never append to the same file.
    """
    factory = WRITERS.get(sink.type)
    if factory is None:
        raise ValueError(f"sink {sink.name!r}: unknown type {sink.type!r}")
    return factory(sink.options, instance)
