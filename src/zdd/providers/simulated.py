"""The simulated fleet: a discrete-event model of Fly machines on a virtual clock.

It is zdd's embedded default provider: every strategy can be previewed, timed
and stress-tested without a cloud. Everything random comes from one seeded
generator, so a run is reproducible from its seed.

The model:

* **Machines** boot in a time drawn per release (log-normal around a median);
  their checks start after the release's grace period and run every interval;
  a release's health is ``passing``, ``failing`` or ``flaky`` (each check passes
  with a probability). A machine without checks is healthy once started.
* **API calls** take ``api_latency`` seconds and may fail transiently
  (``Faults.api_error_rate``); creates may fail (``create_failure_rate``).
* **Faults**: machines crash at random times (``machine_crashes``); the
  executor may be made to crash after K actions (``executor_crash_after``).
* **Traffic** (:class:`Traffic`): a constant rate of requests over serving
  machines of the traffic group, each taking at most its ``capacity``; requests
  fail when nothing serves, when serving machines are over capacity, or when
  their machine stops while still routed (in flight for ``request_time``).
  Long-lived connections are dropped when their machine stops without having
  been cordoned for ``reconnect_time`` first.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import random
from collections.abc import Callable, Mapping
from typing import Literal

import attrs

from .._errors import ActionFailed, DeploymentLocked, ProviderContractError
from .._model import FleetState, Health, Machine, MachineState
from .._plan import (
    Action,
    Cordon,
    Create,
    Destroy,
    Label,
    RunCommand,
    Start,
    Stop,
    Uncordon,
    Update,
)
from . import Capabilities

__all__ = ["Faults", "ReleaseBehaviour", "SimulatedFleet", "Traffic"]

HealthMode = Literal["passing", "failing", "flaky"]

#: What a machine is doing, as the timeline picture shows it (see :meth:`_M.phase`).
MachinePhase = Literal["booting", "serving", "hidden", "unhealthy", "stopped", "failed"]


@attrs.frozen(kw_only=True)
class ReleaseBehaviour:
    """How machines of one release behave.

    Attributes:
        boot_time: median seconds from start to ``started``.
        boot_sigma: log-normal sigma of boot times (0: always ``boot_time``).
        health: ``passing``, ``failing`` (checks never pass) or ``flaky``.
        flaky_pass: for ``flaky``, the probability that one check passes.
        grace_period: seconds before the first check.
        check_interval: seconds between checks.
        has_checks: false: a started machine is healthy at once.
        error_rate: the share of its requests that fail while its checks pass (a
            release that is healthy but bad); counted per version, so metric
            gates can be answered from the simulated traffic.
    """

    boot_time: float = 10.0
    boot_sigma: float = 0.0
    health: HealthMode = "passing"
    flaky_pass: float = 0.7
    grace_period: float = 1.0
    check_interval: float = 5.0
    has_checks: bool = True
    error_rate: float = 0.0


@attrs.frozen(kw_only=True)
class Faults:
    """Faults to inject.

    Attributes:
        create_failure_rate: probability that a create call fails.
        api_error_rate: probability that any call fails transiently.
        machine_crashes: machines that crash at random during the run.
        crash_window: the crashes happen within this many seconds of the start.
        executor_crash_after: the executor dies after this many actions, then a
            new one resumes once the lock has expired.
        release_command_fails: the release command exits non-zero.
    """

    create_failure_rate: float = 0.0
    api_error_rate: float = 0.0
    machine_crashes: int = 0
    crash_window: float = 120.0
    executor_crash_after: int | None = None
    release_command_fails: bool = False


@attrs.frozen(kw_only=True)
class Traffic:
    """The load the fleet serves while it is deployed.

    Attributes:
        rps: requests per second, spread evenly over serving machines.
        capacity: requests per second one machine can take (``None``: no limit).
        connections: long-lived connections (websockets) held open.
        request_time: seconds a request is in flight.
        reconnect_time: how long a machine must be cordoned before it stops for
            its connections to move away cleanly.
        group: the process group that takes traffic (``None``: ``app`` if the
            fleet has it, else every group).
    """

    rps: float = 100.0
    capacity: float | None = None
    connections: int = 100
    request_time: float = 0.25
    reconnect_time: float = 1.0
    group: str | None = None


@attrs.define(eq=False)
class _M:
    """A simulated machine (mutable; :meth:`freeze` gives the model's value)."""

    id: str
    version: str
    group: str
    region: str
    state: MachineState
    health: Health
    cordoned: bool
    volume: str | None
    labels: dict[str, str]
    gen: int = 0
    cordoned_at: float | None = None
    served: bool = False
    moved: float = 0.0  # connections that left when it was cordoned

    def freeze(self) -> Machine:
        return Machine(
            id=self.id,
            version=self.version,
            group=self.group,
            region=self.region,
            state=self.state,
            health=self.health,
            cordoned=self.cordoned,
            volume=self.volume,
            labels=self.labels,
        )

    @property
    def serving(self) -> bool:
        return (
            self.state is MachineState.STARTED
            and self.health is Health.PASSING
            and not self.cordoned
        )

    @property
    def live(self) -> bool:
        return self.state not in (MachineState.DESTROYED, MachineState.DESTROYING)

    @property
    def phase(self) -> MachinePhase:
        """``serving``; ``booting`` (created, starting, updating, or started with no
        check result yet); ``hidden`` (healthy but cordoned); ``unhealthy`` (started,
        checks critical); ``stopped`` (stopping, stopped, suspended); ``failed``."""
        state = self.state
        if state is MachineState.STARTED:
            if self.health is Health.CRITICAL:
                return "unhealthy"
            if self.health is not Health.PASSING:
                return "booting"
            return "hidden" if self.cordoned else "serving"
        if state is MachineState.FAILED:
            return "failed"
        if state in (MachineState.STOPPING, MachineState.STOPPED, MachineState.SUSPENDED):
            return "stopped"
        return "booting"


class SimulatedFleet:
    """A simulated fleet: the :class:`~zdd.providers.Provider` of the simulator.

    Args:
        state: the starting fleet.
        releases: behaviour per release version (missing ones use ``default``).
        default: behaviour of any other release.
        faults: what goes wrong.
        traffic: the load.
        seed: seeds every random draw.
        api_latency: seconds an API call takes.
        command_time: seconds a release or post-deploy command runs.
    """

    def __init__(
        self,
        state: FleetState,
        *,
        releases: Mapping[str, ReleaseBehaviour] | None = None,
        default: ReleaseBehaviour | None = None,
        faults: Faults | None = None,
        traffic: Traffic | None = None,
        seed: int = 0,
        api_latency: float = 0.2,
        command_time: float = 5.0,
    ) -> None:
        self.releases = dict(releases or {})
        self.default = default or ReleaseBehaviour()
        self.faults = faults or Faults()
        self.traffic = traffic or Traffic()
        self.api_latency = api_latency
        self.command_time = command_time
        self.rng = random.Random(seed)
        self.now = 0.0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._ids = itertools.count(1)
        self.machines: dict[str, _M] = {}
        self.record: dict[str, str] = dict(state.record)
        self.lock: tuple[str, float, float] | None = None  # (owner, since, expires)
        self.listener: Callable[[str], None] | None = None
        #: called when an operator's instruction lands (the driver reports the fleet)
        self.instructed: Callable[[], None] | None = None
        self.api_calls = 0
        # counters kept incrementally (10k machines must stay cheap)
        self.serving: dict[str, int] = {}
        self.live: dict[str, int] = {}
        self.by_version: dict[str, int] = {}
        self.min_serving: dict[str, int] = {}
        self.max_live: dict[str, int] = {}
        self.desired_count: dict[str, int] = {}
        self.surge_machine_seconds = 0.0
        self.total_requests = 0.0
        self.failed: dict[str, float] = {
            "no_serving_machine": 0.0,
            "over_capacity": 0.0,
            "stopped_without_drain": 0.0,
            "machine_crash": 0.0,
        }
        self.dropped_connections = 0.0
        # requests served and failed by each release version (cumulative), for metrics
        self.requests_by_version: dict[str, float] = {}
        self.errors_by_version: dict[str, float] = {}
        self._serving_versions: dict[str, int] = {}
        # seconds with nothing serving, per group that served at the start
        self.downtime: dict[str, float] = {}
        self._zero_since: dict[str, float] = {}  # when such a group's serving hit 0
        self._served_at_start: frozenset[str] = frozenset()
        self.timeline: list[tuple[float, int, int, dict[str, int]]] = []
        # the story of each machine, for the timeline picture: ``(t, phase, version)``
        # at every change (``phase`` None once destroyed), and every action with the
        # instant it was issued
        self.history: dict[str, list[tuple[float, MachinePhase | None, str]]] = {}
        self.performed: list[tuple[float, Action]] = []
        self._last = 0.0
        self._connected = float(self.traffic.connections)
        self._reconnecting = 0.0
        self._serving_history: list[tuple[float, int]] = []
        self.min_serving_total = 0
        self._crashing = False
        groups = {m.group for m in state.machines}
        tg = self.traffic.group
        self._traffic_groups = {tg} if tg else ({"app"} if "app" in groups else None)
        for m in state.machines:
            if m.state is MachineState.DESTROYED:
                continue
            sm = _M(
                id=m.id,
                version=m.version,
                group=m.group,
                region=m.region,
                state=m.state,
                health=m.health,
                cordoned=m.cordoned,
                volume=m.volume,
                labels=dict(m.labels),
                served=m.serving,
            )
            self.machines[m.id] = sm
            self._count(sm, +1)
            self._note_history(sm)
            # machines caught mid-transition finish it
            if m.state in (MachineState.STARTING, MachineState.UPDATING, MachineState.REPLACING):
                self._boot(sm)
            elif m.state is MachineState.STARTED and m.health is not Health.PASSING:
                self._schedule_check(sm, self._behaviour(sm).grace_period)
            elif m.state is MachineState.STOPPING:
                self._after(1.0, sm, functools.partial(self._stopped, sm))
        for g in self.serving:
            self.min_serving[g] = self.serving[g]
            self.max_live[g] = self.live[g]
        self.min_serving_total = sum(self.serving.values())
        self._served_at_start = frozenset(g for g, n in self.serving.items() if n > 0)
        self._serving_history.append((-1e9, self._traffic_serving()))
        self._sample()
        for _ in range(self.faults.machine_crashes):
            at = self.rng.uniform(0, self.faults.crash_window)
            self.schedule(at, self._crash_random)

    # -- the event engine ------------------------------------------------------

    def schedule(self, at: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` at virtual time ``at``."""
        heapq.heappush(self._events, (max(at, self.now), next(self._seq), fn))

    def _after(self, delay: float, m: _M, fn: Callable[[], None]) -> None:
        gen = m.gen

        def guarded() -> None:
            if m.gen == gen:
                fn()

        self.schedule(self.now + delay, guarded)

    def step(self) -> bool:
        """Run the next event; false when there is none."""
        if not self._events:
            return False
        at, _, fn = heapq.heappop(self._events)
        self._advance(at)
        fn()
        return True

    @property
    def next_event_at(self) -> float | None:
        return self._events[0][0] if self._events else None

    def _advance(self, at: float) -> None:
        """Move the clock, integrating traffic and surge over the elapsed time."""
        dt = at - self._last
        if dt > 0:
            rps = self.traffic.rps
            self.total_requests += rps * dt
            serving = self._traffic_serving()
            if serving > 0:
                self._count_versions(rps * dt, serving)
            if serving == 0:
                self.failed["no_serving_machine"] += rps * dt
            elif self.traffic.capacity is not None and rps > serving * self.traffic.capacity:
                self.failed["over_capacity"] += (rps - serving * self.traffic.capacity) * dt
            for g, n in self.live.items():
                extra = n - self.desired_count.get(g, n)
                if extra > 0:
                    self.surge_machine_seconds += extra * dt
        self.now = max(self.now, at)
        self._last = self.now
        if dt > 0 and self._reconnecting and self._traffic_serving():
            self._connected += self._reconnecting
            self._reconnecting = 0.0

    def _count_versions(self, requests: float, serving: int) -> None:
        """Spread ``requests`` over the serving versions; a bad release fails its share."""
        for version, n in self._serving_versions.items():
            if n <= 0:
                continue
            share = requests * n / serving
            self.requests_by_version[version] = self.requests_by_version.get(version, 0.0) + share
            rate = self._rate_of(version)
            if rate > 0:
                errors = share * rate
                self.errors_by_version[version] = self.errors_by_version.get(version, 0.0) + errors
                self.failed["release_errors"] = self.failed.get("release_errors", 0.0) + errors

    def _rate_of(self, version: str) -> float:
        return self.releases.get(version, self.default).error_rate

    def error_ratio(self, version: str, since: tuple[float, float] | None = None) -> float | None:
        """The share of ``version``'s requests that failed (``None``: it served none),
        since the cumulative ``(requests, errors)`` given (see :meth:`counts`)."""
        requests, errors = self.counts(version)
        if since is not None:
            requests, errors = requests - since[0], errors - since[1]
        if requests <= 1e-9:
            return None
        return errors / requests

    def counts(self, version: str) -> tuple[float, float]:
        """``version``'s cumulative requests and failed requests so far."""
        self._advance(self.now)
        return (
            self.requests_by_version.get(version, 0.0),
            self.errors_by_version.get(version, 0.0),
        )

    def _traffic_serving(self) -> int:
        if self._traffic_groups is None:
            return sum(self.serving.values())
        return sum(self.serving.get(g, 0) for g in self._traffic_groups)

    def _takes_traffic(self, m: _M) -> bool:
        return self._traffic_groups is None or m.group in self._traffic_groups

    # -- machine state ---------------------------------------------------------

    def _count(self, m: _M, sign: int) -> None:
        g = m.group
        self.serving.setdefault(g, 0)
        self.live.setdefault(g, 0)
        if m.live:
            self.live[g] += sign
            self.by_version[m.version] = self.by_version.get(m.version, 0) + sign
        if m.serving:
            self.serving[g] += sign
            if self._takes_traffic(m):
                self._serving_versions[m.version] = self._serving_versions.get(m.version, 0) + sign

    def _set(self, m: _M, **changes: object) -> None:
        """Change a machine, keeping counters, traffic and the timeline right."""
        self._advance(self.now)
        was_serving = m.serving
        if was_serving and self._takes_traffic(m):
            stops = changes.get("state", m.state) is not MachineState.STARTED
            if stops:
                cause = "machine_crash" if self._crashing else "stopped_without_drain"
                self._lose_traffic(m, cause=cause)
        self._count(m, -1)
        for k, v in changes.items():
            setattr(m, k, v)
        if "state" in changes or "version" in changes:
            m.gen += 1  # pending boots and checks of the old life are void
        if changes.get("cordoned") is True:
            m.cordoned_at = self.now
            if was_serving and self._takes_traffic(m):
                # its clients move away cleanly: reconnecting, not dropped
                serving = self._traffic_serving() + 1
                moved = self._connected / serving
                self._connected -= moved
                self._reconnecting += moved
                m.moved = moved
        elif changes.get("cordoned") is False:
            m.cordoned_at = None
        if (
            not was_serving
            and m.served
            and m.cordoned
            and m.cordoned_at is not None
            and self._takes_traffic(m)
            and changes.get("state")
            in (MachineState.STOPPING, MachineState.UPDATING, MachineState.DESTROYED)
        ):
            drained = self.now - m.cordoned_at
            if drained < self.traffic.reconnect_time:
                self._lose_traffic(m, cause="stopped_without_drain", drained=drained)
        self._count(m, +1)
        if m.serving != was_serving:
            if self._takes_traffic(m):
                self._note_share()
            if m.group in self._served_at_start:
                self._note_downtime(m.group)
        if m.serving:
            m.served = True
        self._note_history(m)
        g = m.group
        self.min_serving[g] = min(self.min_serving.get(g, self.serving[g]), self.serving[g])
        self.max_live[g] = max(self.max_live.get(g, self.live[g]), self.live[g])
        self._sample()
        if self.listener is not None:
            self.listener(m.id)

    def _note_history(self, m: _M) -> None:
        """Keep ``m``'s phase and version at this instant (the last change of an instant wins)."""
        entry = (self.now, m.phase if m.live else None, m.version)
        rows = self.history.setdefault(m.id, [])
        if rows and rows[-1][0] == self.now:
            rows.pop()
        if not rows or rows[-1][1:] != entry[1:]:
            rows.append(entry)

    @property
    def traffic_groups(self) -> frozenset[str] | None:
        """The groups whose serving machines take the traffic (``None``: every group)."""
        groups = self._traffic_groups
        return None if groups is None else frozenset(groups)

    def _note_downtime(self, g: str) -> None:
        """Open or close ``g``'s interval with nothing serving (its count just changed)."""
        if self.serving[g] == 0:
            self._zero_since.setdefault(g, self.now)
        elif g in self._zero_since:
            since = self._zero_since.pop(g)
            self.downtime[g] = self.downtime.get(g, 0.0) + (self.now - since)

    def downtime_until(self, t: float) -> dict[str, float]:
        """Seconds from the start to ``t`` during which each group had no machine serving.

        Only groups with a serving machine at the start accumulate downtime; every
        other group seen (or desired) is 0.0. An interval still open is counted up
        to ``t``; nothing is changed. Sorted by group name.
        """
        out: dict[str, float] = {}
        for g in sorted({*self.serving, *self.desired_count}):
            seconds = self.downtime.get(g, 0.0)
            since = self._zero_since.get(g)
            if since is not None:
                seconds += max(0.0, t - since)
            out[g] = seconds
        return out

    def _lose_traffic(self, m: _M, *, cause: str, drained: float = 0.0) -> None:
        """Requests in flight on ``m`` fail and its connections drop.

        In flight: what reached ``m`` during the last ``request_time`` seconds
        (less the time it has been cordoned), at its share of the traffic over
        that window. Connections are spread evenly over serving machines; the
        ones dropped here reconnect to the machines serving a moment later.
        """
        start = self.now - self.traffic.request_time
        end = self.now - drained
        if end > start:
            self.failed[cause] += self.traffic.rps * self._share_integral(start, end)
        if m.serving:
            lost = self._connection_share(m)
            self.dropped_connections += lost
            self._connected -= lost
            self._reconnecting += lost
        elif drained < self.traffic.reconnect_time:
            self.dropped_connections += m.moved

    def _connection_share(self, m: _M) -> float:
        serving = self._traffic_serving()
        if m.serving:
            return self._connected / serving if serving else 0.0
        # cordoned too briefly: the clients that were leaving are cut off
        return m.moved

    def _share_integral(self, start: float, end: float) -> float:
        """Integral over [start, end] of 1 / (machines serving traffic)."""
        total = 0.0
        history = self._serving_history
        for i in range(len(history) - 1, -1, -1):
            t, n = history[i]
            t_next = history[i + 1][0] if i + 1 < len(history) else self.now
            lo, hi = max(t, start), min(t_next, end)
            if hi > lo and n > 0:
                total += (hi - lo) / n
            if t <= start:
                break
        return total

    def _note_share(self) -> None:
        n = self._traffic_serving()
        history = self._serving_history
        if history and history[-1][0] == self.now:
            history[-1] = (self.now, n)
        else:
            history.append((self.now, n))
        horizon = self.now - self.traffic.request_time
        cut = 0
        while cut + 1 < len(history) and history[cut + 1][0] <= horizon:
            cut += 1
        if cut > 64:
            del history[:cut]

    def _sample(self) -> None:
        total = sum(self.serving.values())
        self.min_serving_total = min(self.min_serving_total, total)
        point = (
            self.now,
            total,
            sum(self.live.values()),
            {v: n for v, n in self.by_version.items() if n},
        )
        if self.timeline and self.timeline[-1][0] == self.now:
            self.timeline[-1] = point
        else:
            self.timeline.append(point)

    def _stopped(self, m: _M) -> None:
        self._set(m, state=MachineState.STOPPED)

    def _behaviour(self, m: _M) -> ReleaseBehaviour:
        return self.releases.get(m.version, self.default)

    def _boot(self, m: _M) -> None:
        b = self._behaviour(m)
        if m.state is not MachineState.STARTING:
            self._set(m, state=MachineState.STARTING, health=Health.UNKNOWN)
        t = b.boot_time
        if b.boot_sigma > 0:
            t = b.boot_time * math.exp(self.rng.gauss(0.0, b.boot_sigma))
        self._after(t, m, lambda: self._booted(m))

    def _booted(self, m: _M) -> None:
        b = self._behaviour(m)
        if not b.has_checks and b.health == "failing":
            # no check to fail: a broken release shows as a machine that exits
            self._set(m, state=MachineState.FAILED, health=Health.CRITICAL)
            return
        if not b.has_checks:
            self._set(m, state=MachineState.STARTED, health=Health.PASSING)
            return
        self._set(m, state=MachineState.STARTED, health=Health.UNKNOWN)
        self._schedule_check(m, b.grace_period)

    def _schedule_check(self, m: _M, delay: float) -> None:
        gen = m.gen

        def check() -> None:
            if m.state is not MachineState.STARTED or m.gen != gen:
                return
            b = self._behaviour(m)
            if b.health == "passing":
                ok = True
            elif b.health == "failing":
                ok = False
            else:
                ok = self.rng.random() < b.flaky_pass
            health = Health.PASSING if ok else Health.CRITICAL
            if health is not m.health:
                self._set(m, health=health)
            if b.health == "flaky" or not ok:
                self._schedule_check(m, b.check_interval)

        self.schedule(self.now + delay, check)

    def _crash_random(self) -> None:
        running = [m for m in self.machines.values() if m.state is MachineState.STARTED]
        if not running:
            return
        m = self.rng.choice(sorted(running, key=lambda x: x.id))
        self._crashing = True
        try:
            self._set(m, state=MachineState.FAILED, health=Health.CRITICAL)
        finally:
            self._crashing = False

    # -- the Provider protocol -------------------------------------------------

    def instruct(self, values: Mapping[str, str], at: float | None = None) -> None:
        """An operator's instruction (``op.*`` keys: ``zdd gate``, ``abort``,
        ``promote``), landing at ``at`` on the virtual clock (default: now)."""
        for key in values:
            if not key.startswith("op."):
                raise ProviderContractError(f"an instruction is an op.* key, not {key!r}")

        def land() -> None:
            self.record.update(values)
            if self.instructed is not None:
                self.instructed()

        if at is None or at <= self.now:
            land()
        else:
            self.schedule(at, land)

    def observe(self) -> FleetState:
        return FleetState(
            machines=[m.freeze() for m in self.machines.values() if m.live],
            record=self.record,
        )

    def machine(self, machine_id: str) -> Machine | None:
        m = self.machines.get(machine_id)
        return m.freeze() if m is not None and m.live else None

    def capabilities(self) -> Capabilities:
        return Capabilities(traffic_weights=True, cordon=True, volumes=True)

    def acquire_lock(self, owner: str, ttl: float) -> None:
        if self.lock is not None:
            holder, since, expires = self.lock
            if holder != owner and self.now < expires:
                raise DeploymentLocked(
                    f"the fleet is locked by {holder} since t={since:g}s "
                    f"(expires at t={expires:g}s unless renewed)",
                    holder=holder,
                    since=f"{since:g}",
                )
            if holder == owner:
                self.lock = (owner, since, self.now + ttl)
                return
        self.lock = (owner, self.now, self.now + ttl)

    def release_lock(self, owner: str) -> None:
        if self.lock is not None and self.lock[0] == owner:
            self.lock = None

    def perform(self, action: Action) -> Machine | None:
        """Blocking form: run the clock until the action is done."""
        box: list[Machine | ActionFailed | None] = []
        self.perform_async(action, box.append, lambda e: box.append(e))
        while not box and self.step():
            pass
        if not box:
            raise ProviderContractError("the simulated action never completed")
        result = box[0]
        if isinstance(result, ActionFailed):
            raise result
        return result

    def perform_async(
        self,
        action: Action,
        on_done: Callable[[Machine | None], None],
        on_failed: Callable[[ActionFailed], None],
    ) -> None:
        """Carry out ``action`` in virtual time; call back when it completes."""
        self.api_calls += 1
        self.performed.append((self.now, action))
        latency = self.api_latency
        if isinstance(action, RunCommand):
            latency = self.command_time

        def complete() -> None:
            if self.faults.api_error_rate and self.rng.random() < self.faults.api_error_rate:
                on_failed(ActionFailed("simulated API error (HTTP 503)", transient=True))
                return
            try:
                on_done(self._apply(action))
            except ActionFailed as exc:
                on_failed(exc)

        self.schedule(self.now + latency, complete)

    def _new_id(self, key: str) -> str:
        """A new machine's id: its plan name (the create's key) when no machine, live or
        destroyed, has that id; else the key with the first free ``-2``, ``-3``...
        (``sim1``, ``sim2``... for a create without a key)."""
        if not key:
            while (mid := f"sim{next(self._ids)}") in self.machines:
                pass
            return mid
        mid, n = key, 1
        while mid in self.machines:
            n += 1
            mid = f"{key}-{n}"
        return mid

    def _get(self, machine_id: str | None) -> _M:
        m = self.machines.get(machine_id or "")
        if m is None or not m.live:
            raise ActionFailed(f"machine {machine_id} not found (HTTP 404)")
        return m

    def _apply(self, action: Action) -> Machine | None:
        if isinstance(action, Create):
            for m in self.machines.values():
                if m.live and m.labels.get("zdd.key") == action.key:
                    return m.freeze()  # idempotent on the key
            if (
                self.faults.create_failure_rate
                and self.rng.random() < self.faults.create_failure_rate
            ):
                raise ActionFailed(
                    "simulated create failure (insufficient capacity)", transient=True
                )
            mid = self._new_id(action.key)
            m = _M(
                id=mid,
                version=action.version,
                group=action.group,
                region=action.region,
                state=MachineState.CREATED,
                health=Health.UNKNOWN,
                cordoned=action.hidden,
                volume=None,
                labels={"zdd.key": action.key, "zdd.role": action.role},
                cordoned_at=self.now if action.hidden else None,
            )
            self.machines[mid] = m
            self._count(m, +1)
            self._note_history(m)
            g = m.group
            self.max_live[g] = max(self.max_live.get(g, 0), self.live[g])
            self._boot(m)
            return m.freeze()
        if isinstance(action, Label):
            if action.machine is None:
                if action.replace:
                    self.record.clear()
                self.record.update(action.values)
                return None
            m = self._get(action.machine)
            m.labels.update(action.values)
            return m.freeze()
        if isinstance(action, RunCommand):
            if action.phase == "release" and self.faults.release_command_fails:
                raise ActionFailed("release command exited with status 1")
            return None
        m = self._get(action.machine)
        if isinstance(action, Update):
            self._set(m, state=MachineState.UPDATING, health=Health.UNKNOWN, version=action.version)
            self._boot(m)
        elif isinstance(action, Start):
            if m.state not in (MachineState.STARTED, MachineState.STARTING):
                self._boot(m)
        elif isinstance(action, Stop):
            if m.state not in (MachineState.STOPPED, MachineState.STOPPING):
                self._set(m, state=MachineState.STOPPING, health=Health.UNKNOWN)
                self._after(min(action.timeout, 1.0), m, functools.partial(self._stopped, m))
        elif isinstance(action, Destroy):
            if m.volume:
                raise ProviderContractError(f"refusing to destroy {m.id}: it holds {m.volume}")
            self._set(m, state=MachineState.DESTROYED)
        elif isinstance(action, Cordon):
            if not m.cordoned:
                self._set(m, cordoned=True)
        elif isinstance(action, Uncordon):
            if m.cordoned:
                self._set(m, cordoned=False)
            if action.weight is not None:
                m.labels["zdd.weight"] = str(action.weight)
            else:
                m.labels.pop("zdd.weight", None)
        else:
            raise ProviderContractError(f"cannot perform a {action.kind} action")
        return m.freeze()
