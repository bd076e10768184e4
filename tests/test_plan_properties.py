"""Property tests for the pure planners: the invariants of DESIGN.md on random fleets.

Each property draws a fleet, a desired shape and a strategy (see
``tests/strategies.py``), plans, and replays the plan step by step with
``zdd.replay`` (every action succeeds, every wait holds) to check an invariant
at every step. A step's actions run concurrently, so the worst case *during* a
step is the state before it minus every serving machine the step takes out,
and plus every machine it creates.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import pytest
import strategies as zst
from hypothesis import assume, event, example, given, note
from hypothesis import strategies as st

import zdd

# Actions that take a serving machine out of service.
TAKES_OUT = (zdd.Cordon, zdd.Stop, zdd.Update, zdd.Destroy)


# -- helpers -------------------------------------------------------------------


def plan_or_skip(state: zdd.FleetState, desired: zdd.Desired, strategy: zdd.Strategy) -> zdd.Plan:
    """Plan, skipping the example when zdd refuses it as genuinely impossible."""
    try:
        return zdd.plan(state, desired, strategy)
    except zdd.PlanningImpossible as exc:
        event(f"PlanningImpossible ({strategy.name})")
        note(f"PlanningImpossible: {exc}")
        assume(False)
        raise AssertionError("unreachable") from None


def serving(state: zdd.FleetState) -> Counter[str]:
    return Counter(m.group for m in state.machines if m.serving)


def live(state: zdd.FleetState) -> Counter[str]:
    return Counter(m.group for m in state.machines if m.live)


def taken_out(state: zdd.FleetState, step: zdd.Step) -> Counter[str]:
    """Serving machines per group that the step's actions take out of service."""
    ids = {a.machine for a in step.actions if isinstance(a, TAKES_OUT)}
    return Counter(m.group for m in state.machines if m.id in ids and m.serving)


def created(step: zdd.Step) -> Counter[str]:
    return Counter(a.group for a in step.actions if isinstance(a, zdd.Create))


def worst_serving(state: zdd.FleetState, step: zdd.Step) -> Counter[str]:
    """Serving per group at the worst instant of ``step`` (everything out, nothing back)."""
    out = serving(state)
    out.subtract(taken_out(state, step))
    return out


def peak_live(state: zdd.FleetState, step: zdd.Step) -> Counter[str]:
    """Live machines per group at the worst instant of ``step`` (created, none destroyed)."""
    out = live(state)
    out.update(created(step))
    return out


def show(state: zdd.FleetState, desired: zdd.Desired, plan: zdd.Plan | None = None) -> None:
    """Note the example in a readable form (printed only for a failing example)."""
    note("fleet: " + json.dumps(zdd.fleet_to_json(state)["machines"]))
    note("record: " + json.dumps(dict(state.record)))
    note("desired: " + repr([(g.name, dict(g.regions)) for g in desired.groups]))
    if plan is not None:
        note(plan.to_text())


def assert_converged(state: zdd.FleetState, desired: zdd.Desired, strategy: zdd.Strategy) -> None:
    """The fleet is exactly ``desired`` (serving, unless immediate) and replans to nothing."""
    immediate = isinstance(strategy, zdd.Immediate)
    wanted = {g.name for g in desired.groups}
    for m in state.live:
        assert m.group in wanted, f"{m.id} of group {m.group} that is not desired is left"
    for spec in desired.groups:
        mine = [m for m in state.live if m.group == spec.name]
        have = Counter(m.region for m in mine)
        for region in set(have) | set(spec.regions):
            assert have[region] == spec.regions.get(region, 0), (
                f"{spec.name}/{region}: {have[region]} machines, "
                f"desired {spec.regions.get(region, 0)}"
            )
        for m in mine:
            assert m.version == spec.release.version, f"{m.id} is left on {m.version}"
            if not immediate:
                assert m.serving, f"{m.id} is not serving: {m.state}, {m.health}, {m.cordoned=}"
    again = zdd.plan(state, desired, strategy)
    assert len(again) == 0, "a converged fleet must replan to nothing:\n" + again.to_text()


