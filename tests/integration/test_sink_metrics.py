"""A running sink daemon's metrics endpoint (``--metrics-port``), scraped over HTTP."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from logrouter import control
from logrouter.config import load_config
from tests.helpers.broker import wait_for
from tests.helpers.sinks import declare, name, start, stop, write_config


def endpoint(log: Path) -> str | None:
    """The URL the daemon logged for its metrics endpoint, once it has."""
    for line in log.read_text().splitlines() if log.exists() else []:
        if line.startswith("{") and "metrics endpoint listening" in line:
            return str(json.loads(line)["url"])
    return None


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def test_control_requests_refused_are_exported(sinkenv: dict[str, Any]) -> None:
    """Control requests from a login not in [control] allow_users are counted in
    logrouter_control_requests_total{outcome="refused"}, next to answered and malformed."""
    sink = name(sinkenv, "metrics")
    config = write_config(
        sinkenv["tmp"] / "routing.toml",
        sinkenv["url"],
        sinkenv["exchange"],
        {sink: {"type": "file", "match": "*.*", "path": str(sinkenv["tmp"] / "out.log")}},
    )
    with config.open("a") as toml:
        toml.write('[control]\nallow_users = ["somebody-else"]\n')
    declare(config)
    log = sinkenv["tmp"] / "sink.log"
    process = start(["sink", sink, str(config), "--metrics-port", "0"], sinkenv["env"], log)
    try:
        wait_for(lambda: endpoint(log) is not None, "the metrics endpoint")
        url = endpoint(log)
        assert url is not None
        broker = load_config(config).broker
        refused = 'logrouter_control_requests_total{outcome="refused"}'

        def refused_count() -> int:
            for line in scrape(url).splitlines():
                if line.startswith(refused + " "):
                    return int(float(line.split()[-1]))
            return 0

        # the control service may not listen yet: ask until one request was refused
        wait_for(
            lambda: (
                not control.request_with_settings(broker, "status", sink=sink, timeout=0.3).replies
                and refused_count() >= 1
            ),
            "a refused control request",
        )
        text = scrape(url)
        assert 'logrouter_control_requests_total{outcome="answered"} 0' in text
        assert 'logrouter_control_requests_total{outcome="malformed"} 0' in text
    finally:
        assert stop(process) == 0
