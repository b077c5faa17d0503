"""Deliveries decoded with ``struct``: the only sink module that touches pika internals.

pika decodes each inbound frame on its own (``frame.decode_frame``, a method
object through its generic decoder, a ``Frame`` object per frame, the content
assembler, the channel's and ``BlockingChannel``'s callbacks) and trims its
receive buffer after every frame: most of a sink's CPU per single-record message.
``DeliveryFastPath`` replaces, on one connection, pika 1.x's private
``Connection._on_data_available`` (the socket data handler) with a loop over the
same buffer that takes a whole delivery in one step when the buffer holds, on the
sink's consuming channel, a complete ``Basic.Deliver`` method frame, its content
header and its body in one frame (or none, for an empty body): the method is
unpacked with ``struct`` into pika's own ``spec.Basic.Deliver``, the properties
by pika's own ``BasicProperties.decode``, and the delivery queued as the same
``_ConsumerDeliveryEvt`` that ``BlockingChannel`` queues, so the consumer's
callback still runs where pika runs it (from ``process_data_events``, after the
I/O), with the same arguments. A delivery whose method and header are in the
buffer but whose body frame is not all there yet (a batch message is larger than
a socket read) waits in the buffer for the rest, then is taken whole.

Everything else takes pika's own path, one frame at a time and in order:
heartbeats, other channels, other methods (``Basic.Cancel``, closes, RPC
replies), a delivery whose content header has not fully arrived yet (its method
frame goes to pika's assembler, then the rest follows it there), bodies in more
than one frame, malformed frames, a consumer pika would not hand the delivery to
directly (cancelled, unknown, a consumer generator). pika's ``bytes_received`` and
``frames_received`` grow as they would (heartbeat checks read them).

``read_in_large_chunks`` (also here: pika's transport's private read size) makes
the connection read its socket 64 KiB at a time.

pika is pinned in pyproject.toml; ``install`` returns False, leaving pika's own
path, when an internal it needs is missing; a sink's ``fast_deliveries = false``
(config key) or ``fast_deliveries=False`` (``BrokerLink``, ``Sink``) does not
install it. tests/unit/test_deliveries.py feeds marshaled frames through both paths
in every split and compares the outcome.
"""

from __future__ import annotations

import struct
from typing import Any

import pika.spec
from pika.adapters import blocking_connection

_Deliver: Any = pika.spec.Basic.Deliver
_Properties: Any = pika.spec.BasicProperties
_DeliveryEvent: Any = getattr(blocking_connection, "_ConsumerDeliveryEvt", None)
_BlockingChannel: Any = blocking_connection.BlockingChannel
_ON_DELIVERY: Any = getattr(_BlockingChannel, "_on_consumer_message_delivery", None)
_HEAD = struct.Struct(">BHI")  # frame type, channel, payload size
_DELIVER_ID = 0x003C003C  # class 60 (basic), method 60 (deliver)
_ID = struct.Struct(">I")
_TAG = struct.Struct(">QB")  # delivery_tag, bits (redelivered)
_CONTENT = struct.Struct(">HHQ")  # class, weight, body size
_END = 0xCE
_METHOD, _HEADER, _BODY = 1, 2, 3
_CONNECTION_NEEDS = (
    "_on_data_available",
    "_frame_buffer",
    "bytes_received",
    "frames_received",
    "_read_frame",
    "_trim_frame_buffer",
    "_process_frame",
    "_channels",
    "callbacks",
)
_CHANNEL_NEEDS = ("_content_assembler", "_consumers", "_cancelled", "_on_deliver")
_BLOCKING_NEEDS = ("_impl", "_consumer_infos", "_pending_events", "channel_number")


#: bytes per socket read of a sink's connection. pika reads 4 KiB at a time and appends
#: each read to its frame buffer (``bytes +=``): quadratic in a frame's size, and a
#: batch message comes in frames of up to frame_max (128 KiB). Below glibc's mmap
#: threshold (128 KiB): the read buffer comes from the heap, not a fresh mapping.
RECV_BYTES = 64 * 1024


