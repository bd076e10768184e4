"""The simulation report and its renderings (JSON, text)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .._model import FrozenMap

__all__ = ["SimulationReport", "TimelinePoint"]


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
