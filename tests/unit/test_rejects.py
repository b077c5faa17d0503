"""logrouter.sinks.rejects, the pure part: the properties of a rejected copy, and the
copies a sink publishes (one per message: a batch's bad lines are one)."""

from __future__ import annotations

from types import SimpleNamespace

import pika
import pika.exceptions
import pika.spec
import pytest

from logrouter import batchwire, wire
from logrouter.sinks.batch import Delivery
from logrouter.sinks.rejects import (
    BATCH_HEADER,
    EXCHANGE_HEADER,
    PROPERTIES_HEADER,
    REASON_CHARS,
    REASON_HEADER,
    RECORD_ID_HEADER,
    ROUTING_KEY_HEADER,
    SINK_HEADER,
    USER_HEADER,
    Confirmations,
    RejectedCopy,
    group_reason,
    publish_rejected,
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


class Channel:
    """A confirmed channel that keeps what is published to it."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str, bytes, pika.BasicProperties]] = []

    def basic_publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: pika.BasicProperties,
        mandatory: bool = False,
    ) -> None:
        assert mandatory
        self.published.append((exchange, routing_key, body, properties))


def batch_props(**headers: object) -> pika.BasicProperties:
    """A batch message's properties, from sender ``billing``."""
    return pika.BasicProperties(
        message_id="batch-9",
        user_id="billing",
        content_type=batchwire.CONTENT_TYPE,
        headers={batchwire.RECORDS_HEADER: 5, **headers},
    )


def bad_lines(tag: int, props: pika.BasicProperties, body: bytes) -> list[tuple[Delivery, str]]:
    """What the sink rejects of batch ``body`` (``split_batch``: one pair per bad line)."""
    items = batchwire.split_batch(body, "app.err", message_id=props.message_id)
    return [
        (Delivery(tag, "app.err", item.line, props, False, 0.0, item.id, True), item.reason or "")
        for item in items
        if item.record is None
    ]


def publish(rejected: list[tuple[Delivery, str]]) -> tuple[Channel, list[RejectedCopy]]:
    channel, copies = Channel(), []
    publish_rejected(
        channel.basic_publish,
        rejected,
        sink="s",
        sink_login="sinkd",
        exchange="logs",
        on_rejected=copies.append,
    )
    return channel, copies


def test_the_bad_lines_of_one_batch_are_one_copy_that_replays_as_a_batch() -> None:
    """Two bad lines of a batch: one copy, a batch of those lines (content type, their
    count in x-logrouter-records, the batch's message_id and x-logrouter-batch), the
    reason naming each by its line in the copy; a sender's x-logrouter-* are dropped.
    Split again (as a replay is), its lines are the two bad ones, for the same reasons."""
    props = batch_props(**{REASON_HEADER: "forged", "k": "v"})
    body = batchwire.encode_batch(
        [b'{"msg":"ok","id":"r0"}', b"junk one", b'{"msg":"ok2"}', b"[2]"]
    )
    channel, copies = publish(bad_lines(7, props, body))
    ((exchange, key, copy_body, copy_props),) = channel.published
    assert (exchange, key) == ("logrouter.rejected", "app.err")
    assert copy_body == b"junk one\n[2]\n"
    assert copy_props.content_type == batchwire.CONTENT_TYPE
    assert (copy_props.message_id, copy_props.user_id) == ("batch-9", "sinkd")
    assert copy_props.headers == {
        "k": "v",
        batchwire.RECORDS_HEADER: 2,
        BATCH_HEADER: "batch-9",
        REASON_HEADER: "2 records rejected: line 1: not a JSON object (+1 more line)",
        SINK_HEADER: "s",
        EXCHANGE_HEADER: "logs",
        ROUTING_KEY_HEADER: "app.err",
        USER_HEADER: "billing",
    }
    again = batchwire.split_batch(copy_body, key, message_id=copy_props.message_id)
    assert [(item.record, item.reason) for item in again] == [
        (None, "line 1: not a JSON object"),
        (None, "line 2: not a JSON object"),
    ]
    assert batchwire.declared_count(copy_props.headers) == len(again)
    ((copy),) = copies
    assert copy.records == 2
    assert copy.log_fields() == {
        "routing_key": "app.err",
        "reason": "line 1: not a JSON object",
        "records": 2,
        "message_id": "batch-9",
        "batch": "batch-9",
        "user_id": "billing",
    }


def test_one_copy_per_message_in_the_order_rejected() -> None:
    """Rejected in one commit: a whole message, a lone bad line of batch 1, three bad
    lines of batch 2 mixed with batch 1's: three copies, in the order of their first
    rejection; the lone line stays a single record named by its own id."""
    single = Delivery(3, "app.err", b"deep", pika.BasicProperties(message_id="m3"))
    one = bad_lines(1, batch_props(), b"x\n")
    other = pika.BasicProperties(message_id="batch-2", content_type=batchwire.CONTENT_TYPE)
    three = bad_lines(2, other, b"a\nb\nc\n")
    channel, copies = publish([(single, "too deep"), three[0], *one, *three[1:]])
    assert [(body, props.message_id) for _, _, body, props in channel.published] == [
        (b"deep", "m3"),
        (b"a\nb\nc\n", "batch-2"),
        (b"x", "batch-9/0"),
    ]
    assert [copy.records for copy in copies] == [1, 3, 1]
    assert channel.published[2][3].headers[BATCH_HEADER] == "batch-9"
    assert [copy.log_fields()["batch"] for copy in copies] == [None, "batch-2", "batch-9"]


def test_a_batch_of_junk_is_one_publish_with_a_bounded_reason() -> None:
    """99,999 bad lines, each for a reason of its own, 1,000 characters long: one copy
    holding them all; its reason names the count, five reasons (cut) and the rest as a
    count, in under 2 KB."""
    props = batch_props()
    pairs = [
        (Delivery(1, "app.err", b"x%d" % n, props, line=True), f"line {n}: {'w' * 1000}{n}")
        for n in range(1, 100_000)
    ]
    channel, copies = publish(pairs)
    ((_, _, body, copy_props),) = channel.published
    assert body.count(b"\n") == 99_999 and copies[0].records == 99_999
    reason = copy_props.headers[REASON_HEADER]
    assert reason.startswith("99999 records rejected: line 1: www")
    assert reason.endswith("; 99994 more lines for 99994 other reasons")
    assert reason.count("line ") == 5 and len(reason.encode()) < 2048
    assert len(copies[0].first_reason) <= REASON_CHARS + len("line 1: ")


def test_the_reason_of_a_copy_counts_each_reason_once() -> None:
    """The same reason on many lines is named once, at its first line, with how many
    more it covers; a reason without a line number keeps its words."""
    reason, first = group_reason(
        ["line 4: not a JSON object", "record of 9 bytes exceeds max", "line 9: not a JSON object"]
    )
    assert reason == (
        "3 records rejected: line 1: not a JSON object (+1 more line); "
        "line 2: record of 9 bytes exceeds max"
    )
    assert first == "line 1: not a JSON object"


def confirm(method: object) -> SimpleNamespace:
    """A confirm frame as pika hands it to the callback."""
    return SimpleNamespace(method=method)


def test_confirmations_settle_on_single_and_multiple_acks_in_any_order() -> None:
    """Five copies published: acks of 2, then of everything up to 4 (multiple), then 5
    settle them all; the wait runs the connection until then and wakes it once."""
    woken: list[int] = []
    confirms = Confirmations(on_settled=lambda: woken.append(1))
    confirms.published(5)
    frames = [
        pika.spec.Basic.Ack(delivery_tag=2),
        pika.spec.Basic.Ack(delivery_tag=4, multiple=True),
        pika.spec.Basic.Ack(delivery_tag=5),
    ]
    runs: list[float] = []

    def process(seconds: float) -> None:
        runs.append(seconds)
        confirms.on_confirm(confirm(frames[len(runs) - 1]))

    confirms.wait(process, timeout=5)
    assert len(runs) == 3 and confirms.unconfirmed == set() and woken == [1]
    confirms.published(2)  # the channel's numbering goes on
    assert confirms.unconfirmed == {6, 7}


def test_a_nack_or_a_return_is_raised_by_the_wait() -> None:
    """A refused copy (nack) or one that came back unroutable (logrouter.rejected gone)
    is raised as pika's NackError / UnroutableError: the batch is then not acked."""
    confirms = Confirmations()
    confirms.published(2)
    confirms.on_confirm(confirm(pika.spec.Basic.Nack(delivery_tag=2, multiple=True)))
    with pytest.raises(pika.exceptions.NackError):
        confirms.wait(lambda _s: None, timeout=5)
    confirms.published(1)
    confirms.on_return(None, None, None, b"")
    confirms.on_confirm(confirm(pika.spec.Basic.Ack(delivery_tag=3)))
    with pytest.raises(pika.exceptions.UnroutableError):
        confirms.wait(lambda _s: None, timeout=5)


def test_copies_never_confirmed_end_the_wait_with_an_error() -> None:
    """No confirm within the timeout: an AMQPError saying how many are unconfirmed."""
    confirms = Confirmations()
    confirms.published(3)
    with pytest.raises(pika.exceptions.AMQPError, match="3 rejected copies not confirmed"):
        confirms.wait(lambda _s: None, timeout=0.01)


def test_a_line_whose_id_is_too_long_for_a_message_id_keeps_it_in_a_header() -> None:
    """A rejected line's id over 255 bytes (its own, or the batch's 255-byte id plus
    "/0") cannot be an AMQP message_id: the copy keeps the batch's and names the line's
    in x-logrouter-record-id, and its properties encode (pika refused them: the batch
    was redelivered and rejected again forever)."""
    props = batch_props()
    props.message_id = "M" * 255
    for record_id in ("M" * 255 + "/0", "é" * 200):
        line = Delivery(7, "app.err", b"junk", props, False, 0.0, record_id, True)
        copy = rejected_properties(line, "why", sink="s", sink_login="sinkd")
        assert copy.message_id == "M" * 255
        assert copy.headers[RECORD_ID_HEADER] == record_id
        copy.encode()


def test_a_copy_whose_properties_cannot_be_encoded_goes_with_the_sinks_own() -> None:
    """A sender's property pika cannot encode again: the copy is published all the same,
    with the sink's headers only and the reason it dropped the rest (a publish that raised
    would wedge the sink on that batch for good)."""
    props = pika.BasicProperties(message_id="m1", app_id="a" * 300, user_id="mallory")
    channel, _copies = publish([(delivery(props), "undecodable")])
    ((_exchange, _key, body, copy),) = channel.published
    copy.encode()
    assert body == b"{"
    assert copy.headers[REASON_HEADER] == "undecodable"
    assert copy.headers[USER_HEADER] == "mallory"
    assert copy.headers[PROPERTIES_HEADER].startswith("ShortStringTooLong")
    assert copy.user_id == "sinkd" and copy.app_id is None and copy.message_id == "m1"


def test_a_line_whose_id_is_a_lone_surrogate_is_rejected_with_the_id_escaped() -> None:
    """A batch line {"id": "\\ud800", ...} that the standard library decodes (orjson
    refuses it) and the sink rejects: its copy goes out, the id escaped in
    x-logrouter-record-id (encoding it raised, the batch came back forever)."""
    props = batch_props()
    body = b'{"id":"ok1","msg":"m"}\n{"id":"\\ud800","msg":"x"}\n'
    items = batchwire.split_batch(body, "nofacility", message_id=props.message_id)
    rejected = [
        (Delivery(7, "nofacility", item.line, props, False, 0.0, item.id, True), "why \ud800")
        for item in items
        if item.id != "ok1"
    ]
    channel, copies = publish(rejected)
    assert len(copies) == 1 and len(channel.published) == 1
    ((_exchange, _key, _body, copy),) = channel.published
    copy.encode()
    assert copy.message_id == "batch-9"
    assert copy.headers[RECORD_ID_HEADER] == "\\ud800"
    assert copy.headers[REASON_HEADER] == "why \\ud800"


def test_a_closed_reject_channel_ends_the_wait_with_its_error() -> None:
    """The broker closing the reject channel (no confirm comes after): the wait raises
    at once with the close's reason, not after the confirm timeout."""
    woken: list[int] = []
    confirms = Confirmations(on_settled=lambda: woken.append(1))
    confirms.published(1)
    closed = pika.exceptions.ChannelClosedByBroker(404, "NOT_FOUND - no exchange")
    confirms.on_close(None, closed)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        confirms.wait(lambda _s: None, timeout=60)
    assert woken == [1]


def test_the_sinks_own_copy_of_a_message_with_a_bytes_routing_key_goes_out() -> None:
    """A routing key that is not UTF-8 (pika gives bytes) with properties that cannot be
    encoded again: the fallback copy names the key escaped, and encodes."""
    props = pika.BasicProperties(message_id="m1", app_id="a" * 300)
    line = Delivery(7, b"app.\xff", b"{", props, False, 0.0)  # type: ignore[arg-type]
    channel, _copies = publish([(line, "undecodable")])
    ((_exchange, _key, _body, copy),) = channel.published
    copy.encode()
    assert copy.headers[ROUTING_KEY_HEADER] == "app.\\xff"
