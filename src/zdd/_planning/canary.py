"""Canary: prove the release on a few machines first, then promote it by rolling.

flyctl's form (no steps): per group one canary machine is created hidden,
waited healthy, recorded as passed and destroyed; then the group rolls with
``then``. Nothing else is touched until the canary has passed.

Progressive form (steps): each step ensures its number of canary machines are
serving (at its traffic weight), bakes, waits for its gate, and is recorded
(``canary.<group>`` = steps done). Canaries keep serving through the roll: they
count among the group's machines, so the roll retires as many outdated
machines as there are canaries instead of updating them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs

from .._errors import InvalidFleetState, describe
from .._model import Desired, Health, Machine, MachineState
from .._plan import Destroy, Gate, Label, Pause, Uncordon
from .._record import PASSED, RecordView, canary_key, parse_ascii_int
from .._strategies import Canary, Rolling
from ._core import (
    GroupContext,
    create_task,
    is_current,
    recover_elements,
    rollback_options,
    rolling_phase,
)
from ._schedule import GroupStep, Phase, Task, barrier


def _canaries(ctx: GroupContext) -> list[Machine]:
    return [
        m
        for m in ctx.machines
        if m.labels.get("zdd.role") == "canary" and is_current(m, ctx.version)
    ]


def _weight_of(canaries: list[Machine]) -> int | None:
    """The traffic weight the canaries were last given (their ``zdd.weight`` label)."""
    for m in canaries:
        weight = parse_ascii_int(m.labels.get("zdd.weight", ""), max_digits=3)
        if weight is not None:
            return weight
    return None


def _canary_region(ctx: GroupContext) -> str:
    # the region with the most desired machines (ties: wave order, then name)
    return min(ctx.spec.regions, key=lambda r: (-ctx.spec.regions[r], ctx.wave(r), r))


def _barrier(ctx: GroupContext, tasks: list[Task], why: str) -> list[GroupStep]:
    """Run tasks together; each element index becomes one step."""
    steps: list[GroupStep] = []
    depth = max((len(t.elements) for t in tasks), default=0)
    for i in range(depth):
        els = [t.elements[i] for t in tasks if i < len(t.elements)]
        steps.append(
            GroupStep(
                tuple(a for e in els for a in e.actions),
                tuple(w for e in els for w in e.waits),
                why,
            )
        )
    return steps


def plan_group(ctx: GroupContext) -> list[Phase]:
    s = ctx.strategy
    assert isinstance(s, Canary)
    n = ctx.spec.count
    canaries = _canaries(ctx)
    canary_ids = {m.id for m in canaries}
    others = [m for m in ctx.machines if m.id not in canary_ids]
    outdated = [m for m in others if not is_current(m, ctx.version)]
    if not outdated or n == 0:
        # nothing left to prove the release against: finish as a rolling update would
        return [rolling_phase(ctx, s.then, ctx.machines, extra=len(canaries))]
    if not s.steps:
        return _flyctl_form(ctx, canaries, others)
    return _progressive(ctx, canaries)


def _flyctl_form(ctx: GroupContext, canaries: list[Machine], others: list[Machine]) -> list[Phase]:
    s = ctx.strategy
    assert isinstance(s, Canary)
    steps: list[GroupStep] = []
    passed = RecordView(ctx.record).canary(ctx.name) == PASSED
    why = f"{ctx.name}: canary, a smoke test of {ctx.version} before any machine changes"
    if not passed:
        if canaries:
            pre = recover_elements(ctx, canaries[0], release=False)
        else:
            region = _canary_region(ctx)
            key = ctx.new_keys(region, "canary", 1)[0]
            pre = list(create_task(ctx, key, region, "canary", release=False).elements)
            canaries_ids = [key]
        steps += _barrier(ctx, [Task(pre)], why)
        steps.append(
            GroupStep(
                (Label(group=ctx.name, values={canary_key(ctx.name): PASSED}),),
                (),
                f"{ctx.name}: record that the canary passed",
            )
        )
    ids = [m.id for m in canaries] if canaries else (canaries_ids if not passed else [])
    if ids:
        steps.append(
            GroupStep(
                tuple(Destroy(group=ctx.name, machine=i) for i in ids),
                (),
                f"{ctx.name}: destroy the canary",
            )
        )
    return [barrier(ctx.name, steps), rolling_phase(ctx, s.then, others)]


def _progressive(ctx: GroupContext, canaries: list[Machine]) -> list[Phase]:
    s = ctx.strategy
    assert isinstance(s, Canary)
    raw = RecordView(ctx.record).canary(ctx.name) or "0"
    done = parse_ascii_int(raw)
    if done is None or done > len(s.steps):
        raise InvalidFleetState(
            f"{describe(raw)} is not a step count from 0 to {len(s.steps)}; "
            f"the deployment record is damaged",
            field=f"record.{canary_key(ctx.name)}",
        )
    region = _canary_region(ctx)
    have = len(canaries)
    hidden = {m.id for m in canaries if m.cordoned}
    unhealthy = [
        m for m in canaries if not (m.state is MachineState.STARTED and m.health is Health.PASSING)
    ]
    new_keys: list[str] = []
    steps: list[GroupStep] = []
    weight = _weight_of(canaries)
    for k in range(done, len(s.steps)):
        step = s.steps[k]
        label = f"{ctx.name}: canary step {k + 1} of {len(s.steps)}"
        tasks: list[Task] = []
        if k == done:
            tasks += [Task(recover_elements(ctx, m, release=False)) for m in unhealthy]
        machines, step_weight, as_count = step.machines, step.weight, ""
        if step.weight is not None and not ctx.weights:
            # no traffic weights here: the weight becomes a canary machine count (as
            # Argo Rollouts' basic canary does), c / (n + c) of the traffic at least
            n = ctx.spec.count
            share = step.weight / 100
            count = n if share >= 1 else math.ceil(n * share / (1 - share) - 1e-9)
            machines = max(step.machines, min(max(n, 1), count))
            step_weight = None
            as_count = (
                f" ({step.weight}% as {machines} "
                f"{'canary' if machines == 1 else 'canaries'} beside {n}: the provider "
                f"has no traffic weights)"
            )
        missing = machines - have
        if missing > 0:
            keys = ctx.new_keys(region, "canary", len(new_keys) + missing)[len(new_keys) :]
            tasks += [create_task(ctx, key, region, "canary", release=False) for key in keys]
            new_keys += keys
            hidden.update(keys)
            have = machines
        steps += _barrier(
            ctx,
            [t for t in tasks if t.elements],
            f"{label}: {have} {'canary' if have == 1 else 'canaries'} healthy",
        )
        all_ids = [m.id for m in canaries] + new_keys
        reweigh = step_weight != weight
        release = all_ids if reweigh else sorted(hidden, key=all_ids.index)
        weight = step_weight
        if release:
            steps.append(
                GroupStep(
                    tuple(Uncordon(group=ctx.name, machine=i, weight=step_weight) for i in release),
                    (),
                    f"{label}: canaries take traffic"
                    + (f" ({step_weight}%)" if step_weight is not None else as_count),
                )
            )
            hidden.clear()
        if step.bake > 0:
            steps.append(
                GroupStep(
                    (),
                    (
                        Pause(
                            group=ctx.name,
                            duration=step.bake,
                            reason="bake",
                            key=f"{ctx.name}.canary_step_{k + 1}.bake",
                            machines=tuple(all_ids),
                        ),
                    ),
                    f"{label}: bake",
                )
            )
        if step.gate and not RecordView(ctx.record).approved(step.gate):
            steps.append(
                GroupStep(
                    (),
                    (Gate(group=ctx.name, name=step.gate, reason=f"canary step {k + 1}"),),
                    f"{label}: gate",
                )
            )
        steps.append(
            GroupStep(
                (Label(group=ctx.name, values={canary_key(ctx.name): str(k + 1)}),),
                (),
                f"{label}: record it",
            )
        )
    if weight is not None:
        all_ids = [m.id for m in canaries] + new_keys
        steps.append(
            GroupStep(
                tuple(Uncordon(group=ctx.name, machine=i) for i in all_ids),
                (),
                f"{ctx.name}: canaries take a full share of traffic for the promotion",
            )
        )
    # promotion: the canaries serve as part of the group while the rest rolls
    projected = [m for m in ctx.machines if m.id not in {c.id for c in canaries}]
    projected += [
        attrs.evolve(c, state=MachineState.STARTED, health=Health.PASSING, cordoned=False)
        if done < len(s.steps)
        else c
        for c in canaries
    ]
    projected += [
        Machine(
            id=key,
            version=ctx.version,
            group=ctx.name,
            region=region,
            labels={"zdd.role": "canary", "zdd.key": key},
        )
        for key in new_keys
    ]
    return [barrier(ctx.name, steps), rolling_phase(ctx, s.then, projected, extra=have)]


def rollback(strategy: Canary) -> Rolling:
    """The canaries serve: retire them first and replace what was updated, with the
    floor at ``desired`` (a surge as large as the canaries)."""
    return Rolling(
        max_unavailable=0, max_surge=max(1, strategy.canary_machines), **rollback_options(strategy)
    )


def can_roll_back(strategy: Canary, record: Mapping[str, str], desired: Desired) -> bool:
    return strategy.auto_rollback
