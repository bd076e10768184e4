"""Immediate: every machine at once, no health waits. Nothing is promised."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from .._model import Desired, MachineState
from .._plan import Action, Create, Destroy, Start, Uncordon, Update
from .._strategies import Immediate
from ._core import GroupContext, by_region, ensure_no_volume, is_current, pick_excess, protects
from ._schedule import Budget, Element, Phase, Scheduled, Task


def plan_group(ctx: GroupContext) -> list[Phase]:
    tasks: list[Task] = []
    restarts = 0  # serving machines updated or destroyed
    regions = by_region(ctx.machines)
    for region in sorted(set(regions) | set(ctx.spec.regions)):
        here = regions.get(region, [])
        want = ctx.spec.regions.get(region, 0)
        excess = len(here) - want
        retired = {m.id for m in pick_excess(ctx, here, excess, region)} if excess > 0 else set()
        for m in here:
            actions: list[Action] = []
            if m.id in retired:
                ensure_no_volume(m, ctx.name)
                actions.append(Destroy(group=ctx.name, machine=m.id))
                restarts += m.presumed_serving
            elif not is_current(m, ctx.version):
                restarts += m.presumed_serving
                actions.append(
                    Update(
                        group=ctx.name,
                        machine=m.id,
                        version=ctx.version,
                        from_version=m.version,
                        release=ctx.spec.release,
                    )
                )
                if m.cordoned:
                    actions.append(Uncordon(group=ctx.name, machine=m.id))
            else:
                if m.state not in (
                    MachineState.STARTED,
                    MachineState.STARTING,
                    MachineState.UPDATING,
                    MachineState.REPLACING,
                ):
                    actions.append(Start(group=ctx.name, machine=m.id))
                if m.cordoned:
                    actions.append(Uncordon(group=ctx.name, machine=m.id))
            if actions:
                tasks.append(Task([Element((a,)) for a in actions]))
        for key in ctx.new_keys(region, "new", max(0, want - len(here))):
            create = Create(
                group=ctx.name,
                region=region,
                version=ctx.version,
                key=key,
                role="new",
                hidden=False,
                release=ctx.spec.release,
            )
            tasks.append(Task([Element((create,))]))
    budget = attrs.evolve(
        Budget.unbounded(ctx.name), desired=ctx.spec.count, live=len(ctx.machines)
    )
    warning = None
    if restarts and protects(ctx):
        warning = (
            f"group {ctx.name!r}: strategy immediate restarts every machine at once, so the "
            f"group may serve nothing while they boot; use strategy rolling with "
            f"max_surge = 1, or bluegreen, for zero downtime (or set allow_downtime = true "
            f"to accept it)"
        )
    return [
        Scheduled(
            tuple(tasks),
            budget,
            f"{ctx.name}: every machine at once (immediate: no waits)",
            warning=warning,
        )
    ]


def rollback(strategy: Immediate) -> None:
    """Immediate promises nothing and has nothing to roll back to safely."""
    return None


def can_roll_back(strategy: Immediate, record: Mapping[str, str], desired: Desired) -> bool:
    return False
