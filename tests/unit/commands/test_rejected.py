"""logrouter.commands.rejected, the pure parts: who sent a message, what replay publishes."""

from __future__ import annotations

import pika

from logrouter import batchwire
from logrouter.commands.rejected import (
    REPLAY_HEADER,
    Held,
    list_line,
    replay_properties,
    selected,
    sender_of,
    show_text,
)
from logrouter.sinks.rejects import (
    BATCH_HEADER,
    EXCHANGE_HEADER,
    ORIGINAL_USER_HEADER,
    REASON_HEADER,
    RECORD_ID_HEADER,
    SINK_HEADER,
    USER_HEADER,
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
    """logrouter.rejected holds every exchange's rejects: a sink's copy names its
    exchange, a dead-lettered message its x-death exchange; another exchange's are
    not selected; a copy from a sink older than the header, or a message dead-lettered
    from a queue it reached through the default exchange, is."""
    ours = Held(1, 1, "a.err", sink_copy({EXCHANGE_HEADER: "logs"}), b"")
    theirs = Held(2, 2, "a.err", sink_copy({EXCHANGE_HEADER: "other"}), b"")
    dead = pika.BasicProperties(headers={"x-death": [{"exchange": b"other", "reason": "x"}]})
    old = Held(4, 4, "a.err", sink_copy({SINK_HEADER: "s"}), b"")
    direct = pika.BasicProperties(headers={"x-death": [{"exchange": "", "reason": "expired"}]})
    held = [ours, theirs, Held(3, 3, "a.err", dead, b""), old, Held(5, 5, "q", direct, b"")]
    assert [h.tag for h in held if selected(h, None, None, "logs")] == [1, 4, 5]
    assert [h.tag for h in held if selected(h, None, None, "other")] == [2, 3, 4, 5]
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
