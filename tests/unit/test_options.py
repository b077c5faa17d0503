"""options.HandlerOptions: the handler's options parsed and checked."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from logrouter.app.handler import RabbitHandler
from logrouter.app.options import HandlerOptions


def test_handler_and_options_take_the_same_parameters_with_the_same_defaults() -> None:
    """RabbitHandler forwards every parameter but ``level`` to from_options unchanged."""
    handler = inspect.signature(RabbitHandler.__init__).parameters
    options = inspect.signature(HandlerOptions.from_options).parameters
    forwarded = [(p.name, p.default) for p in handler.values() if p.name not in ("self", "level")]
    assert forwarded == [(p.name, p.default) for p in options.values()]


def test_string_options_are_parsed() -> None:
    """dictConfig strings become numbers, flags and a batch mode; linger_ms goes to seconds."""
    opts = HandlerOptions.from_options(
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
        HandlerOptions.from_options(url="amqp://h", linger_ms="-1")
