"""TCP faults through an in-test proxy: cut, stalled and reset connections, on the handler's
side (app -> broker) and on the sink's side (broker -> sink daemon), mid-stream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.reliability.harness import assert_exactly_once, wait_until
from tests.reliability.tcp_proxy import TcpProxy

#: about 1 minute of this suite's work: scheduled early (tests/conftest.py)
pytestmark = pytest.mark.slow(minutes=1)

TOTAL = 3000
STALL = 7.0  # seconds: longer than two heartbeats (2 s), so both ends declare the peer dead


@pytest.fixture
def proxy(amqp_url: str) -> Iterator[TcpProxy]:
    """A TCP proxy to the test broker, closed afterwards."""
    with TcpProxy.for_url(amqp_url) as p:
        yield p


def _inject(proxy: TcpProxy, fault: str) -> None:
    if fault == "drop":
        proxy.drop()
    elif fault == "reset":
        proxy.reset()
    else:
        proxy.stall(STALL)


@pytest.mark.parametrize("side", ["handler", "sink"])
@pytest.mark.parametrize("fault", ["drop", "stall", "reset"])
def test_tcp_fault_mid_stream(
    side: str, fault: str, amqp_url: str, proxy: TcpProxy, pipeline_factory: Any
) -> None:
    """A TCP connection cut (FIN), stalled past the heartbeat timeout, or reset (RST) mid-stream,
    between handler and broker or between broker and sink, twice: both ends recover by
    themselves and files and archive hold every record exactly once."""
    via = proxy.url(amqp_url)
    pipeline = pipeline_factory(amqp_url, sink_url=via if side == "sink" else None)
    pipeline.declare()
    pipeline.start()
    log, handler = pipeline.handler(url=via if side == "handler" else amqp_url)
    third = TOTAL // 3
    pipeline.log_range(log, 0, third, pace_every=100, pace=0.02)
    assert wait_until(lambda: proxy.connections > 0, 30), "nothing connected through the proxy"
    assert wait_until(lambda: pipeline.written() > 0, 30), "sink wrote nothing"
    _inject(proxy, fault)
    pipeline.log_range(log, third, 2 * third, pace_every=100, pace=0.02)
    assert wait_until(lambda: proxy.connections > 0, 30), "no reconnection through the proxy"
    _inject(proxy, fault)
    pipeline.log_range(log, 2 * third, TOTAL, pace_every=100, pace=0.02)
    assert pipeline.wait_files(TOTAL), "the live sink did not catch up after the faults"
    accepted, dropped = proxy.accepted, handler.dropped
    pipeline.drain()
    counts = pipeline.counts(
        f"TCP {fault} x2, {side} <-> broker",
        TOTAL,
        notes=f"{accepted} connections through the proxy",
        dropped=dropped,
    )
    assert_exactly_once(counts, pipeline)
    assert accepted > 1, "the fault did not make the client reconnect"
