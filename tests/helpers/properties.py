"""AMQP message properties the delivery tests send: a record's, and one with every field."""

from __future__ import annotations

import decimal

import pika

#: As a handler publishes a single record.
RECORD = pika.BasicProperties(
    content_type="application/json",
    content_encoding="utf-8",
    delivery_mode=2,
    message_id="0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    timestamp=1_795_725_294,
    user_id="guest",
    app_id="billing-api",
)
#: Every property set, a headers table of every field type; a broker accepts it as is
#: (user_id is the test broker's user; reply_to is a plain queue name).
EVERYTHING = pika.BasicProperties(
    content_type="application/x-ndjson",
    content_encoding="utf-8",
    headers={
        "x-records": 3,
        "s": "text",
        "nested": {"a": [1, 2, "b"], "t": True},
        "d": decimal.Decimal("1.5"),
        "b": b"\x00\xff",
        "n": None,
        "big": 2**40,
    },
    delivery_mode=1,
    priority=5,
    correlation_id="corr",
    reply_to="replies",
    expiration="600000",
    message_id="mid",
    timestamp=0,
    type="batch",
    user_id="guest",
    app_id="app",
    cluster_id="cluster",
)
