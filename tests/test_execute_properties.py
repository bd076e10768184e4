"""Property tests for the executor: DESIGN.md's invariants, on simulated deployments.

Each property draws a fleet (``tests/strategies.py``: 0-40 machines over 1-3
groups and regions, mixed states, some cordoned, some already on the target),
what it should become, a strategy config, boot times, a seed and faults, runs
the whole deployment with ``zdd.simulate`` (the executor core on the virtual
clock of a simulated fleet) and checks the report:

* the simulator keeps, per group, the fewest serving machines at any instant
  (``min_serving_by_group``; serving = started, passing, not cordoned) and the
  most live machines (``max_machines_by_group``): the capacity floor and the
  surge ceiling are checked against those;
* ``converged`` / ``rolled_back`` say how the fleet ended; ``final`` lists the
  machines left (the simulator names the machines it creates ``sim1``, ``sim2``...).

Inputs zdd refuses up front (``PlanningImpossible``, ``InvalidConfig``) are
skipped: the planner properties (``test_plan_properties.py``) cover refusals.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import attrs
import pytest
import strategies as zst
from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st

import zdd
from zdd.providers.simulated import Faults, ReleaseBehaviour, SimulatedFleet
from zdd.sim import simulate_fleet

# Every property runs whole simulated deployments: no deadline, and filtering
# (refused plans) is expected.
SIM = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)

#: Every gate passes (bluegreen's switch gate, canary steps' gates).
PASS_GATES = zdd.ExecuteOptions(gates=lambda name: "pass")
#: Generous enough that no machine in the simulator misses it when the release passes.
LONG_WAIT = 3600.0


# -- generators ------------------------------------------------------------------


def _with(strategy: zdd.Strategy, **changes: Any) -> Any:
    return attrs.evolve(strategy, **changes)


def strategies_for(kind: str) -> st.SearchStrategy[Any]:
    return {
        "immediate": zst.immediates(),
        "rolling": zst.rollings(),
        "bluegreen": zst.bluegreens(),
        "canary": zst.canaries(),
    }[kind]


KINDS = ("immediate", "rolling", "bluegreen", "canary")
#: Strategies that roll back by themselves.
SAFE_KINDS = ("rolling", "bluegreen", "canary")


@attrs.frozen
class Sim:
    """How the simulated machines behave (everything but the fleet and the strategy)."""

    seed: int
    boot_time: float
    boot_sigma: float


sims = st.builds(
    Sim,
    seed=st.integers(0, 2**16),
    boot_time=st.integers(1, 60).map(float),
    boot_sigma=st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.8]) | st.floats(0.0, 0.8),
)
#: Machines that boot well within a short wait_timeout (30s or more), even at five
#: sigmas: a rollback waits for the old release with the same wait_timeout.
quick_sims = st.builds(
    Sim,
    seed=st.integers(0, 2**16),
    boot_time=st.integers(1, 10).map(float),
    boot_sigma=st.sampled_from([0.0, 0.1, 0.2]) | st.floats(0.0, 0.2),
)


@st.composite
def desireds(draw: st.DrawFn, state: zdd.FleetState, *, scale: bool = True) -> zdd.Desired:
    """The fleet's shape on the target release; with ``scale``, sometimes another shape
    (each group's count per region changes by -3..+3, possibly in a new region)."""
    rel = zst.release()
    desired = zdd.Desired.from_fleet(state, rel)
    if not scale or not draw(st.booleans(), label="scale"):
        return desired
    specs = []
    for spec in desired.groups:
        extra = draw(st.lists(st.sampled_from(zst.REGIONS), max_size=1), label="new region")
        counts = {}
        for region in sorted(set(spec.regions) | set(extra)):
            delta = draw(st.integers(-3, 3), label=f"{spec.name}.{region}")
            counts[region] = min(15, max(0, spec.regions.get(region, 0) + delta))
        specs.append(zdd.GroupSpec(name=spec.name, release=rel, regions=counts))
    return zdd.Desired(groups=specs)


def for_immediate(state: zdd.FleetState) -> zdd.FleetState:
    """The same fleet without what trips the simulator after an immediate deployment:
    no machine cordoned (test_uncordoning_a_booting_machine_does_not_stop_its_boot),
    and started machines whose checks do not pass yet show ``unknown``
    (test_the_simulator_settles_pending_checks)."""
    machines = []
    for m in state.machines:
        m = attrs.evolve(m, cordoned=False)
        if m.state is zdd.MachineState.STARTED and m.health is not zdd.Health.PASSING:
            m = attrs.evolve(m, health=zdd.Health.UNKNOWN)
        machines.append(m)
    return zdd.FleetState(machines=machines, record=state.record)


def on_version(state: zdd.FleetState, version: str) -> zdd.FleetState:
    """The same fleet with every machine on ``version``."""
    return zdd.FleetState(
        machines=[attrs.evolve(m, version=version) for m in state.machines], record=state.record
    )


# -- helpers -----------------------------------------------------------------------


def serving(state: zdd.FleetState) -> Counter[str]:
    return Counter(m.group for m in state.machines if m.serving)


def live(state: zdd.FleetState) -> Counter[str]:
    return Counter(m.group for m in state.machines if m.live)


def shape(desired: zdd.Desired) -> dict[str, dict[str, int]]:
    return {
        g.name: {r: n for r, n in g.regions.items() if n}
        for g in desired.groups
        if any(g.regions.values())
    }


def final_shape(report: zdd.SimulationReport, state: zdd.FleetState) -> dict[str, dict[str, int]]:
    """Machines per group and region at the end (regions come from the ids we know)."""
    regions = {m.id: m.region for m in state.machines}
    out: dict[str, dict[str, int]] = {}
    for mid, group, _version, _state in report.final:
        region = regions.get(mid, "?")
        out.setdefault(group, {}).setdefault(region, 0)
        out[group][region] += 1
    return out


def plannable(state: zdd.FleetState, desired: zdd.Desired, strategy: zdd.Strategy) -> None:
    """Skip the example when zdd refuses it up front (a legitimate refusal)."""
    try:
        zdd.plan(state, desired, strategy)
    except (zdd.PlanningImpossible, zdd.InvalidConfig) as exc:
        event(f"refused up front: {type(exc).__name__}")
        assume(False)


def show(state: zdd.FleetState, desired: zdd.Desired, strategy: zdd.Strategy, sim: Sim) -> None:
    note("fleet: " + json.dumps(zdd.fleet_to_json(state)["machines"]))
    note("desired: " + repr([(g.name, dict(g.regions)) for g in desired.groups]))
    note(f"strategy: {strategy!r}")
    note(f"sim: {sim!r}")


def run(
    state: zdd.FleetState,
    desired: zdd.Desired,
    strategy: zdd.Strategy,
    sim: Sim,
    **kwargs: Any,
) -> zdd.SimulationReport:
    show(state, desired, strategy, sim)
    kwargs.setdefault("options", PASS_GATES)
    report = zdd.simulate(
        state,
        desired,
        strategy,
        seed=sim.seed,
        boot_time=sim.boot_time,
        boot_sigma=sim.boot_sigma,
        **kwargs,
    )
    _note_report(report)
    return report


def sim_fleet(
    state: zdd.FleetState,
    desired: zdd.Desired,
    sim: Sim,
    *,
    target_health: str = "passing",
    faults: Faults | None = None,
) -> SimulatedFleet:
    """The fleet ``zdd.simulate`` builds for these arguments (test_sim_fleet_is_simulates
    keeps the two in step), for properties that look inside it afterwards."""
    behaviour = ReleaseBehaviour(boot_time=sim.boot_time, boot_sigma=sim.boot_sigma)
    releases = {}
    for spec in desired.groups:
        checks = spec.release.checks
        behaviour = ReleaseBehaviour(
            boot_time=sim.boot_time,
            boot_sigma=sim.boot_sigma,
            grace_period=max((c.grace_period for c in checks), default=0.0),
            check_interval=min((c.interval for c in checks), default=5.0),
            has_checks=bool(checks),
        )
        releases[spec.release.version] = attrs.evolve(behaviour, health=target_health)
    return SimulatedFleet(state, releases=releases, default=behaviour, faults=faults, seed=sim.seed)


def run_fleet(
    fleet: SimulatedFleet,
    state: zdd.FleetState,
    desired: zdd.Desired,
    strategy: zdd.Strategy,
    sim: Sim,
    **kwargs: Any,
) -> zdd.SimulationReport:
    show(state, desired, strategy, sim)
    kwargs.setdefault("options", PASS_GATES)
    report = simulate_fleet(fleet, desired, strategy, **kwargs)
    _note_report(report)
    return report


def _note_report(report: zdd.SimulationReport) -> None:
    note(
        f"report: outcome={report.outcome} converged={report.converged} "
        f"rolled_back={report.rolled_back} error={report.error!r} "
        f"min_serving={report.min_serving_by_group} max={report.max_machines_by_group} "
        f"resumed={report.resumed} makespan={report.makespan_s:.1f}"
    )
    note(f"final: {report.final}")
    event(f"outcome: {report.outcome}")


def floor_of(
    strategy: zdd.Strategy, n: int, serving0: int, *, in_place: bool = False, bound: bool = False
) -> int | None:
    """The capacity floor a group of ``n`` desired machines keeps (``None``: no promise).

    Never above what served at the start: a deployment does not repair capacity
    before it begins.
    """
    if isinstance(strategy, zdd.Rolling):
        return min(zst.rolling_floor(strategy, n, in_place=in_place, bound=bound), serving0)
    if isinstance(strategy, zdd.BlueGreen):
        return min(n, serving0)
    if isinstance(strategy, zdd.Canary):
        # the canary steps hold `desired`; the promotion holds then's floor
        # (docs/decisions/0002-canary-forms-and-floors.md)
        then = attrs.evolve(strategy.then, allow_downtime=strategy.allow_downtime)
        return min(zst.rolling_floor(then, n, in_place=False, bound=False), serving0)
    return None


def ceiling_of(
    strategy: zdd.Strategy,
    n: int,
    live0: int,
    *,
    in_place: bool = False,
    bound: bool = False,
    serving: bool = True,
) -> int | None:
    """The most live machines a group of ``n`` desired machines may have (``None``: none)."""
    if isinstance(strategy, zdd.Rolling):
        borrowed = zst.borrowed_surge(strategy, n, in_place=in_place, bound=bound, serving=serving)
        surge = max(strategy.surge_budget(n), borrowed)
        return max(live0, n + surge)
    if isinstance(strategy, zdd.BlueGreen):
        # every green alongside every blue: 2n, or live0 + n when scaling down
        return n + max(n, live0)
    if isinstance(strategy, zdd.Canary):
        then = attrs.evolve(strategy.then, allow_downtime=strategy.allow_downtime)
        surge = max(
            then.surge_budget(n),
            zst.borrowed_surge(then, n, in_place=False, bound=False, serving=True),
        )
        extra = max(strategy.canary_machines, surge)
        return max(live0, n) + extra
    return None


def assert_floor(
    report: zdd.SimulationReport,
    state: zdd.FleetState,
    desired: zdd.Desired,
    strategy: zdd.Strategy,
) -> None:
    serving0 = serving(state)
    for spec in desired.groups:
        in_place, bound, _ = zst.group_facts(state, spec.name, spec.release.version)
        floor = floor_of(strategy, spec.count, serving0[spec.name], in_place=in_place, bound=bound)
        if floor is None:
            continue
        low = report.min_serving_by_group.get(spec.name, 0)
        assert low >= floor, f"{spec.name}: {low} serving at some instant < floor {floor}"


def assert_ceiling(
    report: zdd.SimulationReport,
    state: zdd.FleetState,
    desired: zdd.Desired,
    strategy: zdd.Strategy,
) -> None:
    live0 = live(state)
    for spec in desired.groups:
        in_place, bound, outdated_serving = zst.group_facts(state, spec.name, spec.release.version)
        ceiling = ceiling_of(
            strategy,
            spec.count,
            live0[spec.name],
            in_place=in_place,
            bound=bound,
            serving=outdated_serving,
        )
        if ceiling is None:
            continue
        high = report.max_machines_by_group.get(spec.name, 0)
        assert high <= ceiling, f"{spec.name}: {high} live at some instant > ceiling {ceiling}"


def assert_exactly_desired(
    report: zdd.SimulationReport, state: zdd.FleetState, desired: zdd.Desired
) -> None:
    """No duplicate and no missing machine: exactly the desired count per group (and per
    region, for the machines that were there at the start)."""
    ids = [mid for mid, _, _, _ in report.final]
    assert len(ids) == len(set(ids))
    want = shape(desired)
    per_group = Counter(g for _, g, _, _ in report.final)
    assert dict(per_group) == {g: sum(r.values()) for g, r in want.items()}, (
        f"machines per group {dict(per_group)} != desired {want}"
    )
    for group, regions in final_shape(report, state).items():
        for region, k in regions.items():
            if region != "?":
                assert k <= want.get(group, {}).get(region, 0), f"{group}/{region}: {k} machines"


# -- convergence ----------------------------------------------------------------------


@SIM
@given(data=st.data(), kind=st.sampled_from(KINDS), sim=sims)
def test_converges_without_faults(data: st.DataObject, kind: str, sim: Sim):
    """Convergence: without faults, every strategy ends with exactly the desired machines,
    all on the target release, started, passing and uncordoned (``report.converged``).

    Immediate has no health waits: the simulator lets its machines finish
    booting after the executor is done (see test_immediate_converges_with_slow_boots
    for the boot-time spread, and the cordoned machines immediate leaves).
    """
    strategy = _with(data.draw(strategies_for(kind), label="strategy"), wait_timeout=LONG_WAIT)
    fleet_kw: dict[str, Any] = {"volumes": kind in ("rolling", "immediate")}
    state = data.draw(zst.fleets(**fleet_kw), label="fleet")
    if kind == "immediate":
        # simulator bugs: its settling after immediate (test_immediate_converges_with_
        # slow_boots, test_the_simulator_settles_pending_checks), and an uncordon during
        # a boot (test_uncordoning_a_booting_machine_does_not_stop_its_boot)
        sim = attrs.evolve(sim, boot_sigma=0.0)
        state = for_immediate(state)
    desired = data.draw(desireds(state), label="desired")
    plannable(state, desired, strategy)
    report = run(state, desired, strategy, sim)
    assert report.outcome == "converged", report.error
    assert report.converged
    assert_exactly_desired(report, state, desired)


# -- capacity floor and surge ceiling ------------------------------------------------


@SIM
@given(data=st.data(), kind=st.sampled_from(SAFE_KINDS), sim=sims)
def test_floor_and_ceiling_hold_at_every_instant(data: st.DataObject, kind: str, sim: Sim):
    """Capacity floor + surge ceiling, at every instant of the simulated deployment.

    Per desired group of ``n`` machines, with ``serving0``/``live0`` at the start:

    * rolling: serving >= min(n - max_unavailable, serving0); live <= max(live0, n + max_surge);
    * bluegreen: serving >= min(n, serving0); live <= n + max(n, live0) (2n, or every
      blue beside the greens when scaling down);
    * canary: serving >= min(n - then.max_unavailable, serving0) (the canary steps
      alone hold ``n``: test_canary_steps_hold_desired); live <= max(live0, n) +
      max(canary machines, then.max_surge).
    """
    strategy = _with(data.draw(strategies_for(kind), label="strategy"), wait_timeout=LONG_WAIT)
    # half the time every machine serves at the start: the floor is then `desired`'s,
    # not lowered to what served at the start
    ordinary = data.draw(st.booleans(), label="ordinary")
    state = data.draw(zst.fleets(volumes=kind == "rolling", ordinary=ordinary), label="fleet")
    desired = data.draw(desireds(state), label="desired")
    plannable(state, desired, strategy)
    report = run(state, desired, strategy, sim)
    assert_floor(report, state, desired, strategy)
    assert_ceiling(report, state, desired, strategy)


def _promotion_starts(report: zdd.SimulationReport, group: str) -> float:
    """When the group's promotion (its rolling phase) began: the first step after the
    canary steps that is not a canary step (``inf`` when none began; ``-inf`` when the
    run had no canary phase)."""
    seen_canary = False
    for t, why in report.steps:
        if why.startswith(f"{group}: canary"):
            seen_canary = True
        elif seen_canary and why.startswith(f"{group}:"):
            return t
    if not seen_canary:
        # no canary phase at all (every machine already on the release: a reshape, as a
        # rolling update would do it): the whole run is the promotion
        return float("-inf")
    return float("inf")


@SIM
@given(
    data=st.data(),
    strategy=zst.canaries(progressive=True).map(lambda s: _with(s, wait_timeout=LONG_WAIT)),
    sim=sims,
)
def test_canary_steps_hold_desired(data: st.DataObject, strategy: zdd.Canary, sim: Sim):
    """Capacity floor (canary steps): until the promotion begins, serving machines stay
    at least ``min(desired, serving at start)`` (docs/decisions/0002).

    One group, so that the report's timeline (serving over all groups, each
    downsampled bucket keeping its least-serving instant) is that group's.
    """
    ordinary = data.draw(st.booleans(), label="ordinary")
    state = data.draw(zst.fleets(groups=("app",), ordinary=ordinary), label="fleet")
    desired = data.draw(desireds(state), label="desired")
    plannable(state, desired, strategy)
    report = run(state, desired, strategy, sim)
    assume(desired.groups)
    n = desired.groups[0].count
    floor = min(n, serving(state)["app"])
    start = _promotion_starts(report, "app")
    note(f"promotion starts at t={start}")
    for p in report.timeline:
        if p.t < start:
            assert p.serving >= floor, f"t={p.t:g}: {p.serving} serving < {floor} (canary steps)"


# -- rollback --------------------------------------------------------------------------


def _failing_fleet(data: st.DataObject) -> zdd.FleetState:
    """A fleet whose every machine runs the old release (so that "as at the start" is
    one release per group), in mixed states, at least one machine."""
    ordinary = data.draw(st.booleans(), label="ordinary")
    state = data.draw(zst.fleets(min_machines=1, ordinary=ordinary), label="fleet")
    return on_version(state, zst.OLD)


@SIM
@given(
    data=st.data(),
    kind=st.sampled_from(KINDS),
    sim=quick_sims,
    wait_timeout=st.integers(30, 60),
)
def test_failing_release_rolls_back(data: st.DataObject, kind: str, sim: Sim, wait_timeout: int):
    """Rollback: when the target release never becomes healthy, rolling, bluegreen and
    canary end rolled back -- every group on its starting release with its starting
    machines, all serving -- with the capacity floor (and the surge ceiling) held
    throughout, and no machine the deployment created left. Immediate promises
    nothing: it ends neither converged nor rolled back.
    """
    strategy = _with(data.draw(strategies_for(kind), label="strategy"), wait_timeout=wait_timeout)
    state = _failing_fleet(data)
    desired = zdd.Desired.from_fleet(state, zst.release())
    plannable(state, desired, strategy)
    fleet = sim_fleet(state, desired, sim, target_health="failing")
    report = run_fleet(fleet, state, desired, strategy, sim)
    if kind == "immediate":
        assert not report.converged
        assert not report.rolled_back
        return
    assert report.outcome == "rolled_back", report.error
    assert report.rolled_back
    assert_rollback_floor(report, state, desired, strategy)
    assert_ceiling(report, state, desired, strategy)
    # every machine the deployment created is destroyed
    left = {m.id: m for m in fleet.observe().live}
    forward = [i for i, m in left.items() if m.labels.get("zdd.key", "").startswith(zst.TARGET)]
    assert not forward, f"machines the deployment created survive: {forward}"
    created = sorted(i for i in left if i.startswith("sim"))
    if created:
        # only a rollback that has to replace old machines the deployment already
        # destroyed creates machines: a rolling surge retires old machines before its
        # new ones are healthy (those not serving, and max_unavailable of the others)
        note(f"the rollback created {created}")
        assert isinstance(strategy, zdd.Rolling) and strategy.max_surge > 0, created


def assert_rollback_floor(
    report: zdd.SimulationReport,
    state: zdd.FleetState,
    desired: zdd.Desired,
    strategy: zdd.Strategy,
) -> None:
    """The floor through a failed deployment and its rollback.

    Canary's promotion never begins (the canaries never pass), so its floor is
    ``desired`` throughout.
    """
    assert_floor(report, state, desired, strategy)
    if isinstance(strategy, zdd.Canary):
        serving0 = serving(state)
        for spec in desired.groups:
            low = report.min_serving_by_group[spec.name]
            floor = min(spec.count, serving0[spec.name])
            assert low >= floor, f"{spec.name}: {low} serving < {floor} (canary steps)"


def _grown(state: zdd.FleetState, more: int) -> zdd.Desired:
    """``more`` machines more per group and region, on the target release."""
    return zdd.Desired(
        groups=[
            zdd.GroupSpec(
                name=g.name, release=g.release, regions={r: n + more for r, n in g.regions.items()}
            )
            for g in zdd.Desired.from_fleet(state, zst.release()).groups
        ]
    )


@pytest.mark.parametrize(
    "strategy",
    [
        zdd.Rolling(max_unavailable=1, wait_timeout=30),
        zdd.Rolling(max_unavailable=0, max_surge=1, wait_timeout=30),
        zdd.BlueGreen(wait_timeout=30),
        zdd.Canary(wait_timeout=30),
    ],
    ids=["rolling", "rolling-surge", "bluegreen", "canary"],
)
def test_failing_scale_up_rolls_back_to_the_starting_shape(strategy: zdd.Strategy):
    """Rollback, when the deployment also changes the shape: 3 machines on v1, 5 wanted
    on a v2 that never gets healthy: the fleet should end as it started, 3 machines on
    v1, every machine the deployment created destroyed."""
    state = zdd.FleetState.uniform(3)
    report = zdd.simulate(state, _grown(state, 2), strategy, target_health="failing")
    assert report.outcome == "rolled_back"
    created = [mid for mid, *_ in report.final if mid.startswith("sim")]
    assert not created, f"machines the deployment created survive: {created}"
    assert report.rolled_back


# -- resumability ----------------------------------------------------------------------


@SIM
@given(
    data=st.data(),
    kind=st.sampled_from(KINDS),
    health=st.sampled_from(["passing", "failing"]),
    sim=quick_sims,
)
def test_resumes_after_an_executor_crash(data: st.DataObject, kind: str, health: str, sim: Sim):
    """Resumability: the executor dies after its k-th action (k drawn below the actions
    a clean run makes); a new one takes over once the lock expires and finishes the
    job -- converged, or rolled back when the release fails -- with the same
    guarantees (floor, ceiling), and no duplicate machine.
    """
    failing = health == "failing"
    if failing and kind == "immediate":
        kind = "rolling"  # immediate has nothing to roll back: covered by passing runs
    strategy = _with(
        data.draw(strategies_for(kind), label="strategy"),
        wait_timeout=45 if failing else LONG_WAIT,
    )
    state = data.draw(zst.fleets(volumes=kind == "rolling"), label="fleet")
    if failing:
        state = on_version(state, zst.OLD)
    if kind == "immediate":  # the simulator bugs (see test_converges_without_faults)
        sim = attrs.evolve(sim, boot_sigma=0.0)
        state = for_immediate(state)
    desired = data.draw(desireds(state, scale=not failing), label="desired")
    plannable(state, desired, strategy)
    clean = zdd.simulate(
        state,
        desired,
        strategy,
        seed=sim.seed,
        boot_time=sim.boot_time,
        boot_sigma=sim.boot_sigma,
        target_health=health,  # type: ignore[arg-type]
        options=PASS_GATES,
    )
    assume(clean.actions >= 2)
    k = data.draw(st.integers(1, clean.actions - 1), label="crash after k actions")
    report = run(
        state, desired, strategy, sim, target_health=health, faults=Faults(executor_crash_after=k)
    )
    assert report.resumed == 1
    if failing:
        assert report.outcome == "rolled_back", report.error
        assert report.rolled_back
        created = [mid for mid, *_ in report.final if mid.startswith("sim")]
        # a rollback that replaced a machine it retired creates one (a surge, set or
        # borrowed by a one-machine group)
        assert not created or (
            isinstance(strategy, zdd.Rolling)
            and (strategy.max_surge > 0 or any(g.count == 1 for g in desired.groups))
        )
        assert_rollback_floor(report, state, desired, strategy)
    else:
        assert report.outcome == "converged", report.error
        assert report.converged
        assert_exactly_desired(report, state, desired)
        assert_floor(report, state, desired, strategy)
    assert_ceiling(report, state, desired, strategy)


# -- data safety -----------------------------------------------------------------------


@SIM
@given(
    data=st.data(),
    kind=st.sampled_from(["rolling", "immediate"]),
    sim=sims,
)
def test_volumes_are_never_destroyed(data: st.DataObject, kind: str, sim: Sim):
    """Data safety: every volume attached at the start is still attached to a live
    machine at the end (rolling and immediate, the strategies that keep volumes),
    whether the deployment converged or not."""
    strategy = _with(data.draw(strategies_for(kind), label="strategy"), wait_timeout=LONG_WAIT)
    state = data.draw(zst.fleets(volumes=True), label="fleet")
    if kind == "immediate":  # the simulator bugs (see test_converges_without_faults)
        sim = attrs.evolve(sim, boot_sigma=0.0)
        state = for_immediate(state)
    desired = data.draw(desireds(state), label="desired")
    plannable(state, desired, strategy)
    volumes = {m.volume for m in state.live if m.volume}
    event(f"volumes at start: {min(len(volumes), 3)}{'+' if len(volumes) >= 3 else ''}")
    fleet = sim_fleet(state, desired, sim)
    report = run_fleet(fleet, state, desired, strategy, sim)
    kept = {m.volume for m in fleet.observe().live if m.volume}
    assert volumes <= kept, f"volumes lost: {sorted(volumes - kept)}"
    assert report.outcome == "converged", report.error


# -- exclusion -------------------------------------------------------------------------

exclusion_cases = st.tuples(
    zst.fleets(min_machines=1, max_machines=10, ordinary=True),
    st.sampled_from(KINDS).flatmap(strategies_for),
    st.text("abcdefghijklmnopqrstuvwxyz-@.:0123456789", min_size=1, max_size=20),
    st.integers(1, 3600),
)


def test_a_locked_fleet_fails_fast():
    """Exclusion (virtual-clock driver): a fleet whose lock another executor holds (and
    has not let expire) is not deployed: ``DeploymentLocked`` names the holder."""
    state = zdd.FleetState.uniform(2)
    desired = zdd.Desired.from_fleet(state, zst.release())
    fleet = sim_fleet(state, desired, Sim(seed=0, boot_time=5.0, boot_sigma=0.0))
    fleet.acquire_lock("alice@ci", 600)
    try:
        report = simulate_fleet(fleet, desired, zdd.Rolling(), options=PASS_GATES)
    except zdd.DeploymentLocked as exc:
        assert exc.holder == "alice@ci"
        assert "alice@ci" in str(exc)
        assert fleet.observe() == state
    else:
        raise AssertionError(
            f"deployed a fleet locked by alice@ci: {report.outcome} at t={report.makespan_s:g}s"
        )


@SIM
@given(case=exclusion_cases)
def test_the_threaded_driver_fails_fast_on_a_locked_fleet(case: Any):
    """Exclusion (threaded driver): ``execute`` on a fleet whose lock someone else holds
    raises ``DeploymentLocked`` naming the holder before any action; the lock stays theirs."""
    state, strategy, holder, ttl = case
    desired = zdd.Desired.from_fleet(state, zst.release())
    fleet = sim_fleet(state, desired, Sim(seed=0, boot_time=5.0, boot_sigma=0.0))
    fleet.acquire_lock(holder, ttl)
    # a deadline, so that a broken lock check fails in a second rather than deploy on
    # the wall clock
    options = attrs.evolve(PASS_GATES, deadline=1.0)
    with pytest.raises(zdd.DeploymentLocked) as err:
        zdd.execute(fleet, desired, strategy, owner="second-executor", options=options)
    assert err.value.holder == holder
    assert holder in str(err.value)
    assert fleet.api_calls == 0
    assert fleet.lock is not None and fleet.lock[0] == holder


@SIM
@given(case=exclusion_cases, late=st.integers(0, 600))
def test_a_stale_lock_is_taken_over(case: Any, late: int):
    """Exclusion: an expired lock (its holder died) is taken over; the deployment
    proceeds at once and converges, and the lock is released at the end."""
    state, strategy, holder, ttl = case
    state = on_version(state, zst.OLD)  # something to do
    strategy = _with(strategy, wait_timeout=LONG_WAIT)
    desired = zdd.Desired.from_fleet(state, zst.release())
    fleet = sim_fleet(state, desired, Sim(seed=0, boot_time=5.0, boot_sigma=0.0))
    fleet.acquire_lock(holder, ttl)
    fleet.schedule(ttl + late, lambda: None)
    fleet.step()  # the clock passes the lock's expiry
    start = fleet.now
    first: list[float] = []

    class FirstAction(zdd.reporters.Reporter):
        def action_started(self, elapsed: float, action: zdd.Action) -> None:
            first.append(fleet.now)

    report = simulate_fleet(fleet, desired, strategy, options=PASS_GATES, reporter=FirstAction())
    assert report.outcome == "converged", report.error
    assert first and first[0] == start, "the executor waited before its first action"
    assert fleet.lock is None


# -- faults: API errors, machine crashes -----------------------------------------------


@SIM
@given(data=st.data(), kind=st.sampled_from(KINDS), sim=sims)
def test_converges_through_api_errors(data: st.DataObject, kind: str, sim: Sim):
    """Transient API errors (one call in five fails) are retried: the deployment still
    converges. Retries are raised to 8 so that a call failing 9 times in a row (one in
    two million) does not turn the run into a rollback."""
    strategy = _with(data.draw(strategies_for(kind), label="strategy"), wait_timeout=LONG_WAIT)
    state = data.draw(zst.fleets(volumes=kind in ("rolling", "immediate")), label="fleet")
    if kind == "immediate":  # the simulator bugs (see test_converges_without_faults)
        sim = attrs.evolve(sim, boot_sigma=0.0)
        state = for_immediate(state)
    desired = data.draw(desireds(state), label="desired")
    plannable(state, desired, strategy)
    options = attrs.evolve(PASS_GATES, retries=8)
    report = run(state, desired, strategy, sim, faults=Faults(api_error_rate=0.2), options=options)
    assert report.outcome == "converged", report.error
    assert report.converged
    assert_exactly_desired(report, state, desired)
    assert report.api_calls >= report.actions


#: The failure a crash of a machine the executor waits for causes (a passing release).
WAITED_FOR_CRASHED = (
    r"machine \S+ (is failed while waiting for it to be healthy"
    r"|was not healthy within \d+s \(wait_timeout\))"
    # a released machine of the new release crashed and left its group at its floor:
    # a failing release (docs/decisions/0008-never-zero.md)
    r"|group '\S+': \S+ \(\S+\) stopped serving after it was released .*"
)
#: What the message says of the fleet it left (docs/providers/fly.md, "each failure").
STATED = r"(; stopped where it was .*|; nothing was changed.*)?"
#: The second crash hitting a machine the rollback waits for: the rollback stops, stated.
ROLLBACK_HIT = (
    r"rollback failed: machine \S+ (is failed|is gone) while waiting for it to be healthy" + STATED
)


class LastLook(zdd.reporters.Reporter):
    """Keeps the fleet as the executor last observed it before it finished: what it
    judged converged. A crash after that (while the last label is written) is not
    the deployment's to repair."""

    def __init__(self, fleet: SimulatedFleet) -> None:
        self.fleet = fleet
        self.state: zdd.FleetState | None = None
        self.done = False
        observe = fleet.observe

        def watching() -> zdd.FleetState:
            state = observe()
            if not self.done:
                self.state = state
            return state

        fleet.observe = watching  # type: ignore[method-assign]

    def finished(self, elapsed: float, result: zdd.DeployResult) -> None:
        self.done = True


@SIM
@given(data=st.data(), kind=st.sampled_from(KINDS), sim=sims)
def test_converges_through_machine_crashes(data: st.DataObject, kind: str, sim: Sim):
    """Machines crash at random (two of them, within the first two minutes): the
    executor re-plans from the observed fleet after its last task, so the deployment
    still ends converged: as the executor last observed it before finishing, the fleet
    is exactly as desired, on the target release, serving (a crash after that look,
    while the last label is written, is not the deployment's to repair).
    No floor is promised.

    A crash of a machine the executor is waiting for is a failure by design (it is
    found failed, or never becomes healthy within ``wait_timeout``): then the
    strategies that can roll back do, and that is all that is checked.
    """
    strategy = _with(data.draw(strategies_for(kind), label="strategy"), wait_timeout=LONG_WAIT)
    state = data.draw(zst.fleets(volumes=kind in ("rolling", "immediate")), label="fleet")
    if kind == "immediate":  # the simulator bugs (see test_converges_without_faults)
        sim = attrs.evolve(sim, boot_sigma=0.0)
        state = for_immediate(state)
    desired = data.draw(desireds(state), label="desired")
    plannable(state, desired, strategy)
    fleet = sim_fleet(state, desired, sim, faults=Faults(machine_crashes=2))
    end = LastLook(fleet)
    report = run_fleet(fleet, state, desired, strategy, sim, reporter=end)
    if report.outcome != "converged" and re.fullmatch(
        f"({WAITED_FOR_CRASHED}){STATED}", report.error or ""
    ):
        event("a crash hit a machine the executor waited for")
        assert report.outcome == ("failed" if kind == "immediate" else "rolled_back")
        return
    if report.outcome == "failed" and re.fullmatch(ROLLBACK_HIT, report.error or ""):
        event("the second crash hit a machine the rollback waited for")
        assert kind != "immediate"
        return
    assert report.outcome == "converged", report.error
    assert end.state is not None
    note("last look: " + json.dumps(zdd.fleet_to_json(end.state)["machines"]))
    want = shape(desired)
    have: dict[str, dict[str, int]] = {}
    for m in end.state.live:
        have.setdefault(m.group, {}).setdefault(m.region, 0)
        have[m.group][m.region] += 1
        assert m.version == desired.group(m.group).release.version  # type: ignore[union-attr]
        if kind != "immediate":
            assert m.serving, f"{m.id} is not serving at the executor's last look"
    assert have == want


# -- the helpers agree with zdd.simulate ----------------------------------------------


@SIM
@given(
    data=st.data(),
    kind=st.sampled_from(KINDS),
    health=st.sampled_from(["passing", "failing"]),
    sim=quick_sims,
)
def test_sim_fleet_is_simulates(data: st.DataObject, kind: str, health: str, sim: Sim):
    """``sim_fleet`` + ``simulate_fleet`` (used where a property looks inside the fleet)
    give exactly the report ``zdd.simulate`` gives for the same arguments."""
    strategy = _with(data.draw(strategies_for(kind), label="strategy"), wait_timeout=45)
    state = data.draw(zst.fleets(max_machines=10), label="fleet")
    desired = data.draw(desireds(state), label="desired")
    plannable(state, desired, strategy)
    ours = run_fleet(
        sim_fleet(state, desired, sim, target_health=health), state, desired, strategy, sim
    )
    theirs = run(state, desired, strategy, sim, target_health=health)
    assert ours.to_json() == theirs.to_json()


# -- immediate and the simulator's settling ---------------------------------------------


def test_immediate_converges_with_slow_boots():
    """Convergence (immediate) with spread boot times: the executor ends before the
    machines boot, the simulator lets them finish; the report must say converged."""
    state = zdd.FleetState.uniform(20)
    check = zdd.HealthCheck(type="http", grace_period=1, interval=5)
    desired = zdd.Desired.single(zdd.Release(version="v2", checks=[check]), 20)
    report = zdd.simulate(state, desired, zdd.Immediate(), boot_time=20, boot_sigma=0.5, seed=1)
    assert report.outcome == "converged"
    assert report.converged, report.final


def test_uncordoning_a_booting_machine_does_not_stop_its_boot():
    """Convergence (immediate) of a cordoned outdated machine: update, then uncordon at
    once (no health wait); the machine must still finish booting."""
    state = zdd.FleetState(machines=[zdd.Machine(id="m1", version="v1", cordoned=True)])
    desired = zdd.Desired.from_fleet(state, zst.release())
    report = zdd.simulate(state, desired, zdd.Immediate(), boot_time=1)
    assert report.outcome == "converged"
    assert report.final == (("m1", "app", "v2", "started"),), report.final
    assert report.converged


def test_a_rollback_with_region_waves_can_be_planned():
    """Region waves never make a rollback impossible (found by
    test_converges_through_machine_crashes, fixed in c07fa14): a canary with region
    waves fails (a crashed machine it waited for); the worker group as observed then:
    m5 (ord, v2, crashed) and its canary (ams, v2, serving); the rollback wants one v1
    machine in each region and keeps region_waves."""
    m = zdd.Machine
    canary = {"zdd.key": "v2-worker-canary-ams-1", "zdd.role": "canary"}
    state = zdd.FleetState(
        machines=[
            m(id="m5", version="v2", group="worker", region="ord", state="failed"),
            m(id="sim2", version="v2", group="worker", region="ams", labels=canary),
        ],
        record={
            "desired.worker": "ams:1,ord:1",
            "from.worker": "v1",
            "phase": "rolling_back",
            "target": "worker=v1",
            "rollback_of": "worker=v2",
            "strategy": "canary",
            "canary.worker": "1",
        },
    )
    forward = zdd.Desired(
        groups=[zdd.GroupSpec(name="worker", release=zst.release(), regions={"ams": 1, "ord": 1})]
    )
    strategy = zdd.Canary(region_waves=True, steps=[zdd.CanaryStep(machines=1)])
    back = zdd._execute.rollback_desired(state, forward)
    plan = zdd.plan(state, back, zdd._execute.rollback_strategy(strategy))
    assert plan.steps


def test_resume_with_region_waves_can_be_planned():
    """Region waves never make a resumed deployment impossible (found by
    test_resumes_after_an_executor_crash, fixed in c07fa14): the executor dies after
    its first action (the start label); m1, unhealthy at the start, passes its checks
    meanwhile, so its update needs room only the other wave can give."""
    m = zdd.Machine
    state = zdd.FleetState(
        machines=[
            m(id="m1", version="v1", region="ord", health="critical"),
            m(id="m2", version="v1", region="syd", state="stopped"),
        ]
    )
    desired = zdd.Desired(
        groups=[zdd.GroupSpec(name="app", release=zst.release(), regions={"ord": 1, "syd": 1})]
    )
    strategy = zdd.Rolling(max_unavailable=1, region_waves=True, drain_delay=0)
    clean = zdd.simulate(state, desired, strategy, boot_time=1)
    assert clean.converged
    report = zdd.simulate(
        state, desired, strategy, boot_time=1, faults=Faults(executor_crash_after=1)
    )
    assert report.resumed == 1
    assert report.outcome == "converged", report.error


def test_the_simulator_settles_pending_checks():
    """Convergence (immediate): a machine already on the release, started, checks not
    passing yet but about to: immediate has nothing to do; the simulator must let the
    due check run before it reports."""
    state = zdd.FleetState(machines=[zdd.Machine(id="m1", version="v2", health="critical")])
    desired = zdd.Desired.from_fleet(state, zst.release())
    report = zdd.simulate(state, desired, zdd.Immediate())
    assert report.outcome == "converged"
    assert report.converged


# -- one scheduler: what runs is what was previewed -----------------------------------


class ActionLog(zdd.reporters.Reporter):
    def __init__(self) -> None:
        self.actions: list[zdd.Action] = []

    def action_started(self, elapsed: float, action: zdd.Action) -> None:
        self.actions.append(action)


def _key(action: zdd.Action, keys: dict[str, str]) -> tuple[Any, ...]:
    """An action as a comparable value, with created machines named by their key."""
    machine = action.machine
    if machine is not None:
        machine = keys.get(machine, machine)
    data = action.to_json()
    data["machine"] = machine
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in data.items()))


