"""Batch messages that declare one record and hold thousands (a hostile publisher).

A sink bounds what one commit decodes, writes and journals by the lines a batch
message actually holds, not by the count its header declares. Before, a
prefetch window of such messages became one sink batch of every line in it
(about 900,000 records and 6.6 GB of memory in the review that found it), a
commit long enough to miss heartbeats, and records written twice once the
redelivered batch outgrew the dedup window.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from typing import Any

import orjson

from logrouter import batchwire
from tests.adversarial.attackers import Attacker, publish_as
from tests.helpers.sinks import ROOT, archive_records, declare, logrouter, name, write_config

MESSAGES = 150
LINES = 4_000

#: Runs a command and prints the peak resident memory of its children (KiB) last.
PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def understated_batch(message: int) -> bytes:
    lines = (
        {"id": f"m{message}-{line}", "facility": "app", "severity": "info", "msg": "x"}
        for line in range(LINES)
    )
    return b"".join(orjson.dumps(record) + b"\n" for record in lines)


def test_a_sink_commits_what_batches_hold_not_what_they_declare(
    sinkenv: dict[str, Any], attacker: Attacker
) -> None:
    """150 batch messages of 4,000 lines each, every one declaring 1 record: an archive
    sink (batch_size 500) writes each of the 600,000 records exactly once and its memory
    stays that of a few commits (under 250 MiB: about 165 here; one commit of 100 such
    messages took 303)."""
    out = sinkenv["tmp"] / "archive"
    sink = name(sinkenv, "understated")
    config = write_config(
        sinkenv["tmp"] / "routing.toml",
        sinkenv["url"],
        sinkenv["exchange"],
        {sink: {"type": "archive", "match": "*.*", "dir": str(out), "batch_size": 500}},
    )
    declare(config)
    publish_as(
        attacker.url,
        sinkenv["exchange"],
        "app.info",
        [understated_batch(n) for n in range(MESSAGES)],
        user_id=attacker.user,
        content_type=batchwire.CONTENT_TYPE,
        message_id=lambda n: f"batch-{n}",
        headers={batchwire.RECORDS_HEADER: 1},
    )
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *logrouter("run", str(config), "--burst")],
        env=sinkenv["env"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    peak_mib = int(result.stderr.strip().splitlines()[-1]) / 1024
    counts = Counter(record["id"] for record in archive_records(out))
    assert len(counts) == MESSAGES * LINES
    assert set(counts.values()) == {1}
    assert peak_mib < 250, f"sink peaked at {peak_mib:.0f} MiB"
