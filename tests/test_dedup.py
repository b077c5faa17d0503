"""The message_id dedup window (pure)."""

from __future__ import annotations

from logrouter.sinks.dedup import DedupWindow


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
