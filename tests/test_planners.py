"""Specific planner behaviours, each from a hand-made state."""

from __future__ import annotations

import pytest

import zdd
from zdd import Health, Machine, MachineState

CHECK = zdd.HealthCheck(type="http", path="/health")
V2 = zdd.Release(version="v2", checks=[CHECK])


def serving(state: zdd.FleetState, group: str = "app") -> int:
    return sum(1 for m in state.machines if m.group == group and m.serving)


def kinds(step: zdd.Step) -> list[tuple[str, str | None]]:
    return [(a.kind, a.machine) for a in step.actions]


def machine_steps(plan: zdd.Plan) -> list[zdd.Step]:
    return [s for s in plan.steps if not all(a.kind in ("label", "run_command") for a in s)]


def test_converged_fleet_gets_an_empty_plan() -> None:
    state = zdd.FleetState.uniform(4, version="v2")
    for strategy in (zdd.Immediate(), zdd.Rolling(), zdd.BlueGreen(), zdd.Canary()):
        plan = zdd.plan(state, zdd.Desired.from_fleet(state, V2), strategy)
        assert not plan
        assert "nothing to do" in plan.to_text()


def test_one_machine_rolling_with_surge_never_loses_its_only_server() -> None:
    state = zdd.FleetState.uniform(1)
    desired = zdd.Desired.from_fleet(state, V2)
    plan = zdd.plan(state, desired, zdd.Rolling(max_unavailable=0, max_surge=1))
    states = zdd.replay(state, plan)
    for before, step in zip(states, plan.steps, strict=False):
        after_actions = zdd.apply_actions(before, step.actions)
        assert serving(after_actions) >= 1, step
    assert [m.version for m in states[-1].machines] == ["v2"]


def test_mid_deployment_machines_already_down_use_the_budget() -> None:
    # 10 machines, max_unavailable 0.33 -> 4; two are updating right now
    machines = [Machine(id=f"m{i}", version="v1") for i in range(1, 11)]
    machines[0] = Machine(id="m1", version="v2", state=MachineState.UPDATING, health=Health.UNKNOWN)
    machines[1] = Machine(id="m2", version="v2", state=MachineState.STARTING, health=Health.UNKNOWN)
    state = zdd.FleetState(
        machines=machines,
        record={"phase": "deploying", "target": "app=v2", "desired.app": "ord:10"},
    )
    plan = zdd.plan(state, zdd.Desired.from_fleet(state, V2), zdd.Rolling(drain_delay=0))
    first = plan.steps[0]
    taken_out = [a.machine for a in first.actions if a.kind == "cordon"]
    assert taken_out == ["m3", "m4"]  # a budget of 4, 2 already down
    assert {w.machine for w in first.waits} == {"m1", "m2"}
    assert "4 of 10 unavailable (budget 4)" in first.why
    # resuming does not record the start or run the release command again
    assert not any(a.kind in ("run_command",) for a in plan.actions())
    assert plan.steps[0].actions[0].kind != "label"


def test_resume_after_each_step_finishes_the_same_deployment() -> None:
    state = zdd.FleetState.uniform(5)
    desired = zdd.Desired.from_fleet(state, V2)
    for strategy in (
        zdd.Rolling(release_command="bin/migrate"),
        zdd.Rolling(max_unavailable=0, max_surge=2),
        zdd.BlueGreen(release_command="bin/migrate", keep_blue_for="5m"),
        zdd.Canary(),
        zdd.Canary(steps=[zdd.CanaryStep(machines=2, bake=60, gate="g")]),
    ):
        plan = zdd.plan(state, desired, strategy)
        states = zdd.replay(state, plan)
        for k, mid in enumerate(states[1:-1], 1):
            resumed = zdd.plan(mid, zdd.Desired.from_fleet(mid, V2), strategy)
            assert resumed, (strategy, k)
            if mid.record.get("phase") == "deploying":
                assert not any(
                    isinstance(a, zdd.RunCommand) and a.phase == "release"
                    for a in resumed.actions()
                ), "the release command runs once the deployment is recorded"
            end = zdd.replay(mid, resumed)[-1]
            assert sorted(m.version for m in end.machines) == ["v2"] * 5, (strategy, k)
            assert all(m.serving for m in end.machines)
            assert not zdd.plan(end, desired, strategy)


