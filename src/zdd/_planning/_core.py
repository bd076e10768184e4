"""Building blocks the strategy planners share: contexts, pipelines, keepers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from .._errors import PlanningImpossible
from .._model import FrozenMap, GroupSpec, Health, Machine, MachineState, natural_key
from .._plan import (
    Cordon,
    Create,
    Destroy,
    Start,
    Stop,
    Uncordon,
    Update,
    WaitHealthy,
)
from .._strategies import Rolling, Strategy
from ._schedule import Budget, Element, Scheduled, Task

RUNNING = frozenset({MachineState.STARTED, MachineState.STARTING})
IN_FLIGHT = frozenset({MachineState.STARTING, MachineState.UPDATING, MachineState.REPLACING})


@attrs.frozen
class GroupContext:
    """Everything a group planner needs, all of it read-only."""

    spec: GroupSpec
    machines: tuple[Machine, ...]  # live machines of this group, sorted by id
    strategy: Strategy
    record: FrozenMap[str]
    used_keys: frozenset[str]
    waves: tuple[str, ...]  # region order when region waves are on, else ()
    weights: bool = True  # the provider applies traffic weights
    # derived once: the hot paths read these for every machine
    name: str = attrs.field(init=False)
    version: str = attrs.field(init=False)
    drain: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "name", self.spec.name)
        object.__setattr__(self, "version", self.spec.release.version)
        object.__setattr__(self, "drain", self.strategy.drain_delay)

    def wave(self, region: str) -> int:
        if not self.waves:
            return 0
        try:
            return self.waves.index(region)
        except ValueError:
            return len(self.waves)

    # -- action builders -------------------------------------------------

    def wait(self, machine: str) -> WaitHealthy:
        return WaitHealthy(
            group=self.name,
            machine=machine,
            timeout=self.strategy.wait_timeout,
            min_healthy_time=self.strategy.min_healthy_time,
        )

    def stop(self, machine: str, *, drained: bool) -> Stop:
        """Stop ``machine``; ``drained``: it was cordoned to drain (wait the drain delay)."""
        rel = self.spec.release
        return Stop(
            group=self.name,
            machine=machine,
            signal=rel.kill_signal,
            timeout=rel.kill_timeout,
            drain=self.drain if drained else 0.0,
        )

    def new_keys(self, region: str, role: str, count: int) -> list[str]:
        """``count`` unused idempotency keys for machines created in ``region``."""
        keys: list[str] = []
        n = 0
        while len(keys) < count:
            n += 1
            key = f"{self.version}-{self.name}-{role}-{region}-{n}"
            if key not in self.used_keys:
                keys.append(key)
        return keys

    def create(self, key: str, region: str, role: str) -> Create:
        return Create(
            group=self.name,
            region=region,
            version=self.version,
            key=key,
            role=role,
            hidden=True,
            release=self.spec.release,
        )


def is_current(m: Machine, version: str) -> bool:
    return m.version == version


def healthy(m: Machine) -> bool:
    return m.state is MachineState.STARTED and m.health is Health.PASSING


def ensure_no_volume(m: Machine, group: str) -> None:
    if m.volume:
        raise PlanningImpossible(
            f"group {group!r}: machine {m.id} holds volume {m.volume} and would have to be "
            f"destroyed; zdd never destroys a machine with a volume"
        )


def recover_elements(ctx: GroupContext, m: Machine, *, release: bool = True) -> list[Element]:
    """Bring a current-version machine to serving (or healthy and hidden)."""
    els: list[Element] = []
    if m.state in IN_FLIGHT or m.state is MachineState.STARTED:
        if not healthy(m):
            els.append(Element((), (ctx.wait(m.id),)))
    else:  # created, stopped, suspended, failed, stopping
        els.append(Element((Start(group=ctx.name, machine=m.id),), (ctx.wait(m.id),)))
    if release and m.cordoned:
        els.append(Element((Uncordon(group=ctx.name, machine=m.id),)))
    return els


def _take_out(ctx: GroupContext, m: Machine, serving: bool, els: list[Element]) -> bool:
    """Cordon a serving machine; true when the next action must wait out the drain."""
    if serving:
        els.append(Element((Cordon(group=ctx.name, machine=m.id),)))
        return True
    return m.cordoned and m.state in RUNNING


def in_place_task(ctx: GroupContext, m: Machine) -> Task:
    """Update an outdated machine where it stands (volumes stay attached)."""
    g = ctx.name
    serving = m.presumed_serving
    els: list[Element] = []
    drained = _take_out(ctx, m, serving, els)
    update = Update(
        group=g,
        machine=m.id,
        version=ctx.version,
        from_version=m.version,
        drain=ctx.drain if drained else 0.0,
        release=ctx.spec.release,
    )
    els.append(Element((update,), (ctx.wait(m.id),)))
    if serving or m.cordoned:
        els.append(Element((Uncordon(group=g, machine=m.id),)))
    return Task(els, wave=ctx.wave(m.region), needs_room=serving, cost=_cost(m), gain=1)


def _cost(m: Machine) -> int:
    """Room taking ``m`` out costs: 1 when it counts as serving, 0 when it is only
    presumed to (no check result yet)."""
    return 1 if m.serving else 0


def retire_elements(ctx: GroupContext, m: Machine, serving: bool | None = None) -> list[Element]:
    """Cordon, drain, stop and destroy a machine (never one with a volume)."""
    ensure_no_volume(m, ctx.name)
    els: list[Element] = []
    drained = _take_out(ctx, m, m.presumed_serving if serving is None else serving, els)
    if m.state in RUNNING or m.state is MachineState.UPDATING:
        els.append(Element((ctx.stop(m.id, drained=drained),)))
    els.append(Element((Destroy(group=ctx.name, machine=m.id),)))
    return els


def retire_task(ctx: GroupContext, m: Machine) -> Task:
    serving = m.presumed_serving
    return Task(
        retire_elements(ctx, m, serving),
        wave=ctx.wave(m.region),
        needs_room=serving,
        cost=_cost(m),
        frees_slot=True,
    )


def create_task(
    ctx: GroupContext, key: str, region: str, role: str, *, release: bool = True
) -> Task:
    els = [Element((ctx.create(key, region, role),), (ctx.wait(key),))]
    if release:
        els.append(Element((Uncordon(group=ctx.name, machine=key),)))
    return Task(els, wave=ctx.wave(region), needs_slot=True, gain=1 if release else 0)


def by_region(machines: Iterable[Machine]) -> dict[str, list[Machine]]:
    out: dict[str, list[Machine]] = {}
    for m in machines:
        out.setdefault(m.region, []).append(m)
    return out


def pick_excess(
    ctx: GroupContext, keepers: list[Machine], excess: int, region: str
) -> list[Machine]:
    """Choose ``excess`` machines to retire (never one with a volume)."""
    candidates = [m for m in keepers if not m.volume]
    if len(candidates) < excess:
        raise PlanningImpossible(
            f"group {ctx.name!r}, region {region}: {excess} machine(s) too many, but only "
            f"{len(candidates)} can be destroyed (the others hold volumes); zdd never destroys "
            f"a machine with a volume. Scale the volume machines down by hand, or keep the count"
        )
    candidates.sort(key=lambda m: natural_key(m.id), reverse=True)
    # outdated first, then the deployment's own machines (a rollback removes what it
    # created), then those not serving
    candidates.sort(key=lambda m: (m.version == ctx.version, "zdd.key" not in m.labels, m.serving))
    return candidates[:excess]


def rolling_tasks(
    ctx: GroupContext,
    machines: Sequence[Machine],
    *,
    surge_mode: bool,
) -> list[Task]:
    """The tasks that take ``machines`` to the group's desired shape on its release.

    In surge mode, outdated machines without volumes are replaced (create, then
    retire); otherwise every outdated machine is updated in place.
    """
    tasks: list[Task] = []
    regions = by_region(machines)
    all_regions = sorted(set(regions) | set(ctx.spec.regions), key=lambda r: (ctx.wave(r), r))
    creates: list[Task] = []
    for region in all_regions:
        here = regions.get(region, [])
        want = ctx.spec.regions.get(region, 0)
        keepers = [m for m in here if is_current(m, ctx.version) or not surge_mode or m.volume]
        kept = {m.id for m in keepers}
        excess = len(keepers) - want
        retirees = pick_excess(ctx, keepers, excess, region) if excess > 0 else []
        retired = {m.id for m in retirees}
        for m in here:
            if m.id in retired or m.id not in kept:
                tasks.append(retire_task(ctx, m))
            elif is_current(m, ctx.version):
                els = recover_elements(ctx, m)
                if els:
                    tasks.append(Task(els, wave=ctx.wave(region), gain=1))
            else:
                tasks.append(in_place_task(ctx, m))
        need = want - (len(keepers) - len(retirees))
        for key in ctx.new_keys(region, "surge" if surge_mode else "new", max(0, need)):
            creates.append(create_task(ctx, key, region, "surge" if surge_mode else "new"))
    # creates first within a wave: they add capacity that lets retirements go ahead
    return creates + tasks


def group_budget(
    ctx: GroupContext, machines: Sequence[Machine], *, floor: int, ceiling: int
) -> Budget:
    return Budget(
        group=ctx.name,
        desired=ctx.spec.count,
        floor=floor,
        ceiling=ceiling,
        serving=sum(1 for m in machines if m.serving),
        live=len(machines),
    )


@attrs.frozen
class Limits:
    """A rolling phase's budget for one group, with zdd's never-zero rule applied.

    Attributes:
        floor: serving machines the phase keeps.
        ceiling: live machines it may have.
        surge_mode: replace outdated machines (create, then retire) rather than
            update them in place.
        borrowed: a surge machine was borrowed so that the group never reaches zero.
        note: what the plan's reason says about these limits ("" for none).
        warning: why the group may reach zero serving machines (``None``: it won't).
    """

    floor: int
    ceiling: int
    surge_mode: bool
    borrowed: bool = False
    note: str = ""
    warning: str | None = None


_ROLLBACK_KEEPS = ("wait_timeout", "min_healthy_time", "drain_delay", "region_waves")


def rollback_options(strategy: Strategy) -> dict[str, Any]:
    """The options a rollback keeps from the deployment it takes back."""
    kept = {k: getattr(strategy, k) for k in _ROLLBACK_KEEPS}
    kept["allow_downtime"] = strategy.allow_downtime
    return kept


def protects(ctx: GroupContext) -> bool:
    """The never-zero rule applies: the group serves traffic, is desired, and the
    strategy does not allow downtime."""
    return (
        ctx.spec.release.serves_traffic and ctx.spec.count >= 1 and not ctx.strategy.allow_downtime
    )


def _surplus(ctx: GroupContext, machines: Sequence[Machine]) -> bool:
    """A serving machine of the release is in a region that wants fewer (a region move):
    it must go, like an outdated one."""
    here: dict[str, int] = {}
    for m in machines:
        if m.live and m.presumed_serving and is_current(m, ctx.version):
            here[m.region] = here.get(m.region, 0) + 1
    return any(n > ctx.spec.regions.get(r, 0) for r, n in here.items())


def rolling_limits(
    ctx: GroupContext, rolling: Rolling, machines: Sequence[Machine], *, extra: int = 0
) -> Limits:
    """The floor and ceiling of a rolling phase over ``machines`` (``extra``: live
    machines the ceiling allows beyond the surge, such as canaries).

    The floor is ``desired - max_unavailable``, but never below 1 for a group
    that serves traffic (:func:`protects`). Where the unavailability budget
    alone would take a one-machine group to zero, one surge machine is
    borrowed: created hidden, waited healthy and released before the old
    machine goes. A one-machine group whose machine holds a volume must be
    updated in place: zero downtime is impossible there, and ``warning`` says
    so (the fix is a second machine).
    """
    n = ctx.spec.count
    outdated = [m for m in machines if not is_current(m, ctx.version)]
    in_place = any(m.volume for m in outdated)
    mu = rolling.unavailable_budget(n, in_place=in_place)
    surge = rolling.surge_budget(n)
    floor = n - mu
    borrowed = False
    note = ""
    warning = None
    if protects(ctx) and floor < 1:
        bound = [m for m in outdated if m.volume and m.presumed_serving]
        if n >= 2:
            floor = 1
            note = "floor raised to 1: a serving group never reaches zero"
        elif bound:
            m = bound[0]
            warning = (
                f"group {ctx.name!r}: its only serving machine {m.id} holds volume "
                f"{m.volume} and must be updated in place, so the group serves nothing "
                f"while it restarts; add a second machine to the group for zero downtime "
                f"(or set allow_downtime = true to accept it)"
            )
        else:
            floor = 1
            if surge < 1 and (any(m.presumed_serving for m in outdated) or _surplus(ctx, machines)):
                surge = 1
                borrowed = True
                note = "1 surge machine borrowed so that the group never reaches zero"
    return Limits(
        floor=floor,
        ceiling=n + max(surge, extra),
        surge_mode=surge > 0,
        borrowed=borrowed,
        note=note,
        warning=warning,
    )


def rolling_phase(
    ctx: GroupContext,
    rolling: Rolling,
    machines: Sequence[Machine],
    *,
    extra: int = 0,
) -> Scheduled:
    """The rolling phase that takes ``machines`` to the group's desired shape."""
    limits = rolling_limits(ctx, rolling, machines, extra=extra)
    tasks = rolling_tasks(ctx, machines, surge_mode=limits.surge_mode)
    note = limits.note
    if limits.borrowed and not any(t.needs_slot for t in tasks):
        note = ""  # nothing is created after all (a canary takes the new machine's place)
    budget = group_budget(ctx, machines, floor=limits.floor, ceiling=limits.ceiling)
    return Scheduled(tuple(tasks), attrs.evolve(budget, note=note), warning=limits.warning)
