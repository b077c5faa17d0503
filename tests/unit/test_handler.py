"""handler: what handle() does before any I/O (no broker: nothing here is published)."""

from __future__ import annotations

import logging
from pathlib import Path

from logrouter.app.handler import RabbitHandler


def test_a_subclass_that_overrides_emit_sees_every_record(tmp_path: Path) -> None:
    """handle() inlines emit() for speed only when emit is RabbitHandler's own: a
    subclass's emit still gets each record (and filters still apply first)."""
    seen: list[str] = []

    class Recording(RabbitHandler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Recording(url="amqp://guest:guest@127.0.0.1:1/", exchange="x", spool=str(tmp_path))
    log = logging.getLogger("test.handler.subclass")
    log.propagate, log.handlers[:] = False, [handler]
    log.setLevel(logging.INFO)
    log.info("one %d", 1)
    handler.addFilter(lambda record: record.getMessage() != "two")
    log.info("two")
    log.info("three")
    assert seen == ["one 1", "three"]
    assert handler.stats["buffered"] == 0
    handler.close()
