"""The virtual-clock driver: runs an :class:`~zdd._executor.ExecutorCore` on a simulated fleet."""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs

from .._analysis import MetricGate
from .._errors import DeploymentLocked, InvalidConfig, describe
from .._executor import (
    Abort,
    ActionDone,
    ActionError,
    Begin,
    Commands,
    Event,
    ExecuteOptions,
    ExecutorCore,
    FullObserved,
    GateResult,
    MachineSeen,
    Observed,
    StatefulGateResolver,
    Tick,
)
from .._model import Desired, FleetState, FrozenMap, Health, Machine
from .._strategies import Strategy
from ..providers.simulated import Faults, HealthMode, ReleaseBehaviour, SimulatedFleet, Traffic
from ..reporters import Reporter
from ._report import SimulationReport, TimelinePoint, story

__all__ = ["simulate", "simulate_fleet"]

MAX_TIMELINE = 400

#: The most a simulation takes (docs/limits.md): beyond these the arithmetic of a
#: log-normal boot or of request totals overflows, and nothing real is modelled.
MAX_BOOT_TIME = 24 * 3600.0
MAX_BOOT_SIGMA = 5.0
MAX_RPS = 1_000_000.0
MAX_CAPACITY = 1_000_000.0
MAX_CONNECTIONS = 1_000_000


