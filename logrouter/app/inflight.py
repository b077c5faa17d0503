"""What the broker has not confirmed yet: published messages by delivery tag.

``Inflight`` numbers the messages published on the current channel (delivery
tags count from 1 per channel), keeps the records each one carries, oldest
first, and gives them back when the broker confirms or nacks a tag
(``multiple`` honoured) or when the channel went away (``drain``). It counts
records and messages published. Runs in the I/O thread only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from logrouter.app.encoder import Encoded

#: The records one message carries (a tuple, a list, or a ``fastpack.Deferred``).
Records = Sequence[Encoded]


class Inflight:
    """Messages published and not confirmed yet, with their records."""

    def __init__(self) -> None:
        self.next_tag = 1
        #: (delivery tag, the records of that message), oldest first
        self._messages: deque[tuple[int, Records]] = deque()
        #: records published (``messages`` counts AMQP messages)
        self.published = 0
        self.messages = 0
        #: records published and not confirmed yet
        self.records = 0

    def __len__(self) -> int:
        return len(self._messages)

    def add(self, records: Records) -> None:
        """One message carrying ``records`` was published under the next tag."""
        self._messages.append((self.next_tag, records))
        self.next_tag += 1
        self.published += len(records)
        self.records += len(records)
        self.messages += 1

    def settle(self, tag: int, multiple: bool) -> list[Records]:
        """The records of each message the broker answered for with ``tag`` (and all
        before it if ``multiple``), oldest first."""
        messages = self._messages
        done: list[Records] = []
        if multiple:
            while messages and messages[0][0] <= tag:
                done.append(messages.popleft()[1])
        elif messages and messages[0][0] == tag:
            done.append(messages.popleft()[1])
        else:
            for position, (t, records) in enumerate(messages):
                if t == tag:
                    done.append(records)
                    del messages[position]
                    break
        self.records -= sum(map(len, done))
        return done

    def drain(self) -> list[Encoded]:
        """Every unconfirmed record, oldest first; their tags are void from now on."""
        records = [item for _, records in self._messages for item in records]
        self._messages.clear()
        self.records = 0
        return records
