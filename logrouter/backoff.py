"""Capped exponential backoff, the one retry-delay policy of logrouter (pure but for the clock).

``delay(attempt, ...)`` is the policy for a caller that counts attempts itself;
``Backoff.next()`` gives ``first``, ``2·first``, ``4·first`` ... up to ``cap``
(times a random factor in ``[1 - jitter, 1]`` when ``jitter`` is set, so many
clients do not retry in step). A loop that retries a connection calls
``up()`` once it is connected and ``failed()`` when it is lost: a connection
that stayed up for ``healthy_after`` seconds starts the sequence over, so an
attacker who can break the connection now and then cannot push the delay to
the cap for good.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

#: Doublings after which the delay no longer grows (2**32 · first is past any cap).
MAX_ATTEMPT = 32


def delay(attempt: int, *, first: float, cap: float, jitter: float = 0.0) -> float:
    """The delay before retry number ``attempt`` (0 first): ``first * 2**attempt``, at most
    ``cap``, times a random factor in ``[1 - jitter, 1]`` when ``jitter`` is set."""
    value = min(cap, first * float(2 ** min(attempt, MAX_ATTEMPT)))
    if jitter:
        value *= random.uniform(1.0 - jitter, 1.0)
    return value


class Backoff:
    """Delays for successive retries; see the module docstring."""

    def __init__(
        self,
        first: float = 0.5,
        cap: float = 30.0,
        *,
        jitter: float = 0.0,
        healthy_after: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if first <= 0 or cap < first or not 0.0 <= jitter <= 1.0:
            raise ValueError(f"bad backoff: first={first}, cap={cap}, jitter={jitter}")
        self.first = first
        self.cap = cap
        self.jitter = jitter
        self.healthy_after = healthy_after
        self.clock = clock
        self.attempt = 0
        self._up_since: float | None = None

    def next(self) -> float:
        """The delay before the next retry (grows each call, up to ``cap``)."""
        value = delay(self.attempt, first=self.first, cap=self.cap, jitter=self.jitter)
        self.attempt = min(self.attempt + 1, MAX_ATTEMPT)
        return value

    def reset(self) -> None:
        """Start over at ``first``."""
        self.attempt = 0

    def up(self) -> None:
        """The thing retried works now (e.g. connected); the healthy period starts."""
        self._up_since = self.clock()

    def failed(self) -> float:
        """It failed (again): the delay to wait, reset first after a healthy period."""
        since, self._up_since = self._up_since, None
        if since is not None and self.clock() - since >= self.healthy_after:
            self.reset()
        return self.next()