def test_volumes_update_in_place_even_with_surge() -> None:
    state = zdd.FleetState(
        machines=[
            Machine(id="db1", version="v1", volume="vol_1"),
            Machine(id="w1", version="v1"),
            Machine(id="w2", version="v1"),
        ]
    )
    plan = zdd.plan(
        state, zdd.Desired.from_fleet(state, V2), zdd.Rolling(max_unavailable=1, max_surge=1)
    )
    destroyed = {a.machine for a in plan.actions() if a.kind == "destroy"}
    updated = {a.machine for a in plan.actions() if a.kind == "update"}
    assert "db1" in updated
    assert "db1" not in destroyed
    assert destroyed == {"w1", "w2"}


def test_volume_with_zero_unavailable_is_refused_clearly() -> None:
    state = zdd.FleetState(machines=[Machine(id="db1", version="v1", volume="vol_1")])
    with pytest.raises(zdd.PlanningImpossible, match="max_unavailable >= 1"):
        zdd.plan(
            state, zdd.Desired.from_fleet(state, V2), zdd.Rolling(max_unavailable=0, max_surge=1)
        )


def test_scale_down_never_destroys_a_volume_machine() -> None:
    state = zdd.FleetState(
        machines=[
            Machine(id="db1", version="v2", volume="vol_1"),
            Machine(id="db2", version="v2", volume="vol_2"),
        ]
    )
    with pytest.raises(zdd.PlanningImpossible, match="volume"):
        zdd.plan(state, zdd.Desired.single(V2, 1), zdd.Rolling())


def test_scale_up_and_down() -> None:
    state = zdd.FleetState.uniform(2)
    up = zdd.plan(state, zdd.Desired.single(V2, 4), zdd.Rolling())
    end = zdd.replay(state, up)[-1]
    assert len(end.machines) == 4 and all(m.version == "v2" and m.serving for m in end.machines)
    down = zdd.plan(state, zdd.Desired.single(V2, 1), zdd.Rolling())
    end = zdd.replay(state, down)[-1]
    assert [m.version for m in end.machines] == ["v2"]


def test_a_group_no_longer_desired_is_retired() -> None:
    state = zdd.FleetState(
        machines=[Machine(id="a1", version="v1"), Machine(id="old1", version="v1", group="old")]
    )
    plan = zdd.plan(state, zdd.Desired.single(V2, 1), zdd.Rolling(max_unavailable=1))
    end = zdd.replay(state, plan)[-1]
    # a1 is the app's only machine: a surge machine replaces it (never zero serving)
    assert [(m.group, m.version) for m in end.machines] == [("app", "v2")]
    assert any(a.kind == "stop" and a.machine == "old1" for a in plan.actions())
    # the retired group has no floor: a worker-like group goes as Fly's would
    plan = zdd.plan(
        state, zdd.Desired.single(V2, 1), zdd.Rolling(max_unavailable=1, allow_downtime=True)
    )
    end = zdd.replay(state, plan)[-1]
    assert [m.id for m in end.machines] == ["a1"]


def test_below_the_floor_with_nothing_to_repair_is_impossible() -> None:
    state = zdd.FleetState(
        machines=[
            Machine(id="m1", version="v1"),
            Machine(id="m2", version="v1", cordoned=True, state=MachineState.STARTED),
            Machine(id="m3", version="v2", state=MachineState.STARTED, health=Health.CRITICAL),
        ]
    )
    # floor 3 - 1 = 2 but only m1 serves; m2 and m3 need no budget, so the plan still works
    plan = zdd.plan(state, zdd.Desired.from_fleet(state, V2), zdd.Rolling(max_unavailable=1))
    assert plan


