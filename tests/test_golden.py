"""Golden plans: the text and JSON of representative plans, checked in.

Regenerate after an intended change with ``ZDD_REGEN_GOLDEN=1 pytest
tests/test_golden.py`` and read the diff: it is the review of the change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import zdd
from zdd import Health, Machine, MachineState

GOLDEN = Path(__file__).parent / "golden"
CHECK = zdd.HealthCheck(type="http", path="/health", interval=10, grace_period=5)


def _release(version: str = "v2", *, checks: bool = True) -> zdd.Release:
    return zdd.Release(version=version, checks=[CHECK] if checks else [], kill_signal="SIGTERM")


def one_machine() -> zdd.FleetState:
    return zdd.FleetState.uniform(1)


def mixed_states() -> zdd.FleetState:
    return zdd.FleetState(
        machines=[
            Machine(id="m1", version="v1"),
            Machine(id="m2", version="v1", state=MachineState.STOPPED, health=Health.UNKNOWN),
            Machine(id="m3", version="v1", state=MachineState.FAILED, health=Health.CRITICAL),
            Machine(id="m4", version="v1", state=MachineState.SUSPENDED, health=Health.UNKNOWN),
            Machine(id="m5", version="v1"),
            Machine(id="m6", version="v2", state=MachineState.STARTING, health=Health.UNKNOWN),
        ]
    )


def groups_and_regions() -> zdd.FleetState:
    machines = []
    n = 0
    for group, regions in (("app", ("ams", "ord", "ord", "syd")), ("worker", ("ord", "ord"))):
        for region in regions:
            n += 1
            machines.append(Machine(id=f"m{n}", version="v1", group=group, region=region))
    return zdd.FleetState(machines=machines)


def volumes() -> zdd.FleetState:
    return zdd.FleetState(
        machines=[
            Machine(id="db1", version="v1", volume="vol_1"),
            Machine(id="db2", version="v1", volume="vol_2"),
            Machine(id="w1", version="v1"),
        ]
    )


FLEETS = {
    "one": one_machine,
    "mixed": mixed_states,
    "groups": groups_and_regions,
    "volumes": volumes,
}

STRATEGIES: dict[str, zdd.Strategy] = {
    "immediate": zdd.Immediate(),
    "rolling": zdd.Rolling(),
    "rolling-surge": zdd.Rolling(max_unavailable=0, max_surge=1),
    "rolling-waves": zdd.Rolling(max_unavailable=1, region_waves=("ord",), drain_delay=0),
    "bluegreen": zdd.BlueGreen(release_command="bin/migrate", switch_gate="approve"),
    "canary": zdd.Canary(),
    "canary-steps": zdd.Canary(
        steps=[
            zdd.CanaryStep(machines=1, bake=300),
            zdd.CanaryStep(machines=2, weight=25, gate="ok"),
        ],
        post_deploy_command="bin/cleanup",
    ),
}

CASES = [
    ("immediate", "one"),
    ("immediate", "mixed"),
    ("immediate", "volumes"),
    ("rolling", "one"),
    ("rolling", "mixed"),
    ("rolling", "groups"),
    ("rolling", "volumes"),
    ("rolling-surge", "one"),
    ("rolling-surge", "mixed"),
    ("rolling-waves", "groups"),
    ("bluegreen", "one"),
    ("bluegreen", "mixed"),
    ("bluegreen", "groups"),
    ("canary", "one"),
    ("canary", "groups"),
    ("canary-steps", "one"),
    ("canary-steps", "mixed"),
]


def _plan(strategy: str, fleet: str) -> zdd.Plan:
    state = FLEETS[fleet]()
    desired = zdd.Desired.from_fleet(state, _release())
    return zdd.plan(state, desired, STRATEGIES[strategy])


@pytest.mark.parametrize(("strategy", "fleet"), CASES, ids=[f"{s}-{f}" for s, f in CASES])
def test_golden(strategy: str, fleet: str) -> None:
    plan = _plan(strategy, fleet)
    text = plan.to_text() + "\n"
    as_json = json.dumps(plan.to_json(), indent=2) + "\n"
    base = GOLDEN / f"{strategy}-{fleet}"
    if os.environ.get("ZDD_REGEN_GOLDEN"):
        base.with_suffix(".txt").write_text(text)
        base.with_suffix(".json").write_text(as_json)
    assert text == base.with_suffix(".txt").read_text()
    assert as_json == base.with_suffix(".json").read_text()


@pytest.mark.parametrize("strategy", ["bluegreen", "canary", "canary-steps"])
def test_volumes_refused_by_bluegreen_and_canary(strategy: str) -> None:
    with pytest.raises(zdd.PlanningImpossible, match="rolling"):
        _plan(strategy, "volumes")
