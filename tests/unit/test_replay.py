"""Unit tests for ``logrouter.commands.replay``: the confirm bookkeeping behind the cursor."""

from __future__ import annotations

from logrouter.commands.replay_cursor import Confirms


def sent(count: int) -> Confirms:
    confirms = Confirms()
    for n in range(1, count + 1):
        confirms.sent((f"ts{n}", f"id{n}"))
    return confirms


def test_a_multiple_ack_confirms_every_message_up_to_its_tag() -> None:
    """basic.ack with multiple: messages 1..tag are confirmed, the cursor is tag's record."""
    confirms = sent(5)
    assert confirms.ack(3, True) == (3, ("ts3", "id3"))
    assert len(confirms) == 2
    assert confirms.ack(5, True) == (2, ("ts5", "id5"))
    assert len(confirms) == 0


def test_the_cursor_does_not_pass_a_message_still_unconfirmed() -> None:
    """Single acks out of order: the cursor stops before the first unconfirmed message and
    moves over the whole run once it is confirmed."""
    confirms = sent(4)
    assert confirms.ack(2, False) == (0, None)
    assert confirms.ack(4, False) == (0, None)
    assert confirms.ack(1, False) == (2, ("ts2", "id2"))
    assert confirms.ack(3, False) == (2, ("ts4", "id4"))
    assert len(confirms) == 0


def test_a_multiple_ack_after_single_ones_joins_them() -> None:
    """A single ack beyond a later multiple ack's tag is kept and counted once reached."""
    confirms = sent(6)
    assert confirms.ack(5, False) == (0, None)
    assert confirms.ack(4, True) == (5, ("ts5", "id5"))
    assert confirms.ack(6, False) == (1, ("ts6", "id6"))


def test_a_round_moves_the_cursor_only_with_its_last_message() -> None:
    """Messages of a batch round complete no cursor but their last one: acks of the first
    ones count their records and leave the cursor where the previous round ended."""
    confirms = Confirms()
    confirms.sent(("ts1", "a"), 3)  # round 1: one message
    confirms.sent(None, 4)  # round 2: three messages, the last completes it
    confirms.sent(None, 2)
    confirms.sent(("ts9", "b"), 1)
    assert confirms.records == 10
    assert confirms.ack(3, True) == (9, ("ts1", "a"))
    assert confirms.ack(4, False) == (1, ("ts9", "b"))
    assert confirms.records == 0