def _number(value: object, field: str, low: float, high: float) -> None:
    """Refuse ``value`` unless it is a finite number from ``low`` to ``high``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidConfig(f"must be a number, got {type(value).__name__}", field=field)
    finite = isinstance(value, int) or math.isfinite(value)  # no float() of a huge int
    if not (finite and low <= value <= high):
        raise InvalidConfig(f"must be a number from {low:g} to {high:g}", field=field)


def simulate(
    state: FleetState,
    desired: Desired,
    strategy: Strategy,
    *,
    seed: int = 0,
    boot_time: float = 10.0,
    boot_sigma: float = 0.0,
    target_health: HealthMode = "passing",
    flaky_pass: float = 0.7,
    rps: float = 100.0,
    capacity: float | None = None,
    connections: int = 100,
    faults: Faults | None = None,
    options: ExecuteOptions | None = None,
    reporter: Reporter | None = None,
    api_latency: float = 0.2,
    max_time: float = 7 * 24 * 3600.0,
    target_errors: float = 0.0,
    analysis: Mapping[str, MetricGate] | None = None,
) -> SimulationReport:
    """Simulate deploying ``desired`` onto ``state`` with ``strategy``.

    Machines of every release boot in ``boot_time`` seconds (log-normal with
    ``boot_sigma``); the target releases' checks are ``target_health``; the
    releases already running pass. Grace period and check interval come from
    each group's release checks. ``target_errors`` is the share of the target
    releases' requests that fail while their checks pass; ``analysis`` (metric
    gates by name, as fly.toml's ``[deploy.analysis]``) is answered from the
    simulated traffic, other gates by ``options.gates`` (default: all pass).
    Returns a :class:`SimulationReport`.
    """
    _number(boot_time, "boot_time", 0.0, MAX_BOOT_TIME)
    _number(boot_sigma, "boot_sigma", 0.0, MAX_BOOT_SIGMA)
    _number(rps, "rps", 0.0, MAX_RPS)
    if capacity is not None:
        _number(capacity, "capacity", 0.0, MAX_CAPACITY)
        if capacity <= 0:
            raise InvalidConfig("must be above 0 requests a second", field="capacity")
    _number(flaky_pass, "flaky_pass", 0.0, 1.0)
    _number(target_errors, "target_errors", 0.0, 1.0)
    _number(api_latency, "api_latency", 0.0, MAX_BOOT_TIME)
    _number(max_time, "max_time", 0.0, 10 * 365 * 24 * 3600.0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidConfig(f"must be a whole number, got {type(seed).__name__}", field="seed")
    if (
        isinstance(connections, bool)
        or not isinstance(connections, int)
        or not 0 <= connections <= MAX_CONNECTIONS
    ):
        raise InvalidConfig(
            f"must be a whole number from 0 to {MAX_CONNECTIONS}", field="connections"
        )
    if not isinstance(target_health, str) or target_health not in ("passing", "failing", "flaky"):
        raise InvalidConfig(
            f"{describe(target_health)}: use passing, failing or flaky", field="target_health"
        )
    releases: dict[str, ReleaseBehaviour] = {}
    old = ReleaseBehaviour(boot_time=boot_time, boot_sigma=boot_sigma)
    for spec in desired.groups:
        checks = spec.release.checks
        behaviour = ReleaseBehaviour(
            boot_time=boot_time,
            boot_sigma=boot_sigma,
            health=target_health,
            flaky_pass=flaky_pass,
            grace_period=max((c.grace_period for c in checks), default=0.0),
            check_interval=min((c.interval for c in checks), default=5.0),
            has_checks=bool(checks),
            error_rate=float(target_errors),
        )
        releases[spec.release.version] = behaviour
        old = ReleaseBehaviour(
            boot_time=boot_time,
            boot_sigma=boot_sigma,
            grace_period=behaviour.grace_period,
            check_interval=behaviour.check_interval,
            has_checks=behaviour.has_checks,
        )
    if options is None:
        options = ExecuteOptions(gates=_pass_all)
    fleet = SimulatedFleet(
        state,
        releases=releases,
        default=old,
        faults=faults,
        traffic=Traffic(rps=rps, capacity=capacity, connections=connections),
        seed=seed,
        api_latency=api_latency,
    )
    if analysis:
        from ..analysis import MetricGates
        from ._metrics import SimulatedAnalysis

        manual = options.gates
        if isinstance(manual, StatefulGateResolver):
            raise InvalidConfig(
                "give metric gates either as analysis or in options.gates, not both",
                field="analysis",
            )
        resolver = MetricGates(SimulatedAnalysis(analysis, fleet), manual=manual)
        options = attrs.evolve(options, gates=resolver)
    return simulate_fleet(
        fleet, desired, strategy, options=options, reporter=reporter, max_time=max_time
    )


def _pass_all(name: str) -> GateResult:
    """Simulations approve every gate unless told otherwise."""
    return "pass"


class _StepLog(Reporter):
    """Forwards to the user's reporter and keeps the step marks for the report."""

    def __init__(self, inner: Reporter | None, fleet: SimulatedFleet) -> None:
        self.inner = inner or Reporter()
        self.fleet = fleet
        self.steps: list[tuple[float, str]] = []

    def __getattribute__(self, name: str) -> object:
        if name in ("inner", "fleet", "steps", "step_started"):
            return object.__getattribute__(self, name)
        if name.startswith("_"):
            return object.__getattribute__(self, name)
        return getattr(object.__getattribute__(self, "inner"), name)

    def step_started(self, elapsed: float, why: str) -> None:
        self.steps.append((self.fleet.now, why))
        self.inner.step_started(elapsed, why)


def simulate_fleet(
    fleet: SimulatedFleet,
    desired: Desired,
    strategy: Strategy,
    *,
    options: ExecuteOptions | None = None,
    reporter: Reporter | None = None,
    lock_ttl: float = 30.0,
    max_time: float = 7 * 24 * 3600.0,
) -> SimulationReport:
    """Run the executor on ``fleet`` in virtual time (resuming after injected crashes)."""
    fleet.desired_count = {g.name: g.count for g in desired.groups}
    for g in fleet.desired_count:
        fleet.min_serving.setdefault(g, 0)
        fleet.max_live.setdefault(g, 0)
    initial = fleet.observe()
    log = _StepLog(reporter, fleet)
    crash_after = fleet.faults.executor_crash_after
    performed = 0
    actions = 0
    resumed = 0
    generation = 0
    core: ExecutorCore | None = None
    while True:
        generation += 1
        owner = f"zdd-sim-executor-{generation}"
        try:
            fleet.acquire_lock(owner, lock_ttl)
        except DeploymentLocked:
            if generation == 1:
                raise  # someone else's deployment: fail fast, as execute() does
            # our own crashed executor's lock: wait for it to expire, then take over
            assert fleet.lock is not None
            expires = fleet.lock[2]
            while fleet.next_event_at is not None and fleet.next_event_at <= expires:
                fleet.step()
            fleet._advance(expires)
            fleet.acquire_lock(owner, lock_ttl)
        core = ExecutorCore(
            desired, strategy, options=options, reporter=log, capabilities=fleet.capabilities()
        )
        budget = None if crash_after is None or resumed else crash_after - performed
        crashed, n = _run_core(fleet, core, owner, lock_ttl, budget, max_time)
        performed += n
        actions += core.actions
        if not crashed:
            break
        resumed += 1
    assert core is not None and core.result is not None
    end = fleet.now
    fleet.release_lock(owner)
    _settle(fleet, end)
    return _report(fleet, initial, desired, strategy, core, end, resumed, log.steps, actions)


