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
    """A negative linger, or no room for a record, is a ValueError that says what was given."""
    with pytest.raises(ValueError, match=r"linger_ms: '-1' must be a finite number >= 0"):
        _options(url="amqp://h", linger_ms="-1")
    with pytest.raises(ValueError, match=r"batch_records and batch_bytes >= 1.*'0'"):
        _options(url="amqp://h", batch_records="0")


@pytest.mark.parametrize(
    "option",
    [
        "heartbeat",
        "buffer_size",
        "spool_max_bytes",
        "flush_timeout",
        "max_message",
        "reconnect_max",
        "linger_ms",
        "batch_records",
        "batch_bytes",
    ],
)
def test_a_number_option_that_is_not_a_number_names_the_option(option: str) -> None:
    """A typo in any number option (a dictConfig string) says which option and what it
    got, not a bare "invalid literal for int()"."""
    with pytest.raises(ValueError, match=rf"^{option}: 'abc' is not a number$"):
        _options(url="amqp://h", **{option: "abc"})


@pytest.mark.parametrize("option", ["buffer_size", "max_message", "batch_records", "batch_bytes"])
def test_a_count_option_refuses_a_fraction(option: str) -> None:
    """Counts take whole numbers: "1.5" is refused, not cut to 1."""
    with pytest.raises(ValueError, match=rf"^{option}: '1.5' is not a whole number$"):
        _options(url="amqp://h", **{option: "1.5"})


def test_a_missing_option_is_a_key_error() -> None:
    """from_options reads every option of the handler's signature by name."""
    with pytest.raises(KeyError):
        HandlerOptions.from_options({"url": "amqp://h"})
