"""How long a deployment takes: the sliding window against lockstep batches and bounds.

The deployment: 200 machines (``FleetState.uniform(200)``) move to a release
with one http check (grace period 0 s, interval 15 s). Boot times are
log-normal, median 20 s, sigma 0.6 (``simulate(..., boot_time=20,
boot_sigma=0.6)``); API calls take 0.2 s; at most 8 are in flight
(``ExecuteOptions`` default). Figures, per seed and averaged over the seeds
(``--seeds``, default 0..4; averages of ratios are means of the per-seed ratios):

* ``rolling_makespan_s``: zdd's rolling update, ``zdd.Rolling(max_unavailable=0.1)``
  (a window of ceil(200 * 0.1) = 20 machines; drain 10 s, min_healthy_time 0):
  ``report.makespan_s``.
* ``lockstep_makespan_s``: the baseline of Ansible's ``serial`` and Kamal's boot
  groups, written here and nowhere in zdd: batches of 20 machines, and a batch
  starts only once every machine of the previous one is healthy and back in
  service. It drives the same :class:`~zdd.providers.simulated.SimulatedFleet`
  directly, machine by machine through the steps of zdd's in-place task
  (``_planning/_core.py``: cordon; update once the drain delay has passed since
  the cordon; wait until started and passing for ``min_healthy_time``;
  uncordon), with the same API latency and the same bound of 8 calls in flight
  (the drain wait is a delay before the update, as in the executor, not a call),
  the same start and end record labels, and the same seed. The fleet draws a
  boot time from its one seeded generator at each update, and nothing else
  draws here (no faults, checks that pass), so the i-th machine to be updated
  boots in the same time in both runs: the same boot times, in the same order
  (``boot_draws_consistent`` checks this on the rolling run).
* ``lower_bound_s``: ``max(total machine time / 20, slowest machine time)``,
  where a machine's time is its whole pipeline in the rolling run, from its
  cordon's start to its uncordon's end (recorded by a Reporter). The executor
  never has more than 20 machines between those two points (a task holds its
  room from admission to its last action's end), so no run with those
  pipelines can be shorter. ``ideal_lower_bound_s`` is the same bound over
  pipelines without queueing for the API (cordon + drain + update + boot +
  grace + min_healthy_time + uncordon, from the boot times drawn), plus the
  two record labels: the bound for any schedule under this window.
* ``bluegreen_makespan_s``: ``zdd.BlueGreen()`` on the same fleet and boots,
  and ``critical_path_s``: the slowest green boot + grace period + one check
  interval + drain delay, plus the API latencies of the calls that must follow
  one another (start label, create, uncordon, switch label, cordon, stop,
  destroy, end label: 8 x 0.2 s). The simulator runs a passing machine's
  first check at the end of its grace period, so no interval is actually
  waited there; ``critical_path_sim_s`` leaves it out (the tighter figure).
  ``critical_path_with_pauses_s`` adds the pauses the bluegreen plan itself
  prescribes (``Pause`` waits, such as a wait after the switch for the proxy
  to learn the greens), which no schedule can skip.

Also printed, to explain the figures: the rolling run's mean machines in the
window and its tail (``rolling_tail_s``: from the last machine taken out of
service to the end, when the window can only empty), and when each bluegreen
phase ended (``bg.*``: greens ready, as the model predicts and as observed;
the last create, uncordon, cordon, stop and destroy; time after the greens
were ready).

Ratios, lower is better: ``rolling_over_lockstep`` (target <= 0.6),
``rolling_over_lower_bound`` (target <= 1.2), ``bluegreen_over_critical_path``
(target <= 1.1). Run: ``python3 benchmarks/makespan.py``.
"""

from __future__ import annotations

import argparse
import functools
import heapq
import itertools
import math
import statistics
from collections.abc import Callable

import zdd
from zdd.providers.simulated import ReleaseBehaviour, SimulatedFleet
from zdd.reporters import Reporter

N = 200
CHECK = zdd.HealthCheck(type="http", path="/health")
RELEASE = zdd.Release(version="v2", checks=[CHECK])
BOOT_TIME = 20.0
BOOT_SIGMA = 0.6
MAX_UNAVAILABLE = 0.1
API_LATENCY = 0.2
ROLLING = zdd.Rolling(max_unavailable=MAX_UNAVAILABLE)
BLUEGREEN = zdd.BlueGreen()
CONCURRENCY = zdd.ExecuteOptions().concurrency
WINDOW = ROLLING.unavailable_budget(N)  # ceil(200 * 0.1) = 20


