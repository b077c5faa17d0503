"""Level checks of the handler's own loggers that never wait for logging's module lock.

``Logger.isEnabledFor`` answers from a per-logger cache, and on a miss (after any
``setLevel`` anywhere cleared every cache) fills it under logging's module lock.
``logging.config.dictConfig`` holds that lock while it closes the old handlers, and
our ``close()`` waits for the I/O thread, whose pika calls ``LOGGER.debug`` all the
time: the I/O thread waited for the lock, the app for the I/O thread, until every
timeout ran out (13.5 s, then the records sat in a spool nobody read; gunicorn's
SIGHUP reload does exactly this).

``unlock`` gives the loggers of the handler's stack (pika, logrouter) a cache that
fills itself: under the lock when it is free, without storing when it is not (the
answer computed as logging computes it). Other loggers are left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

#: logging's module lock (CPython 3.11-3.14); None: a logging without it, nothing to do
_module_lock = getattr(logging, "_lock", None)


class LevelCache(dict[int, bool]):
    """``Logger._cache`` that answers a miss itself (see the module docstring)."""

    __slots__ = ("logger",)

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self.logger = logger

    def __missing__(self, level: int) -> bool:
        logger = self.logger
        assert _module_lock is not None  # unlock() installs none without it
        if not _module_lock.acquire(blocking=False):  # held: answer, store nothing
            return logger.manager.disable < level and level >= logger.getEffectiveLevel()
        try:
            enabled = logger.manager.disable < level and level >= logger.getEffectiveLevel()
            self[level] = enabled
            return enabled
        finally:
            _module_lock.release()


def unlock(prefixes: Iterable[str]) -> None:
    """Give every existing logger named ``prefix`` or ``prefix.*`` a ``LevelCache``."""
    if _module_lock is None:
        return
    wanted = tuple(prefixes)
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger):
            continue  # a PlaceHolder
        cache = logger._cache  # type: ignore[attr-defined]
        if name.partition(".")[0] in wanted and not isinstance(cache, LevelCache):
            logger._cache = LevelCache(logger)  # type: ignore[attr-defined]