def last_label_index(plan: zdd.Plan, key: str) -> int:
    """Index of the last step writing ``key`` into the deployment record (-1 if none)."""
    last = -1
    for i, step in enumerate(plan.steps):
        for a in step.actions:
            if isinstance(a, zdd.Label) and a.machine is None and key in a.values:
                last = i
    return last


def check_each_step(
    state: zdd.FleetState, plan: zdd.Plan, check: Callable[[int, zdd.FleetState, zdd.Step], None]
) -> None:
    for i, (before, step) in enumerate(zip(zdd.replay(state, plan), plan.steps, strict=False)):
        check(i, before, step)


def ids(actions: Iterable[zdd.Action]) -> set[str]:
    return {a.machine for a in actions if a.machine is not None}


# -- 1. determinism --------------------------------------------------------------


@given(data=st.data(), scenario=zst.scenarios(volumes=True), strategy=zst.any_strategy())
def test_planning_is_deterministic(data: st.DataObject, scenario: Any, strategy: Any):
    """Idempotence (determinism): planning twice from the same state gives the same plan.

    Also from an equal state built from the machines in another order: a
    planner reads only the values it is given. A refusal is deterministic too.
    """
    state, desired = scenario
    shuffled = zdd.FleetState(
        machines=data.draw(st.permutations(state.machines), label="machines reordered"),
        record=state.record,
    )
    try:
        first = zdd.plan(state, desired, strategy)
    except zdd.PlanningImpossible as exc:
        with pytest.raises(zdd.PlanningImpossible) as again:
            zdd.plan(shuffled, desired, strategy)
        assert str(again.value) == str(exc)
        return
    assert zdd.plan(state, desired, strategy) == first
    assert zdd.plan(shuffled, desired, strategy) == first
    assert zdd.plan(shuffled, desired, strategy).to_json() == first.to_json()


# -- 2. convergence and idempotence -------------------------------------------------


def _converges(scenario: Any, strategy: Any) -> None:
    state, desired = scenario
    plan = plan_or_skip(state, desired, strategy)
    show(state, desired, plan)
    assert_converged(zdd.replay(state, plan)[-1], desired, strategy)


@given(scenario=zst.scenarios(volumes=True), strategy=zst.immediates())
@example(
    scenario=(
        zdd.FleetState(machines=[zdd.Machine(id="m1", version="v1", cordoned=True)]),
        zst.one_group({"ord": 1}),
    ),
    strategy=zdd.Immediate(),
)
def test_immediate_converges(scenario: Any, strategy: zdd.Immediate):
    """Convergence + idempotence (immediate).

    Immediate waits on no health check, so only this is required: replaying
    the plan ends with exactly the desired machines per group and region, all
    on the target release, and the result replans to nothing.
    """
    _converges(scenario, strategy)


@given(scenario=zst.scenarios(volumes=True), strategy=zst.rollings())
def test_rolling_converges(scenario: Any, strategy: zdd.Rolling):
    """Convergence + idempotence (rolling, machines with volumes included).

    Replaying the whole plan ends with exactly the desired machines per group
    and region, all on the target release, started, passing and uncordoned,
    and the converged fleet replans to nothing.
    """
    _converges(scenario, strategy)


@given(scenario=zst.scenarios(), strategy=zst.bluegreens())
def test_bluegreen_converges(scenario: Any, strategy: zdd.BlueGreen):
    """Convergence + idempotence (bluegreen): as for rolling, on fleets without volumes."""
    _converges(scenario, strategy)


@given(scenario=zst.scenarios(), strategy=zst.canaries())
def test_canary_converges(scenario: Any, strategy: zdd.Canary):
    """Convergence + idempotence (canary, flyctl's form and progressive steps)."""
    _converges(scenario, strategy)