def fleet_and_desired() -> tuple[zdd.FleetState, zdd.Desired]:
    state = zdd.FleetState.uniform(N)
    return state, zdd.Desired.from_fleet(state, RELEASE)


class Recorder(Reporter):
    """Per-machine and per-kind times of one executor run."""

    def __init__(self) -> None:
        self.cordon_start: dict[str, float] = {}
        self.uncordon_start: dict[str, float] = {}
        self.uncordon_end: dict[str, float] = {}
        self.update_done: list[tuple[str, float]] = []  # in completion order
        self.create_done: list[float] = []  # in completion order
        self.first_start: dict[str, float] = {}
        self.last_end: dict[str, float] = {}
        self.labels_done: list[tuple[float, dict[str, str]]] = []

    def action_started(self, elapsed: float, action: zdd.Action) -> None:
        self.first_start.setdefault(action.kind, elapsed)
        if action.machine is None:
            return
        if action.kind == "cordon":
            self.cordon_start.setdefault(action.machine, elapsed)
        elif action.kind == "uncordon":
            self.uncordon_start[action.machine] = elapsed

    def action_finished(self, elapsed: float, action: zdd.Action, error: str | None) -> None:
        if error is not None:
            return
        self.last_end[action.kind] = elapsed
        if action.kind == "uncordon" and action.machine is not None:
            self.uncordon_end[action.machine] = elapsed
        elif action.kind == "update" and action.machine is not None:
            self.update_done.append((action.machine, elapsed))
        elif action.kind == "create":
            self.create_done.append(elapsed)
        elif isinstance(action, zdd.Label):
            self.labels_done.append((elapsed, dict(action.values)))


# -- the lockstep baseline -----------------------------------------------------


def make_fleet(state: zdd.FleetState, seed: int) -> SimulatedFleet:
    """The fleet ``zdd.simulate`` builds for these arguments."""
    behaviour = ReleaseBehaviour(
        boot_time=BOOT_TIME,
        boot_sigma=BOOT_SIGMA,
        grace_period=CHECK.grace_period,
        check_interval=CHECK.interval,
        has_checks=True,
    )
    return SimulatedFleet(
        state,
        releases={RELEASE.version: behaviour},
        default=behaviour,
        seed=seed,
        api_latency=API_LATENCY,
    )