def _run_core(
    fleet: SimulatedFleet,
    core: ExecutorCore,
    owner: str,
    lock_ttl: float,
    budget: int | None,
    max_time: float,
) -> tuple[bool, int]:
    """Drive ``core`` until it finishes; (crashed, actions performed). The driver is a
    loop over the core's one entry point, :meth:`ExecutorCore.handle`: every change
    of every machine is reported the moment it happens (the floor is held against
    what is observed), every action completes on the fleet's virtual clock."""
    alive = [True]
    performed = [0]
    next_tick = [float("inf")]
    last = [Commands()]

    def feed(event: Event) -> None:
        if not alive[0]:
            return
        cmds = core.handle(event)
        last[0] = cmds
        for p in cmds.perform:
            if budget is not None and performed[0] >= budget:
                alive[0] = False  # the executor dies here
                return
            performed[0] += 1
            ref = p.ref

            def done(m: Machine | None, ref: int = ref) -> None:
                feed(ActionDone(fleet.now, ref, m))

            def failed(e: Exception, ref: int = ref) -> None:
                transient = bool(getattr(e, "transient", False))
                feed(ActionError(fleet.now, ref, str(e), transient=transient))

            fleet.perform_async(p.action, done, failed)
        for mid in sorted(cmds.report):
            feed(MachineSeen(fleet.now, mid, fleet.machine(mid)))
        if last[0].full_observe and alive[0]:
            feed(FullObserved(fleet.now, fleet.observe()))
        latest = last[0]
        wake = latest.wake_at
        if (
            wake is not None
            and not latest.finished
            and (wake < next_tick[0] or next_tick[0] <= fleet.now)
        ):
            next_tick[0] = wake
            fleet.schedule(wake, tick)

    def tick() -> None:
        if not last[0].finished:
            feed(Tick(fleet.now))

    def listener(machine_id: str) -> None:
        if not last[0].finished:
            feed(MachineSeen(fleet.now, machine_id, fleet.machine(machine_id)))

    def refresh() -> None:
        if alive[0] and not last[0].finished:
            fleet.acquire_lock(owner, lock_ttl)
            fleet.schedule(fleet.now + lock_ttl / 3, refresh)

    def instructed() -> None:
        if alive[0] and not last[0].finished:
            feed(Observed(fleet.now, fleet.observe()))  # an operator's instruction landed

    fleet.listener = listener
    fleet.instructed = instructed
    feed(Begin(fleet.now, fleet.observe()))
    fleet.schedule(fleet.now + lock_ttl / 3, refresh)
    while alive[0] and not last[0].finished:
        if last[0].interrupt_pending:
            raise KeyboardInterrupt
        if fleet.now > max_time:
            feed(Abort(fleet.now, f"the simulation passed {max_time:g}s of virtual time"))
            break
        if not fleet.step():
            feed(Abort(fleet.now, "nothing left to happen, yet the deployment is not finished"))
            break
    fleet.listener = None
    fleet.instructed = None
    return (not alive[0]), performed[0]


def _settle(fleet: SimulatedFleet, end: float) -> None:
    """Let machines finish booting after the executor ends (immediate deploys end early)."""
    # the slowest boot worth waiting for: four sigmas out on the log-normal
    slowest = max(
        b.boot_time * math.exp(4 * b.boot_sigma) + b.grace_period + 2 * b.check_interval
        for b in (*fleet.releases.values(), fleet.default)
    )
    horizon = end + slowest
    while (
        not _settled(fleet) and fleet.next_event_at is not None and fleet.next_event_at <= horizon
    ):
        fleet.step()