@given(scenario=zst.scenarios(ordinary=True, scale=False), strategy=zst.any_strategy())
def test_ordinary_fleets_always_plan(scenario: Any, strategy: Any):
    """PlanningImpossible is for impossible cases only: never for started, passing fleets.

    A fleet of started, passing, uncordoned machines without volumes plans
    under every strategy (to the same shape on the new release), and converges.
    """
    state, desired = scenario
    show(state, desired)
    plan = zdd.plan(state, desired, strategy)
    assert_converged(zdd.replay(state, plan)[-1], desired, strategy)


@given(scenario=zst.scenarios(ordinary=True, scale=True), strategy=zst.any_strategy())
@example(
    scenario=(
        zdd.FleetState(machines=[zdd.Machine(id="m1", version="v1", region="ams")]),
        zst.one_group({"ams": 1, "ord": 1}),
    ),
    strategy=zdd.Rolling(max_unavailable=1, region_waves=True),
)
def test_ordinary_fleets_always_plan_when_scaling(scenario: Any, strategy: Any):
    """PlanningImpossible is for impossible cases only, also when the shape changes.

    A fleet of started, passing, uncordoned machines without volumes plans
    under every strategy to any shape (-3..+3 machines per region, new regions
    included), and converges.
    """
    state, desired = scenario
    show(state, desired)
    plan = zdd.plan(state, desired, strategy)
    assert_converged(zdd.replay(state, plan)[-1], desired, strategy)


@given(scenario=zst.scenarios(volumes=True), strategy=zst.any_strategy())
@example(
    scenario=(
        zdd.FleetState(
            machines=[
                zdd.Machine(id="m1", version="v1", region="ams"),
                zdd.Machine(id="m2", version="v1", region="ord", state="stopped"),
            ]
        ),
        zst.one_group({"ams": 1, "ord": 1}),
    ),
    strategy=zdd.Rolling(max_unavailable=1, region_waves=True),
)
def test_region_waves_never_make_planning_impossible(scenario: Any, strategy: Any):
    """PlanningImpossible is for impossible cases only: region waves only order the work.

    When a deployment can be planned without region waves, it can be planned
    with them (the floor and ceiling are per group, not per region).
    """
    state, desired = scenario
    show(state, desired)
    strategy = attrs.evolve(strategy, region_waves=True)
    try:
        zdd.plan(state, desired, attrs.evolve(strategy, region_waves=False))
    except zdd.ZddError:
        assume(False)
    zdd.plan(state, desired, strategy)


# -- 3. rolling: capacity floor and surge ceiling ------------------------------------


@given(scenario=zst.scenarios(volumes=True), strategy=zst.rollings())
def test_rolling_holds_floor_and_ceiling(scenario: Any, strategy: zdd.Rolling):
    """Capacity floor + surge ceiling (rolling).

    At the worst instant of every step, serving machines per group are at least
    ``min(max(1, desired - max_unavailable), serving at the start)`` (the never-zero
    rule, docs/decisions/0008), and live machines per group at most
    ``max(desired + max_surge, live at the start)``, one more where a one-machine group
    borrows a surge machine.
    """
    state, desired = scenario
    plan = plan_or_skip(state, desired, strategy)
    show(state, desired, plan)
    serving0, live0 = serving(state), live(state)
    facts = {g.name: zst.group_facts(state, g.name, g.release.version) for g in desired.groups}

    def check(i: int, before: zdd.FleetState, step: zdd.Step) -> None:
        low, high = worst_serving(before, step), peak_live(before, step)
        for spec in desired.groups:
            n, g = spec.count, spec.name
            in_place, bound, outdated_serving = facts[g]
            floor = min(zst.rolling_floor(strategy, n, in_place=in_place, bound=bound), serving0[g])
            surge = max(
                strategy.surge_budget(n),
                zst.borrowed_surge(
                    strategy, n, in_place=in_place, bound=bound, serving=outdated_serving
                ),
            )
            ceiling = max(n + surge, live0[g])
            assert low[g] >= floor, f"step {i + 1}: {g} serves {low[g]} < floor {floor}"
            assert high[g] <= ceiling, f"step {i + 1}: {g} has {high[g]} live > {ceiling}"

    check_each_step(state, plan, check)


