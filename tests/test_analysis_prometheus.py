"""Metric gates against a real Prometheus server (Debian's ``prometheus`` package).

The fixture starts Prometheus on 127.0.0.1 with a generated configuration that
scrapes a small exporter run by the test every 0.5 s; each test sets the series
the exporter serves (per release version) and measures a gate against it.
"""

from __future__ import annotations

import contextlib
import http.client
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from zdd.analysis import (
    Condition,
    GateQueryFailed,
    MetricAnalysis,
    MetricGate,
    MetricsUnavailable,
    PrometheusClient,
    run_analysis,
)

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="Prometheus is not installed (apt-get install prometheus); .ci/run installs it",
    ),
]


class Exporter:
    """Serves ``/metrics``: ``zdd_test_error_ratio{version=V}`` for each version set,
    or, for a flapping version, a value that alternates between two each scrape."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.flap: dict[str, tuple[float, float]] = {}
        self.scrapes = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.scrapes += 1
                lines = ["# TYPE zdd_test_error_ratio gauge"]
                for version, value in sorted(owner.values.items()):
                    lines.append(f'zdd_test_error_ratio{{version="{version}"}} {value}')
                for version, (a, b) in sorted(owner.flap.items()):
                    value = a if owner.scrapes % 2 else b
                    lines.append(f'zdd_test_error_ratio{{version="{version}"}} {value}')
                body = ("\n".join(lines) + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    def __init__(self, tmp: Path, target: int) -> None:
        self.tmp = tmp
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\n"
            "scrape_configs:\n  - job_name: app\n    scrape_interval: 500ms\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
        )
        assert PROMETHEUS is not None
        self.argv = [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--query.lookback-delta=2s",
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        log = open(self.tmp / "prometheus.log", "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/-/ready")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            assert self.proc.poll() is None, (self.tmp / "prometheus.log").read_text()[-2000:]
            time.sleep(0.1)
        raise AssertionError("Prometheus did not become ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def wait_for(self, query: str, timeout: float = 30.0) -> float | None:
        """Wait until ``query`` has data (scrapes landed); returns the value."""
        client = PrometheusClient(self.url, retries=1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = client.query(query)
            if value is not None:
                return value
            time.sleep(0.2)
        raise AssertionError(f"no data for {query} after {timeout}s")


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    e = Exporter()
    yield e
    e.close()


@pytest.fixture(scope="module")
def prometheus(
    exporter: Exporter, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    p = Prometheus(tmp_path_factory.mktemp("prometheus"), exporter.port)
    yield p
    p.stop()


QUERY = 'max(zdd_test_error_ratio{version="{{canary}}"})'


def gate(prometheus: Prometheus, condition: str = "<= 0.01", **kw: object) -> MetricGate:
    args: dict[str, object] = {
        "name": "canary-ok",
        "query": QUERY,
        "condition": Condition.parse(condition),
        "url": prometheus.url,
        "interval": 0.5,
        "count": 3,
    }
    args.update(kw)
    return MetricGate(**args)  # type: ignore[arg-type]


def analyse(g: MetricGate, canary: str, stable: str = "v1") -> tuple[str, list[str]]:
    result, taken = run_analysis(MetricAnalysis({g.name: g}), g.name, canary=canary, stable=stable)
    return result, [m.outcome for m in taken]


def test_a_healthy_canary_passes(prometheus: Prometheus, exporter: Exporter) -> None:
    exporter.values["ok1"] = 0.001
    prometheus.wait_for('zdd_test_error_ratio{version="ok1"}')
    assert analyse(gate(prometheus), "ok1") == ("pass", ["pass", "pass", "pass"])


def test_a_bad_canary_fails(prometheus: Prometheus, exporter: Exporter) -> None:
    exporter.values["bad1"] = 0.2
    prometheus.wait_for('zdd_test_error_ratio{version="bad1"}')
    assert analyse(gate(prometheus), "bad1") == ("fail", ["fail"])
    # with a failure limit the gate tolerates that many
    assert analyse(gate(prometheus, failure_limit=1), "bad1") == ("fail", ["fail", "fail"])


def test_relative_to_the_stable_release(prometheus: Prometheus, exporter: Exporter) -> None:
    exporter.values["stable2"] = 0.04
    exporter.values["near2"] = 0.05  # <= 0.04 * 1.5 + 0.005 = 0.065
    exporter.values["far2"] = 0.08
    for v in ("stable2", "near2", "far2"):
        prometheus.wait_for(f'zdd_test_error_ratio{{version="{v}"}}')
    g = gate(prometheus, "<= stable * 1.5 + 0.5%")
    assert analyse(g, "near2", "stable2")[0] == "pass"
    assert analyse(g, "far2", "stable2")[0] == "fail"
    # a stable release with no data cannot be compared with
    assert analyse(g, "near2", "nobody")[0] == "inconclusive"


@pytest.mark.parametrize(
    ("no_data", "expected"),
    [("inconclusive", "inconclusive"), ("fail", "fail"), ("pass", "pass")],
)
def test_no_data_means_what_the_gate_says(
    prometheus: Prometheus, no_data: str, expected: str
) -> None:
    assert analyse(gate(prometheus, no_data=no_data), "never-deployed")[0] == expected


def test_inconclusive_within_its_limit_goes_on(prometheus: Prometheus, exporter: Exporter) -> None:
    g = gate(prometheus, inconclusive_limit=3, count=3)
    result, outcomes = analyse(g, "never-deployed")
    # three inconclusive measurements within a limit of 3: the count is reached
    assert outcomes == ["inconclusive"] * 3
    assert result == "pass"


def test_a_flapping_series_is_held_to_its_failure_limit(
    prometheus: Prometheus, exporter: Exporter
) -> None:
    exporter.flap["flap3"] = (0.001, 0.5)
    prometheus.wait_for('zdd_test_error_ratio{version="flap3"}')
    # every other measurement fails: a limit of 1 is exceeded within 6 measurements
    result, outcomes = analyse(gate(prometheus, count=6, failure_limit=1, interval=0.6), "flap3")
    assert result == "fail"
    assert outcomes.count("fail") == 2 and "pass" in outcomes, outcomes


def test_prometheus_down_is_retried_then_inconclusive(
    prometheus: Prometheus, exporter: Exporter
) -> None:
    exporter.values["down4"] = 0.001
    prometheus.wait_for('zdd_test_error_ratio{version="down4"}')
    sleeps: list[float] = []
    client = PrometheusClient(prometheus.url, retries=3, backoff=0.05, sleep=sleeps.append)
    g = gate(prometheus, count=2)
    analysis = MetricAnalysis({g.name: g}, client=lambda _: client)
    prometheus.stop()
    try:
        m = analysis.measure(g.name, canary="down4", stable="v1", group="app", index=0, at=0.0)
        assert m.outcome == "inconclusive"
        assert "did not answer after 3 attempts" in m.note
        assert sleeps == [0.05, 0.1]  # retried, with backoff
        assert client.requests == 3
        with pytest.raises(MetricsUnavailable):
            client.query("up")
    finally:
        prometheus.start()
    prometheus.wait_for('zdd_test_error_ratio{version="down4"}')
    m = analysis.measure(g.name, canary="down4", stable="v1", group="app", index=1, at=1.0)
    assert m.outcome == "pass"


def test_a_query_error_names_the_gate(prometheus: Prometheus) -> None:
    g = gate(prometheus, query="sum(rate(zdd_test_error_ratio{version=}[1m])")
    with pytest.raises(GateQueryFailed) as info:
        analyse(g, "v2")
    text = str(info.value)
    assert text.startswith("gate 'canary-ok': the metrics server refused the query (bad_data:")
    # several series are refused too: a gate needs one number
    g = gate(prometheus, query="zdd_test_error_ratio")
    with pytest.raises(GateQueryFailed, match="series; aggregate it to one"):
        analyse(g, "v2")


def test_the_token_never_shows(prometheus: Prometheus) -> None:
    secret = "fm2_s3cr3t-metrics-token"
    client = PrometheusClient.from_env(
        prometheus.url, "FLY_METRICS_TOKEN", environ={"FLY_METRICS_TOKEN": secret}
    )
    assert secret not in repr(client)
    g = gate(prometheus, token_env="FLY_METRICS_TOKEN", query="sum(x{")
    analysis = MetricAnalysis({g.name: g}, environ={"FLY_METRICS_TOKEN": secret})
    with pytest.raises(GateQueryFailed) as info:
        analysis.measure(g.name, canary="v2", stable="v1", group="app", index=0, at=0)
    assert secret not in str(info.value) and secret not in repr(analysis)
    assert secret not in repr(g)
    # an unreachable server's error does not show it either
    dead = PrometheusClient(f"http://127.0.0.1:{_free_port()}", token=secret, retries=1, backoff=0)
    with pytest.raises(MetricsUnavailable) as down:
        dead.query("up")
    assert secret not in str(down.value)
    # and plain http to another host is refused before anything is sent
    with pytest.raises(Exception, match="https is required"):
        PrometheusClient("http://metrics.example.com", token=secret)