def read_in_large_chunks(connection: Any) -> bool:
    """Make ``connection`` (a pika BlockingConnection) read RECV_BYTES per socket read;
    False when this pika's transport has no such setting (then it reads as it does)."""
    transport = getattr(getattr(connection, "_impl", None), "_transport", None)
    if transport is None or not isinstance(getattr(transport, "_MAX_RECV_BYTES", None), int):
        return False
    transport._MAX_RECV_BYTES = max(transport._MAX_RECV_BYTES, RECV_BYTES)
    return True


def _properties(encoded: bytes) -> Any:
    """pika's own decoding of a content header's properties."""
    return _Properties().decode(encoded)


def _shortstr(buf: bytes, at: int) -> tuple[Any, int]:
    """An AMQP short string at ``at`` as pika decodes it (str, or bytes when not UTF-8)."""
    end = at + 1 + buf[at]
    value: Any = buf[at + 1 : end]
    try:  # noqa: SIM105 (a with-statement costs more, once per string of every delivery)
        value = value.decode("utf8")
    except UnicodeDecodeError:
        pass
    return value, end


class DeliveryFastPath:
    """Installed on a ``BlockingConnection`` for deliveries on one ``BlockingChannel``."""

    def __init__(self, connection: Any, channel: Any) -> None:
        self._blocking = connection
        self._conn: Any = getattr(connection, "_impl", None)
        self._bchannel: Any = channel
        self._channel: Any = getattr(channel, "_impl", None)
        self._number: int = getattr(channel, "channel_number", 0)
        self.installed = False
        #: deliveries taken by the fast path (for tests and benchmarks)
        self.fast = 0

    def install(self) -> bool:
        """Take over the connection's data handler; False (pika's path stays) when this
        pika lacks an internal the fast path needs."""
        conn, channel = self._conn, self._channel
        if (
            _DeliveryEvent is None
            or _ON_DELIVERY is None
            or conn is None
            or channel is None
            or not all(hasattr(conn, name) for name in _CONNECTION_NEEDS)
            or not all(hasattr(channel, name) for name in _CHANNEL_NEEDS)
            or not all(hasattr(self._bchannel, name) for name in _BLOCKING_NEEDS)
            or not hasattr(self._blocking, "_request_channel_dispatch")
            or not hasattr(channel._content_assembler, "_method_frame")
        ):
            return False
        conn._on_data_available = self.on_data_available
        self.installed = True
        return True

    def uninstall(self) -> None:
        """pika's own data handler again."""
        if self.installed:
            del self._conn._on_data_available  # back to the class's method
            self.installed = False

    def _ready(self) -> bool:
        """The channel is the connection's, idle between contents, nothing waits on a
        Basic.Deliver: a delivery on it may be taken whole."""
        conn, channel = self._conn, self._channel
        return (
            conn._channels.get(self._number) is channel
            and channel._content_assembler._method_frame is None
            and not conn.callbacks.pending(self._number, _Deliver)
        )

    def on_data_available(self, data_in: bytes) -> None:
        """pika's ``Connection._on_data_available``, whole deliveries taken in one step."""
        conn = self._conn
        buf: bytes = conn._frame_buffer + data_in
        conn._frame_buffer = buf
        pos = 0
        size = len(buf)
        number = self._number
        ready = self._ready()
        frames = 0
        while pos < size:
            taken = self._take(buf, pos, size, number) if ready else 0
            if taken is None:
                break  # a delivery to take whose body is still arriving: wait for it
            if taken:
                frames += 3 if taken > 0 else 2
                pos = abs(taken)
                continue
            # pika's own step, on the buffer as pika keeps it
            if pos:
                conn._frame_buffer = buf[pos:]
                conn.bytes_received += pos
                conn.frames_received += frames
                pos = frames = 0
            consumed, frame_value = conn._read_frame()
            if not frame_value:
                return
            conn._trim_frame_buffer(consumed)
            conn._process_frame(frame_value)
            buf = conn._frame_buffer
            size = len(buf)
            ready = self._ready()
        if pos:
            conn._frame_buffer = buf[pos:]
            conn.bytes_received += pos
            conn.frames_received += frames

    def _take(self, buf: bytes, pos: int, size: int, number: int) -> int | None:
        """Deliver the whole delivery at ``pos``: the offset after it (negative when it
        had no body frame); 0 when it is not one to take here; None when it is one whose
        method and content header are here but its body frame is not all here yet (a
        batch message is larger than a socket read): the buffer waits for the rest, as
        pika's would (pika counts a frame's bytes once it is whole, too)."""
        if size - pos < 11:
            return 0
        kind, channel, length = _HEAD.unpack_from(buf, pos)
        if kind != _METHOD or channel != number or _ID.unpack_from(buf, pos + 7)[0] != _DELIVER_ID:
            return 0
        header_at = pos + 8 + length
        if header_at + 7 > size or buf[header_at - 1] != _END:
            return 0
        # the method: consumer_tag, delivery_tag, redelivered, exchange, routing_key
        end = header_at - 1
        at = pos + 11
        if at >= end or at + 1 + buf[at] + 9 > end:
            return 0
        consumer_tag, at = _shortstr(buf, at)
        delivery_tag, bits = _TAG.unpack_from(buf, at)
        at += 9
        if at >= end or at + 1 + buf[at] >= end:
            return 0
        exchange, at = _shortstr(buf, at)
        if at + 1 + buf[at] > end:
            return 0
        routing_key, at = _shortstr(buf, at)
        # the content header
        kind, channel, length = _HEAD.unpack_from(buf, header_at)
        after_header = header_at + 8 + length
        if (
            kind != _HEADER
            or channel != number
            or length < 14
            or after_header > size
            or buf[after_header - 1] != _END
        ):
            return 0
        class_id, _weight, body_size = _CONTENT.unpack_from(buf, header_at + 7)
        if class_id != 60:
            return 0
        if body_size:
            if after_header + 7 > size:
                return None
            kind, channel, length = _HEAD.unpack_from(buf, after_header)
            after: int = after_header + 8 + length
            if kind != _BODY or channel != number or length != body_size:
                return 0
            if after > size:
                return None
            if buf[after - 1] != _END:
                return 0
            body = buf[after_header + 7 : after - 1]
        else:
            after = -after_header
            body = b""
        properties = _properties(buf[header_at + 19 : after_header - 1])
        method = _Deliver(consumer_tag, delivery_tag, (bits & 1) != 0, exchange, routing_key)
        self._deliver(method, properties, body, body_size)
        return after

    def _deliver(self, method: Any, properties: Any, body: bytes, body_size: int) -> None:
        """What ``Channel._on_deliver`` and ``BlockingChannel``'s delivery callback do:
        queue the delivery for ``process_data_events`` to hand to the consumer."""
        self.fast += 1
        channel = self._channel
        tag = method.consumer_tag
        consumer = channel._consumers.get(tag)
        bchannel: Any = self._bchannel
        if (
            tag not in channel._cancelled
            and getattr(consumer, "__func__", None) is _ON_DELIVERY
            and getattr(consumer, "__self__", None) is self._bchannel
        ):
            info = bchannel._consumer_infos.get(tag)
            if info is not None and info.alternate_event_sink is None:
                bchannel._pending_events.append(_DeliveryEvent(method, properties, body))
                self._blocking._request_channel_dispatch(self._number)
                return
        # anything else: pika's own hand-over (rejects for cancelled consumers, logs
        # unknown ones, feeds consumer generators)
        number = self._number
        channel._on_deliver(
            pika.frame.Method(number, method),
            pika.frame.Header(number, body_size, properties),
            body,
        )