def test_bluegreen_touches_no_blue_before_the_switch_is_recorded() -> None:
    state = zdd.FleetState.uniform(3)
    plan = zdd.plan(state, zdd.Desired.from_fleet(state, V2), zdd.BlueGreen(switch_gate="qa"))
    seen_switch = False
    for step in plan.steps:
        for a in step.actions:
            if isinstance(a, zdd.Label) and a.values.get("bluegreen.app") == "switched":
                seen_switch = True
            if a.machine in {"m1", "m2", "m3"}:
                assert seen_switch, a
    gate_steps = [s for s in plan.steps if any(w.kind == "gate" for w in s.waits)]
    assert len(gate_steps) == 1
    # approved gate: no gate step any more
    record = {"phase": "deploying", "target": "app=v2", "gate.qa": "approved"}
    mid = zdd.FleetState(machines=state.machines, record=record)
    approved = zdd.plan(mid, zdd.Desired.from_fleet(mid, V2), zdd.BlueGreen(switch_gate="qa"))
    assert not any(w.kind == "gate" for s in approved.steps for w in s.waits)


def test_bluegreen_needs_a_check_and_no_volumes() -> None:
    state = zdd.FleetState.uniform(2)
    with pytest.raises(zdd.InvalidConfig, match="health check"):
        zdd.plan(state, zdd.Desired.from_fleet(state, zdd.Release(version="v2")), zdd.BlueGreen())
    with_mount = zdd.Release(
        version="v2", checks=[CHECK], mounts=[zdd.Mount(source="data", destination="/data")]
    )
    with pytest.raises(zdd.PlanningImpossible, match="strategy 'rolling'"):
        zdd.plan(state, zdd.Desired.from_fleet(state, with_mount), zdd.BlueGreen())


def test_bluegreen_after_the_switch_retires_blues_only() -> None:
    green = {"zdd.role": "green"}
    state = zdd.FleetState(
        machines=[
            Machine(id="b1", version="v1", cordoned=True),
            Machine(id="b2", version="v1"),
            Machine(id="g1", version="v2", labels=green),
            Machine(id="g2", version="v2", labels=green, cordoned=True),
        ],
        record={
            "phase": "deploying",
            "target": "app=v2",
            "desired.app": "ord:2",
            "bluegreen.app": "switched",
        },
    )
    plan = zdd.plan(state, zdd.Desired.from_fleet(state, V2), zdd.BlueGreen())
    assert kinds(plan.steps[0]) == [("uncordon", "g2")]  # greens first, then the blues go
    assert kinds(plan.steps[1]) == [("cordon", "b2")]
    end = zdd.replay(state, plan)[-1]
    assert [m.id for m in end.machines] == ["g1", "g2"]


def test_canary_flyctl_form_touches_nothing_until_the_canary_passed() -> None:
    state = zdd.FleetState.uniform(3)
    plan = zdd.plan(state, zdd.Desired.from_fleet(state, V2), zdd.Canary())
    first_machine_step = machine_steps(plan)[0]
    assert [a.kind for a in first_machine_step.actions] == ["create"]
    create = first_machine_step.actions[0]
    assert isinstance(create, zdd.Create) and create.role == "canary" and create.hidden


def test_progressive_canary_keeps_the_floor_at_desired_during_steps() -> None:
    state = zdd.FleetState.uniform(4)
    strategy = zdd.Canary(steps=[zdd.CanaryStep(machines=1), zdd.CanaryStep(machines=2, weight=30)])
    plan = zdd.plan(state, zdd.Desired.from_fleet(state, V2), strategy)
    states = zdd.replay(state, plan)
    for before, step in zip(states, plan.steps, strict=False):
        if before.record.get("canary.app") == "2":
            break
        assert serving(zdd.apply_actions(before, step.actions)) >= 4
    weights = {a.weight for a in plan.actions() if isinstance(a, zdd.Uncordon) and a.weight}
    assert weights == {30}
    assert max(len(s.machines) for s in states) <= 4 + 2


def test_region_waves_finish_a_region_before_the_next() -> None:
    regions = ["ord", "ord", "ams", "ams", "syd"]
    state = zdd.FleetState(
        machines=[Machine(id=f"m{i}", version="v1", region=r) for i, r in enumerate(regions, 1)]
    )
    plan = zdd.plan(
        state,
        zdd.Desired.from_fleet(state, V2),
        zdd.Rolling(max_unavailable=5, region_waves=("syd", "ord"), drain_delay=0),
    )
    order = []
    for step in plan.steps:
        for a in step.actions:
            if a.kind == "update":
                order.append(state.get(a.machine or "").region)  # type: ignore[union-attr]
    assert order == ["syd", "ord", "ord", "ams", "ams"]
    update_steps = [
        {state.get(a.machine or "").region for a in s.actions if a.kind == "update"}  # type: ignore[union-attr]
        for s in plan.steps
    ]
    assert all(len(r) <= 1 for r in update_steps)


