"""A second broker user claims to be another app and another login (the sender review).

The legitimate app ``goodapp`` logs through a RabbitHandler as the sinks' own login
(batch="auto", so both batch messages and single ones). The attacker publishes records
claiming ``"app": "goodapp"`` and a body key ``"sender"`` naming the legitimate login:
a single message, a batch message (batchwire content type) and a message without
``user_id``. What must hold: every archived record names its broker-validated sender
once (the attacker's login, the legitimate login, or none), ``query --field sender=``
selects by that and never by a body's claim, and a file sink with ``{sender}`` in its
path writes the attacker's records to the attacker's file, none to goodapp's.
"""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from logrouter import RabbitHandler, batchwire, cli
from logrouter.connection import login
from tests.adversarial.attackers import Attacker, publish_as
from tests.helpers.sinks import declare, name, run_burst, write_config

LEGIT = 400


def forged(msg: str, record_id: str | None = None) -> bytes:
    """A record claiming goodapp and the legitimate login, with a user_id key as well."""
    record: dict[str, Any] = {
        "ts": "2026-01-01T00:00:00.000000Z",
        "app": "goodapp",
        "facility": "shop",
        "severity": "err",
        "msg": msg,
        "sender": "guest",
        "user_id": "guest",
    }
    if record_id is not None:
        record["id"] = record_id
    return json.dumps(record, separators=(",", ":")).encode()


def archive_lines(directory: Path) -> list[bytes]:
    lines: list[bytes] = []
    for path in sorted(directory.rglob("*.jsonl.gz")):
        with gzip.open(path, "rb") as handle:
            lines += [line for line in handle.read().splitlines() if line]
    return lines


def query(capsys: pytest.CaptureFixture[str], directory: Path, *args: str) -> list[str]:
    """`logrouter query --dir DIRECTORY ARGS -o cat`: the messages printed."""
    capsys.readouterr()
    code = cli.main(["query", "--dir", str(directory), "-o", "cat", *args])
    out = capsys.readouterr().out.splitlines()
    assert code in (0, 1), code
    return out


def test_a_forged_app_and_sender_cannot_pass_as_another_login(
    sinkenv: dict[str, Any],
    attacker: Attacker,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """Records claiming goodapp and the legitimate login, from the attacker (single, batch)
    and without user_id: the archive and `query --field sender=` name the attacker (or
    nobody), the {sender} file path keeps them out of goodapp's file; goodapp's own records
    (single and batched) name the legitimate login."""
    exchange, url = sinkenv["exchange"], sinkenv["url"]
    own = login(url)
    arch, files = name(sinkenv, "arch"), name(sinkenv, "apps")
    archive, apps = tmp_path / "archive", tmp_path / "apps"
    config = write_config(
        tmp_path / "routing.toml",
        url,
        exchange,
        {
            arch: {"type": "archive", "match": "*.*", "dir": str(archive)},
            files: {
                "type": "file",
                "match": "*.*",
                "path": str(apps / "{sender}" / "{app}.log"),
                "format": "{sender} {app}: {msg}",
            },
        },
    )
    declare(config)
    handler = RabbitHandler(
        url=url, exchange=exchange, app="goodapp", facility="shop", batch="auto", spool=""
    )
    logger = logging.getLogger(f"goodapp.{sinkenv['tag']}")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for i in range(LEGIT):
            logger.error("legit-%d", i)
        handler.flush()
        # the same app and login claimed by the attacker: alone, in a batch, anonymously
        publish_as(
            attacker.url,
            exchange,
            "shop.err",
            [forged("forged-single")],
            message_id="f-single",
            app_id="goodapp",
            user_id=attacker.user,
        )
        lines = [forged("forged-batch-1", "fb1"), forged("forged-batch-2", "fb2")]
        publish_as(
            attacker.url,
            exchange,
            "shop.err",
            [batchwire.encode_batch(lines)],
            message_id="fb1+2",
            app_id="goodapp",
            user_id=attacker.user,
            content_type=batchwire.CONTENT_TYPE,
            headers=batchwire.headers(2),
        )
        publish_as(
            attacker.url,
            exchange,
            "shop.err",
            [forged("forged-anonymous")],
            message_id="f-anon",
            app_id="goodapp",
        )
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert handler.stats["messages"] < LEGIT, "the handler sent no batch"
    for sink in (arch, files):
        result = run_burst(["sink", sink, str(config)], sinkenv["env"])
        assert result.returncode == 0, result.stderr[-3000:]

    # the archive: each line names its validated sender once (or none), whatever it claimed
    expected = {f"legit-{i}": [own] for i in range(LEGIT)}
    expected |= {m: [attacker.user] for m in ("forged-single", "forged-batch-1", "forged-batch-2")}
    expected["forged-anonymous"] = []
    found = {}
    for line in archive_lines(archive):
        pairs = json.loads(line, object_pairs_hook=lambda items: items)
        record = dict(pairs)
        found[record["msg"]] = [value for key, value in pairs if key == "sender"]
    assert found == expected

    # query selects by the validated sender, never by a body's own key
    assert sorted(query(capsys, archive, "--field", f"sender={attacker.user}")) == [
        "forged-batch-1",
        "forged-batch-2",
        "forged-single",
    ]
    for output in ("json", "jsonl"):  # the archived line as is, and the decoded record
        shown = query(capsys, archive, "--field", f"sender={attacker.user}", "-o", output)
        assert [json.loads(text)["sender"] for text in shown] == [attacker.user] * 3
    by_own = query(capsys, archive, "--field", f"sender={own}")
    assert sorted(by_own) == sorted(f"legit-{i}" for i in range(LEGIT))
    assert query(capsys, archive, "--field", f"sender={own}", "--grep", "forged") == []

    # the file sink: each login's records in its own file, none in another's
    written = {
        str(path.relative_to(apps)): path.read_text().splitlines() for path in apps.rglob("*.log")
    }
    assert sorted(written) == sorted(
        [f"{own}/goodapp.log", f"{attacker.user}/goodapp.log", "-/goodapp.log"]
    )
    assert sorted(written[f"{attacker.user}/goodapp.log"]) == [
        f"{attacker.user} goodapp: {m}"
        for m in ("forged-batch-1", "forged-batch-2", "forged-single")
    ]
    assert written["-/goodapp.log"] == ["- goodapp: forged-anonymous"]
    assert sorted(written[f"{own}/goodapp.log"]) == sorted(
        f"{own} goodapp: legit-{i}" for i in range(LEGIT)
    )
