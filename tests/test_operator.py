"""Operators steer a deployment in flight: a gate answered, an abort, a promotion,
through the provider's instruction channel (``op.*`` in the record), each naming
the deployment it is for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import zdd
from zdd._status import status_of
from zdd.cli import main
from zdd.providers.simulated import SimulatedFleet
from zdd.sim import simulate_fleet

TARGET = "app=v2"


def fleet(n: int = 3) -> SimulatedFleet:
    state = zdd.FleetState(machines=[zdd.Machine(id=f"m{i}", version="v1") for i in range(n)])
    return SimulatedFleet(state)


def run(
    f: SimulatedFleet, strategy: zdd.Strategy, gate_timeout: float = 3600.0
) -> zdd.SimulationReport:
    desired = zdd.Desired.from_fleet(f.observe(), zdd.Release(version="v2"))
    options = zdd.ExecuteOptions(gates={}, gate_timeout=gate_timeout)  # gates wait
    return simulate_fleet(f, desired, strategy, options=options)


GATED = zdd.Canary(
    steps=[zdd.CanaryStep(machines=1, gate="canary-ok")],
    then=zdd.Rolling(max_unavailable=0, max_surge=1),
)
BAKED = zdd.Canary(
    steps=[zdd.CanaryStep(machines=1, bake="1h"), zdd.CanaryStep(machines=2, bake="1h")],
    then=zdd.Rolling(max_unavailable=0, max_surge=1),
)


def test_an_operator_passes_a_waiting_gate() -> None:
    f = fleet()
    f.instruct({"op.gate.canary-ok": f"pass {TARGET}"}, at=200.0)
    report = run(f, GATED)
    assert report.converged, report.error
    assert 200.0 <= report.makespan_s < 600.0  # went on when answered, not at the timeout


def test_an_operator_fails_a_waiting_gate() -> None:
    f = fleet()
    f.instruct({"op.gate.canary-ok": f"fail {TARGET}"}, at=200.0)
    report = run(f, GATED)
    assert report.rolled_back
    assert report.error == "gate 'canary-ok' failed: answered by an operator"


def test_an_operator_aborts_a_deployment_in_flight() -> None:
    f = fleet()
    f.instruct({"op.abort": TARGET}, at=100.0)
    report = run(f, BAKED)
    assert report.rolled_back
    assert "aborted by an operator" in (report.error or "")
    assert all(m.version == "v1" for m in f.observe().live)


def test_an_operator_promotes_past_the_bakes() -> None:
    f = fleet()
    f.instruct({"op.promote": TARGET}, at=100.0)
    report = run(f, BAKED)
    assert report.converged
    assert report.makespan_s < 3600.0  # two one-hour bakes skipped


def test_an_instruction_for_another_deployment_is_ignored() -> None:
    f = fleet()
    f.instruct({"op.abort": "app=v9", "op.gate.canary-ok": "pass app=v9"}, at=50.0)
    report = run(f, GATED, gate_timeout=600.0)
    assert not report.converged
    assert "still pending after 600s" in (report.error or "")


def test_status_reads_the_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = {
        "phase": "deploying",
        "strategy": "canary",
        "target": "app=v2",
        "from.app": "v1",
        "analysis.canary-ok.began": "10.0",
        "analysis.canary-ok.0": "pass;0.000;0.001;-;",
        "analysis.canary-ok.1": "fail;60.000;0.2;-;not <= 0.01",
        "op.abort": "app=v2",
    }
    state = zdd.FleetState(
        machines=[zdd.Machine(id="m1", version="v1"), zdd.Machine(id="c1", version="v2")],
        record=record,
    )
    status = status_of(state)
    assert status is not None and status.in_progress and status.exit_code == 4
    assert status.gates == {"canary-ok": "measuring"}
    assert [m.outcome for m in status.measurements["canary-ok"]] == ["pass", "fail"]
    assert status.instructions == {"op.abort": "app=v2"}
    assert "measurement 2: 0.2 -> fail: not <= 0.01" in status.to_text()
    assert status_of(zdd.FleetState(machines=[])) is None
    # the CLI reads it from fleet JSON too
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(zdd.fleet_to_json(state)))
    assert main(["status", "--fleet", str(path)]) == 4
    assert "gate      canary-ok: measuring" in capsys.readouterr().out
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(zdd.fleet_to_json(zdd.FleetState(machines=[]))))
    assert main(["status", "--fleet", str(empty)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
