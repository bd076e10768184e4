"""The Fly provider's lock and transport at scale, against the local Machines API server.

For ``--machines`` (default 300 and 1000) machines behind the test server
(tests/fly_server.py, every request checked against Fly's OpenAPI description),
times the first lease acquisition and a refresh, without faults and with 20% of
requests answered 500/429, and prints each as seconds and as a share of the
default 30 s lease TTL (the refresh must fit well inside it). Then runs a
100-machine rolling deployment and prints the TCP connections it opened against
the requests it sent (one keep-alive pool).

Run: ``python3 benchmarks/fly_leases.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fly_server import FlyMachinesServer

import zdd
from zdd.providers.fly import FlyMachines

TOKEN = "bench-token"
TTL = 30.0


def fleet(n: int) -> zdd.FleetState:
    regions = ["ord", "ams", "syd"]
    return zdd.FleetState(
        machines=[zdd.Machine(id=f"m{i}", version="v1", region=regions[i % 3]) for i in range(n)]
    )


def leases(n: int, faults: float) -> tuple[float, float]:
    with FlyMachinesServer(fleet(n), token=TOKEN, speed=50.0, seed=n) as srv:
        srv.fault_rate = faults
        p = FlyMachines("hello", base_url=srv.url, token=TOKEN)
        t0 = time.perf_counter()
        p.acquire_lock("zdd-bench", TTL)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        p.acquire_lock("zdd-bench", TTL)
        refresh = time.perf_counter() - t0
        srv.fault_rate = 0.0
        p.release_lock("zdd-bench")
        return first, refresh


def connections(n: int) -> tuple[int, int, bool]:
    with FlyMachinesServer(fleet(n), token=TOKEN, speed=50.0) as srv:
        p = FlyMachines("hello", base_url=srv.url, token=TOKEN)
        state = p.observe()
        check = zdd.HealthCheck(type="http", path="/healthz", port=8080)
        desired = zdd.Desired.from_fleet(
            state,
            zdd.Release(version="v2", image="registry.fly.io/hello:v2", checks=(check,)),
        )
        result = zdd.execute(
            p,
            desired,
            zdd.Rolling(max_unavailable=0.25, drain_delay=0.0, wait_timeout=120.0),
            poll_interval=0.2,
        )
        return p._http.connections_opened, len(srv.requests), result.converged


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--machines", type=int, nargs="*", default=[300, 1000])
    parser.add_argument("--deploy-machines", type=int, default=100)
    args = parser.parse_args()
    os.environ.pop("ZDD_FLY_API_URL", None)
    print(f"{'machines':>8} {'faults':>6} {'acquire_s':>9} {'refresh_s':>9} {'refresh/ttl':>11}")
    for n in args.machines:
        for faults in (0.0, 0.2):
            first, refresh = leases(n, faults)
            print(f"{n:>8} {faults:>6.0%} {first:>9.2f} {refresh:>9.2f} {refresh / TTL:>11.3f}")
    opened, requests, converged = connections(args.deploy_machines)
    print(
        f"rolling deploy of {args.deploy_machines} machines: converged={converged} "
        f"requests={requests} tcp_connections={opened} "
        f"requests_per_connection={requests / max(opened, 1):.1f}"
    )


if __name__ == "__main__":
    main()
