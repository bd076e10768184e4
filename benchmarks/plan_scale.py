"""How planning time grows with the fleet.

Prints, per strategy, the time to plan a whole deployment of 1k, 10k and 100k
machines (one group, three regions), then two ratios:

* ``ratio_100k_10k.<strategy>``: plan(100k) / plan(10k); target <= 12 (near-linear).
* ``ratio_plan_build_10k.<strategy>``: plan(10k) / building the 10k-machine
  FleetState (Machine values and the FleetState); target <= 3.

Each figure is the best of ``--repeat`` runs (default 3), timed as ``timeit``
times: with the garbage collector paused during the timed call, so that the
figures measure the algorithm rather than when CPython's collector happens to
run (a full collection walks the whole heap, and whether one lands inside a
100k-machine call depends on the process's history). ``--with-gc`` times with
the collector running, for comparison. Run: ``python3 benchmarks/plan_scale.py``.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable

import zdd

REGIONS = ("ams", "ord", "syd")
CHECK = zdd.HealthCheck(type="http", path="/health")
STRATEGIES: dict[str, zdd.Strategy] = {
    "immediate": zdd.Immediate(),
    "rolling": zdd.Rolling(),
    "rolling_surge": zdd.Rolling(max_unavailable=0.1, max_surge=0.1),
    "bluegreen": zdd.BlueGreen(),
    "canary": zdd.Canary(steps=[zdd.CanaryStep(machines=5, bake=60)]),
}


def build(n: int) -> zdd.FleetState:
    return zdd.FleetState(
        machines=[
            zdd.Machine(id=f"m{i}", version="v1", region=REGIONS[i % len(REGIONS)])
            for i in range(1, n + 1)
        ]
    )


WITH_GC = False


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        if not WITH_GC:
            gc.disable()
        try:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        finally:
            gc.enable()
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--with-gc", action="store_true", help="keep the collector running")
    args = parser.parse_args()
    global WITH_GC
    WITH_GC = args.with_gc
    sizes = [int(s) for s in args.sizes.split(",")]
    release = zdd.Release(version="v2", checks=[CHECK])
    build_10k = best(lambda: build(10_000), args.repeat)
    print(f"build_fleet_10k_s={build_10k:.4f}")
    for name, strategy in STRATEGIES.items():
        results: dict[int, float] = {}
        for n in sizes:
            state = build(n)
            desired = zdd.Desired.from_fleet(state, release)
            plan = zdd.plan(state, desired, strategy)
            results[n] = best(
                lambda s=state, d=desired, st=strategy: zdd.plan(s, d, st), args.repeat
            )
            print(
                f"plan_s.{name}.{n}={results[n]:.4f}  "
                f"(steps={len(plan)}, actions={sum(1 for _ in plan.actions())})"
            )
        if 10_000 in results and 100_000 in results:
            print(f"ratio_100k_10k.{name}={results[100_000] / results[10_000]:.2f}")
        if 10_000 in results:
            print(f"ratio_plan_build_10k.{name}={results[10_000] / build_10k:.2f}")


if __name__ == "__main__":
    main()