# -- 4. bluegreen ------------------------------------------------------------------


def _bluegreen_safe(scenario: Any, strategy: zdd.BlueGreen) -> None:
    state, desired = scenario
    plan = plan_or_skip(state, desired, strategy)
    show(state, desired, plan)
    serving0, live0 = serving(state), live(state)
    target = {g.name: g.release.version for g in desired.groups}

    def check(i: int, before: zdd.FleetState, step: zdd.Step) -> None:
        touched = ids(a for a in step.actions if isinstance(a, TAKES_OUT))
        for spec in desired.groups:
            g, n = spec.name, spec.count
            mine = [m for m in before.live if m.group == g]
            greens = [m for m in mine if m.version == target[g]]
            hit = sorted(m.id for m in mine if m.version != target[g] and m.id in touched)
            if hit:
                # the desired greens serve (a green beyond the desired shape retires with
                # the blues, so it may already be on its way out)
                assert sum(1 for m in greens if m.serving) >= n, (
                    f"step {i + 1}: blues {hit} of {g} touched while greens are not all serving"
                )
        low, high = worst_serving(before, step), peak_live(before, step)
        for spec in desired.groups:
            g, n = spec.name, spec.count
            assert low[g] >= min(n, serving0[g]), f"step {i + 1}: {g} serves {low[g]}"
            assert high[g] <= n + max(n, live0[g]), f"step {i + 1}: {g} has {high[g]} live"

    check_each_step(state, plan, check)


@given(scenario=zst.scenarios(scale=False), strategy=zst.bluegreens())
def test_bluegreen_switches_only_when_greens_serve(scenario: Any, strategy: zdd.BlueGreen):
    """Capacity floor + surge ceiling (bluegreen), and blues untouched before the switch.

    No blue (old-version machine) is cordoned, stopped, updated or destroyed
    in a step before which every green of its group is started, passing and
    uncordoned (and at least ``desired`` of them exist). Serving per group
    never drops below ``min(desired, serving at start)``; live machines never
    exceed ``2 x desired``.
    """
    _bluegreen_safe(scenario, strategy)


@given(scenario=zst.scenarios(scale=True), strategy=zst.bluegreens())
@example(
    scenario=(
        zdd.FleetState(
            machines=[
                zdd.Machine(id="m1", version="v1", region="ord"),
                zdd.Machine(id="m2", version="v2", region="syd"),
            ]
        ),
        zst.one_group({"ord": 2, "syd": 0}),
    ),
    strategy=zdd.BlueGreen(),
)
def test_bluegreen_switches_only_when_greens_serve_when_scaling(
    scenario: Any, strategy: zdd.BlueGreen
):
    """As test_bluegreen_switches_only_when_greens_serve, to a changed shape.

    When scaling down, live machines never exceed ``live at start + desired``.
    """
    _bluegreen_safe(scenario, strategy)


# -- 5. canary -------------------------------------------------------------------


@given(scenario=zst.scenarios(), strategy=zst.canaries())
def test_canary_holds_floor_and_ceiling(scenario: Any, strategy: zdd.Canary):
    """Capacity floor + surge ceiling (canary).

    Until the promotion begins (after the last ``canary.<group>`` record
    label), serving per group never drops below ``min(desired, serving at
    start)``; during the promotion, below ``min(desired - then.max_unavailable,
    serving at start)``. Live machines never exceed ``desired + canary machines
    + then's surge`` (from ``live at start`` when scaling down).
    """
    state, desired = scenario
    plan = plan_or_skip(state, desired, strategy)
    show(state, desired, plan)
    serving0, live0 = serving(state), live(state)
    then = strategy.then
    promotion = {g.name: last_label_index(plan, f"canary.{g.name}") for g in desired.groups}

    def check(i: int, before: zdd.FleetState, step: zdd.Step) -> None:
        low, high = worst_serving(before, step), peak_live(before, step)
        for spec in desired.groups:
            g, n = spec.name, spec.count
            floor = n if i <= promotion[g] else n - then.unavailable_budget(n)
            floor = min(floor, serving0[g])
            ceiling = max(n, live0[g]) + strategy.canary_machines + then.surge_budget(n)
            assert low[g] >= floor, f"step {i + 1}: {g} serves {low[g]} < floor {floor}"
            assert high[g] <= ceiling, f"step {i + 1}: {g} has {high[g]} live > {ceiling}"

    check_each_step(state, plan, check)


