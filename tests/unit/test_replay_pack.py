"""Unit tests for ``logrouter.commands.replay_pack``: records into messages, rounds."""

from __future__ import annotations

import json
from typing import Any

from logrouter import batchwire
from logrouter.archive_reader import Entry
from logrouter.commands.replay_pack import Packer
from logrouter.sinks.archive import record_line


def entry(n: int, severity: str = "err", app: Any = "billing", ident: Any = None) -> Entry:
    record = {
        "ts": f"2026-11-30T12:00:{n:02d}.000000Z",
        "app": app,
        "facility": "auth",
        "severity": severity,
        "msg": f"m{n}",
        "id": f"id{n}" if ident is None else ident,
    }
    return Entry((record["ts"], str(record["id"])), record_line(record).rstrip(b"\n"), record)


def test_records_of_one_key_and_app_share_a_batch_each_line_keeping_its_id() -> None:
    """A round packs records by routing key and app; a sink splits each batch back into
    the archived lines with their own ids; a record without a string id goes alone."""
    entries = [entry(1), entry(2, "info"), entry(3), entry(4, app="shop"), entry(5, ident=7)]
    packer = Packer("run", batches=True)
    messages = packer.round(iter(entries))
    assert packer.last == entries[-1]
    batches = [m for m in messages if m.properties.content_type == batchwire.CONTENT_TYPE]
    keyed = {(m.routing_key, m.properties.app_id): m for m in batches}
    err = keyed[("auth.err", "billing")]
    assert err.records == 2
    assert err.properties.message_id == "id1+2"
    assert err.properties.headers == {"x-logrouter-replay": "run", "x-logrouter-records": 2}
    lines = batchwire.split_batch(err.body, "logrouter.x")
    assert [item.id for item in lines] == ["id1", "id3"]
    assert [item.line for item in lines] == [entries[0].line, entries[2].line]
    assert keyed[("auth.err", "shop")].records == 1
    alone = [m for m in messages if m.properties.message_id == "7"]
    assert len(alone) == 1 and json.loads(alone[0].body)["id"] == 7
    assert sum(m.records for m in messages) == len(entries)
    assert packer.round(iter([])) == []


def test_a_full_group_ends_the_round_and_rate_limits_batches() -> None:
    """With --rate 30 a batch holds at most 3 records (a tenth of a second's worth); the
    round ends when a group is full, the rest comes in the next round."""
    source = iter([entry(n) for n in range(8)])
    packer = Packer("run", batches=True, rate=30)
    first = packer.round(source)
    assert [m.records for m in first] == [3] and packer.last is not None
    assert packer.last.record["id"] == "id2"
    assert [m.records for m in packer.round(source)] == [3]
    assert [m.records for m in packer.round(source)] == [2]


def test_without_batches_every_record_is_its_own_message() -> None:
    """--batch off: one plain JSON message per record, the archived line as its body."""
    packer = Packer("run", batches=False)
    source = iter([entry(1), entry(2)])
    (message,) = packer.round(source)
    assert message.body == entry(1).line and message.properties.message_id == "id1"
    assert message.properties.content_type == "application/json"
    assert len(packer.round(source)) == 1 and packer.round(source) == []


def test_a_replayed_line_leaves_the_archived_sender_to_the_sink() -> None:
    """The sender a sink archived is cut from the replayed body (the sink replayed into
    names the replayer instead, and copies a line naming none); a line where that is not
    sure (a second 'sender', an escape) is replayed as archived."""
    signed = [entry(n) for n in range(3)]
    for item in signed:
        item.record["sender"] = "billing"
    lines = [item.line[:-1] + b',"sender":"billing"}' for item in signed]
    signed = [item._replace(line=line) for item, line in zip(signed, lines, strict=True)]
    odd = signed[2]._replace(line=b'{"sender":"x",' + signed[2].line[1:])
    (message,) = Packer("run", batches=True).round(iter([*signed[:2], odd]))
    bodies = [item.line for item in batchwire.split_batch(message.body, "auth.err")]
    assert bodies == [entry(0).line, entry(1).line, odd.line]
    (alone,) = Packer("run", batches=False).round(iter(signed))
    assert alone.body == entry(0).line
