"""Sink daemons: the consumer loop and the file, console and archive writers."""

from logrouter.sinks.base import Record, WriteError, Writer
from logrouter.sinks.writers import make_writer

__all__ = ["Record", "WriteError", "Writer", "make_writer"]
