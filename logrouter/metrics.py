"""Prometheus metrics of running sinks (``--metrics-port``), on ``prometheus-client``.

``start_metrics_server(port, collect)`` serves ``GET /metrics`` from a stdlib
HTTP server in a daemon thread, bound to 127.0.0.1 unless told otherwise.
``collect()`` returns ``{sink name: counters}`` where counters is a mapping or an
object with the attributes of ``counters.COUNTER_NAMES`` (a ``SinkStatus`` dict
with a nested ``counters`` works too). ``control()`` (optional) returns the control
service's counters (``counters.ControlCounters.as_dict()``: answered, refused,
malformed), one series per outcome: the service is one per process.

``SinkCollector`` is a prometheus-client custom collector over that callback (the
counters live in the sinks' ``SinkCounters``; nothing is copied into a registry),
and ``render`` (pure) turns one collection into the exposition text with
``prometheus_client.generate_latest``. prometheus-client is the optional extra
``metrics`` (``pip install 'logrouter[metrics]'``); without it ``--metrics-port``
fails saying so. Why a library and not hand-written text: docs/operations.md.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from logrouter import counters, log
from logrouter.errors import ConfigurationError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_HOST = "127.0.0.1"
QUEUE_METRIC = "logrouter_queue_messages"
QUEUE_HELP = "Messages ready in a queue records are routed aside to."
EXTRA_MISSING = (
    "--metrics-port needs prometheus-client: pip install 'logrouter[metrics]' "
    "(or pip install prometheus-client)"
)


class MetricsUnavailable(ConfigurationError):
    """prometheus-client is not installed (the optional extra ``metrics``)."""


def _log() -> Any:
    """The component logger, bound at use time (after the daemon configured logging)."""
    return log.get_logger("metrics")


def _get(source: Any, key: str) -> Any:
    if isinstance(source, Mapping):
        if key in source:
            return source[key]
        nested = source.get("counters")
        return nested.get(key) if isinstance(nested, Mapping) else None
    return getattr(source, key, None)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class SinkCollector:
    """A prometheus-client collector: one counter family per ``counters.COUNTERS`` entry
    (label ``sink``), the ``logrouter_queue_messages`` gauge (label ``queue``) and the
    control service's ``logrouter_control_requests_total`` (label ``outcome``)."""

    def __init__(
        self,
        collect: Callable[[], Mapping[str, Any]],
        depths: Callable[[], Mapping[str, int | None]] | None = None,
        control: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self._collect = collect
        self._depths = depths
        self._control = control

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        if self._depths is not None:
            gauge = GaugeMetricFamily(QUEUE_METRIC, QUEUE_HELP, labels=["queue"])
            for queue, depth in sorted(self._depths().items()):
                if depth is not None:
                    gauge.add_metric([queue], depth)
            yield gauge
        if self._control is not None:
            family = CounterMetricFamily(
                counters.CONTROL_METRIC, counters.CONTROL_HELP, labels=["outcome"]
            )
            for outcome, count in sorted(self._control().items()):
                family.add_metric([outcome], count)
            yield family
        sinks = sorted(self._collect().items())
        for spec in counters.COUNTERS:
            family = CounterMetricFamily(spec.metric, spec.help, labels=["sink"])
            for sink, source in sinks:
                value = _get(source, spec.name)
                if _number(value):
                    family.add_metric([sink], value)
            yield family


def exposition(collector: SinkCollector) -> str:
    """The text format of one collection (raises what the collector raises)."""
    try:
        from prometheus_client import CollectorRegistry, generate_latest
    except ImportError:
        raise MetricsUnavailable(EXTRA_MISSING) from None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode("utf-8")


def render(
    collected: Mapping[str, Any],
    queues: Mapping[str, int | None] | None = None,
    control: Mapping[str, int] | None = None,
) -> str:
    """The exposition text for ``{sink: counters}`` (one sample per sink and metric).

    ``queues`` (``{queue: messages ready}``, None = unknown) adds the
    ``logrouter_queue_messages`` gauge: the rejected and unrouted depths.
    ``control`` (``{outcome: requests}``) adds ``logrouter_control_requests_total``.
    """
    return exposition(
        SinkCollector(
            lambda: collected,
            (lambda: queues) if queues is not None else None,
            (lambda: control) if control is not None else None,
        )
    )


Collector = Callable[[], Mapping[str, Any]]
Depths = Callable[[], Mapping[str, int | None]]
ControlCounts = Callable[[], Mapping[str, int]]


class _Handler(BaseHTTPRequestHandler):
    collect: Collector  # set on the per-server subclass
    depths: Depths | None = None
    control: ControlCounts | None = None

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in ("/metrics", "/"):
            self._send(404, "text/plain; charset=utf-8", b"not found; try /metrics\n")
            return
        try:
            collector = SinkCollector(self.collect, self.depths, self.control)
            body = exposition(collector).encode("utf-8")
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
        self,
        port: int,
        collect: Collector,
        host: str = DEFAULT_HOST,
        depths: Depths | None = None,
        control: ControlCounts | None = None,
    ) -> None:
        methods = {
            "collect": staticmethod(collect),
            "depths": staticmethod(depths) if depths else None,
            "control": staticmethod(control) if control else None,
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
    port: int,
    collect: Collector,
    host: str = DEFAULT_HOST,
    depths: Depths | None = None,
    control: ControlCounts | None = None,
) -> MetricsServer:
    """Serve ``collect()`` (and ``depths()``, ``control()``) as Prometheus metrics on
    ``host:port`` (0 = any).

    Raises ``MetricsUnavailable`` (exit 78) when prometheus-client is not installed.
    """
    try:
        import prometheus_client  # noqa: F401 - the optional extra, checked before binding
    except ImportError:
        raise MetricsUnavailable(EXTRA_MISSING) from None
    server = MetricsServer(port, collect, host, depths, control)
    _log().info("metrics endpoint listening", url=server.url)
    return server
