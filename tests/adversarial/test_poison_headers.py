"""One message whose AMQP headers pika cannot decode (a hostile publisher).

RabbitMQ passes a headers table on as it came; pika raised while decoding a
timestamp beyond year 9999 (``OSError: Value too large``), and the raise came out
of the consumer's event loop as a lost connection: the sink reconnected, got the
same message first again, and never wrote another record from its queue (in both
delivery paths). Now the message is rejected with its headers' bytes kept, and
the records around it are written.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any

import pika

from logrouter.app.frames import emit, gather
from logrouter.sinks.rejects import PROPERTIES_HEADER, REASON_HEADER
from logrouter.total_decoding import RAW_HEADERS_HEADER
from tests.adversarial.attackers import Attacker
from tests.helpers.broker import watch_rejected
from tests.helpers.sinks import (
    archive_records,
    declare,
    lines_of,
    name,
    run_burst,
    write_config,
)

WHEN = datetime(2020, 1, 1, tzinfo=UTC)
#: a 'T' (timestamp) header of 2**62 seconds: past what datetime holds
POISON = b"\x01kT" + struct.pack(">Q", 2**62)


def publish_poison(url: str, exchange: str, message_id: str) -> None:
    """Publish one record whose header ``k`` is the POISON timestamp, then 3 good ones
    (the frames pika writes are patched before they go out)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        frames = gather(connection)
        props = pika.BasicProperties(headers={"k": WHEN}, message_id=message_id)
        channel.basic_publish(exchange, "app.err", b'{"msg": "poison"}', props)
        assert frames is not None, "pika's write hook is missing"
        sane = b"\x01kT" + struct.pack(">Q", int(WHEN.timestamp()))
        patched = [frame.replace(sane, POISON) for frame in frames]
        assert patched != frames
        frames[:] = patched
        emit(connection, frames)
        for n in range(3):
            body = b'{"msg": "good %d"}' % n
            channel.basic_publish(exchange, "app.err", body, pika.BasicProperties())
    finally:
        connection.close()


def test_a_message_with_undecodable_headers_is_rejected_and_the_rest_written(
    sinkenv: dict[str, Any], attacker: Attacker
) -> None:
    """The poison message and 3 records, for a file sink with and without the fast
    delivery path: the burst run ends (it reconnected forever), the 3 records are in
    the file, and logrouter.rejected holds the poison message with the reason and its
    headers' bytes."""
    out = sinkenv["tmp"] / "out"
    sinks = {
        name(sinkenv, f"poison{fast}"): {
            "type": "file",
            "match": "*.*",
            "path": f"{out}/{fast}/{{facility}}.log",
            "fast_deliveries": fast == "fast",
        }
        for fast in ("fast", "pika")
    }
    config = write_config(
        sinkenv["tmp"] / "routing.toml", sinkenv["url"], sinkenv["exchange"], sinks
    )
    declare(config)
    message_id = f"poison-{sinkenv['tag']}"
    with watch_rejected(sinkenv["url"]) as seen:
        publish_poison(attacker.url, sinkenv["exchange"], message_id)
        result = run_burst(["run", str(config)], sinkenv["env"], timeout=60)
        assert result.returncode == 0, result.stderr[-2000:]
        for fast in ("fast", "pika"):
            assert [line.rsplit(": ", 1)[1] for line in lines_of(out / fast / "app.log")] == [
                "good 0",
                "good 1",
                "good 2",
            ]
        held = [(props, body) for props, body in seen() if props.message_id == message_id]
        assert len(held) == 2  # one per sink
        for props, body in held:
            assert body == b'{"msg": "poison"}'
            assert props.headers[REASON_HEADER].startswith("AMQP headers undecodable (")
            assert props.headers[RAW_HEADERS_HEADER] == POISON


