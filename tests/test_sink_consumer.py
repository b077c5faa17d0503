"""Pure parts of the consumer loop: batching, classification, backoff."""

from __future__ import annotations

import json
from types import SimpleNamespace

from logrouter.sinks.batch import Batch, Delivery, classify
from logrouter.sinks.consumer import Backoff
from logrouter.sinks.dedup import DedupWindow


def delivery(tag: int, key: str, body: bytes, message_id: str | None = None) -> Delivery:
    props = SimpleNamespace(message_id=message_id, timestamp=None, app_id=None)
    return Delivery(tag, key, body, props, arrival=1_700_000_000.0)


def only_err_and_worse(facility: str, severity: str) -> bool:
    return severity in ("emerg", "alert", "crit", "err")


def test_batch_is_due_when_full_or_old() -> None:
    """A batch is written when it holds batch_size deliveries or its interval has passed."""
    batch = Batch(size=2, interval=0.5)
    assert not batch.due(0.0)
    batch.add(delivery(1, "a.err", b"x"), now=10.0)
    assert not batch.due(10.1)
    assert batch.due(10.6)
    batch.add(delivery(2, "a.err", b"y"), now=10.2)
    assert batch.full and batch.due(10.2)
    assert batch.last_tag == 2
    assert [d.tag for d in batch.take()] == [1, 2]
    assert len(batch) == 0


def test_time_left_bounds_the_wait() -> None:
    """The loop never waits past the moment the batch is due."""
    batch = Batch(size=10, interval=0.5)
    assert batch.time_left(0.0, 0.2) == 0.2
    batch.add(delivery(1, "a.err", b"x"), now=10.0)
    assert abs(batch.time_left(10.4, 0.2) - 0.1) < 1e-9
    assert batch.time_left(11.0, 0.2) == 0.0


def test_classify_writes_matching_and_filters_the_rest() -> None:
    """Records outside the selector are dropped; matching ones are decoded for the writer."""
    body = json.dumps({"facility": "auth", "severity": "err", "msg": "denied"}).encode()
    outcome = classify(
        [delivery(1, "auth.err", body, "m1"), delivery(2, "auth.info", b"hello", "m2")],
        only_err_and_worse,
        DedupWindow(10),
    )
    assert [r["msg"] for r in outcome.records] == ["denied"]
    assert outcome.filtered == 1
    assert outcome.ids == ["m1"]


def test_foreign_text_message_takes_key_facility_and_severity() -> None:
    """A syslog-style plain text body becomes msg; facility/severity come from the key."""
    batch = [delivery(1, "auth.err", b"sshd: failed\n")]
    (record,) = classify(batch, only_err_and_worse, DedupWindow(5)).records
    assert record["facility"] == "auth"
    assert (record["severity"], record["msg"]) == ("err", "sshd: failed")


def test_classify_drops_duplicates_from_window_and_batch() -> None:
    """A message_id already committed, or seen earlier in the batch, is a duplicate."""
    outcome = classify(
        [
            delivery(1, "a.err", b"one", "old"),
            delivery(2, "a.err", b"two", "new"),
            delivery(3, "a.err", b"two again", "new"),
        ],
        only_err_and_worse,
        DedupWindow(10, ["old"]),
    )
    assert [r["msg"] for r in outcome.records] == ["two"]
    assert outcome.duplicates == 2


def test_classify_does_not_touch_the_window() -> None:
    """Ids enter the window only on commit, so a failed write's redelivery is not a duplicate."""
    window = DedupWindow(10)
    classify([delivery(1, "a.err", b"x", "m1")], only_err_and_worse, window)
    assert "m1" not in window


def test_undecodable_message_is_rejected_with_reason() -> None:
    """A message with a bad key and a non-JSON body is rejected, with the reason, not raised."""
    batch = [delivery(7, "garbage", b"not json", "g1")]
    outcome = classify(batch, only_err_and_worse, DedupWindow(5))
    assert outcome.records == []
    ((rejected, reason),) = outcome.rejected
    assert rejected.tag == 7
    assert "garbage" in reason
    assert outcome.ids == ["g1"]


def test_decoder_bug_is_a_rejection_not_a_crash() -> None:
    """Any exception while decoding one message rejects that message only."""

    def broken(_: Delivery) -> dict[str, object]:
        raise RuntimeError("boom")

    outcome = classify([delivery(1, "a.err", b"x")], only_err_and_worse, DedupWindow(5), broken)
    assert "boom" in outcome.rejected[0][1]


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    """Retry delays grow 0.5, 1, 2 ... up to the cap, and start over after success."""
    backoff = Backoff(first=0.5, cap=3.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next() == 0.5
