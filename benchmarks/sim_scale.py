"""How simulation time grows with the fleet.

Prints the wall time to simulate a whole rolling deployment (``zdd.Rolling()``
defaults: max_unavailable 0.33, drain 10 s; a release with one http check;
boot time 10 s; seed 0) of 100, 1k and 10k machines (``FleetState.uniform``),
then the ratio:

* ``ratio_10k_1k``: sim(10k) / sim(1k); target <= 15. The fleet does ten times
  the work (ten times the machines, actions and events), so a ratio near 10 is
  linear; well above it means the executor does work proportional to the
  fleet (or to what is in flight) per event, e.g. re-planning everything.

Alongside each time: the deployment's virtual makespan, the executor's actions
(``report.actions``), the fleet's API calls, and the discrete events the
simulated fleet ran (counted on a separate, untimed run of the same deployment
through ``zdd.sim.simulate_fleet``, so the timed runs are plain
``zdd.simulate`` calls).

``ratio_10k_1k_cpu`` is the same ratio of process CPU times, which other
processes on a busy machine disturb less than wall time.

Each figure is the best of ``--repeat`` runs (default 5; ``--repeat-10k``,
default 3, for 10k machines), timed with the garbage collector paused during
the timed call as ``plan_scale.py`` does (``--with-gc`` keeps it running). The
whole script takes well under a minute on two cores.
Run: ``python3 benchmarks/sim_scale.py``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import time
from collections.abc import Callable

import zdd
from zdd.providers.simulated import ReleaseBehaviour, SimulatedFleet
from zdd.sim import simulate_fleet

CHECK = zdd.HealthCheck(type="http", path="/health")
RELEASE = zdd.Release(version="v2", checks=[CHECK])
STRATEGY = zdd.Rolling()
BOOT_TIME = 10.0
SEED = 0

WITH_GC = False


def best(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """The least wall time and the least CPU time of ``repeat`` calls."""
    walls = []
    cpus = []
    for _ in range(repeat):
        gc.collect()
        if not WITH_GC:
            gc.disable()
        try:
            t0 = time.perf_counter()
            c0 = time.process_time()
            fn()
            cpus.append(time.process_time() - c0)
            walls.append(time.perf_counter() - t0)
        finally:
            gc.enable()
    return min(walls), min(cpus)


def run(n: int) -> zdd.SimulationReport:
    state = zdd.FleetState.uniform(n)
    desired = zdd.Desired.from_fleet(state, RELEASE)
    return zdd.simulate(state, desired, STRATEGY, boot_time=BOOT_TIME, seed=SEED)


class _CountingFleet(SimulatedFleet):
    """A simulated fleet that counts the events it runs."""

    events = 0

    def step(self) -> bool:
        ran = super().step()
        self.events += ran
        return ran


def count_events(n: int, makespan: float) -> int:
    """Events of the same deployment, built as ``zdd.simulate`` builds its fleet."""
    state = zdd.FleetState.uniform(n)
    desired = zdd.Desired.from_fleet(state, RELEASE)
    behaviour = ReleaseBehaviour(
        boot_time=BOOT_TIME,
        grace_period=CHECK.grace_period,
        check_interval=CHECK.interval,
        has_checks=True,
    )
    fleet = _CountingFleet(
        state, releases={RELEASE.version: behaviour}, default=behaviour, seed=SEED
    )
    report = simulate_fleet(fleet, desired, STRATEGY)
    if report.makespan_s != makespan:
        raise SystemExit(f"{n} machines: the event-count run differs from zdd.simulate's")
    return fleet.events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--repeat-10k", type=int, default=3, help="runs for sizes >= 10k")
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--with-gc", action="store_true", help="keep the collector running")
    parser.add_argument("--no-events", action="store_true", help="skip the event-count runs")
    args = parser.parse_args()
    global WITH_GC
    WITH_GC = args.with_gc
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[int, float] = {}
    cpu: dict[int, float] = {}
    for n in sizes:
        report = run(n)  # warm-up, and the figures printed alongside
        if not report.converged:
            raise SystemExit(f"{n} machines: the deployment did not converge ({report.error})")
        repeat = args.repeat_10k if n >= 10_000 else args.repeat
        results[n], cpu[n] = best(functools.partial(run, n), repeat)
        events = "" if args.no_events else f", events={count_events(n, report.makespan_s)}"
        print(
            f"sim_s.{n}={results[n]:.4f}  (cpu_s={cpu[n]:.4f}, makespan_s={report.makespan_s:.1f}, "
            f"actions={report.actions}, api_calls={report.api_calls}{events})"
        )
    if 1_000 in results and 10_000 in results:
        print(f"ratio_10k_1k={results[10_000] / results[1_000]:.2f}")
        print(f"ratio_10k_1k_cpu={cpu[10_000] / cpu[1_000]:.2f}")


if __name__ == "__main__":
    main()
