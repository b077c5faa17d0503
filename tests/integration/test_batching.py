"""Handler options batch="auto" and rate_limit against the real broker (issue 16)."""

from __future__ import annotations

import json
import logging
import logging.config
import time
from collections import Counter
from typing import Any

import pika

from logrouter import batchwire
from tests.helpers.handler import declare


def drain(url: str, queue: str, *, settle: float = 0.5) -> list[tuple[Any, Any, bytes]]:
    """Every message in ``queue`` (method, properties, body), until it stays empty."""
    got: list[tuple[Any, Any, bytes]] = []
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < settle:
            method, props, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                time.sleep(0.02)
                continue
            got.append((method, props, body))
            quiet_since = time.monotonic()
    finally:
        conn.close()
    return got


def records_of(messages: list[tuple[Any, Any, bytes]]) -> list[dict[str, Any]]:
    """The records of the messages, batches split; each record carries its id."""
    records = []
    for method, props, body in messages:
        if batchwire.is_batch(props.content_type):
            split = batchwire.split_batch(body, method.routing_key, message_id=props.message_id)
            assert all(item.record is not None for item in split), split
            records += [item.record for item in split if item.record is not None]
        else:
            records.append({**json.loads(body), "id": props.message_id})
    return records


def test_auto_packs_a_backlog_into_batches_of_one_key(
    route: tuple[str, str, str], make_logger: Any
) -> None:
    """5,000 records logged in a burst with batch="auto": every record arrives once, in
    fewer messages; each batch holds one routing key, declares its count, and every line
    has its own id."""
    url, exchange, queue = route
    log, handler = make_logger(url=url, exchange=exchange, batch="auto", spool="")
    for i in range(5000):
        if i % 10:
            log.info("rec-%d", i)
        else:
            log.warning("rec-%d", i)
    handler.flush()
    messages = drain(url, queue)
    batches = [m for m in messages if batchwire.is_batch(m[1].content_type)]
    assert batches and len(messages) < 5000
    for method, props, body in batches:
        split = batchwire.split_batch(body, method.routing_key)
        assert props.headers[batchwire.RECORDS_HEADER] == len(split)
        assert {item.record["severity"] for item in split if item.record} == {
            method.routing_key.split(".")[1]
        }
        assert props.message_id == batchwire.batch_message_id(split[0].id or "", len(split))
        assert props.app_id == "testapp" and props.delivery_mode == 2
    records = records_of(messages)
    assert sorted(int(r["msg"].split("-")[1]) for r in records) == list(range(5000))
    assert len({r["id"] for r in records}) == 5000
    assert handler.stats["messages"] == len(messages)
    assert handler.stats["confirmed"] == 5000


def test_quiet_app_with_auto_sends_each_record_alone(
    route: tuple[str, str, str], make_logger: Any
) -> None:
    """With batch="auto" a record of a quiet app goes alone, as an ordinary message."""
    url, exchange, queue = route
    log, handler = make_logger(url=url, exchange=exchange, batch="auto", spool="")
    for i in range(3):
        log.info("quiet %d", i)
        handler.flush()
    messages = drain(url, queue)
    assert [json.loads(body)["msg"] for _, _, body in messages] == [f"quiet {i}" for i in range(3)]
    assert {props.content_type for _, props, _ in messages} == {"application/json"}


def test_plain_pika_consumer_receives_off_records_unchanged(
    route: tuple[str, str, str], make_logger: Any
) -> None:
    """batch="off" (the default) sends one JSON record per message, as the tutorials'
    topic consumer expects: no batch content type, no count header."""
    url, exchange, queue = route
    log, handler = make_logger(url=url, exchange=exchange, spool="")
    for i in range(2000):
        log.info("rec-%d", i)
    handler.flush()
    messages = drain(url, queue)
    assert len(messages) == 2000
    for method, props, body in messages:
        assert props.content_type == "application/json"
        assert batchwire.RECORDS_HEADER not in (props.headers or {})
        record = json.loads(body)
        assert method.routing_key == f"{record['facility']}.{record['severity']}"
    assert [json.loads(b)["msg"] for _, _, b in messages] == [f"rec-{i}" for i in range(2000)]


