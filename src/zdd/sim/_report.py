"""The simulation report and its renderings (JSON, text)."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import ZddError
from .._model import Desired, FleetState, FrozenMap
from .._plan import Action, Create, Gate, Label, Pause, RunCommand, Uncordon, WaitHealthy
from .._planning import blueprint
from .._planning._schedule import NO_FLOOR
from .._record import pause_key
from .._strategies import Strategy

if TYPE_CHECKING:
    from ..providers.simulated import SimulatedFleet

__all__ = ["GroupTrack", "MachineTrack", "Mark", "SimulationReport", "TimelinePoint"]


@attrs.frozen(kw_only=True)
class TimelinePoint:
    """The fleet at one instant: serving machines, live machines, machines per version."""

    t: float
    serving: int
    machines: int
    by_version: FrozenMap[int]

    def to_json(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 3),
            "serving": self.serving,
            "machines": self.machines,
            "by_version": dict(self.by_version),
        }


@attrs.frozen(kw_only=True)
class Mark:
    """A step of the plan (``n`` as ``zdd plan`` numbers it) and when it began.

    ``t`` is ``None`` for a step that never began (after a rollback, say). Marks the
    executor adds while it runs (a rollback, a re-plan) have ``plan`` false and
    numbers after the plan's.
    """

    n: int
    t: float | None
    why: str
    plan: bool = True


@attrs.frozen(kw_only=True)
class MachineTrack:
    """One machine over time: ``(start, end, phase, version)`` stretches that touch.

    ``phase`` is ``booting``, ``serving``, ``hidden`` (healthy, cordoned),
    ``unhealthy``, ``stopped`` or ``failed``; the track ends when it is destroyed.
    """

    id: str
    group: str
    segments: tuple[tuple[float, float, str, str], ...]


@attrs.frozen(kw_only=True)
class GroupTrack:
    """One process group over time, and its plan's limits.

    ``timeline``: the group's own points (as the report's). ``limits``:
    ``(start, end, floor, ceiling)`` per phase of the plan, ``None`` where the phase
    has no such limit.
    """

    name: str
    timeline: tuple[TimelinePoint, ...]
    limits: tuple[tuple[float, float, int | None, int | None], ...] = ()


@attrs.frozen(kw_only=True)
class SimulationReport:
    """What happened in one simulated deployment (see ``docs/simulation.md``).

    Attributes:
        strategy: the strategy's name.
        desired: machines per group and region, with the target version.
        converged: the fleet ended exactly as desired.
        rolled_back: the fleet ended exactly as it started (same releases, same count).
        outcome: the executor's outcome (``converged``, ``rolled_back``, ``failed``).
        error: why it did not converge, if it did not.
        min_serving: the fewest machines serving at any instant (all groups).
        min_serving_by_group: the same, per group.
        downtime_by_group: per group that had a serving machine at the start, the
            seconds (start to the report's end, settle included) during which it had
            none; 0.0 for every other group.
        max_machines: the most live machines at any instant (all groups).
        max_machines_by_group: the same, per group.
        makespan_s: seconds from the start to the executor's end.
        surge_machine_seconds: machine-seconds spent above the desired count.
        total_requests: requests sent during the deployment.
        failed_requests: requests that failed.
        failed_by_cause: failed requests per cause.
        dropped_connections: long-lived connections cut without a drain.
        actions: provider calls the executor made.
        api_calls: calls the fleet received (retries and resumed executors included).
        resumed: times a crashed executor was replaced by a new one.
        final: the machines at the end: ``(id, group, version, state)``.
        timeline: the fleet over time (at most a few hundred points; the
            extremes are kept).
        steps: when each step or phase began: ``(t, why)``.
        marks: every step of the plan and when it began (the picture's markers).
        machines: every machine over time (at most ``MAX_TRACKS``).
        groups: every group over time, with its floor and ceiling.
        overload: ``(start, end)`` stretches when the traffic's serving machines
            were over capacity (some serving, too few for ``rps``).
        capacity: requests per second one machine takes (``None``: no limit).
        rps: requests per second sent.
    """

    strategy: str
    desired: dict[str, Any]
    converged: bool
    rolled_back: bool
    outcome: str
    error: str | None
    min_serving: int
    min_serving_by_group: dict[str, int]
    downtime_by_group: Mapping[str, float] = attrs.field(factory=dict)
    max_machines: int
    max_machines_by_group: dict[str, int]
    makespan_s: float
    surge_machine_seconds: float
    total_requests: int
    failed_requests: int
    failed_by_cause: dict[str, int]
    dropped_connections: int
    actions: int
    api_calls: int
    resumed: int
    final: tuple[tuple[str, str, str, str], ...]
    timeline: tuple[TimelinePoint, ...]
    steps: tuple[tuple[float, str], ...] = ()
    marks: tuple[Mark, ...] = ()
    machines: tuple[MachineTrack, ...] = ()
    groups: tuple[GroupTrack, ...] = ()
    overload: tuple[tuple[float, float], ...] = ()
    capacity: float | None = None
    rps: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The documented JSON report."""
        return {
            "strategy": self.strategy,
            "desired": self.desired,
            "converged": self.converged,
            "rolled_back": self.rolled_back,
            "outcome": self.outcome,
            "error": self.error,
            "min_serving": self.min_serving,
            "min_serving_by_group": self.min_serving_by_group,
            "downtime_s": {g: round(s, 3) for g, s in self.downtime_by_group.items()},
            "max_machines": self.max_machines,
            "max_machines_by_group": self.max_machines_by_group,
            "makespan_s": round(self.makespan_s, 3),
            "surge_machine_seconds": round(self.surge_machine_seconds, 3),
            "total_requests": self.total_requests,
            "failed_requests": self.failed_requests,
            "failed_by_cause": self.failed_by_cause,
            "dropped_connections": self.dropped_connections,
            "actions": self.actions,
            "api_calls": self.api_calls,
            "resumed": self.resumed,
            "final": [{"id": i, "group": g, "version": v, "state": s} for i, g, v, s in self.final],
            "timeline": [p.to_json() for p in self.timeline],
            "steps": [{"t": round(t, 3), "why": why} for t, why in self.steps],
        }

    def to_text(self, *, width: int = 60) -> str:
        """A summary and a terminal timeline of serving capacity."""
        if self.converged:
            verdict = "converged"
        elif self.rolled_back:
            verdict = f"rolled back ({self.error})" if self.error else "rolled back"
        else:
            verdict = f"FAILED ({self.error})" if self.error else "did not converge"
        pct = 100.0 * self.failed_requests / self.total_requests if self.total_requests else 0.0
        causes = ", ".join(f"{k} {v}" for k, v in self.failed_by_cause.items() if v) or "none"
        lines = [
            f"Simulated {self.strategy} deployment: {verdict}",
            f"  makespan            {self.makespan_s:.1f}s",
            f"  serving (min)       {self.min_serving}"
            + "".join(f"  [{g}: {n}]" for g, n in self.min_serving_by_group.items()),
            f"  downtime            {max(self.downtime_by_group.values(), default=0.0):.1f}s"
            + "".join(f"  [{g}: {s:.1f}s]" for g, s in self.downtime_by_group.items()),
            f"  machines (max)      {self.max_machines}"
            + "".join(f"  [{g}: {n}]" for g, n in self.max_machines_by_group.items()),
            f"  surge               {self.surge_machine_seconds:.0f} machine-seconds",
            f"  requests            {self.total_requests} sent, {self.failed_requests} failed "
            f"({pct:.2f}%; {causes})",
            f"  connections dropped {self.dropped_connections}",
            f"  provider calls      {self.actions} by the executor, {self.api_calls} in all"
            + (f"; executor resumed {self.resumed}x" if self.resumed else ""),
        ]
        lines.append("")
        lines.extend(self._chart(width))
        return "\n".join(lines)

    def _chart(self, width: int) -> list[str]:
        if not self.timeline:
            return []
        end = max(self.makespan_s, self.timeline[-1].t, 1e-9)
        top = max(max(p.machines for p in self.timeline), 1)
        rows = min(8, top)
        cols: list[tuple[int, int]] = []
        i = 0
        points = self.timeline
        for c in range(width):
            t_end = end * (c + 1) / width
            serving = None
            machines = 0
            while i < len(points) and points[i].t <= t_end:
                p = points[i]
                serving = p.serving if serving is None else min(serving, p.serving)
                machines = max(machines, p.machines)
                i += 1
            if serving is None:
                prev = points[max(0, i - 1)]
                serving, machines = prev.serving, prev.machines
            cols.append((serving, machines))
        out = [f"  serving machines over time (# serving, . live but not serving); 0 to {end:.0f}s"]
        for r in range(rows, 0, -1):
            level = top * r / rows
            label = f"{level:5.0f} |" if r in (rows, 1) or r == rows // 2 else "      |"
            row = "".join(
                "#" if s >= level - 1e-9 else "." if m >= level - 1e-9 else " " for s, m in cols
            )
            out.append(label + row)
        out.append("      +" + "-" * width)
        return out


# -- the story behind the picture -------------------------------------------------

#: Machines drawn one row each; a larger fleet is drawn by group only.
MAX_TRACKS = 48
#: Points kept per group (as ``MAX_TIMELINE`` for the whole fleet).
MAX_GROUP_POINTS = 400


def story(
    fleet: SimulatedFleet,
    initial: FleetState,
    desired: Desired,
    strategy: Strategy,
    steps: Sequence[tuple[float, str]] = (),
) -> dict[str, Any]:
    """The report's picture fields (``marks``, ``machines``, ``groups``, ``overload``,
    ``capacity``, ``rps``) from what ``fleet`` saw, run from ``initial``."""
    end = fleet.now
    try:
        bp = blueprint(initial, desired, strategy, fleet.capabilities())
        plan = bp.layout()
    except ZddError:  # the executor failed before it began: nothing to mark
        bp, plan = None, None
    pauses = {pause_key(w.key) for s in plan or () for w in s.waits if isinstance(w, Pause)}
    seen: dict[tuple[object, ...], deque[float]] = {}
    for t, action in fleet.performed:
        sig = _signature(action, pauses)
        if sig is not None:
            seen.setdefault(sig, deque()).append(t)
    first = {sig: times[0] for sig, times in seen.items()}
    extra = [(t, why) for t, why in steps if why.startswith(("roll back", "re-plan"))]
    rollback = next((t for t, why in extra if why.startswith("roll back")), None)
    marks: list[Mark] = []
    if plan is not None:
        times: list[float | None] = []
        blind: list[bool] = []  # a step nothing shows to the fleet (a gate, say)
        for s in plan:
            sigs = [sig for a in (*s.actions, *s.waits) if (sig := _signature(a, pauses))]
            at = [seen[sig].popleft() for sig in sigs if seen.get(sig)]
            times.append(min(at) if at else None)
            blind.append(not sigs)
        for i in range(len(times) - 1, -1, -1):
            if blind[i] and times[i] is None:
                later = next((t for t in times[i + 1 :] if t is not None), rollback)
                times[i] = later
        marks = [
            Mark(n=n, t=t, why=s.why) for n, (s, t) in enumerate(zip(plan, times, strict=True), 1)
        ]
    marks += [
        Mark(n=len(marks) + i, t=t, why=why, plan=False) for i, (t, why) in enumerate(extra, 1)
    ]
    limits: dict[str, list[tuple[float, float, int | None, int | None]]] = {}
    for group, phases in bp.groups if bp is not None else ():
        spans: list[tuple[float, int | None, int | None]] = []
        for phase in phases:
            at = [
                first[sig]
                for task in phase.tasks
                for el in task.elements
                for a in el.actions
                if (sig := _signature(a, pauses)) in first
            ]
            if not at:
                continue
            b = phase.budget
            floor = b.floor if b.floor > 0 and b.floor > NO_FLOOR // 2 else None
            ceiling = b.ceiling if b.ceiling < -NO_FLOOR // 2 else None
            spans.append((min(at), floor, ceiling))
        stop = rollback if rollback is not None else end
        limits[group] = [
            (t0, min(t1, stop), floor, ceiling)
            for (t0, floor, ceiling), t1 in zip(
                spans, [t for t, _, _ in spans[1:]] + [stop] * bool(spans), strict=True
            )
            if t0 < min(t1, stop) and (floor is not None or ceiling is not None)
        ]
    groups, overload = _sweep(fleet, end)
    tracks = [
        MachineTrack(id=mid, group=fleet.machines[mid].group, segments=segs)
        for mid, rows in fleet.history.items()
        if (segs := _segments(rows, end))
    ]
    order = {g: i for i, g in enumerate(dict.fromkeys(t.group for t in tracks))}
    tracks.sort(key=lambda t: order[t.group])  # stable: in order of appearance per group
    return {
        "marks": tuple(marks),
        "machines": tuple(tracks) if len(tracks) <= MAX_TRACKS else (),
        "groups": tuple(
            GroupTrack(name=g, timeline=points, limits=tuple(limits.get(g, ())))
            for g, points in sorted(groups.items())
        ),
        "overload": overload,
        "capacity": fleet.traffic.capacity,
        "rps": fleet.traffic.rps,
    }


def _signature(action: Action, pauses: set[str]) -> tuple[object, ...] | None:
    """What identifies ``action`` in the fleet's log (``None``: the fleet never sees it)."""
    if isinstance(action, Gate | WaitHealthy):
        return None
    if isinstance(action, Pause):
        return ("pause", pause_key(action.key))
    if isinstance(action, Create):
        return ("create", action.group, action.key)
    if isinstance(action, Label):
        if action.machine is None and len(action.values) == 1 and set(action.values) <= pauses:
            return ("pause", next(iter(action.values)))
        return ("label", action.machine, tuple(sorted(action.values.items())))
    if isinstance(action, Uncordon):
        return ("uncordon", action.machine, action.weight)
    if isinstance(action, RunCommand):
        return ("run_command", action.phase, action.target)
    return (action.kind, action.machine)


def _segments(
    rows: Sequence[tuple[float, str | None, str]], end: float
) -> tuple[tuple[float, float, str, str], ...]:
    out = []
    for (t0, phase, version), t1 in zip(rows, [r[0] for r in rows[1:]] + [end], strict=True):
        if phase is None:
            break
        if t1 > t0:
            out.append((t0, t1, phase, version))
    return tuple(out)


def _sweep(
    fleet: SimulatedFleet, end: float
) -> tuple[dict[str, tuple[TimelinePoint, ...]], tuple[tuple[float, float], ...]]:
    """Each group's points, and the stretches over capacity, from the machines' histories."""
    events = sorted(
        (t, i, mid, phase, version)
        for mid, rows in fleet.history.items()
        for i, (t, phase, version) in enumerate(rows)
    )
    group_of = {mid: m.group for mid, m in fleet.machines.items()}
    now: dict[str, tuple[str | None, str]] = {}
    serving: dict[str, int] = {}
    live: dict[str, dict[str, int]] = {}  # group -> version -> live machines
    points: dict[str, list[tuple[float, int, int, dict[str, int]]]] = {}
    traffic = fleet.traffic_groups
    capacity, rps = fleet.traffic.capacity, fleet.traffic.rps
    overload: list[tuple[float, float]] = []
    over_since: float | None = None
    k = 0
    while k < len(events):
        t = events[k][0]
        changed = set()
        while k < len(events) and events[k][0] == t:
            _, _, mid, phase, version = events[k]
            g = group_of[mid]
            versions = live.setdefault(g, {})
            for sign, (p, v) in ((-1, now.get(mid, (None, ""))), (1, (phase, version))):
                if p is not None:
                    versions[v] = versions.get(v, 0) + sign
                    serving[g] = serving.get(g, 0) + sign * (p == "serving")
            now[mid] = (phase, version)
            changed.add(g)
            k += 1
        for g in sorted(changed):
            by_version = {v: n for v, n in live[g].items() if n}
            point = (t, serving.get(g, 0), sum(by_version.values()), by_version)
            pts = points.setdefault(g, [])
            if pts and pts[-1][0] == t:
                pts.pop()
            if not pts or pts[-1][1:] != point[1:]:
                pts.append(point)
        if capacity is not None:
            taking = sum(n for g, n in serving.items() if traffic is None or g in traffic)
            over = taking > 0 and taking * capacity < rps
            if over and over_since is None:
                over_since = t
            elif not over and over_since is not None:
                overload.append((over_since, t))
                over_since = None
    if over_since is not None and end > over_since:
        overload.append((over_since, end))
    return (
        {g: downsample(pts, MAX_GROUP_POINTS) for g, pts in points.items()},
        tuple(overload),
    )


def downsample(
    points: Sequence[tuple[float, int, int, dict[str, int]]], limit: int
) -> tuple[TimelinePoint, ...]:
    """At most about ``limit`` points; each bucket keeps its least-serving and its
    most-machines point, and the last point is kept."""
    if len(points) > limit:
        size = -(-len(points) // (limit // 2))
        kept = []
        for i in range(0, len(points), size):
            bucket = points[i : i + size]
            low = min(bucket, key=lambda p: p[1])
            high = max(bucket, key=lambda p: p[2])
            kept.extend(sorted({id(low): low, id(high): high}.values(), key=lambda p: p[0]))
        if kept[-1] is not points[-1]:
            kept.append(points[-1])
        points = kept
    return tuple(
        TimelinePoint(t=t, serving=s, machines=n, by_version=FrozenMap(v)) for t, s, n, v in points
    )
