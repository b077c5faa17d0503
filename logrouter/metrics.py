"""Prometheus text-format metrics of running sinks (``--metrics-port``).

``start_metrics_server(port, collect)`` serves ``GET /metrics`` from a stdlib
HTTP server in a daemon thread, bound to 127.0.0.1 unless told otherwise.
``collect()`` returns ``{sink name: counters}`` where counters is a mapping or an
object with the attributes ``received written acked rejected duplicates
reconnects`` (a ``SinkStatus`` dict with a nested ``counters`` works too) and,
optionally, ``batch_latency``: a ``LatencyHistogram`` the sink feeds with the
seconds each write+flush+ack batch took.

``render`` (pure) turns that into the exposition text.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from logrouter import counters, log

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_HOST = "127.0.0.1"

#: (counter key, metric name, help text), from the one counters schema.
COUNTERS: tuple[tuple[str, str, str], ...] = tuple(
    (spec.name, spec.metric, spec.help) for spec in counters.COUNTERS
)
LATENCY_METRIC = "logrouter_batch_latency_seconds"
QUEUE_METRIC = "logrouter_queue_messages"
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def _log() -> Any:
    """The component logger, bound at use time (after the daemon configured logging)."""
    return log.get_logger("metrics")


@dataclass(frozen=True)
class HistogramSnapshot:
    buckets: tuple[float, ...]  # upper bounds, ascending, +Inf implied
    counts: tuple[int, ...]  # cumulative count per bound, then +Inf
    total: float
    count: int


class LatencyHistogram:
    """Thread-safe histogram of batch latencies in seconds."""

    def __init__(self, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        self._buckets = tuple(sorted(buckets))
        self._counts = [0] * (len(self._buckets) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        index = bisect.bisect_left(self._buckets, seconds)
        with self._lock:
            self._counts[index] += 1
            self._sum += seconds

    def snapshot(self) -> HistogramSnapshot:
        with self._lock:
            counts = list(self._counts)
            total = self._sum
        cumulative: list[int] = []
        running = 0
        for value in counts:
            running += value
            cumulative.append(running)
        return HistogramSnapshot(self._buckets, tuple(cumulative), total, running)


def _get(source: Any, key: str) -> Any:
    if isinstance(source, Mapping):
        if key in source:
            return source[key]
        nested = source.get("counters")
        return nested.get(key) if isinstance(nested, Mapping) else None
    return getattr(source, key, None)


def escape_label(value: str) -> str:
    """A label value escaped for the text format."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_number(value: float) -> str:
    if isinstance(value, int) or (value == value and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render(collected: Mapping[str, Any], queues: Mapping[str, int | None] | None = None) -> str:
    """The exposition text for ``{sink: counters}`` (one sample per sink and metric).

    ``queues`` (``{queue: messages ready}``, None = unknown) adds the
    ``logrouter_queue_messages`` gauge: the rejected and unrouted depths.
    """
    lines: list[str] = []
    if queues is not None:
        lines.append(
            f"# HELP {QUEUE_METRIC} Messages ready in a queue records are routed aside to."
        )
        lines.append(f"# TYPE {QUEUE_METRIC} gauge")
        for queue, depth in sorted(queues.items()):
            if depth is not None:
                lines.append(f'{QUEUE_METRIC}{{queue="{escape_label(queue)}"}} {depth}')
    sinks = sorted(collected.items())
    for key, metric, help_text in COUNTERS:
        lines.append(f"# HELP {metric} {help_text}")
        lines.append(f"# TYPE {metric} counter")
        for sink, source in sinks:
            value = _get(source, key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                lines.append(f'{metric}{{sink="{escape_label(sink)}"}} {format_number(value)}')
    lines.append(f"# HELP {LATENCY_METRIC} Seconds per write+flush+ack batch.")
    lines.append(f"# TYPE {LATENCY_METRIC} histogram")
    for sink, source in sinks:
        histogram = _get(source, "batch_latency")
        if not hasattr(histogram, "snapshot"):
            continue
        snap: HistogramSnapshot = histogram.snapshot()
        label = escape_label(sink)
        bounds = [*(format_number(b) for b in snap.buckets), "+Inf"]
        for bound, count in zip(bounds, snap.counts, strict=True):
            lines.append(f'{LATENCY_METRIC}_bucket{{sink="{label}",le="{bound}"}} {count}')
        lines.append(f'{LATENCY_METRIC}_sum{{sink="{label}"}} {format_number(snap.total)}')
        lines.append(f'{LATENCY_METRIC}_count{{sink="{label}"}} {snap.count}')
    return "\n".join(lines) + "\n"


Collector = Callable[[], Mapping[str, Any]]
Depths = Callable[[], Mapping[str, int | None]]


class _Handler(BaseHTTPRequestHandler):
    collect: Collector  # set on the per-server subclass
    depths: Depths | None = None

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in ("/metrics", "/"):
            self._send(404, "text/plain; charset=utf-8", b"not found; try /metrics\n")
            return
        try:
            depths = self.depths() if self.depths is not None else None
            body = render(self.collect(), depths).encode("utf-8")
        except Exception as exc:
            _log().warning("metrics collection failed", error=f"{type(exc).__name__}: {exc}")
            self._send(500, "text/plain; charset=utf-8", b"metrics collection failed\n")
            return
        self._send(200, CONTENT_TYPE, body)

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the stdlib's per-request stderr lines."""


class MetricsServer:
    """A running endpoint: ``port`` (the real one when 0 was asked), ``url``, ``close()``."""

    def __init__(
        self, port: int, collect: Collector, host: str = DEFAULT_HOST, depths: Depths | None = None
    ) -> None:
        methods = {
            "collect": staticmethod(collect),
            "depths": staticmethod(depths) if depths else None,
        }
        handler = type("MetricsHandler", (_Handler,), methods)
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="logrouter-metrics",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def start_metrics_server(
    port: int, collect: Collector, host: str = DEFAULT_HOST, depths: Depths | None = None
) -> MetricsServer:
    """Serve ``collect()`` (and ``depths()``) as Prometheus metrics on ``host:port`` (0 = any)."""
    server = MetricsServer(port, collect, host, depths)
    _log().info("metrics endpoint listening", url=server.url)
    return server
