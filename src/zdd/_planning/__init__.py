"""The planners: pure functions from (state, desired, strategy) to a plan.

No I/O, no clock, no randomness, no logging here (a test enforces it): a
planner reads only its arguments, so the same call previews a whole deployment
from the starting state and decides the next step from any observed state in
the middle of one.
"""

from __future__ import annotations

from collections.abc import Callable

from .._config import BlueGreen, Canary, Immediate, Rolling, Strategy
from .._errors import InvalidConfig, InvalidFleetState, PlanningImpossible
from .._model import Desired, FleetState, FrozenMap, GroupSpec, Machine, Release, encode_regions
from .._plan import APP, Action, Label, Pause, Plan, RunCommand, Step
from . import bluegreen, canary, immediate, rolling
from ._core import GroupContext, ensure_no_volume, retire_elements
from ._schedule import Budget, GroupStep, Task, schedule

__all__ = ["plan", "target_of"]

_PLANNERS: dict[type, Callable[[GroupContext], list[GroupStep]]] = {
    Immediate: immediate.plan_group,
    Rolling: rolling.plan_group,
    BlueGreen: bluegreen.plan_group,
    Canary: canary.plan_group,
}


def target_of(desired: Desired) -> str:
    """The deployment's identity in the record: ``group=version`` pairs."""
    return ",".join(f"{g.name}={g.release.version}" for g in desired.groups)


def plan(state: FleetState, desired: Desired, strategy: Strategy) -> Plan:
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
    if not isinstance(state, FleetState):
        raise InvalidFleetState(f"expected a FleetState, got {type(state).__name__}")
    if not isinstance(desired, Desired):
        raise InvalidConfig(f"expected a Desired, got {type(desired).__name__}", field="desired")
    planner = _PLANNERS.get(type(strategy))
    if planner is None:
        raise InvalidConfig(
            f"expected Immediate, Rolling, BlueGreen or Canary, got {type(strategy).__name__}",
            field="strategy",
        )
    _validate(state, desired, strategy)
    target = target_of(desired)
    in_progress = state.record.get("phase") == "deploying" and state.record.get("target") == target
    record = state.record if in_progress else FrozenMap[str]()
    waves = _wave_order(state, desired, strategy)
    used_keys = frozenset(m.labels["zdd.key"] for m in state.machines if "zdd.key" in m.labels)
    by_group: dict[str, list[Machine]] = {}
    for m in state.machines:
        if m.live:
            by_group.setdefault(m.group, []).append(m)
    per_group: list[list[GroupStep]] = []
    for spec in desired.groups:
        ctx = GroupContext(
            spec=spec,
            machines=tuple(by_group.pop(spec.name, ())),
            strategy=strategy,
            record=record,
            used_keys=used_keys,
            waves=waves,
        )
        per_group.append(planner(ctx))
    for name, machines in sorted(by_group.items()):
        per_group.append(_remove_group(name, machines, strategy))
    machine_steps = _merge(per_group)
    summary = _summary(state, desired, strategy)
    if not machine_steps and not in_progress:
        return Plan(strategy=strategy.name, steps=(), summary=summary)
    steps: list[Step] = []
    if not in_progress:
        if strategy.release_command:
            steps.append(
                Step(
                    actions=[
                        RunCommand(
                            group=APP,
                            phase="release",
                            command=strategy.release_command,
                            version=target,
                            timeout=strategy.release_command_timeout,
                        )
                    ],
                    why="release command, before any machine changes (a failure stops here)",
                )
            )
        values = {"target": target, "phase": "deploying", "strategy": strategy.name}
        for spec in desired.groups:
            values[f"desired.{spec.name}"] = encode_regions(spec.regions)
        steps.append(
            Step(
                actions=[Label(group=APP, values=values)],
                why="record the deployment (what a resumed executor reads back)",
            )
        )
    steps.extend(machine_steps)
    if strategy.post_deploy_command:
        steps.append(
            Step(
                actions=[
                    RunCommand(
                        group=APP,
                        phase="post_deploy",
                        command=strategy.post_deploy_command,
                        version=target,
                        timeout=strategy.post_deploy_command_timeout,
                    )
                ],
                why="post-deploy command, once every machine runs the release",
            )
        )
    steps.append(
        Step(actions=[Label(group=APP, values={"phase": "done"})], why="record the deployment done")
    )
    return Plan(strategy=strategy.name, steps=steps, summary=summary)


def _validate(state: FleetState, desired: Desired, strategy: Strategy) -> None:
    if isinstance(strategy, BlueGreen | Canary):
        for spec in desired.groups:
            if spec.release.mounts:
                raise PlanningImpossible(
                    f"the {strategy.name} strategy cannot be used with volumes: group "
                    f"{spec.name!r} mounts {spec.release.mounts[0].source!r}, and a new machine "
                    f"cannot take a volume its old machine holds; use strategy 'rolling', "
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
                    f"{spec.name!r} to know when greens are ready; add [checks.<name>] or "
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


def _remove_group(name: str, machines: list[Machine], strategy: Strategy) -> list[GroupStep]:
    """Machines of a group that is no longer desired are retired."""
    tasks: list[Task] = []
    ctx = GroupContext(
        spec=GroupSpec(name=name, release=Release(version=machines[0].version), regions={}),
        machines=tuple(machines),
        strategy=strategy,
        record=FrozenMap(),
        used_keys=frozenset(),
        waves=(),
    )
    for m in machines:
        ensure_no_volume(m, name)
        tasks.append(Task(retire_elements(ctx, m), frees_slot=True))
    budget = Budget(
        group=name, desired=0, floor=-(10**12), ceiling=10**12, serving=0, live=len(machines)
    )
    return [
        GroupStep(s.actions, s.waits, f"{name}: no longer desired; retire its machines")
        for s in schedule(tasks, budget)
    ]


def _merge(per_group: list[list[GroupStep]]) -> list[Step]:
    depth = max((len(g) for g in per_group), default=0)
    steps = []
    for i in range(depth):
        parts = [g[i] for g in per_group if i < len(g)]
        steps.append(
            Step(
                actions=[a for p in parts for a in p.actions],
                waits=_merge_pauses([w for p in parts for w in p.waits]),
                why="; ".join(p.why for p in parts),
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
