"""The dedup window of a sink and the key it remembers (pure).

Redeliveries after a crash, a reconnect or a reload carry the same message;
a sink remembers the keys of the last ``size`` messages it wrote and drops a
message whose key it has already seen.

The key is ``(user_id, app_id, message_id)``. ``user_id`` is the one property
RabbitMQ validates (it refuses a ``user_id`` that is not the publisher's login),
so one sender can never suppress another sender's record by reusing its
``message_id``; a message without ``user_id`` has ``""`` there and so never
suppresses one that has it. A replayed message (header ``x-logrouter-replay``,
set by ``logrouter replay`` and ``rejected replay``) has its sender's login
marked as a replayer's: replays are deduplicated against each other, never
against the deliveries they repeat (a sink being rebuilt writes them again).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from typing import Any, Generic, TypeVar

#: ``(user_id or "", app_id or "", message_id)``
DedupKey = tuple[str, str, str]
K = TypeVar("K", bound=Hashable)


#: Header on a record re-published by ``replay`` (the run id) or ``rejected`` ("rejected").
REPLAY_HEADER = "x-logrouter-replay"
#: Added to a replayed message's user in its key (no login holds a NUL).
REPLAYED = "\x00replay"


def dedup_user(properties: Any) -> str:
    """The first part of a message's key: its broker-validated ``user_id`` ("" without
    one), marked when the message is a replay."""
    user_id = getattr(properties, "user_id", None)
    user = user_id if isinstance(user_id, str) else ""
    headers = getattr(properties, "headers", None)
    if headers and REPLAY_HEADER in headers:
        return user + REPLAYED
    return user


def dedup_key(properties: Any) -> DedupKey | None:
    """The dedup key of a message's properties; None without a (non-empty) message_id."""
    message_id = getattr(properties, "message_id", None)
    if not (isinstance(message_id, str) and message_id):
        return None
    app_id = getattr(properties, "app_id", None)
    return (dedup_user(properties), app_id if isinstance(app_id, str) else "", message_id)


def key_from_json(value: Any) -> DedupKey | None:
    """A key as the journal stores it (a 3-list); a bare string (older journals) is
    ``("", "", id)``; anything else None."""
    if isinstance(value, str):
        return ("", "", value)
    if isinstance(value, list) and len(value) == 3 and all(isinstance(v, str) for v in value):
        return (value[0], value[1], value[2])
    return None


class DedupWindow(Generic[K]):
    """The last ``size`` keys, oldest forgotten first; the keys of the last ``extend`` (a
    committed batch) all, even when they are more than ``size``.

    Keys are kept in chunks (one per ``extend``, the keys of a committed batch), so a
    batch costs one hash per key to remember and one to forget, both in C: whole
    chunks leave the window at once, only the oldest one is ever cut.
    """

    def __init__(self, size: int, ids: Iterable[K] = ()) -> None:
        self.size = max(0, size)
        self._chunks: deque[list[K]] = deque()
        self._count = 0  # keys in the chunks (== len(self._seen))
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
        self.extend((key,))

    def extend(self, ids: Iterable[K]) -> None:
        """``add`` each key in order (one trim at the end: the cheap path for a whole batch)."""
        if self.size == 0:
            return
        seen = self._seen
        fresh = list(ids)
        before = len(seen)
        seen.update(fresh)
        if len(seen) - before != len(fresh):  # a key already known or given twice: rare
            known = set(self._all())
            fresh = [key for key in dict.fromkeys(fresh) if key not in known]
        if fresh:
            self._chunks.append(fresh)
            self._count += len(fresh)
        self._trim()

    def _all(self) -> list[K]:
        return [key for chunk in self._chunks for key in chunk]

    def _trim(self) -> None:
        # The newest chunk stays whole, even over ``size``: it is the batch just committed,
        # the one a lost ack redelivers, and every key of it must still be known then.
        excess = self._count - self.size
        chunks = self._chunks
        while excess > 0 and len(chunks) > 1:
            oldest = chunks[0]
            if len(oldest) <= excess:
                chunks.popleft()
                self._seen.difference_update(oldest)
                excess -= len(oldest)
                self._count -= len(oldest)
            else:
                self._seen.difference_update(oldest[:excess])
                chunks[0] = oldest[excess:]
                self._count -= excess
                excess = 0

    def ids(self) -> list[K]:
        """Remembered keys, oldest first."""
        return self._all()

    def resize(self, size: int) -> None:
        """Change the window size (a reload); the newest keys are kept."""
        self.size = max(0, size)
        if self.size == 0:
            self._chunks.clear()
            self._seen.clear()
            self._count = 0
        self._trim()
