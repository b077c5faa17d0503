"""AMQP publish frames written in one ``send()``: the only module that touches pika internals.

pika spends most of a publish encoding ``BasicProperties`` field by field, and
writes each frame (method, header, body) to the socket on its own: three
syscalls per record. Our properties differ only by message_id and timestamp, so
``FrameWriter`` marshals them itself and gathers a batch of publishes into one
write through pika 1.x's private ``_adapter_emit_data`` hook (``gather`` and
``emit``, also used by ``replay`` around pika's own publishes, with
``streaming_confirms`` for its channel) (and its
``_body_max_length`` and ``bytes_sent``). pika is pinned in pyproject.toml to the
versions this is tested against; without the hook (or with ``fast=False``, or a
body larger than one frame) publishing takes pika's own ``basic_publish``. The
marshaled bytes are checked byte for byte against pika in tests/unit/test_frames.py.
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pika.frame
import pika.spec
from pika.adapters.utils import io_services_utils

from logrouter import batchwire, wire

#: How long the broker may take to answer Confirm.Select (a connected, stuck broker).
SELECT_TIMEOUT = 30.0
_FRAME_END = b"\xce"
_CONTENT_TYPE, _ENCODING, _DELIVERY_MODE = 1 << 15, 1 << 14, 1 << 12
_MESSAGE_ID, _TIMESTAMP, _USER_ID, _APP_ID = 1 << 7, 1 << 6, 1 << 4, 1 << 3
_CONSTANT_PROPS = b"\x10application/json\x05utf-8\x02"  # type, encoding, persistent
#: pika's transport of a plain TCP connection (its TLS one is left alone)
_PLAINTEXT: Any = getattr(io_services_utils, "_AsyncPlaintextTransport", None)


def shortstr(value: str) -> bytes:
    """AMQP short string (cut to 255 bytes)."""
    data = value.encode("utf-8")[:255]
    return bytes((len(data),)) + data


def publish_method_frame(channel: int, exchange: str, routing_key: str) -> bytes:
    """Marshaled basic.publish method frame (cached per routing key)."""
    method = pika.spec.Basic.Publish(exchange=exchange, routing_key=routing_key)
    return bytes(pika.frame.Method(channel, method).marshal())


def property_tail(app_id: str, user_id: str | None) -> tuple[int, bytes]:
    """(property flags, marshaled user_id + app_id): the properties after the timestamp."""
    flags = _CONTENT_TYPE | _ENCODING | _DELIVERY_MODE | _MESSAGE_ID | _TIMESTAMP | _APP_ID
    tail = shortstr(app_id)
    if user_id is not None:
        flags |= _USER_ID
        tail = shortstr(user_id) + tail
    return flags, tail


def content_frames(
    channel: int, body: bytes, message_id: str, timestamp: int, tail: tuple[int, bytes]
) -> bytes:
    """Content header + one body frame, as pika would marshal them for our properties."""
    flags, rest = tail
    props = _CONSTANT_PROPS + shortstr(message_id) + struct.pack(">Q", timestamp) + rest
    header = struct.pack(">HHQH", 60, 0, len(body), flags) + props
    head = struct.pack(">BHI", 2, channel, len(header)) + header + _FRAME_END
    if not body:
        return head
    return b"".join((head, struct.pack(">BHI", 3, channel, len(body)), body, _FRAME_END))


def batch_frames(
    channel: int,
    body: bytes,
    message_id: str,
    timestamp: int,
    count: int,
    app_id: str,
    user_id: str | None,
) -> list[bytes]:
    """Content header + one body frame of a batch message (``logrouter.batchwire``), in
    pieces, as pika would marshal them (pika encodes the properties: once per batch)."""
    props = batch_properties(message_id, timestamp, count, app_id, user_id)
    header = pika.frame.Header(channel, len(body), props).marshal()
    return [header, struct.pack(">BHI", 3, channel, len(body)), body, _FRAME_END]


def batch_properties(
    message_id: str, timestamp: int, count: int, app_id: str, user_id: str | None
) -> Any:
    """pika's BasicProperties for a batch of ``count`` records."""
    props = properties(message_id, timestamp, app_id, user_id)
    props.content_type = batchwire.CONTENT_TYPE
    props.headers = batchwire.headers(count)
    return props


def properties(message_id: str, timestamp: int, app_id: str, user_id: str | None) -> Any:
    """pika's BasicProperties for one record (the fallback path)."""
    return pika.BasicProperties(
        content_type=wire.CONTENT_TYPE,
        content_encoding="utf-8",
        delivery_mode=2,
        message_id=message_id,
        timestamp=timestamp,
        user_id=user_id,
        app_id=app_id,
    )