def test_rate_limit_suppresses_a_flood_and_keeps_other_loggers(
    route: tuple[str, str, str], make_logger: Any
) -> None:
    """A call site logging the same error in a loop with rate_limit=50, burst=20: the
    broker sees at most burst + 50/s x the flood's duration of it, plus summaries whose
    counts add up to what was suppressed; another logger within its limit meanwhile has
    all its records delivered; crit records are exempt."""
    url, exchange, queue = route
    log, handler = make_logger(
        url=url,
        exchange=exchange,
        batch="auto",
        spool="",
        rate_limit="50",
        burst="20",
        rate_limit_interval="0.5",
    )
    other = logging.getLogger(f"{log.name}.other")  # same handler, another call site
    first = time.time()
    calls = 0
    for i in range(200):
        for _ in range(100):
            log.error("payment gateway timeout")
            calls += 1
        if not i % 10:  # 20 records: within its own burst
            other.info("request %d served", i)
    log.critical("disk on fire")
    last = time.time()
    handler.flush()
    records = records_of(drain(url, queue))
    flood = [r for r in records if r["msg"] == "payment gateway timeout"]
    summaries = [r for r in records if r["msg"].startswith("suppressed ")]
    served = Counter(r["msg"] for r in records if r["msg"].startswith("request "))
    assert len(flood) <= 20 + 50 * (last - first) + 1
    assert summaries, records[-5:]
    assert sum(s["fields"]["suppressed"] for s in summaries) == calls - len(flood)
    assert (
        summaries[0]["msg"].startswith("suppressed ")
        and "(test_batching.py:" in (summaries[0]["msg"])
    )
    assert summaries[0]["severity"] == "err" and summaries[0]["logger"] == log.name
    assert served == Counter(f"request {i} served" for i in range(0, 200, 10))
    assert [r["msg"] for r in records if r["severity"] == "crit"] == ["disk on fire"]
    assert handler.stats["suppressed"] == calls - len(flood)
    assert sum(handler.suppressed_by_key.values()) == calls - len(flood)


def test_rate_limit_counts_only_what_the_handlers_filters_let_through(
    route: tuple[str, str, str], make_logger: Any
) -> None:
    """A handler with a filter and a rate limit: records the filter drops during a
    flood are neither sent nor counted as suppressed (the limiter's cheap no must not
    run before the filters)."""
    url, exchange, queue = route
    log, handler = make_logger(
        url=url, exchange=exchange, batch="auto", spool="", rate_limit="5", burst="5"
    )
    handler.addFilter(lambda record: "noise" not in record.msg)
    for i in range(2000):  # one call site: one key for both
        log.error("noise from the flood" if i % 2 else "payment gateway timeout")
    handler.flush()
    records = records_of(drain(url, queue))
    flood = [r for r in records if r["msg"] == "payment gateway timeout"]
    summaries = [r for r in records if r["msg"].startswith("suppressed ")]
    assert not [r for r in records if "noise" in r["msg"]]
    assert 5 <= len(flood) < 20
    assert handler.stats["suppressed"] == 1000 - len(flood)
    assert sum(s["fields"]["suppressed"] for s in summaries) == 1000 - len(flood)


def _say(logger: logging.Logger, text: str) -> None:
    logger.error(text)  # one call site for every logger that calls this


def test_rate_limit_does_not_count_the_handlers_own_loggers(
    route: tuple[str, str, str], make_logger: Any
) -> None:
    """pika's records are never sent; during a flood from the same call site they are
    not counted as suppressed either (the limiter's cheap no must not see them)."""
    url, exchange, queue = route
    log, handler = make_logger(
        url=url, exchange=exchange, batch="auto", spool="", rate_limit="5", burst="5"
    )
    pika_log = logging.getLogger("pika.flood-test")
    pika_log.addHandler(handler)
    try:
        for _ in range(1000):
            _say(log, "payment gateway timeout")
        for _ in range(1000):
            _say(pika_log, "connection noise")
    finally:
        pika_log.removeHandler(handler)
    handler.flush()
    records = records_of(drain(url, queue))
    flood = [r for r in records if r["msg"] == "payment gateway timeout"]
    summaries = [r for r in records if r["msg"].startswith("suppressed ")]
    assert not [r for r in records if r["msg"] == "connection noise"]
    assert 5 <= len(flood) < 20
    assert handler.stats["suppressed"] == 1000 - len(flood)
    assert sum(s["fields"]["suppressed"] for s in summaries) == 1000 - len(flood)