def test_odd_properties_and_times_are_written_or_rejected_never_wedging_sinks(
    sinkenv: dict[str, Any], attacker: Attacker
) -> None:
    """A content_type that is not UTF-8 (pika gives bytes), a ts that UTC cannot hold
    (year 1 at +01:00) and a timestamp property of 2**62 s, around 2 records, into an
    archive sink and a file sink whose path has %Y: the burst run ends (the first two
    made both sinks reconnect forever), every message is written (the odd times as the
    arrival's), nothing is rejected."""
    out = sinkenv["tmp"] / "out"
    archive, dated = name(sinkenv, "oddarch"), name(sinkenv, "odddated")
    config = write_config(
        sinkenv["tmp"] / "routing.toml",
        sinkenv["url"],
        sinkenv["exchange"],
        {
            archive: {"type": "archive", "match": "*.*", "dir": str(out / "archive")},
            dated: {"type": "file", "match": "*.*", "path": f"{out}/%Y/{{facility}}.log"},
        },
    )
    declare(config)
    odd = [
        (b'{"msg": "bytes type"}', pika.BasicProperties(content_type=b"\xff\xfe")),  # type: ignore[arg-type]
        (b'{"msg": "year one", "ts": "0001-01-01T00:00:00+01:00"}', pika.BasicProperties()),
        (b"far future", pika.BasicProperties(timestamp=2**62)),
    ]
    messages = [(b'{"msg": "good 0"}', pika.BasicProperties()), *odd]
    messages.append((b'{"msg": "good 1"}', pika.BasicProperties()))
    connection = pika.BlockingConnection(pika.URLParameters(attacker.url))
    try:
        channel = connection.channel()
        for body, props in messages:
            props.user_id = attacker.user
            channel.basic_publish(sinkenv["exchange"], "app.err", body, props)
    finally:
        connection.close()
    result = run_burst(["run", str(config)], sinkenv["env"], timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    wanted = ["good 0", "bytes type", "year one", "far future", "good 1"]
    year = datetime.now(UTC).year
    assert [line.rsplit(": ", 1)[1] for line in lines_of(out / str(year) / "app.log")] == wanted
    assert sorted(r["msg"] for r in archive_records(out / "archive")) == sorted(wanted)
    assert '"message rejected"' not in result.stderr


def test_a_rejected_message_whose_headers_fill_a_frame_is_copied_without_them(
    sinkenv: dict[str, Any], attacker: Attacker
) -> None:
    """A message the sink rejects whose own headers (130,900 bytes) leave no room in the
    copy's header frame for the sink's: the copy goes with the sink's headers only, the
    record in the same batch is written once, and the burst run ends (the broker closed
    the sink's connection on the oversized frame, the batch came back forever and the
    record was written on every round)."""
    out = sinkenv["tmp"] / "out"
    sink = name(sinkenv, "bighdr")
    config = write_config(
        sinkenv["tmp"] / "routing.toml",
        sinkenv["url"],
        sinkenv["exchange"],
        {sink: {"type": "file", "match": "*.*", "path": f"{out}/{{facility}}.log"}},
    )
    declare(config)
    message_id = f"big-{sinkenv['tag']}"
    with watch_rejected(sinkenv["url"]) as seen:
        big = pika.BasicProperties(headers={"pad": "x" * 130_900}, message_id=message_id)
        publish = pika.BlockingConnection(pika.URLParameters(attacker.url))
        try:
            to = publish.channel()
            to.basic_publish(sinkenv["exchange"], "nofacility", b"plain", big)
            to.basic_publish(sinkenv["exchange"], "app.err", b'{"msg": "good"}')
        finally:
            publish.close()
        result = run_burst(["run", str(config)], sinkenv["env"], timeout=60)
        assert result.returncode == 0, result.stderr[-2000:]
        assert [line.rsplit(": ", 1)[1] for line in lines_of(out / "app.log")] == ["good"]
        ((props, body),) = [(p, b) for p, b in seen() if p.message_id == message_id]
        assert body == b"plain"
        assert "pad" not in props.headers
        assert props.headers[PROPERTIES_HEADER].startswith("ValueError: properties of ")
