"""Rejected copies: what a sink publishes to ``logrouter.rejected``, and its headers.

A message the sink cannot write (undecodable, too large, refused by its target)
is not lost: a copy goes to ``logrouter.rejected`` on a confirmed channel with
the reason in a header, and ``logrouter rejected`` reads it back. The header
names are this module's vocabulary; the sink and the ``rejected`` command both
import them from here.

The copy's ``user_id`` is the sink's login; the sender's (validated by the
broker, or none) goes in ``x-logrouter-user-id``. Headers in
``SINK_OWNED_HEADERS`` are the sink's alone: a sender's are dropped, so none
can pass itself off as another login.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pika

from logrouter import batchwire, topology, wire
from logrouter.sinks.batch import Delivery

REASON_HEADER = "x-logrouter-reason"
#: On a rejected line of a batch: the message_id of the batch it came from.
BATCH_HEADER = "x-logrouter-batch"
SINK_HEADER = "x-logrouter-sink"
#: The exchange the sink consumes from: ``logrouter.rejected`` is one queue for every
#: exchange of the broker, and ``rejected replay`` must not send one's into another.
EXCHANGE_HEADER = "x-logrouter-exchange"
ROUTING_KEY_HEADER = "x-logrouter-routing-key"
#: On a rejected copy: the broker-validated user_id of the message the sink rejected.
USER_HEADER = "x-logrouter-user-id"
#: Set by ``logrouter rejected replay``: the user_id of the message before it was rejected.
ORIGINAL_USER_HEADER = "x-logrouter-original-user"
#: Headers whose value on a rejected copy is the sink's word: a sender's are dropped.
SINK_OWNED_HEADERS = (
    REASON_HEADER,
    BATCH_HEADER,
    SINK_HEADER,
    EXCHANGE_HEADER,
    ROUTING_KEY_HEADER,
    USER_HEADER,
    ORIGINAL_USER_HEADER,
)


def rejected_properties(
    delivery: Delivery, reason: str, *, sink: str, sink_login: str | None, exchange: str = ""
) -> Any:
    """The properties of the rejected copy of ``delivery`` (see the module docstring).

    One line of a batch is rejected alone, as a single-record message whose
    ``message_id`` is the record's and whose ``x-logrouter-batch`` names the batch.
    """
    props = delivery.properties or pika.BasicProperties()
    headers = {
        key: value
        for key, value in (getattr(props, "headers", None) or {}).items()
        if key not in SINK_OWNED_HEADERS
    }
    headers[REASON_HEADER] = reason
    headers[SINK_HEADER] = sink
    headers[EXCHANGE_HEADER] = exchange
    headers[ROUTING_KEY_HEADER] = delivery.routing_key
    user_id = getattr(props, "user_id", None)
    if isinstance(user_id, str):  # the broker checked it is the sender's login
        headers[USER_HEADER] = user_id
    content_type, message_id = props.content_type, props.message_id
    if delivery.line:
        headers.pop(batchwire.RECORDS_HEADER, None)
        headers[BATCH_HEADER] = message_id
        content_type, message_id = wire.CONTENT_TYPE, delivery.record_id
    return pika.BasicProperties(
        content_type=content_type,
        content_encoding=props.content_encoding,
        headers=headers,
        delivery_mode=2,
        message_id=message_id,
        timestamp=props.timestamp,
        app_id=props.app_id,
        type=props.type,
        user_id=sink_login,
    )


def publish_rejected(
    channel: Any,
    rejected: Iterable[tuple[Delivery, str]],
    *,
    sink: str,
    sink_login: str | None,
    exchange: str,
    on_rejected: Callable[[Delivery, str], None],
) -> None:
    """Publish each ``(delivery, reason)`` to ``logrouter.rejected`` (mandatory, on a
    confirmed ``channel``); ``on_rejected(delivery, reason)`` after each."""
    for delivery, reason in rejected:
        channel.basic_publish(
            topology.REJECTED_QUEUE,
            delivery.routing_key,
            delivery.body,
            rejected_properties(
                delivery, reason, sink=sink, sink_login=sink_login, exchange=exchange
            ),
            mandatory=True,
        )
        on_rejected(delivery, reason)