class FrameWriter:
    """Publishes bodies on one channel; a batch goes to the socket in one write.

    Use as ``with writer: writer.publish(...)`` from the I/O thread.
    """

    def __init__(
        self,
        conn: Any,
        channel: Any,
        exchange: str,
        *,
        app_id: str,
        user_id: str | None,
        fast: bool = True,
    ) -> None:
        self._conn = conn
        self._channel = channel
        self._exchange = exchange
        self._app_id = app_id
        self._user_id = user_id
        self._number: int = channel.channel_number
        self._tail = property_tail(app_id, user_id)
        self._methods: dict[str, bytes] = {}
        self._fast = fast and hasattr(conn, "_adapter_emit_data")
        self._body_max: int = (getattr(conn, "_body_max_length", None) or 0) if self._fast else 0
        self._frames: list[bytes] | None = None

    @property
    def fast(self) -> bool:
        return self._fast

    def __enter__(self) -> FrameWriter:
        self._gather()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._emit()

    def publish(self, routing_key: str, body: bytes, message_id: str, timestamp: int) -> None:
        """One message: gathered into the batch, or through pika (keeping wire order)."""
        frames = self._frames
        if frames is not None and len(body) <= self._body_max:
            frames.append(self._method(routing_key))
            frames.append(content_frames(self._number, body, message_id, timestamp, self._tail))
            return
        self._emit()
        self._channel.basic_publish(
            self._exchange,
            routing_key,
            body,
            properties(message_id, timestamp, self._app_id, self._user_id),
        )
        self._gather()

    def publish_batch(
        self, routing_key: str, body: bytes, message_id: str, timestamp: int, count: int
    ) -> None:
        """One batch message (``logrouter.batchwire``): gathered with the others (one
        socket write for the whole pump), or through pika, keeping wire order.

        Its properties differ from a record's (content type, count header): pika
        encodes them, once for many records.
        """
        frames = self._frames
        app_id, user_id = self._app_id, self._user_id
        if frames is not None and len(body) <= self._body_max:
            frames.append(self._method(routing_key))
            frames += batch_frames(
                self._number, body, message_id, timestamp, count, app_id, user_id
            )
            return
        self._emit()
        props = batch_properties(message_id, timestamp, count, app_id, user_id)
        self._channel.basic_publish(self._exchange, routing_key, body, props)
        self._gather()

    def _method(self, routing_key: str) -> bytes:
        method = self._methods.get(routing_key)
        if method is None:
            method = publish_method_frame(self._number, self._exchange, routing_key)
            self._methods[routing_key] = method
        return method

    def _gather(self) -> None:
        if self._fast:
            self._frames = gather(self._conn)

    def _emit(self) -> None:
        frames, self._frames = self._frames, None
        emit(self._conn, frames)


def streaming_confirms(
    connection: Any,
    channel: Any,
    on_confirm: Callable[[Any], None],
    on_return: Callable[..., None],
    on_close: Callable[[Any, Any], None] | None = None,
) -> Callable[..., None]:
    """Put ``channel`` (a ``BlockingChannel``) in confirm mode without its one-publish-
    at-a-time wait; returns the ``basic_publish`` of the async channel it wraps.

    pika 1.x's BlockingChannel waits for each confirm before the next publish.
    Publishing on the wrapped channel instead, confirms (``on_confirm``, with the
    ``Basic.Ack``/``Nack`` frame) and returns (``on_return``) arrive through
    ``connection.process_data_events``; ``gather``/``emit`` batch the writes.
    ``on_close(channel, reason)`` when the broker closes the channel (no confirm
    comes after that).
    """
    impl: Any = channel._impl
    impl.add_on_return_callback(on_return)
    if on_close is not None:
        impl.add_on_close_callback(on_close)
    selected: list[object] = []
    impl.confirm_delivery(ack_nack_callback=on_confirm, callback=selected.append)
    deadline = time.monotonic() + SELECT_TIMEOUT
    while not selected:
        if time.monotonic() > deadline:
            raise pika.exceptions.AMQPError(
                f"the broker did not confirm confirm mode within {SELECT_TIMEOUT:.0f} s"
            )
        connection.process_data_events(0.1)
    publish: Callable[..., None] = impl.basic_publish
    return publish


def frame_payload_max(conn: Any) -> int:
    """The most bytes one frame's payload may hold on ``conn`` (negotiated frame_max
    less the frame's own 8; pika's ``_body_max_length``), 131,064 when unknown."""
    value = getattr(_adapter(conn), "_body_max_length", None)
    return value if isinstance(value, int) and value > 0 else 131_064


def _adapter(conn: Any) -> Any:
    """The async connection (a ``BlockingConnection`` wraps one as ``_impl``)."""
    return getattr(conn, "_impl", conn)


def gather(conn: Any) -> list[bytes] | None:
    """Divert the frames pika writes on ``conn`` (a connection or ``BlockingConnection``)
    into the returned list, until ``emit`` (None, and nothing diverted, without the hook)."""
    conn = _adapter(conn)
    if not hasattr(conn, "_adapter_emit_data"):
        return None
    frames: list[bytes] = []
    conn._adapter_emit_data = frames.append
    return frames


def emit(conn: Any, frames: list[bytes] | None) -> None:
    """Write the frames ``gather`` collected in one piece; pika writes on its own again."""
    if frames is None:
        return
    conn = _adapter(conn)
    with contextlib.suppress(AttributeError):
        del conn._adapter_emit_data  # back to the class's method
    if frames and conn.is_open:
        data = b"".join(frames)
        conn.bytes_sent += len(data)
        rest = _send_now(conn, data)
        if rest:
            conn._adapter_emit_data(rest)


def _send_now(conn: Any, data: bytes) -> bytes:
    """Send what the socket takes at once while pika's plaintext transport has nothing
    queued (then the order on the wire is kept); the rest, for pika to write.

    pika's own ``write`` only queues the data and turns the writability watcher on and
    off again (two poll syscalls and an ioloop round per write): for a pump's one write,
    a fifth of the I/O thread's time under load. TLS, a full socket or any socket error
    leave it all to pika, which meets the error and handles it as before.
    """
    transport: Any = getattr(conn, "_transport", None)
    if (
        _PLAINTEXT is None
        or type(transport) is not _PLAINTEXT
        or transport.get_write_buffer_size()
        or transport._state != transport._STATE_ACTIVE
    ):
        return data
    try:
        sent: int = transport._sock.send(data)
    except OSError:  # EAGAIN, EINTR, or a broken connection: pika's write handles it
        return data
    return data[sent:]
