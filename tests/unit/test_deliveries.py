"""deliveries: the sink's inbound fast path hands the consumer exactly what pika's own path
does, for every way the frames can arrive (pure: marshaled frames, no broker)."""

from __future__ import annotations

import random
from typing import Any

import pika
import pika.channel
import pika.connection
import pika.frame
import pika.spec
import pytest
from pika.adapters import blocking_connection

from logrouter.sinks.deliveries import DeliveryFastPath
from tests.helpers.properties import EVERYTHING, RECORD

TAG1, TAG2 = "ctag1.sink", "ctag2.other"


class _Conn(pika.connection.Connection):
    """pika's connection with the adapter's I/O replaced: frames in by hand, frames out kept."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        super().__init__(pika.ConnectionParameters(), internal_connection_workflow=False)

    def _adapter_call_later(self, delay: Any, callback: Any) -> object:
        return object()

    def _adapter_remove_timeout(self, timeout_id: object) -> None:
        pass

    def _adapter_add_callback_threadsafe(self, callback: Any) -> None:
        pass

    def _adapter_connect_stream(self) -> None:
        pass

    def _adapter_disconnect_stream(self) -> None:
        pass

    def _adapter_emit_data(self, data: bytes) -> None:
        self.sent.append(data)

    def _adapter_get_write_buffer_size(self) -> int:
        return 0


class _Heartbeats:
    """Stands in for pika's heartbeat checker: counts the heartbeats it is told of."""

    def __init__(self) -> None:
        self.count = 0

    def received(self) -> None:
        self.count += 1

    def stop(self) -> None:
        pass


class _Blocking:
    """What a ``BlockingChannel`` needs of its ``BlockingConnection``."""

    def __init__(self, impl: _Conn) -> None:
        self._impl = impl
        self.dispatch: set[int] = set()

    def _request_channel_dispatch(self, number: int) -> None:
        self.dispatch.add(number)


def _method(number: int, method: Any) -> bytes:
    return bytes(pika.frame.Method(number, method).marshal())


class _Side:
    """One connection with consumers on channels 1 and 2; ``fast`` installs the fast path
    for channel 1. ``got`` is what the consumers received, in order."""

    def __init__(self, fast: bool) -> None:
        conn = _Conn()
        conn.connection_state = conn.CONNECTION_OPEN
        conn._heartbeat_checker = _Heartbeats()  # type: ignore[assignment]
        self.conn = conn
        self.blocking = _Blocking(conn)
        self.got: list[tuple[Any, ...]] = []
        self.cancelled: list[str] = []
        self.channels = {}
        for number, tag in ((1, TAG1), (2, TAG2)):
            impl = conn.channel(channel_number=number)
            conn._on_data_available(_method(number, pika.spec.Channel.OpenOk()))
            channel = blocking_connection.BlockingChannel(impl, self.blocking)  # type: ignore[arg-type]
            channel.add_on_cancel_callback(
                lambda frame: self.cancelled.append(frame.method.consumer_tag)
            )
            self._consume(channel, tag)
            self.channels[number] = channel
        self.fast = DeliveryFastPath(self.blocking, self.channels[1])
        if fast:
            assert self.fast.install()
        self.base = (conn.bytes_received, conn.frames_received)

    def _consume(self, channel: Any, tag: str) -> None:
        """What ``basic_consume`` leaves behind once the broker said ConsumeOk."""

        def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
            self.got.append(
                (
                    ch.channel_number,
                    type(method),
                    dict(vars(method)),
                    type(properties),
                    dict(vars(properties)),
                    type(body),
                    body,
                )
            )

        info = blocking_connection._ConsumerInfo(
            tag, auto_ack=False, on_message_callback=on_message
        )
        info.state = info.ACTIVE
        channel._consumer_infos[tag] = info
        channel._impl._consumers[tag] = channel._on_consumer_message_delivery

    def feed(self, chunks: list[bytes]) -> None:
        """The chunks as socket reads, each followed by what ``process_data_events`` does."""
        for chunk in chunks:
            self.conn._on_data_available(chunk)
            numbers, self.blocking.dispatch = self.blocking.dispatch, set()
            for number in sorted(numbers):
                self.channels[number]._dispatch_events()

    def outcome(self) -> tuple[Any, ...]:
        conn = self.conn
        checker: Any = conn._heartbeat_checker
        return (
            self.got,
            self.cancelled,
            conn.bytes_received - self.base[0],
            conn.frames_received - self.base[1],
            conn._frame_buffer,
            checker.count,
            b"".join(conn.sent),
        )


