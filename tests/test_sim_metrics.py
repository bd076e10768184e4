"""The simulator models a release that is healthy but bad, and answers metric gates
from its own traffic: what a bad canary costs before the analysis rolls it back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import zdd
from zdd._analysis import Condition, MetricGate
from zdd.analysis import MetricGates
from zdd.cli import main
from zdd.providers.simulated import ReleaseBehaviour, SimulatedFleet, Traffic
from zdd.sim import simulate_fleet
from zdd.sim._metrics import SimulatedAnalysis

GATE = MetricGate(
    name="canary-ok",
    query="simulated",
    condition=Condition.parse("<= stable * 1.5 + 0.5%"),
    url="http://127.0.0.1:9",
    interval=30.0,
    count=4,
    initial_delay=30.0,
)


def run(error_rate: float, machines: int = 4) -> tuple[zdd.SimulationReport, SimulatedFleet]:
    state = zdd.FleetState(
        machines=[zdd.Machine(id=f"m{i}", version="v1") for i in range(1, machines + 1)]
    )
    fleet = SimulatedFleet(
        state,
        releases={"v2": ReleaseBehaviour(error_rate=error_rate, check_interval=1.0)},
        default=ReleaseBehaviour(check_interval=1.0),
        traffic=Traffic(rps=100.0),
    )
    strategy = zdd.Canary(
        steps=[zdd.CanaryStep(machines=1, gate="canary-ok")],
        then=zdd.Rolling(max_unavailable=0, max_surge=1, drain_delay=1.0),
        drain_delay=1.0,
    )
    desired = zdd.Desired.from_fleet(state, zdd.Release(version="v2"))
    resolver = MetricGates(SimulatedAnalysis({"canary-ok": GATE}, fleet))
    report = simulate_fleet(
        fleet, desired, strategy, options=zdd.ExecuteOptions(gates=resolver, gate_poll=1.0)
    )
    return report, fleet


@pytest.mark.parametrize("machines", [1, 4, 10])
def test_a_bad_canary_is_rolled_back_and_costs_its_share(machines: int) -> None:
    report, fleet = run(0.05, machines)
    assert report.rolled_back, report.error
    assert "gate 'canary-ok' failed" in (report.error or "")
    errors = fleet.failed.get("release_errors", 0.0)
    # the canary serves one of machines+1 shares (one of 2 for a single machine,
    # with its surge) for the initial delay and one interval, at 5% errors
    share = 1 / (machines + 1) if machines > 1 else 1 / 2
    bound = 100.0 * share * 0.05 * (GATE.initial_delay + GATE.interval + 10.0)
    assert 0 < errors <= bound, (errors, bound)
    assert fleet.errors_by_version.get("v1", 0.0) == 0.0


def test_a_good_canary_is_promoted_with_no_failed_request() -> None:
    report, fleet = run(0.0)
    assert report.converged, report.error
    assert report.failed_requests == 0
    assert fleet.requests_by_version["v2"] > 0


def test_error_ratios_are_counted_per_version() -> None:
    _, fleet = run(0.05)
    requests, errors = fleet.counts("v2")
    assert errors == pytest.approx(requests * 0.05)
    assert fleet.error_ratio("v2") == pytest.approx(0.05)
    assert fleet.error_ratio("never") is None


EXAMPLE = Path(__file__).parent.parent / "examples" / "fly-analysis.toml"


def test_zdd_simulate_shows_what_a_bad_canary_costs(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", "--config", str(EXAMPLE), "--machines", "6"]
    assert main([*argv, "--target-errors", "5%", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["rolled_back"] is True
    assert "gate 'canary-ok' failed" in report["error"]
    assert 0 < report["failed_requests"] < 0.01 * report["total_requests"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main([*argv, "--target-errors", "five"]) == 2
    assert "--target-errors" in capsys.readouterr().err


def test_a_metric_gate_no_step_names_is_refused() -> None:
    text = EXAMPLE.read_text().replace('gate = "canary-ok"', 'gate = "other"')
    with pytest.raises(zdd.InvalidConfig) as info:
        zdd.parse_config(text)
    assert info.value.field == "deploy.analysis.canary-ok"
    config = zdd.parse_config(EXAMPLE.read_text())
    assert config.analysis["canary-ok"].token_env == "FLY_METRICS_TOKEN"
