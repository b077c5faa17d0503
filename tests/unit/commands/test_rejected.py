"""logrouter.commands.rejected, the pure parts: who sent a message, what replay publishes."""

from __future__ import annotations

import pika

from logrouter import batchwire
from logrouter.commands.rejected import (
    REPLAY_HEADER,
    Held,
    exchange_of,
    list_line,
    original_key,
    reason_of,
    replay_properties,
    selected,
    sender_of,
    show_text,
    time_of,
)
from logrouter.sinks.batch import Delivery
from logrouter.sinks.rejects import (
    BATCH_HEADER,
    EXCHANGE_HEADER,
    ORIGINAL_USER_HEADER,
    REASON_HEADER,
    RECORD_ID_HEADER,
    ROUTING_KEY_HEADER,
    SINK_HEADER,
    USER_HEADER,
    rejected_properties,
)


def sink_copy(headers: dict[str, object]) -> pika.BasicProperties:
    """A message as a sink (login ``sinkd``) publishes it to logrouter.rejected."""
    return pika.BasicProperties(message_id="m1", user_id="sinkd", headers=headers)


def test_a_sinks_copy_names_the_sender_from_its_header_not_its_user_id() -> None:
    """A sink's copy: the sender is x-logrouter-user-id (set by the sink); the copy's
    user_id (the sink's login) is not the sender; without the header nobody is."""
    assert sender_of(sink_copy({SINK_HEADER: "s", USER_HEADER: "billing"})) == "billing"
    assert sender_of(sink_copy({SINK_HEADER: "s"})) is None


def test_a_dead_lettered_message_names_its_user_id_not_a_planted_header() -> None:
    """Dead-lettered by the broker (x-death): the sender is the user_id the broker
    validated, never the x-logrouter-user-id its sender wrote."""
    props = pika.BasicProperties(
        user_id="mallory", headers={"x-death": [{"reason": "expired"}], USER_HEADER: "admin"}
    )
    assert sender_of(props) == "mallory"


def test_replay_keeps_the_sender_as_original_user_and_drops_rejection_headers() -> None:
    """Replay: x-logrouter-original-user is the sender (not the sink's login), the
    sink's headers are gone, the replay mark is set, other headers stay."""
    props = replay_properties(
        Held(1, 1, "app.err", sink_copy({SINK_HEADER: "s", USER_HEADER: "billing", "k": "v"}), b"")
    )
    assert props.headers == {ORIGINAL_USER_HEADER: "billing", REPLAY_HEADER: "rejected", "k": "v"}
    assert props.message_id == "m1" and props.user_id is None


def test_show_lists_the_sender_once_and_no_user_header() -> None:
    """show: one `sent by` line; the user headers themselves are not listed."""
    text = show_text(Held(1, 1, "app.err", sink_copy({USER_HEADER: "billing"}), b"x"))
    assert "sent by: billing\n" in text and "user_id: sinkd\n" in text
    assert "x-logrouter-user-id" not in text


def test_only_the_configs_exchange_is_selected_from_the_shared_queue() -> None:
    """logrouter.rejected holds every exchange's rejects: a sink's copy is selected by
    the exchange it names (or when it names none: a sink older than the header); a
    dead-lettered message by the queue it died in, one of the config's sink queues,
    never by the exchange its x-death names (a sender can plant that entry, and before
    RabbitMQ 3.13 the broker keeps its exchange when it merges the real death in)."""
    ours = Held(1, 1, "a.err", sink_copy({EXCHANGE_HEADER: "logs"}), b"")
    theirs = Held(2, 2, "a.err", sink_copy({EXCHANGE_HEADER: "other"}), b"")
    death = {"exchange": "other", "reason": "expired", "queue": "logrouter.a"}
    died_in_ours = pika.BasicProperties(headers={"x-death": [death]})
    old = Held(4, 4, "a.err", sink_copy({SINK_HEADER: "s"}), b"")
    elsewhere = pika.BasicProperties(headers={"x-death": [{**death, "queue": "logrouter.z"}]})
    held = [ours, theirs, Held(3, 3, "a.err", died_in_ours, b""), old]
    held.append(Held(5, 5, "q", elsewhere, b""))
    mine = frozenset({"logrouter.a"})
    assert [h.tag for h in held if selected(h, None, None, "logs", mine)] == [1, 3, 4]
    other = frozenset({"logrouter.z"})
    assert [h.tag for h in held if selected(h, None, None, "other", other)] == [2, 4, 5]
    assert [h.tag for h in held if selected(h, None, None, "logs")] == [1, 4]  # no config
    assert [h.tag for h in held if selected(h, None, None, None)] == [1, 2, 3, 4, 5]