def _side_record(action: zdd.Action) -> bool:
    """Record keeping the executor adds as it goes (when a pause began, a gate's
    answer): not part of the plan."""
    return isinstance(action, zdd.Label) and all(
        k.startswith(("pause.", "gate.")) for k in action.values
    )


@SIM
@given(data=st.data(), kind=st.sampled_from(SAFE_KINDS), sim=sims)
def test_a_fault_free_run_performs_exactly_the_previewed_actions(
    data: st.DataObject, kind: str, sim: Sim
) -> None:
    """The preview and the execution are the same scheduler: on a fault-free run from
    a fleet at rest (every machine started, passing, uncordoned), the multiset of
    actions the executor performs equals the actions of ``zdd.plan`` (machines it
    created named by their idempotency keys; the executor's own record keeping of
    pauses and gate answers aside)."""
    strategy = _with(data.draw(strategies_for(kind), label="strategy"), wait_timeout=LONG_WAIT)
    state = data.draw(zst.fleets(ordinary=True, max_machines=20), label="fleet")
    desired = data.draw(desireds(state), label="desired")
    plannable(state, desired, strategy)
    preview = zdd.plan(state, desired, strategy)
    fleet = sim_fleet(state, desired, attrs.evolve(sim, boot_sigma=0.0))
    log = ActionLog()
    report = run_fleet(fleet, state, desired, strategy, sim, reporter=log)
    assert report.converged, report.error
    keys = {mid: m.labels["zdd.key"] for mid, m in fleet.machines.items() if "zdd.key" in m.labels}
    performed = Counter(_key(a, keys) for a in log.actions if not _side_record(a))
    planned = Counter(_key(a, {}) for step in preview for a in step.actions)
    assert performed == planned, (
        f"performed, not planned: {list((performed - planned).elements())[:3]}; "
        f"planned, not performed: {list((planned - performed).elements())[:3]}"
    )
