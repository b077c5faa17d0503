"""logrouter.sinks.rejects, the pure part: the properties of a rejected copy."""

from __future__ import annotations

import pika

from logrouter import batchwire, wire
from logrouter.sinks.batch import Delivery
from logrouter.sinks.rejects import (
    BATCH_HEADER,
    EXCHANGE_HEADER,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
    SINK_HEADER,
    USER_HEADER,
    rejected_properties,
)


def delivery(props: pika.BasicProperties, *, line: bool = False) -> Delivery:
    """A delivery on routing key ``app.err`` (a batch line when ``line``)."""
    return Delivery(7, "app.err", b"{", props, False, 0.0, "rec-1" if line else None, line)


def test_a_copy_carries_the_sinks_word_and_drops_the_senders_forged_headers() -> None:
    """The copy names reason, sink, its exchange, routing key and the sender's validated
    user_id; a
    sender's own x-logrouter-* headers are dropped, other headers kept; the copy's
    user_id is the sink's login."""
    props = pika.BasicProperties(
        message_id="m1",
        user_id="billing",
        content_type=wire.CONTENT_TYPE,
        headers={SINK_HEADER: "forged", USER_HEADER: "admin", EXCHANGE_HEADER: "x", "k": "v"},
    )
    copy = rejected_properties(
        delivery(props), "undecodable", sink="s", sink_login="sinkd", exchange="logs"
    )
    assert copy.headers == {
        "k": "v",
        REASON_HEADER: "undecodable",
        SINK_HEADER: "s",
        EXCHANGE_HEADER: "logs",
        ROUTING_KEY_HEADER: "app.err",
        USER_HEADER: "billing",
    }
    assert (copy.user_id, copy.message_id, copy.delivery_mode) == ("sinkd", "m1", 2)


def test_a_rejected_batch_line_becomes_a_single_record_naming_its_batch() -> None:
    """One line of a batch: a single-record message with the record's id, the JSON
    content type, x-logrouter-batch = the batch's id and no record count."""
    props = pika.BasicProperties(
        message_id="batch-9",
        content_type="application/vnd.logrouter.batch+jsonl",
        headers={batchwire.RECORDS_HEADER: 3},
    )
    copy = rejected_properties(delivery(props, line=True), "too big", sink="s", sink_login=None)
    assert copy.message_id == "rec-1" and copy.content_type == wire.CONTENT_TYPE
    assert copy.headers[BATCH_HEADER] == "batch-9"
    assert batchwire.RECORDS_HEADER not in copy.headers
    assert USER_HEADER not in copy.headers