def test_immediate_updates_everything_in_one_step_without_waits() -> None:
    state = zdd.FleetState.uniform(5)
    plan = zdd.plan(state, zdd.Desired.from_fleet(state, V2), zdd.Immediate())
    (step,) = machine_steps(plan)
    assert [a.kind for a in step.actions] == ["update"] * 5
    assert not step.waits


def test_plan_json_round_trip_shape() -> None:
    state = zdd.FleetState.uniform(2)
    plan = zdd.plan(
        state,
        zdd.Desired.from_fleet(state, V2),
        zdd.Rolling(release_command="DB_PASS=hunter2 bin/migrate"),
    )
    text = plan.to_json_text() + plan.to_text() + repr(plan)
    assert "hunter2" not in text
    assert "DB_PASS=<redacted>" in text


def test_invalid_arguments() -> None:
    state = zdd.FleetState.uniform(1)
    desired = zdd.Desired.from_fleet(state, V2)
    with pytest.raises(zdd.InvalidFleetState):
        zdd.plan("fleet", desired, zdd.Rolling())  # type: ignore[arg-type]
    with pytest.raises(zdd.InvalidConfig, match="desired"):
        zdd.plan(state, None, zdd.Rolling())  # type: ignore[arg-type]
    with pytest.raises(zdd.InvalidConfig, match="strategy"):
        zdd.plan(state, desired, "rolling")  # type: ignore[arg-type]
    bad_record = zdd.FleetState(
        machines=state.machines,
        record={
            "phase": "deploying",
            "target": "app=v2",
            "desired.app": "ord:1",
            "canary.app": "x",
        },
    )
    with pytest.raises(zdd.InvalidFleetState, match=r"canary\.app"):
        zdd.plan(bad_record, desired, zdd.Canary(steps=[zdd.CanaryStep()]))


@pytest.mark.parametrize(
    "strategy",
    [
        zdd.BlueGreen(switch_gate="qa"),
        zdd.Canary(steps=[zdd.CanaryStep(machines=1, gate="qa")]),
        zdd.Canary(),
    ],
)
def test_a_second_deployment_reads_nothing_of_the_first(strategy: zdd.Strategy) -> None:
    # v1 -> v2 completes (its record says switched / canary passed / gate approved),
    # then v2 -> v3 starts and is resumed right after its first label
    state = zdd.FleetState.uniform(2)
    state = zdd.replay(state, zdd.plan(state, zdd.Desired.from_fleet(state, V2), strategy))[-1]
    v3 = zdd.Release(version="v3", checks=[CHECK])
    desired = zdd.Desired.from_fleet(state, v3)
    plan = zdd.plan(state, desired, strategy)
    started = zdd.apply_step(state, plan.steps[0])
    assert set(started.record) == set(plan.steps[0].actions[0].values)  # replaced, not merged
    resumed = zdd.plan(started, desired, strategy)
    assert resumed.steps[:-1] == plan.steps[1:-1] or resumed.steps == plan.steps[1:]
    first = resumed.steps[0]
    assert any(isinstance(a, zdd.Create) for a in first.actions), first


def test_a_rollback_in_progress_is_previewed_as_the_rollback() -> None:
    """The record says this deployment is being rolled back: plan() answers with the
    rollback a resumed executor runs (the strategy's own rollback policy)."""
    state = zdd.FleetState(
        machines=[
            Machine(id="m1", version="v2"),
            *[Machine(id=f"m{i}", version="v1") for i in (2, 3)],
        ],
        record={
            "phase": "rolling_back",
            "rollback_of": "app=v2",
            "target": "app=v1",
            "from.app": "v1",
            "start.app": "ord:3",
        },
    )
    plan = zdd.plan(state, zdd.Desired.single(V2, 3), zdd.Rolling())
    assert plan.summary.startswith("rollback of app=v2: ")
    updates = [a for a in plan.actions() if a.kind == "update"]
    assert [(a.machine, a.version) for a in updates] == [("m1", "v1")]
    assert list(plan.actions())[-1].values == {"phase": "rolled_back"}  # type: ignore[attr-defined]