def _delivery(
    number: int,
    tag: str,
    delivery_tag: int,
    body: bytes,
    properties: Any = None,
    *,
    redelivered: bool = False,
    routing_key: str = "billing.info",
    exchange: str = "logs",
    body_frames: int = 1,
) -> list[bytes]:
    """The frames of one delivery: method, content header, body in ``body_frames`` frames."""
    method = pika.spec.Basic.Deliver(tag, delivery_tag, redelivered, exchange, routing_key)
    properties = properties if properties is not None else pika.BasicProperties()
    frames = [
        _method(number, method),
        bytes(pika.frame.Header(number, len(body), properties).marshal()),
    ]
    if body:
        step = -(-len(body) // body_frames)
        for at in range(0, len(body), step):
            frames.append(bytes(pika.frame.Body(number, body[at : at + step]).marshal()))
    return frames


def _stream() -> list[bytes]:
    """Frames covering every case the fast path must take or leave to pika, in order."""
    frames: list[bytes] = []
    frames += _delivery(1, TAG1, 1, b'{"id":"a","msg":"one"}', RECORD)
    frames += _delivery(1, TAG1, 2, b"", RECORD)  # empty body: no body frame
    frames += _delivery(1, TAG1, 3, b"x" * 300, EVERYTHING, redelivered=True)
    frames.append(bytes(pika.frame.Heartbeat().marshal()))
    frames += _delivery(2, TAG2, 1, b"on channel two", RECORD)
    frames += _delivery(1, TAG1, 4, b"0123456789" * 10, RECORD, body_frames=3)  # multi-frame
    frames += _delivery(1, TAG1, 5, b"\xff\xfe not utf-8", pika.BasicProperties())
    frames += _delivery(1, TAG1, 6, b"key", RECORD, routing_key="", exchange="")
    frames += _delivery(1, "ctag.unknown", 7, b"nobody's", RECORD)  # pika logs, drops
    frames += _delivery(1, TAG1, 8, b"\xc3\xa9t\xc3\xa9", RECORD, routing_key="caf\u00e9.info")
    frames.append(_method(1, pika.spec.Basic.Cancel(TAG1)))  # broker cancels the consumer
    frames += _delivery(1, TAG1, 9, b"after cancel", RECORD)
    return frames


def _run(fast: bool, chunks: list[bytes]) -> tuple[Any, ...]:
    side = _Side(fast)
    side.feed(chunks)
    return side.outcome()


def _splits() -> dict[str, list[bytes]]:
    frames = _stream()
    data = b"".join(frames)
    splits = {
        "whole": [data],
        "byte by byte": [data[i : i + 1] for i in range(len(data))],
        "frame by frame": frames,
    }
    for every in (2, 3, 5):  # frame boundaries inside and between deliveries
        splits[f"{every} frames a read"] = [
            b"".join(frames[i : i + every]) for i in range(0, len(frames), every)
        ]
    rng = random.Random(7)
    for round_no in range(5):
        chunks, at = [], 0
        while at < len(data):
            step = rng.randint(1, 90)
            chunks.append(data[at : at + step])
            at += step
        splits[f"random {round_no}"] = chunks
    return splits


SPLITS = _splits()


@pytest.mark.parametrize("split", sorted(SPLITS))
def test_fast_path_gives_what_pika_gives(split: str) -> None:
    """Whatever way the frames arrive, the consumers get the same deliveries (method,
    properties, body, channel, order), cancellations and heartbeats as through pika alone,
    and pika's byte and frame counters and leftover buffer end the same."""
    chunks = SPLITS[split]
    pikas = _run(False, chunks)
    ours = _run(True, chunks)
    assert ours == pikas
    got = ours[0]
    # per channel in order (channels are dispatched one after the other after a read)
    assert [g[2]["delivery_tag"] for g in got if g[0] == 1] == [1, 2, 3, 4, 5, 6, 8]
    assert [g[2]["delivery_tag"] for g in got if g[0] == 2] == [1]
    assert ours[1] == [TAG1]
    assert ours[5] == 1


def test_fast_path_takes_whole_deliveries() -> None:
    """Deliveries that arrive whole on the sink's channel are taken by the fast path; a
    delivery whose method or content header is cut across reads, on another channel or
    in several body frames is not."""
    side = _Side(fast=True)
    side.feed([b"".join(_stream())])
    # 1, 2, 3, 5, 6, 8, and 7 and 9 (no such consumer: handed to pika's _on_deliver)
    assert side.fast.fast == 8
    side = _Side(fast=True)
    side.feed(_stream())  # one frame a read: no delivery is ever whole in the buffer
    assert side.fast.fast == 0


def test_partial_delivery_waits_for_its_body() -> None:
    """A delivery whose body has not arrived is not handed over; once it arrives it is,
    once, taken whole by the fast path, and the buffer is empty."""
    frames = _delivery(1, TAG1, 1, b"body", RECORD)
    side = _Side(fast=True)
    side.feed([frames[0] + frames[1] + frames[2][:5]])
    assert side.got == []
    side.feed([frames[2][5:]])
    assert [g[6] for g in side.got] == [b"body"]
    assert side.conn._frame_buffer == b""
    assert side.fast.fast == 1


@pytest.mark.parametrize("cut", [3, 7, 60_000, 100_007])
def test_a_body_larger_than_a_read_is_taken_whole(cut: int) -> None:
    """A batch message's body spans socket reads (a cut in the body frame's head or in
    its bytes): the fast path waits for the rest and takes it whole, with what pika
    alone gives, and the deliveries after it in the same reads too."""
    big = _delivery(1, TAG1, 1, b"x" * 120_000, RECORD)
    after = _delivery(1, TAG1, 2, b"next", RECORD)
    data = b"".join(big + after)
    at = len(big[0]) + len(big[1]) + cut
    chunks = [data[:at], data[at : at + 65_536], data[at + 65_536 :]]
    ours = _Side(fast=True)
    ours.feed(chunks)
    assert ours.fast.fast == 2
    assert _run(True, chunks) == _run(False, chunks)


def test_properties_are_pikas_own() -> None:
    """The consumer gets pika's own BasicProperties and Basic.Deliver objects, fields equal
    to what was published, headers table included."""
    side = _Side(fast=True)
    side.feed([b"".join(_delivery(1, TAG1, 42, b"b", EVERYTHING, redelivered=True))])
    (number, method_type, method, props_type, props, _body_type, body) = side.got[0]
    assert (number, method_type, props_type, body) == (
        1,
        pika.spec.Basic.Deliver,
        pika.spec.BasicProperties,
        b"b",
    )
    assert method == {
        "consumer_tag": TAG1,
        "delivery_tag": 42,
        "redelivered": True,
        "exchange": "logs",
        "routing_key": "billing.info",
    }
    assert props["headers"]["nested"] == {"a": [1, 2, "b"], "t": True}
    assert props["message_id"] == "mid"


def test_uninstall_restores_pika() -> None:
    """After ``uninstall`` the connection's data handler is pika's own again."""
    side = _Side(fast=True)
    side.fast.uninstall()
    assert "_on_data_available" not in vars(side.conn)
    side.feed([b"".join(_delivery(1, TAG1, 1, b"x", RECORD))])
    assert side.fast.fast == 0
    assert [g[6] for g in side.got] == [b"x"]


def test_missing_internals_leave_pika_path() -> None:
    """Without the pika internals it needs, ``install`` declines and changes nothing."""

    class Plain:
        channel_number = 1

    fast = DeliveryFastPath(Plain(), Plain())
    assert not fast.install()
    assert not fast.installed