def grouped_copy() -> Held:
    """A sink's copy of the two bad lines of batch ``b7`` (as ``sinks/rejects`` makes it)."""
    props = pika.BasicProperties(
        message_id="b7",
        user_id="sinkd",
        content_type=batchwire.CONTENT_TYPE,
        headers={
            batchwire.RECORDS_HEADER: 2,
            BATCH_HEADER: "b7",
            REASON_HEADER: "2 records rejected: line 1: not a JSON object (+1 more line)",
            SINK_HEADER: "s",
            USER_HEADER: "billing",
        },
    )
    return Held(1, 1, "app.err", props, b"junk \x1b[31m\n[2]\n")


def test_a_copy_of_batch_lines_is_listed_with_its_count_and_shown_line_by_line() -> None:
    """list: the size says the copy's records; show: the reason, then each line numbered
    as the reason numbers it, escaped."""
    held = grouped_copy()
    assert "  15B/2 records  b7  2 records rejected: line 1: not a JSON object" in list_line(held)
    text = show_text(held)
    assert "header x-logrouter-reason: 2 records rejected: line 1:" in text
    assert text.endswith("body (15 bytes, 2 records):\nline 1: junk \\x1b[31m\nline 2: [2]")


def test_replay_of_a_copy_of_batch_lines_is_a_batch_of_them() -> None:
    """Replay of a copy of batch lines: a batch (content type and record count kept),
    the batch's message_id; the rejection headers but the batch's id dropped."""
    props = replay_properties(grouped_copy(), "ops")
    assert props.content_type == batchwire.CONTENT_TYPE and props.message_id == "b7"
    assert props.headers == {
        batchwire.RECORDS_HEADER: 2,
        BATCH_HEADER: "b7",
        REPLAY_HEADER: "rejected",
        ORIGINAL_USER_HEADER: "billing",
    }


def test_a_copy_of_batch_lines_is_named_by_its_id_or_one_of_its_lines_ids() -> None:
    """show finds a copy of several lines by the batch's id, or by the own id of one of
    its lines (a record id an app or the archive names); not by text that is no id."""
    props = grouped_copy().properties
    body = b'{"id":"rec-1","msg":"' + b"x" * 10 + b'"}\njunk rec-2\n[3]\n'
    held = Held(1, 1, "app.err", props, body)
    assert held.named("b7") and held.named("rec-1")
    assert not held.named("rec-2") and not held.named("x")
    single = Held(2, 2, "app.err", pika.BasicProperties(message_id="m1"), body)
    assert single.named("m1") and not single.named("rec-1")


def test_a_line_copy_is_named_by_the_record_id_too_long_for_its_message_id() -> None:
    """A rejected line whose id could not be the copy's message_id (over 255 bytes) is
    found by that id, kept in x-logrouter-record-id."""
    long_id = "r" * 300
    props = pika.BasicProperties(message_id="b7", headers={RECORD_ID_HEADER: long_id})
    held = Held(1, 1, "app.err", props, b"junk")
    assert held.named(long_id) and held.named("b7") and not held.named("r")


