"""The writer of each sink type (writers.py): an explicit map, no lazy imports."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from logrouter.config import parse_config
from logrouter.sinks.archive import ArchiveWriter
from logrouter.sinks.console import ConsoleWriter
from logrouter.sinks.file import FileWriter
from logrouter.sinks.writers import WRITERS, make_writer

CONFIG = """
[sinks.f]
type = "file"
match = "*.*"
path = "{dir}/{{facility}}.log"

[sinks.c]
type = "console"
match = "*.*"

[sinks.a]
type = "archive"
match = "*.*"
dir = "{dir}/archive"
"""


def test_each_sink_type_gets_its_writer(tmp_path: Path) -> None:
    """file, console and archive sinks of a config get a FileWriter, a ConsoleWriter and an
    ArchiveWriter; the map names exactly those three types."""
    config = parse_config(CONFIG.format(dir=tmp_path), tmp_path / "routing.toml", env={})
    kinds = {name: type(make_writer(sink, instance="h-0")) for name, sink in config.sinks.items()}
    assert kinds == {"f": FileWriter, "c": ConsoleWriter, "a": ArchiveWriter}
    assert sorted(WRITERS) == ["archive", "console", "file"]


def test_an_unknown_type_is_a_value_error_naming_it(tmp_path: Path) -> None:
    """A sink whose type has no writer raises ValueError naming the sink and the type."""
    config = parse_config(CONFIG.format(dir=tmp_path), tmp_path / "routing.toml", env={})
    odd = dataclasses.replace(config.sinks["c"], type="syslog")
    with pytest.raises(ValueError, match=r"'c'.*'syslog'"):
        make_writer(odd)
