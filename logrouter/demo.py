"""The demo: a small app that logs through RabbitMQ, and the `make demo` walk-through.

``python -m logrouter.demo [--config CONFIG] [--run-id ID]`` is the app: it adds
the handler with ``logging.config.dictConfig`` (broker URL and exchange from the
config, ``$LOGROUTER_URL`` first) and logs records of several facilities and
severities, one with an exception, then exits (the handler flushes at exit).

``python -m logrouter.demo --full [CONFIG] [--var DIR]`` is what ``make demo``
runs: copy CONFIG to ``DIR/demo.toml`` (its relative output paths then land in
``DIR/log`` and ``DIR/archive``), ``check``, ``setup``, start ``logrouter run``
in the background, run the app, wait (bounded) until the sinks wrote its
records, stop the sinks with SIGTERM, and show where each record went.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.config
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from logrouter.config import load_config

#: (logger name, level, message, extra) of every record the app logs. The handler maps
#: logger names shop.billing -> billing, shop.auth -> auth; the rest is facility "shop".
RECORDS: tuple[tuple[str, int, str, dict[str, str]], ...] = (
    ("shop", logging.INFO, "shop started, 3 workers", {}),
    ("shop.cache", logging.DEBUG, "cache warmed with 120 products", {}),
    ("shop.auth", logging.INFO, "user alice logged in from 10.0.0.7", {}),
    ("shop.auth", logging.WARNING, "5 failed logins for user bob", {}),
    ("shop.billing", logging.INFO, "invoice 1041 paid", {}),
    ("shop.billing", logging.INFO, "card of customer 17 expires soon", {"severity": "notice"}),
    ("shop.billing", logging.ERROR, "payment declined for order 1042", {}),
    ("shop", logging.WARNING, "mail queue is slow", {"facility": "mail"}),
    ("shop", logging.CRITICAL, "database unreachable, retrying", {}),
)
#: The record logged with ``log.exception`` (severity err, facility auth, with a traceback).
EXCEPTION_RECORD = ("shop.auth", "login backend failed")
FACILITIES = "shop.billing=billing,shop.auth=auth"
APP_NAME = "logrouter-demo"
#: How long --full waits for the sinks to start and to write the demo's records.
WAIT_SECONDS = 30.0


def tagged(message: str, run_id: str) -> str:
    """The message as logged by run ``run_id`` (the tag tells demo runs apart)."""
    return f"{message} [demo {run_id}]"


def error_messages(run_id: str) -> list[str]:
    """The messages of run ``run_id`` that the ``*.err`` selector takes (err and worse)."""
    errors = [tagged(msg, run_id) for _, level, msg, _ in RECORDS if level >= logging.ERROR]
    return [*errors, tagged(EXCEPTION_RECORD[1], run_id)]


def record_count() -> int:
    """How many records one app run logs."""
    return len(RECORDS) + 1


def logging_config(url: str, exchange: str) -> dict[str, Any]:
    """The dictConfig that adds the handler to an app: plain strings only."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "router": {
                "class": "logrouter.RabbitHandler",
                "url": url,
                "exchange": exchange,
                "facility": "shop",
                "facilities": FACILITIES,
                "app": APP_NAME,
            }
        },
        "root": {"level": "DEBUG", "handlers": ["router"]},
    }


def run_app(config_path: Path, run_id: str) -> int:
    """Log the demo records through the broker of ``config_path``; exit code."""
    config = load_config(config_path)
    logging.config.dictConfig(logging_config(config.broker.urls[0], config.broker.exchange))
    if len(config.broker.urls) > 1:  # failover list: the handler takes them space-separated
        handler = logging.getLogger().handlers[0]
        handler.close()
        logging.getLogger().removeHandler(handler)
        logging.config.dictConfig(
            logging_config(" ".join(config.broker.urls), config.broker.exchange)
        )
    for name, level, message, extra in RECORDS:
        logging.getLogger(name).log(level, "%s", tagged(message, run_id), extra=extra)
    try:
        raise ConnectionError("auth backend 10.0.0.9:389 refused the connection")
    except ConnectionError:
        logging.getLogger(EXCEPTION_RECORD[0]).exception("%s", tagged(EXCEPTION_RECORD[1], run_id))
    logging.shutdown()  # flush: every record confirmed by the broker (or spooled)
    print(f"demo app: logged {record_count()} records (run {run_id})", flush=True)
    return 0


# --- the walk-through (--full) ------------------------------------------------


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "logrouter", *args]


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def archive_messages(directory: Path) -> list[str]:
    """The ``msg`` of every record in the archive's complete gzip members."""
    messages: list[str] = []
    for path in sorted(directory.rglob("*.jsonl.gz")):
        data = path.read_bytes()
        while data:
            unpacker = zlib.decompressobj(zlib.MAX_WBITS | 16)
            try:
                text = unpacker.decompress(data)
            except zlib.error:
                break
            if not unpacker.eof:
                break  # a member being written right now
            for line in text.splitlines():
                try:
                    messages.append(str(json.loads(line).get("msg", "")))
                except ValueError:
                    continue
            data = unpacker.unused_data
    return messages