# -- 6. data safety ------------------------------------------------------------------


@given(scenario=zst.scenarios(volumes=True), strategy=zst.any_strategy())
def test_no_machine_with_a_volume_is_destroyed(scenario: Any, strategy: Any):
    """Data safety: no Destroy ever targets a machine holding a volume (at that point).

    For every strategy, also when a group is scaled down or no longer desired
    (a refusal, PlanningImpossible, is allowed: it destroys nothing).
    """
    state, desired = scenario
    plan = plan_or_skip(state, desired, strategy)
    show(state, desired, plan)

    def check(i: int, before: zdd.FleetState, step: zdd.Step) -> None:
        for a in step.actions:
            if isinstance(a, zdd.Destroy):
                m = before.get(a.machine)
                assert m is None or not m.volume, f"step {i + 1} destroys {m.id} ({m.volume})"

    check_each_step(state, plan, check)


@given(
    scenario=zst.scenarios(volumes=True, min_machines=1),
    strategy=st.one_of(zst.bluegreens(), zst.canaries()),
)
def test_bluegreen_and_canary_refuse_volumes(scenario: Any, strategy: Any):
    """Data safety: strategies that cannot keep volumes refuse up front (PlanningImpossible)."""
    state, desired = scenario
    assume(any(m.volume for m in state.machines))
    show(state, desired)
    with pytest.raises(zdd.PlanningImpossible, match="volume"):
        zdd.plan(state, desired, strategy)


# -- plans are well formed -------------------------------------------------------


@given(scenario=zst.scenarios(volumes=True), strategy=zst.any_strategy())
def test_plans_are_well_formed(scenario: Any, strategy: Any):
    """Plan shape: a step's actions are independent (at most one per machine), every
    action names a machine that exists at that point or is created in the same step,
    and no Create reuses the id of an existing machine.
    """
    state, desired = scenario
    plan = plan_or_skip(state, desired, strategy)
    show(state, desired, plan)

    def check(i: int, before: zdd.FleetState, step: zdd.Step) -> None:
        new = {a.key for a in step.actions if isinstance(a, zdd.Create)}
        assert not new & {m.id for m in before.machines}, f"step {i + 1} recreates {new}"
        for a in step:
            if a.machine is not None and not isinstance(a, zdd.Label):
                assert a.machine in before or a.machine in new, (
                    f"step {i + 1}: {a.kind} of unknown machine {a.machine}"
                )
        per_machine = Counter(a.machine for a in step.actions if a.machine is not None)
        twice = sorted(m for m, k in per_machine.items() if k > 1)
        assert not twice, f"step {i + 1} acts twice on {twice}"

    check_each_step(state, plan, check)


# -- 7. mid-deployment consistency ------------------------------------------------------

_resumable = st.one_of(zst.immediates(), zst.rollings(), zst.bluegreens(), zst.canaries())


