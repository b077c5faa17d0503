"""options.HandlerOptions: the handler's options parsed and checked."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from logrouter.app.handler import RabbitHandler
from logrouter.app.options import HandlerOptions


def _options(**given: Any) -> HandlerOptions:
    """from_options as RabbitHandler calls it: every parameter, defaults filled in."""
    params = inspect.signature(RabbitHandler.__init__).parameters
    defaults = {n: p.default for n, p in params.items() if n not in ("self", "level")}
    return HandlerOptions.from_options(defaults | given)


def test_string_options_are_parsed() -> None:
    """dictConfig strings become numbers, flags and a batch mode; linger_ms goes to seconds."""
    opts = _options(
        url="amqp://h",
        app="billing",
        spool="/tmp/s",
        linger_ms="2",
        fast_frames="off",
        batch="AUTO",
        buffer_size="1",
    )
    assert (opts.linger, opts.fast_frames, opts.batch, opts.buffer_size) == (
        0.002,
        False,
        "auto",
        2,
    )
    assert opts.spool_path == Path("/tmp/s") and opts.app == "billing"


def test_a_bad_batch_option_is_refused_naming_the_values() -> None:
    """A negative linger is a ValueError that says what was given."""
    with pytest.raises(ValueError, match=r"linger_ms must be >= 0.*'-1'"):
        _options(url="amqp://h", linger_ms="-1")


def test_a_missing_option_is_a_key_error() -> None:
    """from_options reads every option of the handler's signature by name."""
    with pytest.raises(KeyError):
        HandlerOptions.from_options({"url": "amqp://h"})