def _settled(fleet: SimulatedFleet) -> bool:
    """Every machine at rest: started and passing, or stopped, failed, destroyed.
    (A release that never passes keeps the settle window to its end.)"""
    return all(
        m.state.value in ("stopped", "failed", "suspended", "destroyed")
        or (m.state.value == "started" and m.health is Health.PASSING)
        for m in fleet.machines.values()
    )


def _shape(state: FleetState) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for m in state.live:
        out.setdefault(m.group, {}).setdefault(m.region, 0)
        out[m.group][m.region] += 1
    return out


def _report(
    fleet: SimulatedFleet,
    initial: FleetState,
    desired: Desired,
    strategy: Strategy,
    core: ExecutorCore,
    end: float,
    resumed: int,
    steps: list[tuple[float, str]],
    actions: int,
) -> SimulationReport:
    final = fleet.observe()
    result = core.result
    assert result is not None
    want = {g.name: {r: n for r, n in g.regions.items() if n} for g in desired.groups}
    want = {g: r for g, r in want.items() if r}
    versions = {g.name: g.release.version for g in desired.groups}
    converged = _shape(final) == want and all(
        m.version == versions.get(m.group) and m.serving for m in final.live
    )
    start_versions = {(m.group, m.version) for m in initial.live}
    rolled_back = (
        result.outcome == "rolled_back"
        and not converged
        and _shape(final) == _shape(initial)
        and {(m.group, m.version) for m in final.live} == start_versions
        and all(m.serving for m in final.live)
    )
    failed = {k: round(v) for k, v in fleet.failed.items()}
    return SimulationReport(
        strategy=strategy.name,
        desired={
            g.name: {"version": g.release.version, "regions": dict(g.regions), "count": g.count}
            for g in desired.groups
        },
        converged=converged,
        rolled_back=rolled_back,
        outcome=result.outcome,
        error=result.error,
        min_serving=fleet.min_serving_total,
        min_serving_by_group=dict(sorted(fleet.min_serving.items())),
        # the groups the deployment keeps (a removed group's end is no outage)
        downtime_by_group={
            g: s
            for g, s in fleet.downtime_until(fleet.now).items()
            if (spec := desired.group(g)) is not None and spec.count
        },
        max_machines=max((p[2] for p in fleet.timeline), default=0),
        max_machines_by_group=dict(sorted(fleet.max_live.items())),
        makespan_s=end,
        surge_machine_seconds=fleet.surge_machine_seconds,
        total_requests=round(fleet.total_requests),
        failed_requests=sum(failed.values()),
        failed_by_cause=failed,
        dropped_connections=round(fleet.dropped_connections),
        actions=actions,
        api_calls=fleet.api_calls,
        resumed=resumed,
        final=tuple((m.id, m.group, m.version, m.state.value) for m in final.machines),
        timeline=_downsample(fleet.timeline),
        steps=tuple(steps),
        **story(fleet, initial, desired, strategy, steps),
    )


def _downsample(
    points: list[tuple[float, int, int, dict[str, int]]],
) -> tuple[TimelinePoint, ...]:
    """At most ``MAX_TIMELINE`` points; each bucket keeps its least-serving point."""
    if len(points) > MAX_TIMELINE:
        size = -(-len(points) // (MAX_TIMELINE // 2))
        kept = []
        for i in range(0, len(points), size):
            bucket = points[i : i + size]
            low = min(bucket, key=lambda p: p[1])
            high = max(bucket, key=lambda p: p[2])
            kept.extend(sorted({id(low): low, id(high): high}.values(), key=lambda p: p[0]))
        kept[-1:] = [points[-1]] if kept[-1] is not points[-1] else kept[-1:]
        points = kept
    return tuple(
        TimelinePoint(t=t, serving=s, machines=n, by_version=FrozenMap(v)) for t, s, n, v in points
    )
