"""Zero downtime by default (issue 8, docs/decisions/0008-never-zero.md).

* A group that serves traffic never reaches zero serving machines under rolling,
  canary and bluegreen: the floor is ``max(1, desired - max_unavailable)``, and a
  one-machine group borrows a surge machine.
* ``max_surge`` alone means create before destroy (``max_unavailable`` 0).
* Where zero downtime is impossible, the plan says so before it runs.
* The floor is held against what is observed: no take-out of a serving machine while
  its group's observed serving count is at or below the floor; a machine whose
  health is unknown is not taken for down.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import pytest
import strategies as zst
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import zdd
from zdd import Health, Machine, MachineState
from zdd._executor import (
    ActionDone,
    Begin,
    Commands,
    Event,
    FullObserved,
    MachineSeen,
    Tick,
)
from zdd.cli import main
from zdd.providers.simulated import Faults, ReleaseBehaviour, SimulatedFleet, Traffic
from zdd.sim import simulate_fleet

SIM = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
PASS_GATES = zdd.ExecuteOptions(gates=lambda name: "pass")
EXAMPLES = Path(__file__).parent.parent / "examples"
CHECK = zdd.HealthCheck(type="http", path="/health", interval=5.0)
V2 = zdd.Release(version="v2", checks=[CHECK])


_floor = zst.promised_floor


# -- generators --------------------------------------------------------------------


@st.composite
def serving_fleets(draw: st.DrawFn) -> zdd.FleetState:
    """1-3 groups of 1-12 started, passing machines on v1, in one or two regions."""
    groups = draw(st.lists(st.sampled_from(zst.GROUPS), min_size=1, max_size=3, unique=True))
    machines = []
    i = 0
    for g in groups:
        for _ in range(draw(st.integers(1, 12), label=f"{g} machines")):
            i += 1
            region = draw(st.sampled_from(("ord", "ams")), label="region")
            machines.append(Machine(id=f"m{i}", version="v1", group=g, region=region))
    return zdd.FleetState(machines=machines)


unset_or = st.one_of(st.just(None), zst.fractions, zst.counts)


@st.composite
def zero_downtime_strategies(draw: st.DrawFn) -> zdd.Strategy:
    """Every strategy but immediate, with random max_unavailable and max_surge (both
    possibly not set), drained stops (drain_delay >= the simulator's reconnect time)."""
    kind = draw(st.sampled_from(("rolling", "bluegreen", "canary")), label="kind")
    common: dict[str, Any] = {
        "drain_delay": draw(st.sampled_from([1, 5, 10]), label="drain_delay"),
        "wait_timeout": 3600,
        "region_waves": draw(st.booleans(), label="region_waves"),
    }
    if kind == "bluegreen":
        return zdd.BlueGreen(**common)
    surge = draw(st.one_of(st.just(None), st.just(0), zst.fractions, zst.counts), label="surge")
    mu = draw(unset_or, label="max_unavailable")
    opts = {k: v for k, v in (("max_unavailable", mu), ("max_surge", surge)) if v is not None}
    rolling = zdd.Rolling(**opts, **common)
    if kind == "rolling":
        return rolling
    steps = draw(st.lists(zst.canary_steps, max_size=2), label="steps")
    return zdd.Canary(steps=steps, then=rolling, **common)


# -- the floor at every instant, zero failed requests ---------------------------------


@SIM
@given(state=serving_fleets(), strategy=zero_downtime_strategies(), seed=st.integers(0, 999))
def test_a_serving_group_never_reaches_zero_and_no_request_fails(
    state: zdd.FleetState, strategy: zdd.Strategy, seed: int
) -> None:
    """Healthy release, every strategy but immediate: per group, serving machines stay
    at or above ``max(1, desired - max_unavailable)`` (``desired`` for bluegreen) at every
    instant, and with unlimited capacity and drained stops no request fails."""
    desired = zdd.Desired.from_fleet(state, V2)
    note(f"strategy: {strategy!r}")
    report = zdd.simulate(state, desired, strategy, seed=seed, options=PASS_GATES)
    note(f"report: {report.outcome} {report.error} min={dict(report.min_serving_by_group)}")
    assert report.converged, report.error
    for spec in desired.groups:
        floor = _floor(strategy, spec.count)
        low = report.min_serving_by_group[spec.name]
        assert low >= floor, f"{spec.name}: {low} serving at some instant < floor {floor}"
        assert report.downtime_by_group.get(spec.name, 0.0) == 0.0
    assert report.failed_requests == 0, report.failed_by_cause


# -- the floor against what is observed ------------------------------------------------


class TakeOutLog:
    """Wraps a simulated fleet: at the instant the executor issues each action, notes
    whether it takes a serving machine out and how many of its group serve."""

    def __init__(self, fleet: SimulatedFleet) -> None:
        self.fleet = fleet
        self.violations: list[str] = []
        self.take_outs = 0
        inner = fleet.perform_async

        def perform_async(action: zdd.Action, on_done: Any, on_failed: Any) -> None:
            self.check(action)
            inner(action, on_done, on_failed)

        fleet.perform_async = perform_async  # type: ignore[method-assign]
        self.floors: dict[str, int] = {}

    def check(self, action: zdd.Action) -> None:
        m = self.fleet.machines.get(action.machine or "")
        if action.kind in zst.TAKE_OUT and m is not None and m.serving:
            self.take_outs += 1
        wrong = zst.take_out_at_floor(self.fleet, action, self.floors)
        if wrong is not None:
            self.violations.append(wrong)


@SIM
@given(
    state=serving_fleets(),
    strategy=zero_downtime_strategies(),
    health=st.sampled_from(["flaky", "failing"]),
    flaky_pass=st.sampled_from([0.5, 0.7, 0.9]),
    seed=st.integers(0, 999),
    crashes=st.integers(0, 2),
)
def test_no_take_out_at_or_below_the_observed_floor(
    state: zdd.FleetState,
    strategy: zdd.Strategy,
    health: str,
    flaky_pass: float,
    seed: int,
    crashes: int,
) -> None:
    """Flaky or failing release (and machines crashing): whatever happens, the executor
    never issues a take-out of a serving machine at an instant when its group's serving
    count, as the executor observes it, is at or below the group's floor."""
    strategy = attrs.evolve(strategy, wait_timeout=120)
    desired = zdd.Desired.from_fleet(state, V2)
    target = ReleaseBehaviour(
        boot_time=5,
        health=health,
        flaky_pass=flaky_pass,
        check_interval=5.0,  # type: ignore[arg-type]
    )
    fleet = SimulatedFleet(
        state,
        releases={"v2": target},
        default=ReleaseBehaviour(boot_time=5, check_interval=5.0),
        faults=Faults(machine_crashes=crashes, crash_window=300),
        seed=seed,
    )
    log = TakeOutLog(fleet)
    log.floors = {g.name: _floor(strategy, g.count) for g in desired.groups}
    note(f"strategy: {strategy!r}")
    report = simulate_fleet(fleet, desired, strategy, options=PASS_GATES)
    note(f"report: {report.outcome} {report.error}; {log.take_outs} take-outs")
    assert not log.violations, log.violations[:5]
    assert report.outcome in ("converged", "rolled_back", "failed")


def test_the_readme_flaky_example_holds_its_floor_or_rolls_back() -> None:
    """README's Python example: six machines, examples/fly.toml (max_surge = 1 alone:
    floor 6), a flaky release. No take-out is ever issued at or below the floor; a
    released machine that fails its checks and takes the group down to the floor makes
    the deployment roll back. Over ten seeds every run converges or rolls back, and
    none fails a request (unlimited capacity)."""
    config = zdd.load_config(EXAMPLES / "fly.toml")
    state = zdd.FleetState.uniform(6)
    desired = config.desired(state, version="v2")
    outcomes = Counter()
    for seed in range(10):
        report = zdd.simulate(state, desired, config.strategy, target_health="flaky", seed=seed)
        outcomes[report.outcome] += 1
        assert report.outcome in ("converged", "rolled_back"), report.error
        assert report.failed_requests == 0
        if report.rolled_back:
            assert "stopped serving after it was released" in (report.error or "")
    assert outcomes["rolled_back"] >= 1


# -- a machine whose health is unknown is not down -------------------------------------


class Feed:
    """Drives an ExecutorCore event by event through its one entry point, as h11's
    tests drive a Connection: each call hands it one event and answers with the
    actions it sent, as (kind, machine, ref)."""

    def __init__(self, core: zdd.ExecutorCore) -> None:
        self.core = core
        self.last = Commands()

    def __call__(self, event: Event) -> list[tuple[str, str | None, int]]:
        self.last = self.core.handle(event)
        return [(p.action.kind, p.action.machine, p.ref) for p in self.last.perform]


def _core(strategy: zdd.Strategy, n: int = 3) -> tuple[Feed, zdd.FleetState]:
    state = zdd.FleetState(
        machines=[Machine(id=f"m{i}", version="v1", health=Health.UNKNOWN) for i in range(1, n + 1)]
    )
    desired = zdd.Desired.from_fleet(state, V2)
    return Feed(zdd.ExecutorCore(desired, strategy)), state


@pytest.mark.parametrize(
    "strategy",
    [
        zdd.Rolling(max_unavailable=0, max_surge=1),
        zdd.Rolling(),
        zdd.Rolling(max_unavailable=3),
        zdd.Canary(),
    ],
    ids=["surge", "default", "all-at-once", "canary"],
)
def test_unknown_health_waits_for_a_first_check_result(strategy: zdd.Strategy) -> None:
    """After a proxy restart every check is unknown: the core sends nothing until a
    check result comes in (today's bug: all three stopped and destroyed at once)."""
    feed, state = _core(strategy)
    assert feed(Begin(0.0, state)) == []
    assert feed.last.watched == {"m1", "m2", "m3"}
    assert feed.last.report == {"m1", "m2", "m3"}
    assert feed(Tick(30.0)) == []
    for i, mid in enumerate(("m1", "m2", "m3")):
        assert not feed.last.full_observe
        passing = attrs.evolve(state.get(mid), health=Health.PASSING)  # type: ignore[arg-type]
        assert feed(MachineSeen(31.0 + i, mid, passing)) == []
    assert feed.last.full_observe  # every machine reported: plan from a fresh look
    healthy = zdd.FleetState(
        machines=[attrs.evolve(m, health=Health.PASSING) for m in state.machines]
    )
    sent = feed(FullObserved(40.0, healthy))
    assert [kind for kind, _, _ in sent] == ["label"]  # the record first, then the plan


def test_unknown_health_that_never_resolves_fails_with_nothing_changed() -> None:
    feed, state = _core(zdd.Rolling(wait_timeout=60))
    feed(Begin(0.0, state))
    assert feed(Tick(61.0)) == []
    result = feed.last.result
    assert feed.last.finished and result is not None
    assert result.outcome == "failed"
    assert "no check result for m1, m2, m3" in (result.error or "")
    assert "nothing was changed" in (result.error or "")


def test_an_unknown_machine_is_cordoned_before_it_is_taken_out() -> None:
    """The planner treats a started, uncordoned machine with no check result as
    serving: it is cordoned and drained first, never stopped as if it were down."""
    state = zdd.FleetState(
        machines=[
            Machine(id="m1", version="v1"),
            Machine(id="m2", version="v1"),
            Machine(id="m3", version="v1", health=Health.UNKNOWN),
        ]
    )
    plan = zdd.plan(state, zdd.Desired.from_fleet(state, V2), zdd.Rolling(max_unavailable=1))
    first = next(a for a in plan.actions() if a.machine == "m3")
    assert first.kind == "cordon"


def test_a_crashed_machine_holds_the_next_take_out_until_it_serves_again() -> None:
    """Drive the core event by event: rolling 3 machines in place, max_unavailable 1
    (floor 2). While m1 is updated, m3 crashes: the group observes 1 serving. Once m1
    is back, m2's cordon is held (it would leave 1), and sent when m3 serves again."""
    state = zdd.FleetState.uniform(3)
    m1, _, m3 = state.machines
    feed = Feed(
        zdd.ExecutorCore(
            zdd.Desired.from_fleet(state, V2), zdd.Rolling(max_unavailable=1, drain_delay=0)
        )
    )
    ((kind, _, ref),) = feed(Begin(0.0, state))
    assert kind == "label"
    ((kind, mid, ref),) = feed(ActionDone(0.1, ref))
    assert (kind, mid) == ("cordon", "m1")
    ((kind, mid, ref),) = feed(ActionDone(0.2, ref, attrs.evolve(m1, cordoned=True)))
    assert (kind, mid) == ("update", "m1")
    assert feed(MachineSeen(0.3, "m3", attrs.evolve(m3, health=Health.CRITICAL))) == []
    booting = attrs.evolve(m1, version="v2", cordoned=True, state=MachineState.STARTING)
    assert feed(ActionDone(0.4, ref, booting)) == []
    ((kind, mid, ref),) = feed(MachineSeen(5.0, "m1", attrs.evolve(booting, state="started")))
    assert (kind, mid) == ("uncordon", "m1")
    # m2's cordon is held: m1 and m2 serve, the floor is 2
    assert feed(ActionDone(5.1, ref, attrs.evolve(m1, version="v2"))) == []
    assert feed.last.result is None  # an old machine crashing is no reason to roll back
    assert feed(Tick(10.0)) == []
    ((kind, mid, _),) = feed(MachineSeen(12.0, "m3", m3))  # m3 passes again
    assert (kind, mid) == ("cordon", "m2")


def test_a_released_machine_that_fails_at_the_floor_rolls_back() -> None:
    """Rolling 3 machines with max_surge 1 alone (floor 3): the surge machine n1 is
    released, m1's cordon goes out, then n1 fails its checks: the group is below its
    floor because of the new release, so the deployment rolls back at once, and m2 is
    never taken out."""
    state = zdd.FleetState.uniform(3)
    core = zdd.ExecutorCore(zdd.Desired.from_fleet(state, V2), zdd.Rolling(max_surge=1))
    feed = Feed(core)
    ((_, _, ref),) = feed(Begin(0.0, state))
    ((kind, _, ref),) = feed(ActionDone(0.1, ref))
    assert kind == "create"
    n1 = Machine(id="n1", version="v2", cordoned=True, health=Health.UNKNOWN)
    assert feed(ActionDone(0.2, ref, n1)) == []
    ((kind, mid, ref),) = feed(MachineSeen(5.0, "n1", attrs.evolve(n1, health=Health.PASSING)))
    assert (kind, mid) == ("uncordon", "n1")
    serving = attrs.evolve(n1, health=Health.PASSING, cordoned=False)
    ((kind, mid, ref),) = feed(ActionDone(5.1, ref, serving))
    assert (kind, mid) == ("cordon", "m1")
    # seen serving by an observation, then failing its checks (a provider's answer to
    # the uncordon alone does not count: a stale list must not look like a failure)
    assert feed(MachineSeen(5.15, "n1", serving)) == []
    assert feed(MachineSeen(5.2, "n1", attrs.evolve(serving, health=Health.CRITICAL))) == []
    assert core.mode == "draining"  # rolling back: the cordon in flight finishes first
    sent = feed(ActionDone(5.3, ref, attrs.evolve(state.machines[0], cordoned=True)))
    assert all(mid != "m2" for _, mid, _ in sent)
    assert feed.last.full_observe  # the rollback plans from a fresh look


# -- the table, as a user runs it ----------------------------------------------


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv",
    [
        ["--machines", "1"],
        ["--machines", "1", "--max-surge", "1"],
        ["--machines", "1", "--config", str(EXAMPLES / "fly.toml")],
        ["--machines", "1", "--strategy", "canary"],
        ["--machines", "1", "--config", str(EXAMPLES / "fly-canary.toml")],
        ["--machines", "1", "--strategy", "bluegreen", "--config", str(EXAMPLES / "fly.toml")],
    ],
    ids=["rolling", "surge-only", "example", "canary", "canary-steps", "bluegreen"],
)
def test_one_machine_deploys_with_no_failed_request(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = _run(capsys, "simulate", *argv, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["converged"]
    assert report["failed_requests"] == 0, report["failed_by_cause"]
    assert report["min_serving"] == 1
    assert report["downtime_s"] == {"app": 0.0}
    assert "warning" not in err


STOCK_FLY_TOML = """\
app = "stock"
primary_region = "ord"

[deploy]
  strategy = "{strategy}"

[http_service]
  internal_port = 8080

  [[http_service.checks]]
    interval = "15s"
    timeout = "2s"
    path = "/health"
"""


@pytest.mark.parametrize("strategy", ["rolling", "canary"])
def test_a_stock_fly_toml_deploys_one_machine_with_no_failed_request(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], strategy: str
) -> None:
    path = tmp_path / "fly.toml"
    path.write_text(STOCK_FLY_TOML.format(strategy=strategy), encoding="utf-8")
    code, out, err = _run(capsys, "simulate", "--config", str(path), "--machines", "1", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["failed_requests"], report["min_serving"]) == (0, 1)


# -- say it before it happens ---------------------------------------------------------


def _volume_fleet() -> zdd.FleetState:
    return zdd.FleetState(machines=[Machine(id="m1", version="v1", volume="vol_1")])


def test_a_one_machine_group_with_a_volume_is_warned_about() -> None:
    plan = zdd.plan(_volume_fleet(), zdd.Desired.single(V2, 1), zdd.Rolling())
    (warning,) = plan.warnings
    assert "only serving machine m1 holds volume vol_1" in warning
    assert "add a second machine" in warning
    assert plan.to_text().startswith(f"warning: {warning}\nPlan (rolling)")
    assert plan.to_json()["warnings"] == [warning]
    # it is updated in place: the downtime the warning names
    assert [a.kind for a in plan.actions()][1:4] == ["cordon", "update", "wait_healthy"]


def test_immediate_is_warned_about() -> None:
    state = zdd.FleetState.uniform(3)
    plan = zdd.plan(state, zdd.Desired.from_fleet(state, V2), zdd.Immediate())
    (warning,) = plan.warnings
    assert "strategy immediate restarts every machine at once" in warning
    assert "max_surge = 1" in warning and "bluegreen" in warning


def test_allow_downtime_silences_the_warnings_and_lets_a_group_go_to_zero() -> None:
    plan = zdd.plan(_volume_fleet(), zdd.Desired.single(V2, 1), zdd.Rolling(allow_downtime=True))
    assert plan.warnings == ()
    state = zdd.FleetState.uniform(1)
    plan = zdd.plan(state, zdd.Desired.from_fleet(state, V2), zdd.Immediate(allow_downtime=True))
    assert plan.warnings == ()
    # and rolling one machine is Fly's in-place update again (no borrowed surge)
    plan = zdd.plan(state, zdd.Desired.from_fleet(state, V2), zdd.Rolling(allow_downtime=True))
    assert "create" not in [a.kind for a in plan.actions()]


def test_workers_keep_flys_behaviour() -> None:
    """A group with no service and no check (a worker) is not held above zero."""
    config = zdd.parse_config(
        '[processes]\napp = "bin/server"\nworker = "bin/worker"\n'
        '[http_service]\ninternal_port = 8080\nprocesses = ["app"]\n'
    )
    assert config.traffic_groups == ("app",)
    state = zdd.FleetState(
        machines=[Machine(id="a1", version="v1"), Machine(id="w1", version="v1", group="worker")]
    )
    plan = zdd.plan(state, config.desired(state, "v2"), config.strategy)
    by_machine = {a.machine: a.kind for a in plan.actions() if a.kind in ("update", "create")}
    assert by_machine.get("w1") == "update"  # in place, as flyctl does
    assert "a1" not in by_machine  # the app machine is replaced by a surge machine


def test_cli_warns_before_it_runs(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    fleet = tmp_path / "fleet.json"
    fleet.write_text(json.dumps(zdd.fleet_to_json(_volume_fleet())), encoding="utf-8")
    code, out, err = _run(capsys, "plan", "--fleet", str(fleet))
    assert code == 0
    assert out.startswith("warning: group 'app': its only serving machine m1 holds volume")
    code, out, err = _run(capsys, "simulate", "--fleet", str(fleet))
    assert err.startswith("zdd: warning: group 'app': its only serving machine m1")
    # warned, then judged: the requests that failed make it exit 1 (the CI contract)
    assert code == 1
    (_, verdict) = err.splitlines()
    assert "requests failed, more than --max-failed-requests 0" in verdict
    code, out, err = _run(capsys, "simulate", "--machines", "2", "--strategy", "immediate")
    assert err.startswith("zdd: warning: group 'app': strategy immediate")
    assert code == 1
    code, out, err = _run(
        capsys, "simulate", "--machines", "2", "--strategy", "immediate", "--allow-downtime"
    )
    assert "warning" not in err
    code, out, err = _run(
        capsys,
        "simulate",
        "--machines",
        "2",
        "--strategy",
        "immediate",
        "--allow-downtime",
        "--max-failed-requests",
        "1000000",
    )
    assert code == 0, err
    code, out, err = _run(capsys, "plan", "--fleet", str(fleet), "--allow-downtime")
    assert "warning" not in out


def test_allow_downtime_in_fly_toml() -> None:
    config = zdd.parse_config("[deploy]\nallow_downtime = true\n")
    assert config.strategy.allow_downtime is True
    with pytest.raises(zdd.InvalidConfig) as exc:
        zdd.parse_config('[deploy]\nallow_downtime = "yes"\n')
    assert exc.value.field == "deploy.allow_downtime"


# -- surge means create before destroy ---------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 6, 10])
def test_max_surge_alone_takes_nothing_out_before_its_replacement_serves(n: int) -> None:
    state = zdd.FleetState.uniform(n)
    desired = zdd.Desired.from_fleet(state, V2)
    report = zdd.simulate(state, desired, zdd.Rolling(max_surge=1))
    assert report.converged
    assert report.min_serving == n
    assert report.max_machines == n + 1


def test_both_set_are_both_honoured() -> None:
    state = zdd.FleetState.uniform(6)
    desired = zdd.Desired.from_fleet(state, V2)
    report = zdd.simulate(state, desired, zdd.Rolling(max_unavailable=2, max_surge=1))
    assert report.converged
    assert report.min_serving == 4
    assert report.max_machines == 7


def test_simulated_fleet_traffic_is_the_only_thing_counted() -> None:
    """Sanity of the harness: the downtime of an immediate one-machine deploy shows."""
    state = zdd.FleetState.uniform(1)
    fleet = SimulatedFleet(state, traffic=Traffic(rps=10))
    report = simulate_fleet(fleet, zdd.Desired.from_fleet(state, V2), zdd.Immediate())
    assert report.downtime_by_group["app"] > 0
    assert report.failed_requests > 0
    assert MachineState.STARTED.value in {f[3] for f in report.final}


def test_a_preview_of_machines_with_no_check_result_assumes_they_pass(
    capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    """After a proxy restart every check is unknown: `zdd plan` previews the deployment
    the executor will run once they report (and says so), instead of refusing it."""
    unknown = zdd.FleetState(
        machines=[Machine(id=f"m{i}", version="v1", health=Health.UNKNOWN) for i in (1, 2, 3)]
    )
    fleet = tmp_path / "fleet.json"
    fleet.write_text(json.dumps(zdd.fleet_to_json(unknown)), encoding="utf-8")
    code, out, err = _run(capsys, "plan", "--fleet", str(fleet))
    assert code == 0, err
    assert err.startswith("zdd: note: m1, m2, m3 have no check result yet; the plan assumes")
    passing = zdd.FleetState.uniform(3)
    assert (
        out
        == zdd.plan(
            passing, zdd.Desired.from_fleet(passing, zdd.Release(version="v2")), zdd.Rolling()
        ).to_text()
        + "\n"
    )
    code, out, err = _run(capsys, "simulate", "--fleet", str(fleet), "--json")
    assert code == 0, err
    assert json.loads(out)["converged"]


def test_a_one_machine_group_moved_to_another_region_borrows_a_surge_machine() -> None:
    """Its only machine already runs the release but must move: the new one is
    created and serving before the old one goes (found by the scaling property)."""
    state = zdd.FleetState(machines=[Machine(id="m1", version="v2", region="ord")])
    spec = zdd.GroupSpec(name="app", release=zdd.Release(version="v2"), regions={"ams": 1})
    plan = zdd.plan(state, zdd.Desired(groups=[spec]), zdd.Rolling(max_unavailable=1.0))
    kinds = [a.kind for a in plan.actions()]
    assert kinds.index("create") < kinds.index("destroy")
    assert "borrowed" in plan.to_text()
