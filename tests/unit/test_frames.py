"""frames: the hand-marshaled publish frames are byte for byte what pika would send (pure)."""

from __future__ import annotations

from types import SimpleNamespace

import pika
import pika.exceptions
import pika.frame
import pika.spec
import pytest

from logrouter import batchwire
from logrouter.app import frames
from logrouter.app.frames import (
    batch_frames,
    content_frames,
    property_tail,
    publish_method_frame,
    shortstr,
)


def _pikas(content_type: str, message_id: str, user_id: str | None) -> pika.BasicProperties:
    """The properties pika would be given for one of our messages."""
    return pika.BasicProperties(
        content_type=content_type,
        content_encoding="utf-8",
        delivery_mode=2,
        message_id=message_id,
        timestamp=1_795_725_294,
        user_id=user_id,
        app_id="billing-api",
    )


@pytest.mark.parametrize("user_id", [None, "billing-app"])
@pytest.mark.parametrize("body", [b"", b"{}", b'{"msg":"h\\u00e9"}' * 50])
def test_content_frames_equal_pikas(body: bytes, user_id: str | None) -> None:
    """Header + body frames for our properties (with and without user_id) equal pika's own."""
    props = _pikas("application/json", "0123456789abcdef1a", user_id)
    expected = pika.frame.Header(7, len(body), props).marshal()
    if body:
        expected += pika.frame.Body(7, body).marshal()
    tail = property_tail("billing-api", user_id)
    ours = content_frames(7, body, "0123456789abcdef1a", 1_795_725_294, tail)
    assert ours == expected


def test_publish_method_frame_is_pikas() -> None:
    """The cached method frame is pika's basic.publish for that exchange and key."""
    method = pika.spec.Basic.Publish(exchange="logs", routing_key="auth.err")
    assert publish_method_frame(3, "logs", "auth.err") == pika.frame.Method(3, method).marshal()


def test_shortstr_caps_at_255_bytes() -> None:
    """An over-long app name is cut to the AMQP short-string limit, never an error."""
    data = shortstr("é" * 200)
    assert data[0] == len(data) - 1 <= 255


@pytest.mark.parametrize("user_id", [None, "billing-app"])
def test_batch_frames_equal_pikas(user_id: str | None) -> None:
    """A batch message gathered with the others is byte for byte what pika's
    basic_publish would write: batch content type, count header, one body frame."""
    body = b'{"msg":"a","id":"x1"}\n{"msg":"b","id":"x2"}\n' * 40
    props = _pikas(batchwire.CONTENT_TYPE, "x1+80", user_id)
    props.headers = {batchwire.RECORDS_HEADER: 80}
    expected = pika.frame.Header(7, len(body), props).marshal() + pika.frame.Body(7, body).marshal()
    ours = batch_frames(7, body, "x1+80", 1_795_725_294, 80, "billing-api", user_id)
    assert b"".join(ours) == expected


def test_confirm_mode_not_answered_ends_with_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker that never answers Confirm.Select (connected but stuck): streaming_confirms
    raises an AMQPError saying so after SELECT_TIMEOUT, instead of waiting forever."""
    monkeypatch.setattr(frames, "SELECT_TIMEOUT", 0.05)
    impl = SimpleNamespace(
        add_on_return_callback=lambda _cb: None,
        confirm_delivery=lambda **_kw: None,  # the answer never comes
    )
    connection = SimpleNamespace(process_data_events=lambda _s: None)
    with pytest.raises(pika.exceptions.AMQPError, match="did not confirm confirm mode"):
        frames.streaming_confirms(connection, SimpleNamespace(_impl=impl), print, print)
