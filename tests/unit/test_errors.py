"""Every logrouter exception derives from LogrouterError and carries its exit code."""

from __future__ import annotations

import pytest

from logrouter import exitcodes
from logrouter.commands.common import TargetError
from logrouter.config import ConfigError
from logrouter.connection import BadURL, BrokerUnavailable
from logrouter.control import MalformedRequest
from logrouter.errors import LogrouterError
from logrouter.selector import SelectorError
from logrouter.sinks.base import WriteError
from logrouter.sinks.file import PathEscapeError
from logrouter.sinks.journal import JournalLocked
from logrouter.topology import TopologyError
from logrouter.wire import UndecodableMessage


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError([]), exitcodes.CONFIG),
        (BadURL("amqp://x"), exitcodes.USAGE),
        (SelectorError("bad"), exitcodes.USAGE),
        (BrokerUnavailable("gone"), exitcodes.RUNTIME),
        (TopologyError("no"), exitcodes.RUNTIME),
        (WriteError("/x", OSError(28, "No space left on device")), exitcodes.RUNTIME),
        (PathEscapeError("../x"), exitcodes.RUNTIME),
        (JournalLocked("held"), exitcodes.RUNTIME),
        (UndecodableMessage("junk"), exitcodes.RUNTIME),
        (MalformedRequest("junk"), exitcodes.RUNTIME),
        (TargetError("no config", exitcodes.CONFIG), exitcodes.CONFIG),
    ],
)
def test_each_error_knows_its_exit_code(error: LogrouterError, code: int) -> None:
    """Each exception class is a LogrouterError whose exit_code is the command's exit code."""
    assert isinstance(error, LogrouterError)
    assert error.exit_code == code


def test_errors_keep_their_builtin_bases() -> None:
    """Code that catches OSError / ValueError / ConnectionError still catches them."""
    assert isinstance(WriteError("/x", OSError(5, "EIO")), OSError)
    assert isinstance(JournalLocked("held"), OSError)
    assert isinstance(BrokerUnavailable("gone"), ConnectionError)
    assert isinstance(BadURL("x"), ValueError)
    assert isinstance(SelectorError("x"), ValueError)