def test_summary_has_the_routing_of_the_records_it_counts(
    route: tuple[str, str, str], make_logger: Any
) -> None:
    """A flood of records that choose their own routing (extra facility / severity):
    each summary is published with the routing key of the records it counts, so the
    sink bound to them gets it."""
    url, exchange, queue = route
    log, handler = make_logger(
        url=url, exchange=exchange, facility="billing", spool="", rate_limit="5", burst="5"
    )
    for _ in range(200):
        log.error("login backend down", extra={"facility": "auth"})
    for _ in range(200):
        log.critical("cache cold", extra={"severity": "info"})
    handler.flush()
    keys: Counter[tuple[str, bool]] = Counter()
    for method, props, body in drain(url, queue):
        for record in records_of([(method, props, body)]):
            keys[method.routing_key, record["msg"].startswith("suppressed ")] += 1
    assert keys == {
        ("auth.err", False): 5,
        ("auth.err", True): 1,
        ("billing.info", False): 5,
        ("billing.info", True): 1,
    }


def test_dictconfig_strings_for_batch_and_rate_limit(route: tuple[str, str, str]) -> None:
    """Every new option is a plain string in dictConfig; a typo fails at configuration."""
    url, exchange, _ = route
    config: dict[str, Any] = {
        "version": 1,
        "handlers": {
            "router": {
                "class": "logrouter.RabbitHandler",
                "url": url,
                "exchange": exchange,
                "spool": "",
                "batch": "auto",
                "linger_ms": "2",
                "batch_records": "100",
                "batch_bytes": "65536",
                "rate_limit": "10",
                "burst": "5",
                "rate_limit_key": "logger",
                "rate_limit_exempt": "err",
                "rate_limit_interval": "5",
            }
        },
        "loggers": {"dictcfg.volume": {"handlers": ["router"], "level": "INFO"}},
    }
    logging.config.dictConfig(config)
    handler = logging.getLogger("dictcfg.volume").handlers[0]
    try:
        assert handler.batch == "auto" and handler.linger == 0.002  # type: ignore[attr-defined]
        limit = handler.rate_limit  # type: ignore[attr-defined]
        assert (limit.rate, limit.burst, limit.key, limit.exempt) == (10.0, 5, "logger", "err")
    finally:
        handler.close()
        logging.getLogger("dictcfg.volume").handlers.clear()
    config["handlers"]["router"]["batch"] = "sometimes"
    try:
        logging.config.dictConfig(config)
    except ValueError as err:
        assert "batch: 'sometimes' is not one of off, auto" in str(err.__cause__ or err)
    else:
        raise AssertionError("a bad batch option was accepted")


def test_auto_spools_per_record_and_replays_in_order(
    amqp_url: str, unique_name: Any, make_logger: Any
) -> None:
    """batch="auto" against an exchange that does not exist yet: records go to the spool
    one by one, and once it exists they are replayed (in batches) in logging order, every
    record at least once and each id with one record."""
    exchange, queue = unique_name("late"), unique_name("q")
    log, handler = make_logger(url=amqp_url, exchange=exchange, buffer_size=50, batch="auto")
    try:
        for i in range(1000):
            log.info("n %d", i)
        time.sleep(1.5)  # the channel is refused (404); records go to the spool
        assert handler.stats["spooled"] > 0
        # The queue is reached through the alternate exchange: a batch published between
        # the exchange's and the binding's declaration would be confirmed and unroutable.
        declare(amqp_url, f"{exchange}.ae", queue)
        conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            conn.channel().exchange_declare(
                exchange, "topic", arguments={"alternate-exchange": f"{exchange}.ae"}
            )
        finally:
            conn.close()
        for i in range(1000, 1200):
            log.info("n %d", i)
        handler.flush()
        messages = drain(amqp_url, queue)
        records = records_of(messages)
        by_id: dict[str, str] = {}
        for record in records:
            assert by_id.setdefault(record["id"], record["msg"]) == record["msg"]
        first_seen = list(dict.fromkeys(r["msg"] for r in records))
        assert first_seen == [f"n {i}" for i in range(1200)]
        assert any(batchwire.is_batch(props.content_type) for _, props, _ in messages)
    finally:
        conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            conn.channel().queue_delete(queue)
            conn.channel().exchange_delete(exchange)
            conn.channel().exchange_delete(f"{exchange}.ae")
        finally:
            conn.close()
