"""inflight.Inflight: delivery tags per channel, records settled by confirm, drained on loss."""

from __future__ import annotations

from logrouter.app.encoder import Encoded
from logrouter.app.inflight import Inflight


def _item(seq: int) -> Encoded:
    return Encoded(1, seq, "user.info", f"m{seq}", 0, b"{}")


def test_confirms_settle_one_tag_or_all_up_to_it() -> None:
    """A single confirm gives its message's records; ``multiple`` gives every older
    message's too, message by message, oldest first."""
    inflight = Inflight()
    inflight.add((_item(1), _item(2)))  # tag 1: a batch of two
    inflight.add((_item(3),))  # tag 2
    inflight.add((_item(4),))  # tag 3
    assert [[i.seq for i in m] for m in inflight.settle(2, multiple=False)] == [[3]]
    assert inflight.records == 3
    assert [[i.seq for i in m] for m in inflight.settle(3, multiple=True)] == [[1, 2], [4]]
    assert len(inflight) == 0 and inflight.records == 0
    assert (inflight.published, inflight.messages) == (4, 3)


def test_drain_gives_every_unconfirmed_record_in_order_and_tags_restart() -> None:
    """When the channel goes, the unconfirmed records come back oldest first."""
    inflight = Inflight()
    for seq in (1, 2, 3):
        inflight.add((_item(seq),))
    inflight.settle(2, multiple=False)
    assert [i.seq for i in inflight.drain()] == [1, 3]
    assert len(inflight) == 0 and inflight.settle(3, multiple=True) == []