def test_a_senders_own_sink_headers_are_never_taken_for_the_sinks() -> None:
    """A message dead-lettered into logrouter.rejected (x-death) or read from an unrouted
    queue: its reason, exchange, routing key and sender come from the broker and its own
    user_id, never from x-logrouter-* headers it planted; show marks those as the
    sender's. A sink's copy is read as before."""
    planted = {
        REASON_HEADER: "forged: sink said so",
        EXCHANGE_HEADER: "victim",
        ROUTING_KEY_HEADER: "victim.crit",
        USER_HEADER: "guest",
    }
    death = {"x-death": [{"reason": "expired", "queue": "logrouter.f", "exchange": "logs"}]}
    dead = pika.BasicProperties(user_id="mallory", headers={**planted, **death})
    unrouted = pika.BasicProperties(user_id="mallory", headers=dict(planted))
    for held in (
        Held(1, 1, "app.err", dead, b"x"),
        Held(2, 2, "app.err", unrouted, b"x", from_sinks=False),
    ):
        assert not held.sink_copy
        assert sender_of(held.properties, held.sink_copy) == "mallory"
        assert "forged" not in reason_of(held.properties, held.sink_copy)
        assert exchange_of(held.properties, held.sink_copy) in (None, "logs")
        assert original_key(held) == "app.err"
        text = show_text(held)
        assert "sent by: mallory" in text
        assert "header x-logrouter-reason (set by the sender): forged" in text
    assert not selected(Held(1, 1, "app.err", dead, b"x"), None, None, "victim")
    copy = Held(3, 3, "app.err", pika.BasicProperties(user_id="sinkd", headers=planted), b"x")
    assert copy.sink_copy and sender_of(copy.properties) == "guest"
    assert reason_of(copy.properties) == "forged: sink said so"


def test_a_timestamp_past_year_9999_or_mixed_header_keys_do_not_stop_list_or_show() -> None:
    """A timestamp property of 2**62 s has no time (list printed a traceback and stopped);
    header keys of str and bytes (not UTF-8) are shown in a stable order."""
    props = pika.BasicProperties(timestamp=2**62, headers={"a": 1, b"\xff": 2})
    held = Held(1, 1, "app.err", props, b"x")
    assert time_of(props) is None
    assert list_line(held).startswith("-  ")
    assert "header b'\\xff': 2" in show_text(held) or "header b'\\\\xff': 2" in show_text(held)


def test_a_sink_copy_of_a_message_carrying_its_own_x_death_is_still_the_sinks() -> None:
    """A sender's x-death (and x-first/last-death-*) headers are dropped from a sink's
    copy: the copy reads as the sink's (its reason, exchange and sender), not as a
    message dead-lettered elsewhere (which hid it from its own exchange's operator)."""
    forged = [{"exchange": "tenant-b", "reason": "expired", "queue": "logs.ops"}]
    props = pika.BasicProperties(
        user_id="mallory", headers={"x-death": forged, "x-first-death-exchange": "tenant-b"}
    )
    copy = rejected_properties(
        Delivery(1, "app.web", b"not json", props, False, 0.0),
        "invalid JSON",
        sink="s",
        sink_login="sinkd",
        exchange="tenant-a",
    )
    held = Held(1, 1, "app.web", copy, b"not json")
    assert held.sink_copy and held.died_in is None
    assert held.reason == "invalid JSON"
    assert selected(held, None, None, "tenant-a") and not selected(held, None, None, "tenant-b")
    assert sender_of(held.properties, held.sink_copy) == "mallory"


def test_an_unrouted_message_is_unrouted_whatever_its_headers_say() -> None:
    """In an unrouted queue every header is the sender's: an x-death there is not the
    reason shown or matched by --reason."""
    props = pika.BasicProperties(headers={"x-death": [{"reason": "expired", "queue": "q"}]})
    held = Held(1, 1, "app.err", props, b"x", from_sinks=False)
    assert held.reason == "unrouted (no binding matched)" and held.died_in is None
    assert not selected(held, "expired", None)
