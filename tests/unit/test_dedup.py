"""The dedup window and its key (dedup.py, pure)."""

from __future__ import annotations

from types import SimpleNamespace

from logrouter.sinks.dedup import DedupKey, DedupWindow, dedup_key


def test_remembers_ids_it_was_given() -> None:
    """An id added to the window is reported as seen; another is not."""
    window = DedupWindow(10)
    window.add("a")
    assert "a" in window
    assert "b" not in window


def test_forgets_oldest_beyond_its_size() -> None:
    """With size 3, the fourth id pushes out the first one."""
    window = DedupWindow(3, ["a", "b", "c"])
    window.add("d")
    assert "a" not in window
    assert window.ids() == ["b", "c", "d"]


def test_adding_twice_keeps_one_entry() -> None:
    """Re-adding a remembered id does not make it count twice."""
    window = DedupWindow(2, ["a", "a", "b"])
    assert window.ids() == ["a", "b"]
    assert len(window) == 2


def test_size_zero_remembers_nothing() -> None:
    """A window of size 0 (dedup disabled) never reports a duplicate."""
    window = DedupWindow(0, ["a"])
    assert "a" not in window


def test_resize_keeps_newest() -> None:
    """Shrinking the window on reload keeps the newest ids."""
    window = DedupWindow(5, ["a", "b"])
    window.extend(["c", "d"])
    window.resize(2)
    assert window.ids() == ["c", "d"]


def test_the_last_batch_stays_whole_even_over_the_size() -> None:
    """A batch of more keys than the window holds is remembered whole (a lost ack
    redelivers all of it) until the next batch comes; then the window is its size again."""
    window = DedupWindow(3, ["old"])
    window.extend([f"k{n}" for n in range(5)])
    assert window.ids() == ["k0", "k1", "k2", "k3", "k4"]
    assert "old" not in window and "k0" in window
    window.resize(2)
    assert len(window) == 5
    window.extend(["next"])
    assert window.ids() == ["k4", "next"]


def test_key_names_the_sender() -> None:
    """The key is (user_id, app_id, message_id); missing user_id/app_id are "" and a
    message without message_id has no key."""
    props = SimpleNamespace(message_id="42", user_id="billing", app_id="api")
    assert dedup_key(props) == ("billing", "api", "42")
    assert dedup_key(SimpleNamespace(message_id="42")) == ("", "", "42")
    assert dedup_key(SimpleNamespace(message_id="", user_id="u")) is None


def test_the_same_id_from_another_sender_is_another_message() -> None:
    """A window holding billing/api's id 42 does not hold 42 of another login, of another
    app of the same login, nor of a message without user_id: and one without user_id
    never covers one with it."""
    window: DedupWindow[DedupKey] = DedupWindow(10, [("billing", "api", "42")])
    assert ("billing", "api", "42") in window
    assert ("attacker", "api", "42") not in window
    assert ("billing", "web", "42") not in window
    assert ("", "api", "42") not in window
    anonymous: DedupWindow[DedupKey] = DedupWindow(10, [("", "api", "42")])
    assert ("billing", "api", "42") not in anonymous


def test_batches_beyond_the_size_forget_exactly_the_oldest_keys() -> None:
    """Keys added in batches of uneven sizes: the window keeps exactly the newest ``size``
    (all of the last batch when it is longer), in order, and answers for each key as one
    added key by key would."""
    window: DedupWindow[str] = DedupWindow(7)
    reference: list[str] = []
    for batch, length in enumerate([3, 5, 1, 8, 2, 4]):
        keys = [f"{batch}-{n}" for n in range(length)]
        window.extend(keys)
        reference = (reference + keys)[-max(7, length) :]
        assert window.ids() == reference
        assert len(window) == len(reference)
        assert all(key in window for key in reference)
        assert not any(f"{old}-0" in window for old in range(batch) if f"{old}-0" not in reference)


def test_a_batch_with_known_and_repeated_keys_adds_each_new_key_once() -> None:
    """Extending with keys already remembered, or given twice, adds the new ones once,
    in the order first given, and the window's size still bounds them."""
    window = DedupWindow(4, ["a", "b"])
    window.extend(["b", "c", "c", "a", "d"])
    assert window.ids() == ["a", "b", "c", "d"]
    window.extend(["e", "e"])
    assert window.ids() == ["b", "c", "d", "e"]
    assert "a" not in window
    window.resize(0)
    assert window.ids() == []
    assert "e" not in window
