"""The planners: pure functions from (state, desired, strategy) to a plan.

No I/O, no clock, no randomness, no logging here (a test enforces it): a
planner reads only its arguments, so the same call previews a whole deployment
from the starting state and decides the next step from any observed state in
the middle of one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .._errors import InvalidConfig, InvalidFleetState, PlanningImpossible, describe
from .._model import (
    Capabilities,
    Desired,
    FleetState,
    FrozenMap,
    GroupSpec,
    Health,
    Machine,
    Release,
    decode_regions,
    encode_regions,
)
from .._plan import APP, Action, Label, Pause, Plan, RunCommand, Step
from .._record import (
    DEPLOYING,
    DONE,
    MAX_GROUP_MACHINES,
    PHASE,
    ROLLED_BACK,
    ROLLING_BACK,
    STRATEGY,
    TARGET,
    RecordView,
    desired_key,
    encode_target,
    from_key,
    start_key,
)
from .._strategies import BlueGreen, Canary, Immediate, Rolling, Strategy
from . import bluegreen, canary, immediate, rolling
from ._core import GroupContext, ensure_no_volume, retire_elements
from ._schedule import NO_FLOOR, Budget, Element, Phase, Scheduled, Scheduler, Task, lay_out

__all__ = [
    "DEPLOYING",
    "STRATEGIES",
    "NO_FLOOR",
    "Element",
    "Scheduled",
    "Scheduler",
    "Task",
    "StrategyModule",
    "assume_checks_pass",
    "can_roll_back",
    "rollback_desired",
    "rollback_strategy",
    "DONE",
    "ROLLED_BACK",
    "ROLLING_BACK",
    "Blueprint",
    "blueprint",
    "plan",
    "target_of",
]


@attrs.frozen
class StrategyModule:
    """What a strategy owns: its planner and its rollback policy (its own module).

    Attributes:
        plan_group: one group's phases, from its context.
        rollback: the rolling update that takes a failed deployment of this strategy
            back (``None``: it cannot be rolled back).
        can_roll_back: whether a deployment with this record may still roll back.
    """

    plan_group: Callable[[GroupContext], list[Phase]]
    rollback: Callable[[Any], Rolling | None]
    can_roll_back: Callable[[Any, Mapping[str, str], Desired], bool]


#: One line per strategy: a fifth strategy is its module plus a line here.
STRATEGIES: dict[type, StrategyModule] = {
    Immediate: StrategyModule(immediate.plan_group, immediate.rollback, immediate.can_roll_back),
    Rolling: StrategyModule(rolling.plan_group, rolling.rollback, rolling.can_roll_back),
    BlueGreen: StrategyModule(bluegreen.plan_group, bluegreen.rollback, bluegreen.can_roll_back),
    Canary: StrategyModule(canary.plan_group, canary.rollback, canary.can_roll_back),
}


def _module(strategy: Strategy) -> StrategyModule:
    module = STRATEGIES.get(type(strategy))
    if module is None:
        raise InvalidConfig(
            f"expected one of {', '.join(cls.__name__ for cls in STRATEGIES)}, "
            f"got {type(strategy).__name__}",
            field="strategy",
        )
    return module


def rollback_strategy(strategy: Strategy) -> Rolling:
    """The rolling update that takes a failed deployment back, floor held (as the
    strategy's own module says).

    Raises:
        PlanningImpossible: the strategy cannot be rolled back (immediate).
    """
    back = _module(strategy).rollback(strategy)
    if back is None:
        raise PlanningImpossible(f"a {strategy.name} deployment cannot be rolled back")
    return back


def can_roll_back(strategy: Strategy, record: Mapping[str, str], desired: Desired) -> bool:
    """Whether a deployment of ``desired`` whose record is ``record`` may roll back."""
    return _module(strategy).can_roll_back(strategy, record, desired)


def rollback_desired(state: FleetState, forward: Desired) -> Desired:
    """Where a rollback goes: each group's starting version (``from.<group>``) and shape
    (``start.<group>``)."""
    groups = []
    for spec in forward.groups:
        record = RecordView(state.record)
        version = record.from_version(spec.name)
        if version is None:
            continue  # a group that did not exist before: nothing to go back to
        key = start_key(spec.name) if record.start(spec.name) else desired_key(spec.name)
        shape = record.start(spec.name) or record.desired(spec.name)
        regions = decode_regions(shape, key) if shape else dict(spec.regions)
        # what the old version's machines looked like (image, env) is not in the
        # record: the rollback's release says only its version and checks, and a
        # provider builds its machines from what it knows of that version
        back = attrs.evolve(spec.release, version=version, image="", env={}, app_config=None)
        groups.append(GroupSpec(name=spec.name, release=back, regions=regions))
    return Desired(groups=groups)


def assume_checks_pass(state: FleetState) -> tuple[FleetState, tuple[str, ...]]:
    """``state`` with every started, uncordoned machine that has no check result yet
    (health ``unknown``, as after a proxy restart) taken as passing, and their ids.

    What a preview plans from: an executor waits for a first check result of such
    machines before it plans, so the plan it then follows is this one when they pass.
    """
    unknown = tuple(m.id for m in state.machines if m.presumed_serving and not m.serving)
    if not unknown:
        return state, ()
    machines = [
        attrs.evolve(m, health=Health.PASSING) if m.id in unknown else m for m in state.machines
    ]
    return FleetState(machines=machines, record=state.record), unknown


def target_of(desired: Desired) -> str:
    """The deployment's identity in the record: ``group=version`` pairs."""
    return encode_target((g.name, g.release.version) for g in desired.groups)


@attrs.frozen
class Blueprint:
    """A plan before it is laid out in steps: what an executor runs online.

    ``prefix`` steps run first (release command, the record's start), then every
    group's phases run side by side, then the ``suffix`` steps (post-deploy
    command, the record's end). :meth:`layout` turns it into the :class:`Plan`
    a preview shows; an executor instead admits each group's tasks as budget
    frees up, which is the same schedule without waiting for step boundaries.
    """

    strategy: str
    summary: str
    prefix: tuple[Step, ...]
    groups: tuple[tuple[str, tuple[Phase, ...]], ...]
    suffix: tuple[Step, ...]
    warnings: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return (
            not self.prefix
            and not self.suffix
            and not any(_has_work(p) for _, phases in self.groups for p in phases)
        )

    def layout(self) -> Plan:
        """Lay the blueprint out in steps (raises PlanningImpossible when stuck)."""
        machine_steps = _merge([lay_out(phases) for _, phases in self.groups])
        if not machine_steps and not self.prefix and not self.suffix:
            return Plan(strategy=self.strategy, steps=(), summary=self.summary)
        return Plan(
            strategy=self.strategy,
            steps=[*self.prefix, *machine_steps, *self.suffix],
            summary=self.summary,
            warnings=self.warnings,
        )


def _has_work(phase: Phase) -> bool:
    return any(t.elements for t in phase.tasks)


def plan(
    state: FleetState,
    desired: Desired,
    strategy: Strategy,
    capabilities: Capabilities | None = None,
) -> Plan:
    """Plan the way from ``state`` to ``desired`` under ``strategy``.

    Pure and deterministic. The plan is empty when the fleet already matches
    ``desired`` and no deployment is in progress in the record.

    Raises:
        InvalidConfig: the strategy cannot be used with this release (e.g.
            bluegreen without a health check).
        InvalidFleetState: the state or its record is inconsistent.
        PlanningImpossible: no plan can keep zdd's guarantees (e.g. bluegreen on
            machines with volumes).
    """
    return blueprint(state, desired, strategy, capabilities).layout()


def blueprint(
    state: FleetState,
    desired: Desired,
    strategy: Strategy,
    capabilities: Capabilities | None = None,
) -> Blueprint:
    """The :class:`Blueprint` behind :func:`plan` (same arguments, same errors).

    ``capabilities``: what the provider can do (default: everything). Without
    traffic weights a canary step's weight becomes a canary machine count, and the
    plan text says so."""
    caps = capabilities or Capabilities(traffic_weights=True, cordon=True, volumes=True)
    if not isinstance(state, FleetState):
        raise InvalidFleetState(f"expected a FleetState, got {type(state).__name__}")
    if not isinstance(desired, Desired):
        raise InvalidConfig(f"expected a Desired, got {type(desired).__name__}", field="desired")
    planner = _module(strategy).plan_group
    _validate_counts(state, desired, strategy)
    target = target_of(desired)
    record = RecordView(state.record)
    if record.rolling_back(target) and record.target != target:
        # this very deployment is being rolled back: plan the rollback (what a resumed
        # executor does), as the strategy's own module says it goes
        bp = blueprint(
            state, rollback_desired(state, desired), rollback_strategy(strategy), capabilities
        )
        return attrs.evolve(bp, summary=f"rollback of {target}: {bp.summary}")
    rolling_back = record.phase == ROLLING_BACK and record.target == target
    in_progress = record.deploying(target) or rolling_back
    if not rolling_back:
        _validate(state, desired, strategy)
    kept = state.record if in_progress else FrozenMap[str]()
    waves = _wave_order(state, desired, strategy)
    # a new machine's key is its name: never one a machine already has as key or id
    # (providers that name machines after their key, as the simulator does)
    used_keys = frozenset(
        m.labels["zdd.key"] for m in state.machines if "zdd.key" in m.labels
    ) | frozenset(m.id for m in state.machines)
    by_group: dict[str, list[Machine]] = {}
    for m in state.machines:
        if m.live:
            by_group.setdefault(m.group, []).append(m)
    groups: list[tuple[str, tuple[Phase, ...]]] = []
    for spec in desired.groups:
        ctx = GroupContext(
            spec=spec,
            machines=tuple(by_group.pop(spec.name, ())),
            strategy=strategy,
            record=kept,
            used_keys=used_keys,
            waves=waves,
            weights=caps.traffic_weights,
        )
        groups.append((spec.name, tuple(planner(ctx))))
    for name, machines in sorted(by_group.items()):
        groups.append((name, (_remove_group(name, machines, strategy),)))
    summary = _summary(state, desired, strategy)
    work = any(_has_work(p) for _, phases in groups for p in phases)
    if not work and not in_progress:
        return Blueprint(strategy=strategy.name, summary=summary, prefix=(), groups=(), suffix=())
    prefix: list[Step] = []
    if not in_progress:
        if strategy.release_command:
            prefix.append(
                _command_step(
                    "release",
                    strategy.release_command,
                    strategy.release_command_timeout,
                    desired,
                    "release command, before any machine changes (a failure stops here)",
                )
            )
        start = Label(group=APP, values=start_record(state, desired, strategy), replace=True)
        prefix.append(
            Step(actions=[start], why="record the deployment (what a resumed executor reads back)")
        )
    suffix: list[Step] = []
    if rolling_back:
        done = Label(group=APP, values={PHASE: ROLLED_BACK})
        suffix.append(Step(actions=[done], why="record the rollback done"))
    else:
        if strategy.post_deploy_command:
            suffix.append(
                _command_step(
                    "post_deploy",
                    strategy.post_deploy_command,
                    strategy.post_deploy_command_timeout,
                    desired,
                    "post-deploy command, once every machine runs the release",
                )
            )
        done = Label(group=APP, values={PHASE: DONE})
        suffix.append(Step(actions=[done], why="record the deployment done"))
    warnings = tuple(
        p.warning
        for _, phases in groups
        for p in phases
        if isinstance(p, Scheduled) and p.warning and p.tasks
    )
    return Blueprint(
        strategy=strategy.name,
        summary=summary,
        prefix=tuple(prefix),
        groups=tuple(groups),
        suffix=tuple(suffix),
        warnings=warnings,
    )


def _command_step(phase: str, command: str, timeout: float, desired: Desired, why: str) -> Step:
    """A release or post-deploy command, run in a machine of the first group's release."""
    release = desired.groups[0].release if desired.groups else None
    run = RunCommand(
        group=APP,
        phase=phase,
        command=command,
        target=target_of(desired),
        timeout=timeout,
        release=release,
    )
    return Step(actions=[run], why=why)


def start_record(state: FleetState, desired: Desired, strategy: Strategy) -> dict[str, str]:
    """What the deployment's first label writes: its target, shape and starting versions."""
    values = {TARGET: target_of(desired), PHASE: DEPLOYING, STRATEGY: strategy.name}
    for spec in desired.groups:
        values[desired_key(spec.name)] = encode_regions(spec.regions)
        counts: dict[str, int] = {}
        shape: dict[str, int] = {}
        for m in state.machines:
            if m.live and m.group == spec.name:
                counts[m.version] = counts.get(m.version, 0) + 1
                shape[m.region] = shape.get(m.region, 0) + 1
        if shape:
            # the shape it started from: what a rollback restores
            values[start_key(spec.name)] = encode_regions(shape)
        if counts:
            # the version most of the group runs: what a rollback goes back to
            values[from_key(spec.name)] = max(sorted(counts), key=lambda v: counts[v])
    return values


#: A plan creates at most this many machines, or ten per machine the fleet has.
MIN_CREATE_LIMIT = 1_000
CREATE_FACTOR = 10


def create_limit(state: FleetState) -> int:
    """The most machines a plan from ``state`` may create (docs/limits.md)."""
    return max(MIN_CREATE_LIMIT, CREATE_FACTOR * len(state.live))


def _validate_counts(state: FleetState, desired: Desired, strategy: Strategy) -> None:
    """Refuse counts no plan should be laid out for (docs/limits.md): more than
    ``MAX_GROUP_MACHINES`` in a group, or more new machines than ``create_limit``.
    A plan's size grows with these counts: without a limit, a typo (``machines =
    1000000``) or a damaged record (``desired.app = "ord:1000000000"``) would plan
    until memory runs out. The record's own shapes are checked as they are decoded."""
    for g in desired.groups:
        if g.count > MAX_GROUP_MACHINES:
            raise InvalidConfig(
                f"at most {MAX_GROUP_MACHINES} machines per group", field=f"groups.{g.name}"
            )
    canaries = 0
    if isinstance(strategy, Canary):
        if strategy.canary_machines > MAX_GROUP_MACHINES:
            raise InvalidConfig(
                f"at most {MAX_GROUP_MACHINES} canary machines", field="canary_steps.machines"
            )
        canaries = strategy.canary_machines * len(desired.groups)
    # every desired machine may be new (bluegreen's greens, a rolling surge), plus canaries
    new = sum(g.count for g in desired.groups) + canaries
    limit = create_limit(state)
    if new > limit:
        field = "canary_steps.machines" if canaries and new - canaries <= limit else "groups"
        raise InvalidConfig(
            f"a plan may create at most {limit} machines (the larger of "
            f"{MIN_CREATE_LIMIT} and {CREATE_FACTOR} per live machine); this one "
            f"could create {new}",
            field=field,
        )


def _validate(state: FleetState, desired: Desired, strategy: Strategy) -> None:
    if isinstance(strategy, BlueGreen | Canary):
        for spec in desired.groups:
            if spec.release.mounts:
                raise PlanningImpossible(
                    f"the {strategy.name} strategy cannot be used with volumes: group "
                    f"{describe(spec.name)} mounts {describe(spec.release.mounts[0].source)}, "
                    f"and a new machine cannot take a volume its old machine holds; use "
                    f"strategy 'rolling', "
                    f"which updates machines with volumes in place"
                )
        for m in state.machines:
            if m.live and m.volume and desired.group(m.group) is not None:
                raise PlanningImpossible(
                    f"the {strategy.name} strategy cannot be used with volumes: machine {m.id} "
                    f"holds volume {m.volume}; use strategy 'rolling', which updates machines "
                    f"with volumes in place"
                )
    if isinstance(strategy, BlueGreen):
        for spec in desired.groups:
            if not spec.release.checks and spec.count:
                raise InvalidConfig(
                    f"the bluegreen strategy needs at least one health check for group "
                    f"{describe(spec.name)} to know when greens are ready; add [checks.<name>] or "
                    f"[[http_service.checks]] to fly.toml, or use strategy 'rolling'",
                    field="checks",
                )


def _wave_order(state: FleetState, desired: Desired, strategy: Strategy) -> tuple[str, ...]:
    waves = strategy.region_waves
    if waves is False:
        return ()
    regions = {m.region for m in state.machines if m.live}
    for spec in desired.groups:
        regions.update(spec.regions)
    first = tuple(waves) if isinstance(waves, tuple) else ()
    return first + tuple(sorted(regions - set(first)))


def _remove_group(name: str, machines: list[Machine], strategy: Strategy) -> Scheduled:
    """Machines of a group that is no longer desired are retired."""
    ctx = GroupContext(
        spec=GroupSpec(name=name, release=Release(version=machines[0].version), regions={}),
        machines=tuple(machines),
        strategy=strategy,
        record=FrozenMap(),
        used_keys=frozenset(),
        waves=(),
    )
    tasks = []
    for m in machines:
        ensure_no_volume(m, name)
        tasks.append(Task(retire_elements(ctx, m), frees_slot=True))
    budget = attrs.evolve(Budget.unbounded(name), live=len(machines))
    return Scheduled(tuple(tasks), budget, f"{name}: no longer desired; retire its machines")


def _merge(per_group: list[list[Element]]) -> list[Step]:
    depth = max((len(g) for g in per_group), default=0)
    steps = []
    for i in range(depth):
        parts = [g[i] for g in per_group if i < len(g)]
        steps.append(
            Step(
                actions=[a for p in parts for a in p.actions],
                waits=_merge_pauses([w for p in parts for w in p.waits]),
                why="; ".join(p.why or "" for p in parts),
            )
        )
    return steps


def _merge_pauses(waits: list[Action]) -> list[Action]:
    out: list[Action] = []
    seen: set[Pause] = set()
    for w in waits:
        if isinstance(w, Pause):
            if w in seen:
                continue
            seen.add(w)
        out.append(w)
    return out


def _summary(state: FleetState, desired: Desired, strategy: Strategy) -> str:
    live = state.live
    parts = []
    for spec in desired.groups:
        have = [m for m in live if m.group == spec.name]
        versions = sorted({m.version for m in have})
        frm = ", ".join(versions) if versions else "nothing"
        parts.append(
            f"{spec.name}: {len(have)} -> {spec.count} machines, {frm} -> {spec.release.version}"
        )
    return "; ".join(parts) if parts else "no process groups"
