"""One sink's broker connection: its queue's topology, the consumer, acks and rejects.

The sink loop (``sinks/consumer.py``) owns when to connect, consume, ack and
pause; this module owns how. ``open`` connects, declares the exchange, queue
and bindings with the same code as ``logrouter setup`` and opens a second,
confirmed channel for rejected copies; ``consume`` starts the manual-ack
consumer; ``pause`` nacks the batch in hand back onto the queue and cancels
the consumer (the queue keeps what the sink could not write). Every method runs
in the sink's own thread: pika connections are not thread-safe.

The connection reads its socket in large chunks (``read_in_large_chunks``) and,
unless ``fast_deliveries=False``, takes whole deliveries on the consuming channel
through ``sinks/deliveries.py`` (``self.fast`` says whether it did) instead of
pika's frame-by-frame decoding; the consumer's callback gets the same arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from logrouter import topology, total_decoding
from logrouter.app.frames import emit, frame_payload_max, gather, streaming_confirms
from logrouter.connection import BrokerSettings, connection_login, describe_error
from logrouter.sinks.batch import Delivery
from logrouter.sinks.deliveries import DeliveryFastPath, read_in_large_chunks
from logrouter.sinks.rejects import (
    CONFIRM_TIMEOUT,
    Confirmations,
    RejectedCopy,
    publish_rejected,
)

if TYPE_CHECKING:
    from logrouter.config import SinkConfig

OnMessage = Callable[[Any, Any, Any, bytes], None]


class BrokerLink:
    """The connection, consuming channel and reject channel of one sink."""

    def __init__(self, broker: BrokerSettings, log: Any, *, fast_deliveries: bool = True) -> None:
        self.broker = broker
        self.log = log
        #: decode whole deliveries on the consuming channel ourselves (sinks/deliveries.py)
        self.fast_deliveries = fast_deliveries
        #: whether this connection's deliveries take the fast path
        self.fast = False
        self.connection: Any = None
        self._channel: Any = None
        self._reject_channel: Any = None
        self._confirms = Confirmations()
        self._publish_reject: Callable[..., None] | None = None
        self._consumer_tag: str | None = None
        #: the broker cancelled our consumer (queue deleted, node gone): reconnect
        self.cancelled = False

    @property
    def is_open(self) -> bool:
        return self._channel is not None

    def open(self, config: SinkConfig) -> None:
        """Connect, declare the topology of ``config`` (logging reconciled bindings) and
        open the confirmed channel for rejected copies. Raises ``OSError`` or pika's
        ``AMQPError``."""
        total_decoding.install()  # one hostile message must not stop the sink for good
        connection: Any = self.broker.with_name(f"logrouter sink {config.name}").connect()
        self.connection = connection
        read_in_large_chunks(connection)
        channel = connection.channel()
        self._channel = channel
        use = self.fast_deliveries and config.fast_deliveries
        self.fast = use and DeliveryFastPath(connection, channel).install()
        topology.declare_exchange(channel, self.broker)
        diff = topology.declare_queue(channel, self.broker, topology.queue_spec(config))
        if diff.added or diff.removed:
            self.log.info(
                "bindings reconciled", added=sorted(diff.added), removed=sorted(diff.removed)
            )
        self._reject_channel = connection.channel()
        self._confirms = Confirmations(on_settled=self.wake)
        self._publish_reject = streaming_confirms(
            connection,
            self._reject_channel,
            self._confirms.on_confirm,
            self._confirms.on_return,
            on_close=self._confirms.on_close,
        )

    def consume(self, config: SinkConfig, on_message: OnMessage) -> None:
        """Start the manual-ack consumer of ``config.queue`` with its prefetch."""
        channel = self._channel
        channel.basic_qos(prefetch_count=config.prefetch)
        self.cancelled = False
        channel.add_on_cancel_callback(self._on_cancel)
        self._consumer_tag = channel.basic_consume(config.queue, on_message)

    def _on_cancel(self, _frame: Any) -> None:
        self.cancelled = True

    def reconcile(self, old: SinkConfig, new: SinkConfig) -> None:
        """A reload: reconcile the queue's bindings, take a changed prefetch."""
        topology.declare_queue(self._channel, self.broker, topology.queue_spec(new))
        if new.prefetch != old.prefetch:
            self._channel.basic_qos(prefetch_count=new.prefetch)

    def process(self, seconds: float) -> None:
        """Deliver what arrived (to the consumer's callback) for up to ``seconds``."""
        self.connection.process_data_events(time_limit=seconds)

    def ready(self, queue: str) -> int:
        """Messages ready in ``queue`` (not delivered to any consumer), asked on the
        consuming channel (deliveries meanwhile wait for the next ``process``)."""
        return int(self._channel.queue_declare(queue, passive=True).method.message_count)

    def wake(self) -> None:
        """From any thread: make a ``process`` in progress return now (quietly when the
        connection is gone)."""
        connection = self.connection
        if connection is None:
            return
        try:
            connection.add_callback_threadsafe(_nothing)
        except Exception as exc:  # closed meanwhile: process() says so itself
            self.log.debug("wake failed", error=describe_error(exc))

    def ack(self, last_tag: int) -> None:
        """Ack every delivery up to ``last_tag``."""
        self._channel.basic_ack(delivery_tag=last_tag, multiple=True)

    def pause(self, last_tag: int) -> None:
        """Nack every delivery up to ``last_tag`` back onto the queue; stop consuming."""
        self._channel.basic_nack(delivery_tag=last_tag, multiple=True, requeue=True)
        self.cancel()

    def cancel(self) -> None:
        """Stop consuming (once); deliveries pika has not handed over yet are nacked back
        onto the queue (pika does it for a manual-ack consumer)."""
        if self._consumer_tag is not None:
            tag, self._consumer_tag = self._consumer_tag, None
            self._channel.basic_cancel(tag)

    def reject(
        self,
        rejected: list[tuple[Delivery, str]],
        sink: str,
        on_rejected: Callable[[RejectedCopy], None],
    ) -> None:
        """Publish the copies of ``rejected`` (``sinks/rejects.py``: a batch's lines are
        one) on the confirmed channel, in one write, and await their confirms together;
        ``on_rejected(copy)`` for each once all are confirmed. Raises pika's
        ``NackError``/``UnroutableError``/``AMQPError`` (the batch is then not acked)."""
        if not rejected:
            return
        assert self._publish_reject is not None, "reject channel not open"
        copies: list[RejectedCopy] = []
        frames = gather(self.connection)
        sent = 0
        try:
            publish_rejected(
                self._publish_reject,
                rejected,
                sink=sink,
                sink_login=connection_login(self.connection),
                exchange=self.broker.exchange,
                on_rejected=copies.append,
                max_header=frame_payload_max(self.connection),
            )
            sent = len(copies)
        except BaseException:
            if frames is None:
                sent = len(copies)  # pika wrote those itself
            else:
                frames.clear()  # none goes out: the batch is redelivered whole
            raise
        finally:
            emit(self.connection, frames)
            self._confirms.published(sent)  # the broker numbers what it gets
        self._confirms.wait(self.process, CONFIRM_TIMEOUT)
        for copy in copies:
            on_rejected(copy)

    def close(self) -> None:
        """Close the connection (quietly when it is already broken)."""
        connection, self.connection = self.connection, None
        self._channel = self._reject_channel = self._publish_reject = None
        self._consumer_tag = None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception as exc:  # already broken: nothing to save
                self.log.debug("close failed", error=describe_error(exc))


def _nothing() -> None:
    """What ``wake`` asks the connection's thread to run: returning is the point."""
