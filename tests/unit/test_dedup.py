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
    window = DedupWindow(5, ["a", "b", "c", "d"])
    window.resize(2)
    assert window.ids() == ["c", "d"]


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
