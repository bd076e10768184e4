"""The threaded driver's own cost per machine cycle.

A rolling deployment of ``--machines`` machines (default 10) runs through
``zdd.execute`` against a small thread-safe in-memory provider (written here:
machines boot in ``--boot`` seconds, then pass), with the default poll interval
(2 s) unless ``--poll`` says otherwise. For every machine, the figure is the
time from the driver *reading* it healthy (the ``machine()`` or ``observe()``
call that first returns it started and passing, whose return is timed) to the
driver *sending* the next action for it (its ``uncordon``'s ``perform()``
call): what the driver and the core add between an observation and the action
it unblocks. The poll interval itself is not counted: it is when zdd looks,
not what zdd costs.

Prints ``cycles``, ``overhead_ms_median``, ``overhead_ms_p90`` and
``overhead_ms_max`` (target: under 50 ms), and the deployment's wall time.
Run: ``python3 benchmarks/driver_overhead.py``.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import attrs

import zdd
from zdd.providers import Capabilities


class Provider:
    def __init__(self, n: int, boot: float) -> None:
        self.mu = threading.Lock()
        self.boot = boot
        self.machines = {f"m{i}": zdd.Machine(id=f"m{i}", version="v1") for i in range(1, n + 1)}
        self.ready: dict[str, float] = {}
        self.record: dict[str, str] = {}
        self.healthy_read: dict[str, float] = {}  # machine -> when first read healthy (v2)
        self.uncordon_sent: dict[str, float] = {}

    def _settle(self, mid: str) -> zdd.Machine:
        m = self.machines[mid]
        at = self.ready.get(mid)
        if at is not None and time.monotonic() >= at:
            m = attrs.evolve(m, state="started", health="passing")
            self.machines[mid] = m
            del self.ready[mid]
        return m

    def _note(self, m: zdd.Machine) -> zdd.Machine:
        if m.version == "v2" and m.state == "started" and m.health == "passing":
            self.healthy_read.setdefault(m.id, time.monotonic())
        return m

    def observe(self) -> zdd.FleetState:
        with self.mu:
            machines = [self._settle(i) for i in list(self.machines)]
        now = [self._note(m) for m in machines]
        return zdd.FleetState(machines=now, record=self.record)

    def machine(self, mid: str) -> zdd.Machine | None:
        with self.mu:
            m = self._settle(mid) if mid in self.machines else None
        return self._note(m) if m is not None else None

    def capabilities(self) -> Capabilities:
        return Capabilities(cordon=True)

    def acquire_lock(self, owner: str, ttl: float) -> None:
        pass

    def release_lock(self, owner: str) -> None:
        pass

    def perform(self, action: zdd.Action) -> zdd.Machine | None:
        with self.mu:
            if isinstance(action, zdd.Label) and action.machine is None:
                if action.replace:
                    self.record.clear()
                self.record.update(action.values)
                return None
            mid = action.machine or ""
            m = self.machines[mid]
            if isinstance(action, zdd.Update):
                m = attrs.evolve(m, version=action.version, state="starting", health="unknown")
                self.ready[mid] = time.monotonic() + self.boot
            elif isinstance(action, zdd.Cordon):
                m = attrs.evolve(m, cordoned=True)
            elif isinstance(action, zdd.Uncordon):
                self.uncordon_sent.setdefault(mid, time.monotonic())
                m = attrs.evolve(m, cordoned=False)
            self.machines[mid] = m
            return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--machines", type=int, default=10)
    ap.add_argument("--boot", type=float, default=0.5)
    ap.add_argument("--poll", type=float, default=2.0)
    args = ap.parse_args()
    provider = Provider(args.machines, args.boot)
    state = provider.observe()
    release = zdd.Release(version="v2", checks=[zdd.HealthCheck(type="http", path="/h")])
    t0 = time.monotonic()
    result = zdd.execute(
        provider,  # type: ignore[arg-type]
        zdd.Desired.from_fleet(state, release),
        zdd.Rolling(max_unavailable=2, drain_delay=0),
        poll_interval=args.poll,
    )
    wall = time.monotonic() - t0
    assert result.converged, result.error
    gaps = [
        (provider.uncordon_sent[m] - provider.healthy_read[m]) * 1000
        for m in provider.uncordon_sent
        if m in provider.healthy_read
    ]
    gaps.sort()
    print(f"cycles={len(gaps)}  poll_s={args.poll:g}  deploy_wall_s={wall:.2f}")
    print(f"overhead_ms_median={statistics.median(gaps):.2f}")
    print(f"overhead_ms_p90={gaps[int(0.9 * (len(gaps) - 1))]:.2f}")
    print(f"overhead_ms_max={max(gaps):.2f}")


if __name__ == "__main__":
    main()
