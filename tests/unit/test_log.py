"""log.configure: the daemons' own log lines hide passwords, tracebacks included."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import structlog

from logrouter import log

SECRET = "S3cret@PW"


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """These tests point structlog at capsys's stderr; later tests must not log into it."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def _fail() -> None:
    url = "AMQP://guest:S3cret@PW@broker:5672/%2F"
    raise ConnectionError(f"cannot reach {url}")


@pytest.mark.parametrize("as_json", [True, False])
def test_traceback_and_values_never_show_the_password(
    as_json: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exception whose text holds a URL, logged with its traceback: no password anywhere."""
    log.configure("debug", json=as_json)
    logger = log.get_logger("test")
    try:
        _fail()
    except ConnectionError:
        logger.exception("lost", url="amqps://u:S3cret%40PW@h/", extra={"k": ["amqp://a:x@h"]})
    err = capsys.readouterr().err
    assert "cannot reach" in err and "Traceback" in err
    assert "S3cret" not in err and "%40PW" not in err
    if as_json:
        assert json.loads(err.strip().splitlines()[-1])["event"] == "lost"


def test_console_log_escapes_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    """On a terminal renderer, an ESC or bidi override in a value is shown escaped."""
    log.configure("info", json=False)
    log.get_logger("test").warning("dropped", reason="x\x1b[2J\u202ey")
    err = capsys.readouterr().err
    assert "\\x1b[2J\\u202ey" in err
    assert "\u202e" not in err
