"""A Prometheus server for ``zdd demo --analysis``: scrapes the demo's processes.

The local provider writes ``prometheus_targets.json`` (file-based service
discovery) in its state directory; this starts Debian's ``prometheus`` on
127.0.0.1 with a generated configuration that scrapes those targets every
second, and :func:`demo_gates` is the metric gate that judges a canary by its
error ratio against the stable release's.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .._analysis import Condition, MetricGate
from .._errors import InvalidConfig

__all__ = ["PROMETHEUS_MISSING", "PrometheusServer", "demo_gate"]

PROMETHEUS_MISSING = (
    "Prometheus is not installed: apt-get install prometheus (Debian, Ubuntu) or "
    "brew install prometheus; zdd runs its own instance on 127.0.0.1"
)

#: The demo gate's query: the canary's share of 5xx answers over the last 10 s.
#: (A release with no 5xx yet has no such series: ``or vector(0)`` makes that 0; no
#: requests at all leaves the denominator empty, which is no data.)
ERROR_RATIO = (
    '(sum(rate(zdd_demo_http_requests_total{version="{{canary}}",status=~"5.."}[10s]))'
    " or vector(0))"
    ' / sum(rate(zdd_demo_http_requests_total{version="{{canary}}"}[10s]))'
)


def demo_gate(
    url: str, *, name: str = "analysis", interval: float = 5.0, count: int = 4
) -> MetricGate:
    """The demo's metric gate: the canary's error ratio at most the stable release's
    times 1.5 plus 1 percentage point, ``count`` times ``interval`` apart; no data pauses."""
    return MetricGate(
        name=name,
        query=ERROR_RATIO,
        condition=Condition.parse("<= stable * 1.5 + 1%"),
        url=url,
        interval=interval,
        count=count,
        failure_limit=0,
        inconclusive_limit=2,
        no_data="inconclusive",
        initial_delay=10.0,  # the query's window: a new canary's rate needs it
    )


class PrometheusServer:
    """Prometheus on 127.0.0.1 scraping the file-discovered ``targets`` every second.

    Stops (SIGTERM, then SIGKILL) on :meth:`close` and removes its data directory.
    """

    def __init__(
        self,
        targets: str | os.PathLike[str],
        *,
        binary: str = "prometheus",
        scrape_interval: float = 1.0,
        ready_timeout: float = 60.0,
    ) -> None:
        found = shutil.which(binary)
        if found is None:
            raise InvalidConfig(PROMETHEUS_MISSING)
        self.dir = Path(tempfile.mkdtemp(prefix="zdd-prometheus-"))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        ms = max(100, int(scrape_interval * 1000))
        config = self.dir / "prometheus.yml"
        config.write_text(
            f"global:\n  scrape_interval: {ms}ms\n  evaluation_interval: {ms}ms\n"
            "scrape_configs:\n  - job_name: zdd-demo\n"
            f"    scrape_interval: {ms}ms\n"
            "    file_sd_configs:\n"
            f"      - files: ['{os.fspath(targets)}']\n        refresh_interval: 1s\n"
        )
        log = self.dir / "prometheus.log"
        with open(log, "ab") as out:
            self._proc = subprocess.Popen(
                [
                    found,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = log.read_text(errors="replace")[-500:]
                self.close()
                raise InvalidConfig(f"Prometheus did not start: {' '.join(tail.split())}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                try:
                    conn.request("GET", "/-/ready")
                    if conn.getresponse().status == 200:
                        return
                finally:
                    conn.close()
            time.sleep(0.1)
        self.close()
        raise InvalidConfig(f"Prometheus did not become ready within {ready_timeout:g}s")

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
