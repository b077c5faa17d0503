"""Records routed by a config shaped like config/routing.toml land exactly where the
selectors say (real broker, `python -m logrouter run --burst`)."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from logrouter.severity import RANK, SEVERITIES
from tests.helpers.sinks import (
    archive_records,
    declare,
    lines_of,
    message,
    name,
    publish,
    run_burst,
    tokens,
    write_config,
)

FACILITIES = ("auth", "mail", "billing", "kern", "local0", "my-app")


def routing_config(env: dict[str, Any]) -> tuple[Path, str, str, str]:
    out = env["tmp"] / "log"
    errors, console, archive = name(env, "errors"), name(env, "console"), name(env, "archive")
    config = write_config(
        env["tmp"] / "routing.toml",
        env["url"],
        env["exchange"],
        {
            errors: {"type": "file", "match": "*.err", "path": f"{out}/{{facility}}.err.log"},
            console: {"type": "console", "match": "*.=info", "color": "never"},
            archive: {"type": "archive", "match": "*.*", "dir": str(env["tmp"] / "archive")},
        },
    )
    declare(config)
    return config, errors, console, archive


def test_each_record_lands_where_the_selectors_say(sinkenv: dict[str, Any]) -> None:
    """err and worse in one file per facility, exactly info on the console (stdout),
    everything in the archive; checked record by record, nothing twice."""
    config, *_ = routing_config(sinkenv)
    plan: dict[int, tuple[str, str]] = {}
    messages = []
    for facility in FACILITIES:
        for severity in SEVERITIES:
            for _ in range(3):
                n = len(plan)
                plan[n] = (facility, severity)
                messages.append(message(facility, severity, f"rec-{n} {facility}.{severity}"))
    # A syslog daemon's plain-text message, no JSON, no properties: key auth.err.
    foreign = len(plan)
    plan[foreign] = ("auth", "err")
    messages.append(("auth.err", f"sshd[99]: rec-{foreign} Failed password".encode(), None))
    publish(sinkenv["url"], sinkenv["exchange"], messages)

    result = run_burst(["run", str(config)], sinkenv["env"])
    assert result.returncode == 0, result.stderr

    out = sinkenv["tmp"] / "log"
    for facility in FACILITIES:
        expected = {n for n, (f, s) in plan.items() if f == facility and RANK[s] <= RANK["err"]}
        got = tokens(lines_of(out / f"{facility}.err.log"))
        assert set(got) == expected, facility
        assert max(got.values()) == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{f}.err.log" for f in FACILITIES)
    console = tokens(result.stdout.splitlines())
    assert set(console) == {n for n, (_, s) in plan.items() if s == "info"}
    assert max(console.values()) == 1
    archived = tokens(r["msg"] for r in archive_records(sinkenv["tmp"] / "archive"))
    assert archived == Counter(dict.fromkeys(plan, 1))
    assert "Failed password" in (out / "auth.err.log").read_text()


def test_records_from_the_handler_reach_the_files(sinkenv: dict[str, Any]) -> None:
    """log.error() through RabbitHandler ends up in the facility's errors file; log.info()
    does not."""
    from logrouter import RabbitHandler

    config, *_ = routing_config(sinkenv)
    handler = RabbitHandler(url=sinkenv["url"], exchange=sinkenv["exchange"], facility="billing")
    logger = logging.getLogger(f"e2e.{sinkenv['tag']}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        logger.error("rec-1 payment failed for %s", "order-9")
        logger.info("rec-2 all good")
    finally:
        logger.removeHandler(handler)
        handler.close()
    result = run_burst(["run", str(config)], sinkenv["env"])
    assert result.returncode == 0, result.stderr
    lines = lines_of(sinkenv["tmp"] / "log" / "billing.err.log")
    assert tokens(lines) == Counter({1: 1})
    assert "payment failed for order-9" in lines[0]
    assert tokens(result.stdout.splitlines()) == Counter({2: 1})