class Lockstep:
    """Batches of ``batch`` machines; the next batch starts when the last one is serving."""

    def __init__(self, fleet: SimulatedFleet, ids: list[str], batch: int) -> None:
        self.fleet = fleet
        self.batches = [ids[i : i + batch] for i in range(0, len(ids), batch)]
        self.drain = ROLLING.drain_delay
        self.min_healthy = ROLLING.min_healthy_time
        self.ready: list[tuple[float, int, zdd.Action, Callable[[zdd.Machine | None], None]]] = []
        self.seq = itertools.count()
        self.in_flight = 0
        self.remaining = 0
        self.watch: set[str] = set()
        self.healthy_since: dict[str, float] = {}
        self.boot_start: dict[str, tuple[int, float]] = {}  # machine -> (update index, when)
        self.boots: list[float] = []  # in update order (the order of the fleet's draws)
        self.end: float | None = None
        fleet.listener = self.seen

    # an API client with the executor's bound on calls in flight
    def submit(
        self,
        action: zdd.Action,
        then: Callable[[zdd.Machine | None], None],
        at: float | None = None,
    ) -> None:
        at = self.fleet.now if at is None else max(at, self.fleet.now)
        heapq.heappush(self.ready, (at, next(self.seq), action, then))
        if at > self.fleet.now:
            self.fleet.schedule(at, self.pump)
        self.pump()

    def pump(self) -> None:
        while self.ready and self.in_flight < CONCURRENCY and self.ready[0][0] <= self.fleet.now:
            _, _, action, then = heapq.heappop(self.ready)
            self.in_flight += 1
            self.fleet.perform_async(action, functools.partial(self.done, then=then), self.failed)

    def done(self, m: zdd.Machine | None, then: Callable[[zdd.Machine | None], None]) -> None:
        self.in_flight -= 1
        then(m)
        self.pump()

    def failed(self, error: Exception) -> None:
        raise RuntimeError(f"the lockstep baseline met a failure: {error}")

    # the deployment
    def run(self) -> float:
        self.submit(zdd.Label(group="app", values={"phase": "deploying"}), self.next_batch)
        while self.end is None:
            if not self.fleet.step():
                raise RuntimeError("the lockstep baseline stalled")
        return self.end

    def next_batch(self, _: zdd.Machine | None = None) -> None:
        if not self.batches:
            self.submit(zdd.Label(group="app", values={"phase": "done"}), self.finish)
            return
        batch = self.batches.pop(0)
        self.remaining = len(batch)
        for mid in batch:
            self.submit(zdd.Cordon(group="app", machine=mid), functools.partial(self.cordoned, mid))

    def finish(self, _: zdd.Machine | None) -> None:
        self.end = self.fleet.now

    def cordoned(self, mid: str, _: zdd.Machine | None) -> None:
        update = zdd.Update(
            group="app", machine=mid, version=RELEASE.version, from_version="v1", drain=self.drain
        )
        self.submit(update, functools.partial(self.updated, mid), at=self.fleet.now + self.drain)

    def updated(self, mid: str, _: zdd.Machine | None) -> None:
        self.boot_start[mid] = (len(self.boots), self.fleet.now)
        self.boots.append(math.nan)
        self.watch.add(mid)
        self.check(mid)

    def seen(self, mid: str) -> None:
        if mid in self.watch:
            self.check(mid)

    def check(self, mid: str) -> None:
        if mid not in self.watch:
            return
        m = self.fleet.machine(mid)
        assert m is not None
        if m.state is zdd.MachineState.STARTED and mid in self.boot_start:
            i, since = self.boot_start.pop(mid)
            self.boots[i] = self.fleet.now - since
        if m.state is zdd.MachineState.STARTED and m.health is zdd.Health.PASSING:
            since = self.healthy_since.setdefault(mid, self.fleet.now)
            if self.fleet.now - since >= self.min_healthy:
                self.watch.discard(mid)
                self.submit(zdd.Uncordon(group="app", machine=mid), self.uncordoned)
            else:
                self.fleet.schedule(since + self.min_healthy, lambda: self.check(mid))
        else:
            self.healthy_since.pop(mid, None)

    def uncordoned(self, _: zdd.Machine | None) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.next_batch()


# -- one seed ------------------------------------------------------------------