def error_lines(directory: Path) -> list[str]:
    """Every line of the error files (``*.err.log``)."""
    lines: list[str] = []
    for path in sorted(directory.glob("*.err.log")):
        lines.extend(path.read_text(errors="replace").splitlines())
    return lines


def wait_until(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def sinks_consuming(config_path: Path) -> bool:
    """Whether every sink queue of the config has a consumer."""
    config = load_config(config_path)
    try:
        connection = config.broker.connect()
    except Exception:
        return False
    try:
        for sink in config.sinks.values():
            channel = connection.channel()
            try:
                frame = channel.queue_declare(sink.queue, passive=True)
            except Exception:
                return False
            if not frame.method.consumer_count:
                return False
            channel.close()
        return True
    finally:
        if connection.is_open:
            connection.close()


def full(config_src: Path, var: Path) -> int:
    """The `make demo` walk-through (see the module docstring); an exit code."""
    var.mkdir(parents=True, exist_ok=True)
    config = var / "demo.toml"
    if config_src.resolve() != config.resolve():
        shutil.copyfile(config_src, config)
    env = dict(os.environ, LOGROUTER_STATE_DIR=str(var / "state"))
    run_id = uuid.uuid4().hex[:8]

    _step(f"logrouter check {config}  (validate, show each sink's bindings)")
    if subprocess.run(_cli("check", str(config)), env=env).returncode != 0:
        return 78
    _step(f"logrouter setup {config}  (declare exchange, queues, bindings)")
    if subprocess.run(_cli("setup", str(config)), env=env).returncode != 0:
        return 1

    sink_log = var / "sinks.log"
    _step(f"logrouter run {config}  (all sinks, in the background; their own log: {sink_log})")
    with sink_log.open("ab") as log_file:
        sinks = subprocess.Popen(_cli("run", str(config)), stderr=log_file, env=env)
    try:
        if not wait_until(lambda: sinks.poll() is not None or sinks_consuming(config), 30):
            print(f"demo: the sinks did not start consuming; see {sink_log}", file=sys.stderr)
            return 1
        if sinks.poll() is not None:
            print(f"demo: the sinks exited ({sinks.returncode}); see {sink_log}", file=sys.stderr)
            return 1
        _step("python -m logrouter.demo  (the app; the info lines below are the console sink's)")
        app = subprocess.run(
            [sys.executable, "-m", "logrouter.demo", "--config", str(config), "--run-id", run_id],
            env=env,
        )
        if app.returncode != 0:
            return 1
        expected = error_messages(run_id)
        tag = f"[demo {run_id}]"

        def written() -> bool:
            in_archive = sum(tag in m for m in archive_messages(var / "archive"))
            errors = error_lines(var / "log")
            return in_archive >= record_count() and all(
                any(e in line for line in errors) for e in expected
            )

        done = wait_until(written, WAIT_SECONDS)
    finally:
        _step("stopping the sinks (SIGTERM: each writes and acks the batch in hand)")
        if sinks.poll() is None:
            sinks.send_signal(signal.SIGTERM)
            try:
                sinks.wait(20)
            except subprocess.TimeoutExpired:
                sinks.kill()
                sinks.wait()
    show(var, run_id, config)
    if not done:
        print(f"demo: not every record arrived within {WAIT_SECONDS:g}s", file=sys.stderr)
        return 1
    return 0


def show(var: Path, run_id: str, config: Path) -> None:
    """Where the records went: console (above), error files, archive; how to watch live."""
    tag = f"[demo {run_id}]"
    _step("error files (sink 'errors', match '*.err'): ls + head")
    for path in sorted((var / "log").glob("*.err.log")):
        lines = path.read_text(errors="replace").splitlines()
        print(f"{path}  ({len(lines)} lines)")
        for line in [x for x in lines if tag in x][:5]:
            print(f"    {line}")
    _step("archive (sink 'archive', match '*.*'): every record, gzip JSON lines")
    files = sorted((var / "archive").rglob("*.jsonl.gz"))
    for path in files:
        print(f"{path}")
    ours = sum(tag in m for m in archive_messages(var / "archive"))
    print(f"records of this run in the archive: {ours} of {record_count()}")
    if files:
        print(f"    count them yourself: zcat {var}/archive/*/*/*/*.jsonl.gz | grep -cF '{tag}'")
    _step("watch it live")
    print(f"    .venv/bin/logrouter run {config}                    # the sinks")
    print(f"    .venv/bin/logrouter tail '*.err' --config {config}  # live errors")
    print("    .venv/bin/python -m logrouter.demo --config " + str(config) + "  # log again")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m logrouter.demo", description=__doc__)
    parser.add_argument("full_config", nargs="?", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, default=Path("config/demo.toml"))
    parser.add_argument("--run-id", default=None, help="tag of this run's messages")
    parser.add_argument("--full", action="store_true", help="the whole `make demo` walk-through")
    parser.add_argument("--var", type=Path, default=Path("var"), help="output dir for --full")
    args = parser.parse_args(argv)
    config = args.full_config or args.config
    if args.full:
        return full(config, args.var)
    return run_app(config, args.run_id or uuid.uuid4().hex[:8])


if __name__ == "__main__":
    sys.exit(main())
