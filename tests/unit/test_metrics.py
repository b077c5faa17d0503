"""The Prometheus endpoint: scraped over HTTP with urllib, lines parsed."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from logrouter import metrics


@dataclass
class FakeCounters:
    """Counters as a sink object would hold them (attributes)."""

    received: int = 0
    written: int = 0
    acked: int = 0
    rejected: int = 0
    duplicates: int = 0
    reconnects: int = 0
    batch_latency: metrics.LatencyHistogram = field(default_factory=metrics.LatencyHistogram)


def parse(text: str) -> dict[str, float]:
    """Samples of an exposition text as {'name{labels}': value}."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


def scrape(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


@pytest.fixture
def served() -> Iterator[tuple[metrics.MetricsServer, dict[str, Any]]]:
    """A metrics server on a free port over a mutable {sink: counters} map."""
    state: dict[str, Any] = {}
    server = metrics.start_metrics_server(0, lambda: state)
    yield server, state
    server.close()


def test_scrape_reports_counters_per_sink(
    served: tuple[metrics.MetricsServer, dict[str, Any]],
) -> None:
    """Each counter of each sink appears with its sink label and current value."""
    server, state = served
    state["errors"] = FakeCounters(
        received=12, written=10, acked=11, rejected=1, duplicates=1, reconnects=2
    )
    state["console"] = {"counters": {"written": 5, "acked": 5}}  # a SinkStatus-like dict
    status, content_type, body = scrape(server.url)
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    samples = parse(body)
    assert samples['logrouter_records_received_total{sink="errors"}'] == 12
    assert samples['logrouter_records_written_total{sink="errors"}'] == 10
    assert samples['logrouter_records_acked_total{sink="errors"}'] == 11
    assert samples['logrouter_records_rejected_total{sink="errors"}'] == 1
    assert samples['logrouter_duplicates_dropped_total{sink="errors"}'] == 1
    assert samples['logrouter_reconnects_total{sink="errors"}'] == 2
    assert samples['logrouter_records_written_total{sink="console"}'] == 5
    assert "# TYPE logrouter_records_written_total counter" in body


def test_values_are_live(served: tuple[metrics.MetricsServer, dict[str, Any]]) -> None:
    """A second scrape shows the counters as they are now, not as they were."""
    server, state = served
    counters = FakeCounters(written=1)
    state["archive"] = counters
    assert parse(scrape(server.url)[2])['logrouter_records_written_total{sink="archive"}'] == 1
    counters.written = 500
    assert parse(scrape(server.url)[2])['logrouter_records_written_total{sink="archive"}'] == 500


def test_batch_latency_histogram(served: tuple[metrics.MetricsServer, dict[str, Any]]) -> None:
    """Batch latencies show as cumulative buckets with +Inf, a sum and a count."""
    server, state = served
    counters = FakeCounters()
    for seconds in (0.002, 0.02, 0.02, 30.0):
        counters.batch_latency.observe(seconds)
    state["errors"] = counters
    _, _, body = scrape(server.url)
    samples = parse(body)
    name = "logrouter_batch_latency_seconds"
    assert f"# TYPE {name} histogram" in body
    assert samples[f'{name}_bucket{{sink="errors",le="0.0025"}}'] == 1
    assert samples[f'{name}_bucket{{sink="errors",le="0.025"}}'] == 3
    assert samples[f'{name}_bucket{{sink="errors",le="10"}}'] == 3
    assert samples[f'{name}_bucket{{sink="errors",le="+Inf"}}'] == 4
    assert samples[f'{name}_count{{sink="errors"}}'] == 4
    assert samples[f'{name}_sum{{sink="errors"}}'] == pytest.approx(30.042)


def test_label_values_are_escaped() -> None:
    """Quotes, backslashes and newlines in a sink name cannot break the text format."""
    text = metrics.render({'we"ird\\n\nme': {"written": 3}})
    assert 'logrouter_records_written_total{sink="we\\"ird\\\\n\\nme"} 3' in text


def test_unknown_path_is_404(served: tuple[metrics.MetricsServer, dict[str, Any]]) -> None:
    """Only /metrics (and /) are served; anything else is a 404."""
    server, _ = served
    with pytest.raises(urllib.error.HTTPError) as caught:
        scrape(f"http://127.0.0.1:{server.port}/nope")
    assert caught.value.code == 404


def test_failing_collector_gives_500_and_server_survives() -> None:
    """A collector that raises yields HTTP 500; the next scrape works again."""
    calls: list[int] = []

    def collect() -> Mapping[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return {"errors": {"written": 1}}

    server = metrics.start_metrics_server(0, collect)
    try:
        with pytest.raises(urllib.error.HTTPError) as caught:
            scrape(server.url)
        assert caught.value.code == 500
        assert parse(scrape(server.url)[2])['logrouter_records_written_total{sink="errors"}'] == 1
    finally:
        server.close()


def test_binds_loopback_by_default(served: tuple[metrics.MetricsServer, dict[str, Any]]) -> None:
    """The endpoint listens on 127.0.0.1 unless another host is asked for."""
    server, _ = served
    assert server.host == "127.0.0.1"
    assert server.url == f"http://127.0.0.1:{server.port}/metrics"