def _resume_converges(data: st.DataObject, strategy: Any, *, mid_step: bool) -> None:
    state, desired = data.draw(zst.scenarios(), label="scenario")
    plan = plan_or_skip(state, desired, strategy)
    k = data.draw(st.integers(0, len(plan)), label="steps done")
    mid = zdd.replay(state, zdd.Plan(strategy=plan.strategy, steps=plan.steps[:k]))[-1]
    if mid_step and k < len(plan):
        mid = zdd.apply_actions(mid, plan.steps[k].actions)  # its waits do not hold yet
    show(state, desired, plan)
    note("observed mid-way: " + json.dumps(zdd.fleet_to_json(mid)))
    if not zst.is_scaled(state, desired):
        # a resumed executor rebuilds the same Desired from the observed fleet
        assert zdd.Desired.from_fleet(mid, zst.desired_release(desired)) == desired
    again = zdd.plan(mid, desired, strategy)
    note("replanned:\n" + again.to_text())
    keys = {m.id for m in mid.machines} | {m.labels.get("zdd.key") for m in mid.machines}
    for a in again.actions():
        if isinstance(a, zdd.Create):
            assert a.key not in keys, f"replan creates {a.key} again"
    assert_converged(zdd.replay(mid, again)[-1], desired, strategy)


@given(data=st.data(), strategy=_resumable)
def test_replanning_after_any_step_converges(data: st.DataObject, strategy: Any):
    """Resumability: replay k steps of a plan, replan from there: it converges.

    A planner decides the next step from any observed state (it never raises
    PlanningImpossible half-way through a plan it made); a resumed executor
    aims at the same Desired (read back from the record) and creates no
    machine twice.
    """
    _resume_converges(data, strategy, mid_step=False)


@given(data=st.data(), strategy=_resumable)
def test_replanning_mid_step_converges(data: st.DataObject, strategy: Any):
    """Resumability, mid-step: observed after a step's actions, before its waits hold."""
    _resume_converges(data, strategy, mid_step=True)


# -- 8. loaders raise nothing but ZddError -----------------------------------------


@given(mapping=zst.config_mappings())
def test_parse_config_mapping_raises_only_zdd_errors(mapping: Any):
    """Errors by blame: parse_config(mapping) raises only ZddError (anything else is a bug)."""
    try:
        zdd.parse_config(mapping)
    except zdd.ZddError as exc:
        assert str(exc)


@given(text=zst.config_texts())
def test_parse_config_text_raises_only_zdd_errors(text: str):
    """Errors by blame: parse_config(text) raises only ZddError, for any text or TOML."""
    try:
        zdd.parse_config(text)
    except zdd.ZddError as exc:
        assert str(exc)


@given(data=zst.fleet_json())
def test_fleet_from_json_raises_only_zdd_errors(data: Any):
    """Errors by blame: fleet_from_json raises only InvalidFleetState on bad input."""
    try:
        zdd.fleet_from_json(data)
    except zdd.InvalidFleetState as exc:
        assert str(exc)


@given(
    value=st.one_of(
        st.text(),
        st.text(alphabet="0123456789.+-nsuµμmh ", max_size=12),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(),
        st.booleans(),
        st.none(),
    ),
    bare_unit=st.sampled_from([None, 1.0, 1e-3]),
)
def test_parse_duration_raises_only_invalid_config(value: Any, bare_unit: float | None):
    """Errors by blame: parse_duration raises only InvalidConfig; results are finite, >= 0."""
    try:
        seconds = zdd.parse_duration(value, field="x", bare_unit=bare_unit)
    except zdd.InvalidConfig as exc:
        assert exc.field == "x"
    else:
        assert 0 <= seconds < float("inf")


@given(
    huge=zst.HUGE_INTS,
    entry=st.sampled_from(["parse_duration", "Rolling", "parse_config"]),
    mapping=zst.config_mappings(huge_ints=True),
)
@example(huge=2**1024, entry="parse_duration", mapping={})
def test_huge_numbers_raise_only_zdd_errors(huge: int, entry: str, mapping: Any):
    """Errors by blame: numbers beyond a float are a caller's error (InvalidConfig) too."""
    try:
        if entry == "parse_duration":
            zdd.parse_duration(huge, field="x", bare_unit=1.0)
        elif entry == "Rolling":
            zdd.Rolling(max_unavailable=huge)
        else:
            zdd.parse_config({**mapping, "kill_timeout": huge})
    except zdd.ZddError as exc:
        assert str(exc)
