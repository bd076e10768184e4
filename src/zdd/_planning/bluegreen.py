"""Bluegreen: a full set of hidden greens, one switch, then the blues retire.

Phases per group, each decided from the observed state (and the record's
``bluegreen.<group>`` = ``switched`` once the greens took the traffic):

1. create the missing greens hidden from traffic; wait until every green is
   started and healthy;
2. hold for the switch gate, if any;
3. release every green (uncordon), then record the switch;
4. cordon the blues, drain, stop them with their kill signal and timeout,
   keep them stopped for ``keep_blue_for`` if asked, destroy them.

Blues are never touched before the switch is recorded, so a failure before it
only ever costs the greens.
"""

from __future__ import annotations

from collections.abc import Mapping

from .._model import Desired, Machine, MachineState
from .._plan import Cordon, Destroy, Gate, Label, Pause, Uncordon
from .._record import SWITCHED, RecordView, bluegreen_key
from .._strategies import BlueGreen, Rolling
from ._core import (
    RUNNING,
    GroupContext,
    by_region,
    create_task,
    ensure_no_volume,
    group_budget,
    is_current,
    recover_elements,
    rollback_options,
    rolling_tasks,
)
from ._schedule import Element, GroupStep, Phase, Scheduled, Task, barrier


def plan_group(ctx: GroupContext) -> list[Phase]:
    s = ctx.strategy
    assert isinstance(s, BlueGreen)
    n = ctx.spec.count
    blues = [m for m in ctx.machines if not is_current(m, ctx.version)]
    greens = [m for m in ctx.machines if is_current(m, ctx.version)]
    if not blues:
        # nothing to switch from: bring greens up (and create any missing) directly
        # nothing to switch from: reshape the greens, keeping what serves serving
        serving = sum(1 for m in ctx.machines if m.serving)
        return [
            Scheduled(
                tuple(rolling_tasks(ctx, ctx.machines, surge_mode=True)),
                group_budget(ctx, ctx.machines, floor=min(n, serving), ceiling=2 * n),
            )
        ]
    for m in blues:
        ensure_no_volume(m, ctx.name)
    steps: list[GroupStep] = []
    switched = RecordView(ctx.record).switched(ctx.name)
    green_ids = [m.id for m in greens]
    extra: list[Machine] = []
    if not switched:
        # 1. greens: create the missing ones, retire extras, wait for all to be healthy
        tasks: list[Task] = []
        regions = by_region(greens)
        for region in sorted(set(regions) | set(ctx.spec.regions)):
            here = regions.get(region, [])
            want = ctx.spec.regions.get(region, 0)
            for m in here[want:]:
                ensure_no_volume(m, ctx.name)
                green_ids.remove(m.id)
                if m.serving:
                    extra.append(m)  # it serves: it goes with the blues, after the switch
                else:
                    tasks.append(Task([Element((Destroy(group=ctx.name, machine=m.id),))]))
            for m in here[:want]:
                els = recover_elements(ctx, m, release=False)
                if els:
                    tasks.append(Task(els))
            for key in ctx.new_keys(region, "green", max(0, want - len(here))):
                tasks.append(create_task(ctx, key, region, "green", release=False))
                green_ids.append(key)
        if tasks:
            steps.append(
                GroupStep(
                    tuple(a for t in tasks for a in t.elements[0].actions),
                    tuple(w for t in tasks for w in t.elements[0].waits),
                    f"{ctx.name}: greens start hidden from traffic; blues keep serving",
                )
            )
        # 2. the switch gate
        if s.switch_gate and not RecordView(ctx.record).approved(s.switch_gate):
            steps.append(
                GroupStep(
                    (),
                    (Gate(group=ctx.name, name=s.switch_gate, reason="hold the switch"),),
                    f"{ctx.name}: every green healthy; switch held for gate {s.switch_gate!r}",
                )
            )
        # 3. release the greens, then record the switch
        cordoned = {m.id: m.cordoned for m in greens}
        hidden = [g for g in green_ids if cordoned.get(g, True)]
        if hidden:
            steps.append(
                GroupStep(
                    tuple(Uncordon(group=ctx.name, machine=g) for g in hidden),
                    (),
                    f"{ctx.name}: switch: release {_n(len(hidden), 'green')} to traffic",
                )
            )
        steps.append(
            GroupStep(
                (Label(group=ctx.name, values={bluegreen_key(ctx.name): SWITCHED}),),
                (
                    Pause(
                        group=ctx.name,
                        duration=s.drain_delay,
                        reason="let the proxy learn the greens before the blues go",
                        key=f"{ctx.name}.switch",
                    ),
                )
                if s.drain_delay > 0
                else (),
                f"{ctx.name}: record the switch",
            )
        )
    else:
        regions = by_region(greens)
        for region, here in regions.items():
            extra.extend(here[ctx.spec.regions.get(region, 0) :])
        # every green serves before the blues go: release the hidden ones, and repair
        # any that went down since the switch (started again, waited healthy)
        repairs = [recover_elements(ctx, m) for m in greens if m not in extra]
        depth = max((len(r) for r in repairs), default=0)
        for i in range(depth):
            els = [r[i] for r in repairs if i < len(r)]
            steps.append(
                GroupStep(
                    tuple(a for e in els for a in e.actions),
                    tuple(w for e in els for w in e.waits),
                    f"{ctx.name}: release the greens before the blues go",
                )
            )
    # 4. retire the blues (and any green beyond the desired shape)
    blues = blues + extra
    running_blues = [m for m in blues if m.state in RUNNING or m.state is MachineState.UPDATING]
    to_cordon = [m for m in running_blues if not m.cordoned]
    if to_cordon:
        steps.append(
            GroupStep(
                tuple(Cordon(group=ctx.name, machine=m.id) for m in to_cordon),
                (),
                f"{ctx.name}: greens serve; cordon {_n(len(to_cordon), 'blue')}",
            )
        )
    if running_blues:
        steps.append(
            GroupStep(
                tuple(ctx.stop(m.id, drained=True) for m in running_blues),
                (),
                f"{ctx.name}: stop the blues once drained",
            )
        )
    if s.keep_blue_for > 0:
        steps.append(
            GroupStep(
                (),
                (
                    Pause(
                        group=ctx.name,
                        duration=s.keep_blue_for,
                        reason="keep blues for a fast way back",
                        key=f"{ctx.name}.keep_blues",
                        machines=tuple(m.id for m in blues),
                    ),
                ),
                f"{ctx.name}: keep the stopped blues for a while",
            )
        )
    steps.append(
        GroupStep(
            tuple(Destroy(group=ctx.name, machine=m.id) for m in blues),
            (),
            f"{ctx.name}: destroy {_n(len(blues), 'blue')}",
        )
    )
    return [barrier(ctx.name, steps, floor=n)]


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def rollback(strategy: BlueGreen) -> Rolling:
    """Before the switch the greens are hidden and the blues untouched: destroy the
    greens, floor at ``desired``."""
    return Rolling(max_unavailable=0, max_surge=1, **rollback_options(strategy))


def can_roll_back(strategy: BlueGreen, record: Mapping[str, str], desired: Desired) -> bool:
    """Only before the switch: after it the greens serve, and going back would be a
    new deployment."""
    view = RecordView(record)
    return strategy.auto_rollback and not any(view.switched(g.name) for g in desired.groups)
