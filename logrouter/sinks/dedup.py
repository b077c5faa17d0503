"""The dedup window of a sink and the key it remembers (pure).

Redeliveries after a crash, a reconnect or a reload carry the same message;
a sink remembers the keys of the last ``size`` messages it wrote and drops a
message whose key it has already seen.

The key is ``(user_id, app_id, message_id)``. ``user_id`` is the one property
RabbitMQ validates (it refuses a ``user_id`` that is not the publisher's login),
so one sender can never suppress another sender's record by reusing its
``message_id``; a message without ``user_id`` has ``""`` there and so never
suppresses one that has it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from typing import Any, Generic, TypeVar

#: ``(user_id or "", app_id or "", message_id)``
DedupKey = tuple[str, str, str]
K = TypeVar("K", bound=Hashable)


def dedup_key(properties: Any) -> DedupKey | None:
    """The dedup key of a message's properties; None without a (non-empty) message_id."""
    message_id = getattr(properties, "message_id", None)
    if not (isinstance(message_id, str) and message_id):
        return None
    user_id = getattr(properties, "user_id", None)
    app_id = getattr(properties, "app_id", None)
    return (
        user_id if isinstance(user_id, str) else "",
        app_id if isinstance(app_id, str) else "",
        message_id,
    )


def key_from_json(value: Any) -> DedupKey | None:
    """A key as the journal stores it (a 3-list); a bare string (older journals) is
    ``("", "", id)``; anything else None."""
    if isinstance(value, str):
        return ("", "", value)
    if isinstance(value, list) and len(value) == 3 and all(isinstance(v, str) for v in value):
        return (value[0], value[1], value[2])
    return None


class DedupWindow(Generic[K]):
    """The last ``size`` keys, oldest forgotten first."""

    def __init__(self, size: int, ids: Iterable[K] = ()) -> None:
        self.size = max(0, size)
        self._order: deque[K] = deque()
        self._seen: set[K] = set()
        self.extend(ids)

    def __contains__(self, key: object) -> bool:
        return key in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def isdisjoint(self, keys: Iterable[object]) -> bool:
        """True when none of ``keys`` is remembered (one C call for a whole batch)."""
        return self._seen.isdisjoint(keys)

    def add(self, key: K) -> None:
        """Remember ``key`` (no-op when already remembered or size is 0)."""
        if self.size == 0 or key in self._seen:
            return
        self._order.append(key)
        self._seen.add(key)
        while len(self._order) > self.size:
            self._seen.discard(self._order.popleft())

    def extend(self, ids: Iterable[K]) -> None:
        """``add`` each key (one trim at the end: the cheap path for a whole batch)."""
        if self.size == 0:
            return
        seen = self._seen
        order = self._order
        if not isinstance(ids, list | tuple):
            ids = list(ids)
        if seen.isdisjoint(ids) and len(set(ids)) == len(ids):  # the common batch: all new
            order.extend(ids)
            seen.update(ids)
            ids = ()
        for key in ids:
            if key not in seen:
                order.append(key)
                seen.add(key)
        excess = len(order) - self.size
        if excess > 0:
            popleft = order.popleft
            discard = seen.discard
            for _ in range(excess):
                discard(popleft())

    def ids(self) -> list[K]:
        """Remembered keys, oldest first."""
        return list(self._order)

    def resize(self, size: int) -> None:
        """Change the window size (a reload); the newest keys are kept."""
        self.size = max(0, size)
        while len(self._order) > self.size:
            self._seen.discard(self._order.popleft())
