"""The message_id dedup window of a sink (pure).

Redeliveries after a crash, a reconnect or a reload carry the same
``message_id``; a sink remembers the last ``size`` ids it wrote and drops a
record whose id it has already seen.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class DedupWindow:
    """The last ``size`` message ids, oldest forgotten first."""

    def __init__(self, size: int, ids: Iterable[str] = ()) -> None:
        self.size = max(0, size)
        self._order: deque[str] = deque()
        self._seen: set[str] = set()
        self.extend(ids)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, message_id: str) -> None:
        """Remember ``message_id`` (no-op when already remembered or size is 0)."""
        if self.size == 0 or message_id in self._seen:
            return
        self._order.append(message_id)
        self._seen.add(message_id)
        while len(self._order) > self.size:
            self._seen.discard(self._order.popleft())

    def extend(self, ids: Iterable[str]) -> None:
        """``add`` each id (one trim at the end: the cheap path for a whole batch)."""
        if self.size == 0:
            return
        seen = self._seen
        order = self._order
        for message_id in ids:
            if message_id not in seen:
                order.append(message_id)
                seen.add(message_id)
        excess = len(order) - self.size
        if excess > 0:
            popleft = order.popleft
            discard = seen.discard
            for _ in range(excess):
                discard(popleft())

    def ids(self) -> list[str]:
        """Remembered ids, oldest first."""
        return list(self._order)

    def resize(self, size: int) -> None:
        """Change the window size (a reload); the newest ids are kept."""
        self.size = max(0, size)
        while len(self._order) > self.size:
            self._seen.discard(self._order.popleft())
