"""A canary judged by a real Prometheus scraping real processes behind a real HAProxy.

The demo app's v2 answers a share of its requests with 500 while its health check
passes (``ZDD_DEMO_ERROR_RATE``); Prometheus finds the processes through the local
provider's ``prometheus_targets.json``; the metric gate compares the canary's error
ratio with the stable release's. A bad canary is rolled back by the analysis, with
failed requests under the bound docs/analysis.md states; a good one is promoted.
"""

from __future__ import annotations

import shutil
import sys

import pytest

import zdd
from zdd.analysis import MetricAnalysis, MetricGates
from zdd.demo.load import LoadGenerator
from zdd.demo.prometheus import PrometheusServer, demo_gate
from zdd.providers.local import TARGETS, LocalProvider

pytestmark = [
    pytest.mark.haproxy,
    pytest.mark.prometheus,
    pytest.mark.skipif(
        shutil.which("haproxy") is None or shutil.which("prometheus") is None,
        reason="needs HAProxy and Prometheus (apt-get install haproxy prometheus)",
    ),
]

RPS = 200.0
SHARE = 0.25  # one canary of four serving machines, weight 25
ERROR_RATE = 0.2
INTERVAL = 3.0
WINDOW = 10.0  # the query's rate() window


def bound(gate: zdd.analysis.MetricGate) -> float:
    """docs/analysis.md: rps x canary share x error rate x how long the canary can
    serve before the verdict (the initial delay, one interval per tolerated measurement
    plus the one that decides, the query's window, and 5 s for the release and the
    drain)."""
    serving = (
        gate.initial_delay
        + INTERVAL * (gate.failure_limit + gate.inconclusive_limit + 1)
        + WINDOW
        + 5.0
    )
    return RPS * SHARE * ERROR_RATE * serving


def deploy(bad: bool) -> tuple[zdd.DeployResult, int, int, float]:
    versions = {"v2": {"ZDD_DEMO_ERROR_RATE": f"{ERROR_RATE:.0%}"}} if bad else {}
    with LocalProvider(
        [sys.executable, "-m", "zdd.demo.app"], versions=versions, kill_signal="SIGTERM"
    ) as provider:
        provider.launch("v1", 3)
        state = provider.wait_healthy(60.0)
        with PrometheusServer(provider.state_dir / TARGETS) as prometheus:
            gate = demo_gate(prometheus.url, interval=INTERVAL, count=4)
            resolver = MetricGates(MetricAnalysis({gate.name: gate}))
            strategy = zdd.Canary(
                steps=[zdd.CanaryStep(machines=1, weight=25, gate=gate.name)],
                then=zdd.Rolling(max_unavailable=0, max_surge=1, drain_delay=0.5),
                drain_delay=0.5,
            )
            release = zdd.Release(
                version="v2",
                checks=[zdd.HealthCheck(type="http", path="/health", interval=0.5)],
                kill_signal="SIGTERM",
            )
            desired = zdd.Desired.from_fleet(state, release)
            load = LoadGenerator("127.0.0.1", provider.port, rps=RPS, streams=0)
            load.start()
            try:
                result = zdd.execute(
                    provider,
                    desired,
                    strategy,
                    options=zdd.ExecuteOptions(gates=resolver, gate_timeout=120, gate_poll=1.0),
                    poll_interval=0.2,
                )
            finally:
                report = load.stop()
            return result, report.failed_requests, report.total_requests, bound(gate)


def test_a_bad_canary_is_rolled_back_by_the_analysis_within_the_bound() -> None:
    result, failed, total, limit = deploy(bad=True)
    assert result.rolled_back, result.error
    assert "gate 'analysis' failed" in (result.error or "")
    assert 0 < failed <= limit, (failed, total, limit)


def test_a_good_canary_is_promoted() -> None:
    result, failed, total, _ = deploy(bad=False)
    assert result.converged, result.error
    assert failed == 0, (failed, total)
