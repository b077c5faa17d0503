"""RabbitMQ's Python "Topics" tutorial consumer, as docs/wire-format.md shows it, reads
the handler's records unchanged (real broker; the lines are taken from the doc)."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pytest

from logrouter import RabbitHandler, topology
from logrouter.connection import BrokerSettings
from tests.helpers import ROOT

DOC = ROOT / "docs" / "wire-format.md"


@pytest.fixture
def declared(broker_settings: BrokerSettings, amqp_url: str) -> Iterator[str]:
    """The test's exchange declared as `logrouter setup` does; its unrouted queue removed after."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        topology.declare_exchange(connection.channel(), broker_settings.exchange)
        yield broker_settings.exchange
        connection.channel().queue_delete(f"{broker_settings.exchange}.unrouted")
    finally:
        connection.close()


def tutorial_lines() -> str:
    """The python block under "A plain topic consumer" in docs/wire-format.md."""
    text = DOC.read_text()
    section = text[text.index("## A plain topic consumer") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "docs/wire-format.md lost the tutorial consumer"
    return match.group(1)


def consumer_script(url: str, exchange: str) -> str:
    """The doc's lines on the test's broker and exchange (names substituted, nothing else)."""
    params = pika.URLParameters(url)
    code = tutorial_lines()
    code = code.replace('pika.ConnectionParameters("localhost")', f"pika.URLParameters({url!r})")
    code = code.replace('"logs.unrouted"', repr(f"{exchange}.unrouted"))
    code = code.replace('exchange="logs"', f"exchange={exchange!r}")
    assert params.host and exchange in code
    return code


def test_tutorial_consumer_reads_handler_records_unchanged(
    tmp_path: Path, declared: str, amqp_url: str, unique_name: Callable[[str], str]
) -> None:
    """The doc's consumer, bound `*.err`, prints the err record the handler published, with
    key billing.err and the JSON body as the handler wrote it; the info record is not shown."""
    exchange = declared
    script = tmp_path / "receive_logs_topic.py"
    script.write_text(consumer_script(amqp_url, exchange))
    consumer = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    got_one = threading.Event()

    def read() -> None:
        assert consumer.stdout is not None
        for line in consumer.stdout:
            lines.append(line)
            got_one.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    handler = RabbitHandler(
        url=amqp_url, exchange=exchange, facility="billing", app="shop",
        spool=str(tmp_path / "spool"),
    )  # fmt: skip
    logger = logging.getLogger(unique_name("tutorial"))
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        # The consumer's queue exists once it is bound: publish until the record arrives.
        for attempt in range(100):
            logger.info("not for *.err %d", attempt)
            logger.error("payment failed for order %d", attempt, extra={"order": attempt})
            handler.flush()
            if got_one.wait(0.2) or consumer.poll() is not None:
                break
    finally:
        logger.removeHandler(handler)
        handler.close()
        consumer.terminate()
        _, err = consumer.communicate(timeout=20)
    assert lines, f"the tutorial consumer printed nothing; stderr:\n{err}"
    key, _, body = lines[0].rstrip("\n").partition(" ")
    assert key == "billing.err"
    record = json.loads(body)
    attempt = record["fields"]["order"]
    assert record["msg"] == f"payment failed for order {attempt}"
    assert (record["facility"], record["severity"], record["app"]) == ("billing", "err", "shop")
    assert record["v"] == 1 and record["level"] == "ERROR"
    assert all(line.startswith("billing.err ") for line in lines)


def test_tutorial_declaration_without_the_alternate_exchange_is_refused(
    declared: str, amqp_url: str
) -> None:
    """What the doc warns about: `durable=True` alone, against the exchange `logrouter
    setup` declared, is refused with 406 naming the alternate-exchange argument."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            connection.channel().exchange_declare(
                exchange=declared, exchange_type="topic", durable=True
            )
        assert refused.value.reply_code == 406
        assert "alternate-exchange" in refused.value.reply_text
    finally:
        connection.close()
