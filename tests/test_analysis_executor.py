"""Metric gates in the executor: measured on the driver's clock, recorded, reported,
and continued (not restarted) by a resumed executor.

The metrics server here is a stand-in answering from a table (the real Prometheus
is in test_analysis_prometheus.py); what is under test is the executor's side.
"""

from __future__ import annotations

import io
import json

import pytest

import zdd
from zdd._analysis import Condition, MetricGate, measurement_key, measurements_in
from zdd.analysis import (
    Measurement,
    MetricAnalysis,
    MetricGates,
    MetricQueryError,
    PrometheusClient,
)
from zdd.reporters import JsonLinesReporter, Reporter, TextReporter


class Table(PrometheusClient):
    """Answers ``value("v2")`` for a query naming version v2 (``None``: no data)."""

    def __init__(self, values: dict[str, float | None]) -> None:
        super().__init__("http://127.0.0.1:9")
        self.values = values
        self.asked: list[str] = []

    def query(self, promql: str, at: float | None = None) -> float | None:
        self.asked.append(promql)
        for version, value in self.values.items():
            if f'"{version}"' in promql:
                return value
        return None


def gates(values: dict[str, float | None], **kw: object) -> tuple[MetricGates, Table]:
    args: dict[str, object] = {
        "name": "canary-ok",
        "query": 'sum(errors{version="{{canary}}"})',
        "condition": Condition.parse("<= 0.01"),
        "url": "http://127.0.0.1:9",
        "interval": 60.0,
        "count": 3,
    }
    args.update(kw)
    table = Table(values)
    analysis = MetricAnalysis({"canary-ok": MetricGate(**args)}, client=lambda _: table)  # type: ignore[arg-type]
    return MetricGates(analysis), table


STRATEGY = zdd.Canary(
    steps=[zdd.CanaryStep(machines=1, gate="canary-ok")],
    then=zdd.Rolling(max_unavailable=0, max_surge=1),
)


def run(
    resolver: MetricGates,
    reporter: Reporter | None = None,
    state: zdd.FleetState | None = None,
    machines: int = 3,
) -> zdd.SimulationReport:
    state = state or zdd.FleetState(
        machines=[zdd.Machine(id=f"m{i}", version="v1") for i in range(1, machines + 1)]
    )
    desired = zdd.Desired.from_fleet(state, zdd.Release(version="v2"))
    return zdd.simulate(
        state,
        desired,
        STRATEGY,
        options=zdd.ExecuteOptions(gates=resolver, gate_timeout=600),
        reporter=reporter,
    )


@pytest.mark.parametrize("machines", [1, 3, 12])
def test_a_good_canary_is_promoted_after_count_measurements(machines: int) -> None:
    resolver, table = gates({"v2": 0.001})
    report = run(resolver, machines=machines)
    assert report.converged, report.error
    assert len(table.asked) == 3
    assert table.asked[0] == 'sum(errors{version="v2"})'


def test_a_bad_canary_is_rolled_back_at_its_first_failed_measurement() -> None:
    resolver, table = gates({"v2": 0.2})
    report = run(resolver)
    assert report.rolled_back
    assert "gate 'canary-ok' failed: 1 of 1 measurements failed <= 0.01" in (report.error or "")
    assert len(table.asked) == 1


def test_no_data_pauses_for_an_operator_until_the_gate_timeout() -> None:
    resolver, _ = gates({})
    report = run(resolver)
    assert not report.converged
    assert "still inconclusive after 600s" in (report.error or "")
    assert "zdd gate canary-ok pass|fail" in (report.error or "")


def test_each_measurement_is_reported_recorded_and_spaced_by_the_interval() -> None:
    resolver, _ = gates({"v2": 0.001, "v1": 0.002})
    text, lines = io.StringIO(), io.StringIO()

    class Both(Reporter):
        def __init__(self) -> None:
            self.a = TextReporter(text, color=False)
            self.b = JsonLinesReporter(lines)

        def measurement(self, elapsed: float, gate: str, m: Measurement) -> None:
            self.a.measurement(elapsed, gate, m)
            self.b.measurement(elapsed, gate, m)

    report = run(resolver, reporter=Both())
    assert report.converged
    shown = [line for line in text.getvalue().splitlines() if "measurement" in line]
    assert len(shown) == 3
    assert shown[0].endswith("gate   canary-ok: measurement 1: 0.001 -> pass")
    events = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert [e["index"] for e in events] == [0, 1, 2]
    ats = [e["at"] for e in events]
    assert ats[1] - ats[0] == pytest.approx(60.0, abs=5.5)  # the interval (gate_poll slack)
    assert ats[2] - ats[1] == pytest.approx(60.0, abs=5.5)


def test_a_resumed_executor_continues_the_analysis() -> None:
    """Two measurements are in the record already: the resumed executor takes one."""
    resolver, _ = gates({"v2": 0.001})
    first = run(resolver)
    assert first.converged
    # the record of a deployment stopped after two of three measurements
    resolver2, table2 = gates({"v2": 0.001})
    record = {
        "phase": "deploying",
        "strategy": "canary",
        "target": "app=v2",
        "from.app": "v1",
        "start.app": "ord:3",
        "desired.app": "ord:3",
        "analysis.canary-ok.began": "0.0",
        measurement_key("canary-ok", 0): "pass;0.000;0.001;-;",
        measurement_key("canary-ok", 1): "pass;60.000;0.001;-;",
    }
    machines = [zdd.Machine(id=f"m{i}", version="v1") for i in range(1, 4)]
    state = zdd.FleetState(machines=machines, record=record)
    report = run(resolver2, state=state)
    assert report.converged, report.error
    assert len(table2.asked) == 1  # only the third
    assert len(measurements_in(record, "canary-ok")) == 2


def test_a_refused_query_fails_the_gate_with_the_reason() -> None:
    class Refusing(Table):
        def query(self, promql: str, at: float | None = None) -> float | None:
            raise MetricQueryError("the metrics server refused the query (bad_data: x)")

    table = Refusing({})
    g = MetricGate(
        name="canary-ok",
        query="x",
        condition=Condition.parse("<= 1"),
        url="http://127.0.0.1:9",
    )
    resolver = MetricGates(MetricAnalysis({"canary-ok": g}, client=lambda _: table))
    report = run(resolver)
    assert report.rolled_back
    assert "gate 'canary-ok': the metrics server refused the query (bad_data: x)" in (
        report.error or ""
    )
