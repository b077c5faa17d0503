"""``logrouter send FACILITY.SEVERITY MESSAGE...``: publish one record, like logger(1).

Publishes with a publisher confirm on a blocking connection. Exit 0 when the
broker confirmed, 1 when it did not (down, refused, nacked, timed out), 2 for a
bad key or URL, 78 for a bad config file. Never prints a password.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import replace
from typing import Any

import pika
import pika.exceptions

from logrouter import exitcodes, wire
from logrouter.app.encoder import record_body
from logrouter.commands.common import resolve_target
from logrouter.connection import BrokerUnavailable, connection_login, describe_error
from logrouter.severity import RANK, normalize_facility, parse_severity

_LEVELS = {
    "emerg": "CRITICAL",
    "alert": "CRITICAL",
    "crit": "CRITICAL",
    "err": "ERROR",
    "warning": "WARNING",
    "notice": "INFO",
    "info": "INFO",
    "debug": "DEBUG",
}
assert set(_LEVELS) == set(RANK)


def parse_key(key: str) -> tuple[str, str]:
    """``facility.severity`` -> (facility, severity); ValueError says what is wrong."""
    facility, dot, word = key.partition(".")
    if not dot or not facility or not word or "." in word:
        raise ValueError(f"key {key!r} must be FACILITY.SEVERITY, e.g. auth.err")
    return normalize_facility(facility), parse_severity(word)


def build_record(facility: str, severity: str, message: str, app: str) -> dict[str, Any]:
    """The schema-v1 body of a record sent from the shell."""
    return record_body(
        ts=time.time(),
        host=socket.gethostname(),
        app=app,
        pid=os.getpid(),
        thread=threading.current_thread().name,
        logger="logrouter.send",
        facility=facility,
        severity=severity,
        level=_LEVELS[severity],
        msg=message,
        fields={},
    )


def run(args: argparse.Namespace) -> int:
    try:
        facility, severity = parse_key(args.key)
    except ValueError as exc:
        print(f"logrouter send: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    settings, _ = resolve_target(args.config, args.url, args.exchange)
    timeout = max(0.1, float(args.timeout))
    settings = replace(
        settings,
        connect_timeout=min(settings.connect_timeout, timeout),
        blocked_timeout=timeout,
        client_name="logrouter-send",
    )
    body = wire.encode(build_record(facility, severity, " ".join(args.message), args.app))
    properties = pika.BasicProperties(
        content_type=wire.CONTENT_TYPE,
        content_encoding="utf-8",
        delivery_mode=2,
        message_id=uuid.uuid4().hex,
        timestamp=int(time.time()),
        app_id=args.app,
    )
    key = f"{facility}.{severity}"
    try:
        connection = settings.connect()
    except BrokerUnavailable as exc:
        print(f"logrouter send: not sent: {exc}", file=sys.stderr)
        return exitcodes.RUNTIME
    # the broker checks user_id against the login: sinks key dedup by it (issue 13)
    properties.user_id = connection_login(connection)
    timer = threading.Timer(timeout, _abort, args=(connection,))
    timer.daemon = True
    timer.start()
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(settings.exchange, key, body, properties)
    except pika.exceptions.NackError:
        print("logrouter send: the broker refused the record (nack)", file=sys.stderr)
        return exitcodes.RUNTIME
    except (pika.exceptions.AMQPError, OSError) as exc:
        reason = describe_error(exc)
        print(
            f"logrouter send: not confirmed by {settings.describe()}"
            f" (exchange {settings.exchange!r}): {reason}",
            file=sys.stderr,
        )
        return exitcodes.RUNTIME
    finally:
        timer.cancel()
        try:
            if connection.is_open:
                connection.close()
        except Exception:
            pass
    return exitcodes.OK


def _abort(connection: pika.BlockingConnection) -> None:
    """Timeout: unblock the waiting publish by closing the socket from another thread."""
    with contextlib.suppress(Exception):
        connection.add_callback_threadsafe(connection.close)
