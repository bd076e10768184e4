"""``downtime_s``: the seconds during which a process group had no machine serving.

Definition (docs/simulation.md): for every group that had at least one serving
machine when the simulation started, the total virtual seconds, from the start
until the end of the simulation (the report's end, settle included: the window
over which requests are counted), during which that group had zero serving
machines. Groups that served nothing at the start get 0.0.
"""

from __future__ import annotations

import json

import attrs
import pytest

import zdd
from zdd import Health, Machine, MachineState
from zdd.providers.simulated import ReleaseBehaviour, SimulatedFleet, Traffic
from zdd.sim import simulate_fleet


def _desired(state: zdd.FleetState) -> zdd.Desired:
    return zdd.Desired.from_fleet(state, zdd.Release(version="v2"))


def test_one_machine_immediate_is_down_while_it_boots() -> None:
    state = zdd.FleetState.uniform(1)
    report = zdd.simulate(state, _desired(state), zdd.Immediate())
    down = report.downtime_by_group["app"]
    # the update stops the machine at 0.4 s; the v2 boot takes 10 s
    assert down == pytest.approx(10.0, rel=1e-9)
    # both integrate the same interval (nothing serving the traffic group)
    assert report.failed_by_cause["no_serving_machine"] / 100.0 == pytest.approx(down, rel=1e-6)
    assert report.to_json()["downtime_s"] == {"app": 10.0}


def test_downtime_matches_no_serving_requests_through_the_settle_window() -> None:
    # irregular boots, an odd rate: the unrounded model figures agree exactly
    state = zdd.FleetState.uniform(2)
    fleet = SimulatedFleet(
        state,
        default=ReleaseBehaviour(boot_time=7.3, boot_sigma=0.4),
        traffic=Traffic(rps=37.0),
        seed=3,
    )
    report = simulate_fleet(fleet, _desired(state), zdd.Immediate())
    down = fleet.downtime_until(fleet.now)["app"]
    assert down > 5.0
    assert fleet.now > report.makespan_s  # the machines finished booting after the executor
    assert fleet.failed["no_serving_machine"] / 37.0 == pytest.approx(down, rel=1e-6)


def test_rolling_one_at_a_time_has_no_downtime() -> None:
    state = zdd.FleetState.uniform(3)
    report = zdd.simulate(state, _desired(state), zdd.Rolling(max_unavailable=1))
    assert report.converged
    assert report.min_serving_by_group["app"] == 2
    assert report.downtime_by_group == {"app": 0.0}
    assert report.to_json()["downtime_s"] == {"app": 0.0}


def test_a_group_serving_nothing_at_the_start_gets_zero() -> None:
    state = zdd.FleetState(
        machines=[
            Machine(id="a1", version="v1"),
            Machine(
                id="w1",
                version="v1",
                group="worker",
                state=MachineState.STOPPED,
                health=Health.UNKNOWN,
            ),
        ]
    )
    fleet = SimulatedFleet(state, default=ReleaseBehaviour(boot_time=4.0, has_checks=False))
    assert fleet.downtime_until(0.0) == {"app": 0.0, "worker": 0.0}

    fleet.perform(zdd.Stop(machine="a1", group="app"))  # app stops serving at 0.2 s
    fleet.perform(zdd.Start(machine="w1", group="worker"))
    while fleet.step():
        pass
    assert fleet.now == pytest.approx(4.4)  # w1 booted (started at 0.4 s)
    assert fleet.serving == {"app": 0, "worker": 1}
    # the open interval is closed at the time asked for, without changing the fleet
    assert fleet.downtime_until(10.2) == {"app": pytest.approx(10.0), "worker": 0.0}
    assert fleet.downtime_until(20.2) == {"app": pytest.approx(20.0), "worker": 0.0}
    assert fleet.downtime == {}

    fleet.perform(zdd.Start(machine="a1", group="app"))  # serving again once booted
    while fleet.step():
        pass
    # down from 0.2 s until a1 booted: the call at 4.4 s lands at 4.6 s, the boot takes 4 s
    assert fleet.now == pytest.approx(8.6)
    assert fleet.downtime == {"app": pytest.approx(8.4)}
    assert fleet.downtime_until(fleet.now + 100.0) == {"app": pytest.approx(8.4), "worker": 0.0}


def test_json_key_and_text_line() -> None:
    state = zdd.FleetState.uniform(1)
    report = zdd.simulate(state, _desired(state), zdd.Immediate())
    data = json.loads(json.dumps(report.to_json()))
    keys = list(data)
    assert keys.index("downtime_s") == keys.index("min_serving_by_group") + 1
    assert data["downtime_s"] == {"app": 10.0}
    lines = report.to_text().splitlines()
    serving = next(i for i, line in enumerate(lines) if line.startswith("  serving (min)"))
    assert lines[serving + 1] == "  downtime            10.0s  [app: 10.0s]"


def test_text_line_with_several_groups_leads_with_the_longest() -> None:
    state = zdd.FleetState.uniform(1)
    report = zdd.simulate(state, _desired(state), zdd.Rolling(max_unavailable=1))
    report = attrs.evolve(report, downtime_by_group={"app": 0.0, "worker": 12.345})
    assert (
        "  downtime            12.3s  [app: 0.0s]  [worker: 12.3s]" in report.to_text().splitlines()
    )
    assert report.to_json()["downtime_s"] == {"app": 0.0, "worker": 12.345}