def test_each_strategy_owns_its_rollback_policy() -> None:
    from zdd._planning import can_roll_back, rollback_strategy

    desired = zdd.Desired.single(V2, 3)
    assert rollback_strategy(zdd.Rolling(max_unavailable=2)).max_unavailable == 2
    assert rollback_strategy(zdd.Canary(steps=[zdd.CanaryStep(machines=2)])).max_surge == 2
    assert rollback_strategy(zdd.BlueGreen()).max_unavailable == 0
    with pytest.raises(zdd.PlanningImpossible):
        rollback_strategy(zdd.Immediate())
    assert not can_roll_back(zdd.Immediate(), {}, desired)
    assert can_roll_back(zdd.BlueGreen(), {}, desired)
    assert not can_roll_back(zdd.BlueGreen(), {"bluegreen.app": "switched"}, desired)
    assert not can_roll_back(zdd.Rolling(auto_rollback=False), {}, desired)


def test_without_traffic_weights_a_canary_weight_becomes_a_machine_count() -> None:
    """On a provider without traffic weights (Fly's proxy) the plan never shows a
    weight it will not apply: 25% of six machines' traffic is two canaries beside them
    (2 / 8), as Argo Rollouts' basic canary does, and the step's reason says so."""
    from zdd.providers import Capabilities

    state = zdd.FleetState.uniform(6)
    strategy = zdd.Canary(steps=[zdd.CanaryStep(machines=1, weight=25)])
    desired = zdd.Desired.from_fleet(state, V2)
    plan = zdd.plan(state, desired, strategy, Capabilities(traffic_weights=False))
    creates = [a for a in plan.actions() if a.kind == "create" and "canary" in (a.key or "")]
    assert len(creates) == 2
    assert all(a.weight is None for a in plan.actions() if a.kind == "uncordon")
    assert "canaries take traffic (25% as 2 canaries beside 6: the provider has no traffic" in (
        plan.to_text()
    )
    weighted = zdd.plan(state, desired, strategy)  # the simulator has weights
    assert any(a.kind == "uncordon" and a.weight == 25 for a in weighted.actions())


def test_creates_and_updates_carry_their_release() -> None:
    release = zdd.Release(version="v2", image="registry.example/app:v2", env={"K": "v"})
    state = zdd.FleetState(
        machines=[Machine(id="m1", version="v1"), Machine(id="m2", version="v1")]
    )
    rolling = zdd.plan(state, zdd.Desired.from_fleet(state, release), zdd.Rolling())
    surge = zdd.plan(state, zdd.Desired.from_fleet(state, release), zdd.Rolling(max_surge=1))
    for plan in (rolling, surge):
        carried = [a for a in plan.actions() if a.kind in ("create", "update")]
        assert carried and all(a.release == release for a in carried)  # type: ignore[attr-defined]
        assert "registry.example" not in plan.to_json_text()  # not part of the plan format
    # a rollback does not know what the old version looked like: no image, no env
    back = zdd._planning.rollback_desired(
        zdd.FleetState(record={"from.app": "v1", "start.app": "ord:2"}),
        zdd.Desired.from_fleet(state, release),
    )
    assert back.groups[0].release.version == "v1"
    assert back.groups[0].release.image == "" and not back.groups[0].release.env


def test_a_new_machine_never_takes_the_name_of_an_existing_one() -> None:
    """A machine already called like the plan's first surge machine (and no zdd.key
    label) must not make the plan's name ambiguous."""
    state = zdd.FleetState(
        machines=[
            zdd.Machine(id="m1", version="v1"),
            zdd.Machine(id="v2-app-surge-ord-1", version="v1"),
        ]
    )
    desired = zdd.Desired.from_fleet(state, zdd.Release(version="v2"))
    plan = zdd.plan(state, desired, zdd.Rolling(max_unavailable=0, max_surge=1))
    created = [a.key for s in plan.steps for a in s.actions if isinstance(a, zdd.Create)]
    assert created and "v2-app-surge-ord-1" not in created
