"""``batch="auto"``: the publisher's packed path (linger, take a backlog, pack, publish).

``BatchPump.publish`` takes up to a pump's share of records from the outbox,
``fastpack`` groups them by routing key, and each packet goes out through
the ``FrameWriter`` as one batch message (or a plain one for a lone record).
``lingering`` holds a small backlog while the broker still owes confirms, for
``linger`` seconds at most and no longer than the last confirm (Nagle's rule
with a timer), so that a busy app sends fewer, fuller messages and a quiet one
sends each record at once. Runs in the I/O thread only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pika.adapters.select_connection import IOLoop

from logrouter.app.fastpack import pack_backlog, pack_encoded
from logrouter.app.frames import FrameWriter
from logrouter.app.inflight import Inflight
from logrouter.app.outbox import Outbox

#: Records taken from the outbox per pump, at most (then I/O is serviced).
PUMP_RECORDS = 2000
#: Records published and not yet confirmed, at most (the publisher's cap counts
#: messages, and a batch carries up to batch_records): what a SIGKILL can lose of
#: them. A flat-out app into a durable queue had 9,000-22,000 in flight uncapped
#: (confirms wait for the broker's fsync); this leaves it room.
INFLIGHT_RECORDS = 50_000


class BatchPump:
    """Publishes the outbox's backlog packed; see the module docstring."""

    def __init__(
        self,
        outbox: Outbox,
        inflight: Inflight,
        ioloop: IOLoop,
        *,
        linger: float,
        batch_records: int,
        batch_bytes: int,
        on_due: Callable[[], None],
    ) -> None:
        self.outbox = outbox
        self.inflight = inflight
        self._ioloop = ioloop
        self.linger = max(0.0, linger)
        self.batch_records = max(1, batch_records)
        self.batch_bytes = max(1, batch_bytes)
        self._on_due = on_due
        #: records taken from the outbox, not yet in flight (``idle`` must not miss them)
        self.in_hand = False
        self._linger_until: float | None = None
        self._linger_timer: Any = None  # pika's timeout handle

    def lingering(self, limit: int) -> bool:
        """Hold a small backlog up to ``linger`` s while messages are in flight.

        Only while the broker still owes confirms (the app is busy): a record of a
        quiet app goes at once, and the backlog goes as soon as the last confirm is
        in (the pump runs on each confirm). True when this pump should publish
        nothing yet.
        """
        if not self.linger or not limit:
            return False
        now = time.monotonic()
        until = self._linger_until
        if until is not None:
            if now < until and len(self.inflight):
                return True  # the confirms' pump, or the one due at ``until``, publishes
            self._end_linger()
            return False
        if len(self.inflight) and len(self.outbox.buffer) < self.batch_records:
            self._linger_until = now + self.linger
            self._linger_timer = self._ioloop.call_later(self.linger, self._due)
            return True
        return False

    def _due(self) -> None:
        self._linger_timer = None  # fired: not to be removed (pika counts a removal)
        self._on_due()

    def _end_linger(self) -> None:
        self._linger_until = None
        timer, self._linger_timer = self._linger_timer, None
        if timer is not None:
            self._ioloop.remove_timeout(timer)

    def publish(self, writer: FrameWriter, limit: int) -> int:
        """Take up to PUMP_RECORDS records and publish them packed; messages published
        (``limit`` when more than a pump's share was waiting, so that the pump comes back)."""
        outbox = self.outbox
        budget = min(
            PUMP_RECORDS, limit * self.batch_records, INFLIGHT_RECORDS - self.inflight.records
        )
        if budget <= 0:
            return 0  # the confirms' pump comes back
        self.in_hand = True
        try:
            backlog = outbox.take_buffered(budget)  # the usual case: only new records wait
            items = outbox.take_many(budget) if backlog is None else backlog
            taken = len(items)
            if not taken:
                return 0
            if backlog is not None:
                packets = pack_backlog(
                    outbox.encoder,
                    backlog,
                    max_records=self.batch_records,
                    max_bytes=self.batch_bytes,
                )
            else:
                packets = pack_encoded(
                    items,  # type: ignore[arg-type]  # take_many's: encoded
                    max_records=self.batch_records,
                    max_bytes=self.batch_bytes,
                )
            done = 0
            try:
                with writer:
                    for packet in packets:
                        if packet.batch:
                            writer.publish_batch(
                                packet.routing_key,
                                packet.body,
                                packet.message_id,
                                packet.timestamp,
                                len(packet.items),
                            )
                        else:
                            writer.publish(
                                packet.routing_key,
                                packet.body,
                                packet.message_id,
                                packet.timestamp,
                            )
                        self.inflight.add(packet.items)
                        done += 1
            except BaseException:
                # what was not handed to the broker goes back in front, in order
                outbox.rewind(item for packet in packets[done:] for item in packet.items)
                raise
        finally:
            self.in_hand = False
        return limit if taken >= budget else len(packets)