def run_seed(seed: int) -> dict[str, float]:
    state, desired = fleet_and_desired()
    out: dict[str, float] = {}

    # lockstep first: it also yields the boot times the fleet draws, in order
    fleet = make_fleet(state, seed)
    lockstep = Lockstep(fleet, [m.id for m in state.machines], WINDOW)
    out["lockstep_makespan_s"] = lockstep.run()
    boots = lockstep.boots
    assert len(boots) == N and not any(math.isnan(b) for b in boots)

    rec = Recorder()
    report = zdd.simulate(
        state,
        desired,
        ROLLING,
        seed=seed,
        boot_time=BOOT_TIME,
        boot_sigma=BOOT_SIGMA,
        api_latency=API_LATENCY,
        reporter=rec,
    )
    if not report.converged:
        raise SystemExit(f"seed {seed}: rolling did not converge ({report.error})")
    out["rolling_makespan_s"] = report.makespan_s
    out["rolling_min_serving"] = report.min_serving
    times = [rec.uncordon_end[m] - rec.cordon_start[m] for m in rec.cordon_start]
    assert len(times) == N
    out["machine_time_total_s"] = sum(times)
    out["machine_time_max_s"] = max(times)
    out["lower_bound_s"] = max(sum(times) / WINDOW, max(times))
    # the same bound without API queueing: each pipeline at its shortest
    fixed = 3 * API_LATENCY + ROLLING.drain_delay + CHECK.grace_period + ROLLING.min_healthy_time
    ideal = [b + fixed for b in boots]
    out["ideal_lower_bound_s"] = 2 * API_LATENCY + max(sum(ideal) / WINDOW, max(ideal))
    # the i-th update boots in the i-th draw: health never comes sooner than that
    early = sum(
        1
        for (mid, t), b in zip(rec.update_done, boots, strict=True)
        if rec.uncordon_start[mid] - t < b - 1e-6
    )
    out["boot_draws_consistent"] = float(early == 0)
    # where the rolling run's time goes: machines in the window, on average, and
    # the tail after the last machine was taken out (the window can only empty)
    out["rolling_mean_in_window"] = sum(times) / report.makespan_s
    out["rolling_last_admit_s"] = max(rec.cordon_start.values())
    out["rolling_tail_s"] = report.makespan_s - out["rolling_last_admit_s"]

    rec_bg = Recorder()
    bg = zdd.simulate(
        state,
        desired,
        BLUEGREEN,
        seed=seed,
        boot_time=BOOT_TIME,
        boot_sigma=BOOT_SIGMA,
        api_latency=API_LATENCY,
        reporter=rec_bg,
    )
    if not bg.converged:
        raise SystemExit(f"seed {seed}: bluegreen did not converge ({bg.error})")
    out["bluegreen_makespan_s"] = bg.makespan_s
    chain = 8 * API_LATENCY
    slowest = max(boots)
    out["slowest_boot_s"] = slowest
    out["critical_path_s"] = (
        slowest + CHECK.grace_period + CHECK.interval + BLUEGREEN.drain_delay + chain
    )
    out["critical_path_sim_s"] = slowest + CHECK.grace_period + BLUEGREEN.drain_delay + chain
    # pauses the plan itself prescribes (one step after another, so they add up)
    plan = zdd.plan(state, desired, BLUEGREEN)
    pauses = sum(w.duration for step in plan.steps for w in step.waits if isinstance(w, zdd.Pause))
    out["bluegreen_plan_pauses_s"] = pauses
    out["critical_path_with_pauses_s"] = out["critical_path_s"] + pauses
    # phases of the bluegreen run (the greens are ready when the first is released)
    ready = max(t + b for t, b in zip(rec_bg.create_done, boots, strict=True))
    out["bg.greens_ready_s"] = rec_bg.first_start["uncordon"]
    out["bg.greens_ready_model_s"] = ready + CHECK.grace_period
    out["bg.creates_done_s"] = rec_bg.last_end["create"]
    out["bg.uncordons_done_s"] = rec_bg.last_end["uncordon"]
    out["bg.cordons_done_s"] = rec_bg.last_end["cordon"]
    out["bg.stops_done_s"] = rec_bg.last_end["stop"]
    out["bg.destroys_done_s"] = rec_bg.last_end["destroy"]
    out["bg.after_ready_s"] = bg.makespan_s - out["bg.greens_ready_s"]

    out["rolling_over_lockstep"] = out["rolling_makespan_s"] / out["lockstep_makespan_s"]
    out["rolling_over_lower_bound"] = out["rolling_makespan_s"] / out["lower_bound_s"]
    out["rolling_over_ideal_lower_bound"] = out["rolling_makespan_s"] / out["ideal_lower_bound_s"]
    out["bluegreen_over_critical_path"] = out["bluegreen_makespan_s"] / out["critical_path_s"]
    out["bluegreen_over_critical_path_sim"] = (
        out["bluegreen_makespan_s"] / out["critical_path_sim_s"]
    )
    out["bluegreen_over_critical_path_with_pauses"] = (
        out["bluegreen_makespan_s"] / out["critical_path_with_pauses_s"]
    )
    return out


ORDER = (
    "rolling_makespan_s",
    "lockstep_makespan_s",
    "lower_bound_s",
    "ideal_lower_bound_s",
    "machine_time_total_s",
    "machine_time_max_s",
    "rolling_mean_in_window",
    "rolling_last_admit_s",
    "rolling_tail_s",
    "rolling_min_serving",
    "boot_draws_consistent",
    "bluegreen_makespan_s",
    "slowest_boot_s",
    "critical_path_s",
    "critical_path_sim_s",
    "bluegreen_plan_pauses_s",
    "critical_path_with_pauses_s",
    "bg.greens_ready_model_s",
    "bg.greens_ready_s",
    "bg.creates_done_s",
    "bg.uncordons_done_s",
    "bg.cordons_done_s",
    "bg.stops_done_s",
    "bg.destroys_done_s",
    "bg.after_ready_s",
    "rolling_over_lockstep",
    "rolling_over_lower_bound",
    "rolling_over_ideal_lower_bound",
    "bluegreen_over_critical_path",
    "bluegreen_over_critical_path_sim",
    "bluegreen_over_critical_path_with_pauses",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"machines={N}")
    print(f"window={WINDOW}")
    print(f"api_concurrency={CONCURRENCY}")
    results = {s: run_seed(s) for s in seeds}
    for s in seeds:
        for key in ORDER:
            print(f"seed{s}.{key}={results[s][key]:.3f}")
    for key in ORDER:
        mean = statistics.fmean(results[s][key] for s in seeds)
        print(f"{key}={mean:.3f}")


if __name__ == "__main__":
    main()
