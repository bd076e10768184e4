"""The executor's rules, one test each, from a mutation pass over the core (issue 9):
every test here failed on a one-line change of the rule it names (the mutant id
in its name) and passes on the code. They drive the core event by event through
its one entry point (``handle``), with a thin adapter that reads like the old
method calls, and the simulator where a whole run says it best."""

from __future__ import annotations

import io
import itertools
from typing import Any

import attrs

import zdd
from zdd import Health, Machine, MachineState
from zdd._executor import ActionDone, ActionError, Begin, Commands, MachineSeen, Tick
from zdd.providers.simulated import Faults, SimulatedFleet
from zdd.reporters import Reporter, TextReporter
from zdd.sim import simulate_fleet


class _Driven:
    """An ExecutorCore driven through ``handle()``, with the event methods these tests
    read best with; the actions it sent accumulate until ``commands()`` takes them."""

    def __init__(self, core: zdd.ExecutorCore) -> None:
        self.core = core
        self._out: list[Any] = []
        self.last = Commands()

    def _h(self, event: Any) -> None:
        self.last = self.core.handle(event)
        self._out.extend(self.last.perform)

    def begin(self, now: float, state: zdd.FleetState) -> None:
        self._h(Begin(now, state))

    def action_done(self, now: float, ref: int, machine: Machine | None = None) -> None:
        self._h(ActionDone(now, ref, machine))

    def action_failed(self, now: float, ref: int, error: str, *, transient: bool = True) -> None:
        self._h(ActionError(now, ref, error, transient))

    def machine_seen(self, now: float, machine: Machine | None, machine_id: str) -> None:
        self._h(MachineSeen(now, machine_id, machine))

    def tick(self, now: float) -> None:
        self._h(Tick(now))

    def commands(self) -> list[Any]:
        out, self._out = self._out, []
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.core, name)


def _ExecutorCore(*args: Any, **kwargs: Any) -> _Driven:
    return _Driven(zdd.ExecutorCore(*args, **kwargs))


CHECK = zdd.HealthCheck(type="http", path="/health", interval=5.0)
V2 = zdd.Release(version="v2", checks=[CHECK])


def sent(core):
    return [(c.action.kind, c.action.machine, c.ref) for c in core.commands()]


def one(core, kind, machine=None):
    out = sent(core)
    assert len(out) == 1, out
    k, m, ref = out[0]
    assert k == kind and (machine is None or m == machine), out
    return ref


class Events(Reporter):
    def __init__(self):
        self.log = []

    def action_started(self, elapsed, action):
        self.log.append(("start", elapsed, action))

    def rollback_started(self, elapsed, reason):
        self.log.append(("rollback", elapsed, reason))

    def waiting(self, elapsed, what):
        self.log.append(("wait", elapsed, what))


def _in_place(n, options=None, **kw):
    state = zdd.FleetState.uniform(n)
    kw.setdefault("drain_delay", 0)
    core = _ExecutorCore(zdd.Desired.from_fleet(state, V2), zdd.Rolling(**kw), options=options)
    core.begin(0.0, state)
    core.action_done(0.1, one(core, "label"))
    return core, state


# M03 -- a take-out of a machine presumed serving (health unknown) is gated
def test_M03_unknown_machine_take_out_is_held():
    core, state = _in_place(3, max_unavailable=1)  # floor 2
    m1, m2, m3 = state.machines
    core.action_done(0.2, one(core, "cordon", "m1"), attrs.evolve(m1, cordoned=True))
    ref = one(core, "update", "m1")
    # a proxy restart: m2 and m3 have no check result (presumed serving, not counted)
    core.machine_seen(0.3, attrs.evolve(m2, health=Health.UNKNOWN), "m2")
    core.machine_seen(0.3, attrs.evolve(m3, health=Health.UNKNOWN), "m3")
    boot = attrs.evolve(m1, version="v2", cordoned=True, state=MachineState.STARTING)
    core.action_done(0.4, ref, boot)
    core.machine_seen(5.0, attrs.evolve(boot, state=MachineState.STARTED), "m1")
    core.action_done(5.1, one(core, "uncordon", "m1"), attrs.evolve(m1, version="v2"))
    # 1 known serving (m1), floor 2: taking m2 or m3 out would leave 1
    assert sent(core) == []
    core.machine_seen(6.0, m3, "m3")  # m3 passes: m1, m3 serve; m2 (unknown) may go
    assert [(k, m) for k, m, _ in sent(core)] == [("cordon", "m2")]


# M04 -- the hold clock is not restarted by a machine coming back (still short)
def test_M04_hold_times_out_from_the_first_hold():
    core, state = _in_place(5, max_unavailable=1, wait_timeout=3)  # floor 4
    m1, _m2, _m3, m4, m5 = state.machines
    core.action_done(0.2, one(core, "cordon", "m1"), attrs.evolve(m1, cordoned=True))
    ref = one(core, "update", "m1")
    core.machine_seen(0.3, attrs.evolve(m4, health=Health.CRITICAL), "m4")
    core.machine_seen(0.3, attrs.evolve(m5, health=Health.CRITICAL), "m5")
    boot = attrs.evolve(m1, version="v2", cordoned=True, state=MachineState.STARTING)
    core.action_done(0.4, ref, boot)
    core.machine_seen(1.0, attrs.evolve(boot, state=MachineState.STARTED), "m1")
    core.action_done(1.1, one(core, "uncordon", "m1"), attrs.evolve(m1, version="v2"))
    assert sent(core) == []  # m2's cordon held since 1.1 (3 serving, floor 4)
    core.machine_seen(2.0, m4, "m4")  # m4 back: 4 serving, m2's cordon still held
    assert sent(core) == []
    core.tick(4.2)  # 3.1 s after the first hold > wait_timeout
    assert core.mode != "forward"
    assert "for 3s (wait_timeout)" in (core._failure or "")


# M06 -- a released machine failing that leaves its group exactly at the floor
def test_M06_release_failing_to_exactly_the_floor_rolls_back():
    """2 machines, max_unavailable 1 and max_surge 1 (floor 1): n1 and n2 are released
    while m2 is retired; n1 then fails its checks, leaving n2 alone -- at the floor."""
    state = zdd.FleetState.uniform(2)
    m1, m2 = state.machines
    strategy = zdd.Rolling(max_unavailable=1, max_surge=1, drain_delay=0)
    core = _ExecutorCore(zdd.Desired.from_fleet(state, V2), strategy)
    core.begin(0.0, state)
    core.action_done(0.1, one(core, "label"))
    pending = {}

    def take():
        for k, m, r in sent(core):
            pending[(k, m)] = r

    def done(t, kind, machine, result=None):
        take()
        core.action_done(t, pending.pop((kind, machine)), result)
        take()

    take()

    def hidden(mid):
        return Machine(id=mid, version="v2", cordoned=True, health=Health.UNKNOWN)

    done(0.2, "create", None, hidden("n1"))
    done(0.2, "cordon", "m1", attrs.evolve(m1, cordoned=True))
    done(0.3, "stop", "m1", attrs.evolve(m1, cordoned=True, state=MachineState.STOPPED))
    done(0.4, "destroy", "m1", None)
    done(0.5, "create", None, hidden("n2"))
    core.machine_seen(5.0, attrs.evolve(hidden("n1"), health=Health.PASSING), "n1")
    n1 = Machine(id="n1", version="v2")
    done(5.1, "uncordon", "n1", n1)
    core.machine_seen(5.15, n1, "n1")  # observed serving
    done(5.2, "cordon", "m2", attrs.evolve(m2, cordoned=True))  # its stop stays in flight
    core.machine_seen(6.0, attrs.evolve(hidden("n2"), health=Health.PASSING), "n2")
    n2 = Machine(id="n2", version="v2")
    done(6.1, "uncordon", "n2", n2)
    core.machine_seen(6.15, n2, "n2")
    assert core.mode == "forward"
    core.machine_seen(7.0, attrs.evolve(n1, health=Health.CRITICAL), "n1")  # 1 left = floor
    assert core.mode == "draining"
    assert "leaving 1 serving against a floor of 1" in (core._failure or "")


# M07 -- a provider's answer to an uncordon is not an observation of serving
def test_M07_unobserved_release_then_failing_is_not_a_breach():
    # test_a_released_machine_that_fails_at_the_floor_rolls_back without the look
    # that sees n1 serving: only the uncordon's answer said so
    state = zdd.FleetState.uniform(3)
    core = _ExecutorCore(zdd.Desired.from_fleet(state, V2), zdd.Rolling(max_surge=1))
    core.begin(0.0, state)
    core.action_done(0.1, one(core, "label"))
    n1 = Machine(id="n1", version="v2", cordoned=True, health=Health.UNKNOWN)
    core.action_done(0.2, one(core, "create"), n1)
    core.machine_seen(5.0, attrs.evolve(n1, health=Health.PASSING), "n1")
    core.action_done(
        5.1, one(core, "uncordon", "n1"), attrs.evolve(n1, health=Health.PASSING, cordoned=False)
    )
    one(core, "cordon", "m1")
    core.machine_seen(5.2, attrs.evolve(n1, health=Health.CRITICAL, cordoned=False), "n1")
    assert core.mode == "forward"  # held, not rolled back: n1 was never seen serving


# M08 -- docs/execution.md's example: one hold, one re-plan, then it goes on
def test_M08_docs_example_holds_once():
    state = zdd.FleetState.uniform(3)
    fleet = SimulatedFleet(state, faults=Faults(machine_crashes=1, crash_window=60), seed=8)
    log = io.StringIO()
    report = simulate_fleet(
        fleet,
        zdd.Config().desired(state, "v2"),
        zdd.Rolling(max_unavailable=1),
        reporter=TextReporter(log),
    )
    lines = [ln for ln in log.getvalue().splitlines() if "held" in ln or "re-plan" in ln]
    assert lines == [
        "[    21.8s]   wait   app: 2 serving, at its floor of 2; cordon m2 held until more serve",
        "[    26.8s] step: re-plan: every take-out is held",
    ]
    assert report.outcome == "converged"


# M11 -- (equivalent mutant) a first check result that is critical ends the wait for one
def test_M11_a_critical_first_result_ends_the_settle():
    state = zdd.FleetState(
        machines=[
            Machine(id="m1", version="v1", health=Health.UNKNOWN),
            Machine(id="m2", version="v1"),
            Machine(id="m3", version="v1"),
        ]
    )
    core = _ExecutorCore(zdd.Desired.from_fleet(state, V2), zdd.Rolling())
    core.begin(0.0, state)
    assert core.watched == {"m1"}
    core.machine_seen(1.0, attrs.evolve(state.get("m1"), health=Health.CRITICAL), "m1")
    assert core.wants_full_observe


# M15 -- min_healthy_time: a machine serves that long before it is released
def test_M15_min_healthy_time_is_waited():
    state = zdd.FleetState.uniform(2)
    report = zdd.simulate(
        state,
        zdd.Desired.from_fleet(state, V2),
        zdd.Rolling(max_unavailable=1, drain_delay=0, min_healthy_time=30),
        boot_time=5,
    )
    assert report.converged, report.error
    assert report.makespan_s >= 60


# M16 -- an inconclusive gate is asked again until gate_timeout, then fails
def test_M16_inconclusive_gate_does_not_pass():
    state = zdd.FleetState.uniform(2)
    strategy = zdd.BlueGreen(switch_gate="qa", drain_delay=0)
    options = zdd.ExecuteOptions(gates={"qa": "inconclusive"}, gate_timeout=120, gate_poll=10)
    report = zdd.simulate(state, zdd.Desired.single(V2, 2), strategy, options=options)
    assert report.outcome == "rolled_back", report.error
    assert "still inconclusive after 120s" in (report.error or "")


# M17 -- a machine that booted and then failed is not waited out to the timeout
def test_M17_booted_then_failed_fails_at_once():
    core, state = _in_place(2, max_unavailable=1)
    m1 = state.machines[0]
    core.action_done(0.2, one(core, "cordon", "m1"), attrs.evolve(m1, cordoned=True))
    boot = attrs.evolve(m1, version="v2", cordoned=True, state=MachineState.STARTING)
    core.action_done(0.4, one(core, "update", "m1"), boot)
    core.machine_seen(
        1.0, attrs.evolve(boot, state=MachineState.STARTED, health=Health.CRITICAL), "m1"
    )
    core.machine_seen(2.0, attrs.evolve(boot, state=MachineState.FAILED), "m1")
    assert core.mode != "forward"
    assert "is failed while waiting" in (core._failure or "")


# M18 -- queued forward actions are dropped when the deployment fails
def test_M18_a_queued_update_is_not_sent_after_a_failure():
    core, state = _in_place(6, max_unavailable=3, drain_delay=10)  # floor 3
    out = sent(core)
    assert [(k, m) for k, m, _ in out] == [("cordon", "m1"), ("cordon", "m2"), ("cordon", "m3")]
    r1, _r2, r3 = (r for _, _, r in out)
    core.action_done(0.2, r1, attrs.evolve(state.get("m1"), cordoned=True))  # update m1 @10.2
    core.action_failed(0.3, r3, "409 conflict", transient=False)  # draining; m2 in flight
    assert core.mode == "draining"
    core.tick(10.5)
    assert sent(core) == []  # nothing new starts (docs/execution.md, rollback step 1)


# M19 -- no task is admitted while draining
def test_M19_no_task_admitted_while_draining():
    core, state = _in_place(6, max_unavailable=3)  # floor 3, drain 0
    out = sent(core)
    r1, r2, _r3 = (r for _, _, r in out)
    m1 = state.get("m1")
    core.action_done(0.2, r1, attrs.evolve(m1, cordoned=True))
    core.action_done(0.2, r2, attrs.evolve(state.get("m2"), cordoned=True))
    ups = {m: r for k, m, r in sent(core)}
    boot = attrs.evolve(m1, version="v2", cordoned=True, state=MachineState.STARTING)
    core.action_done(0.4, ups["m1"], boot)
    core.machine_seen(1.0, attrs.evolve(boot, state=MachineState.STARTED), "m1")
    u1 = one(core, "uncordon", "m1")
    core.action_failed(1.1, ups["m2"], "422 bad image", transient=False)  # draining
    assert core.mode == "draining"
    core.action_done(1.2, u1, attrs.evolve(m1, version="v2"))  # m1's task is complete
    assert sent(core) == []  # m3's cordon still in flight: nothing new starts


# M20 -- a resumed bake does not restart from zero
def test_M20_resumed_bake_keeps_its_start():
    state = zdd.FleetState.uniform(3)
    strategy = zdd.Canary(steps=[zdd.CanaryStep(machines=1, bake=600)], drain_delay=0)
    desired = zdd.Desired.from_fleet(state, V2)
    clean = zdd.simulate(state, desired, strategy, boot_time=5)
    assert clean.converged
    ev = Events()
    zdd.simulate(state, desired, strategy, boot_time=5, reporter=ev)
    starts = [a for kind, _, a in ev.log if kind == "start"]
    # crash right after the bake's start was recorded
    k = next(
        i
        for i, a in enumerate(starts, 1)
        if a.kind == "label" and any(key.startswith("pause.") for key in getattr(a, "values", {}))
    )
    report = zdd.simulate(
        state, desired, strategy, boot_time=5, faults=Faults(executor_crash_after=k)
    )
    assert report.resumed == 1 and report.converged, report.error
    # the lock TTL (30 s) and a re-observation, not a second bake
    assert report.makespan_s < clean.makespan_s + 120, (report.makespan_s, clean.makespan_s)


# M21 -- the rollback is recorded before anything is rolled back
def test_M21_rollback_is_recorded_first():
    state = zdd.FleetState.uniform(3)
    ev = Events()
    report = zdd.simulate(
        state,
        zdd.Desired.from_fleet(state, V2),
        zdd.Rolling(max_unavailable=1, wait_timeout=30),
        target_health="failing",
        reporter=ev,
    )
    assert report.outcome == "rolled_back"
    i = next(i for i, e in enumerate(ev.log) if e[0] == "rollback")
    after = [a for kind, _, a in ev.log[i:] if kind == "start"]
    assert after[0].kind == "label" and after[0].values.get("phase") == "rolling_back", after[0]
    assert after[0].values.get("rollback_of") == "app=v2"


# M23 -- a failed release command changed nothing: failed, no rollback
def test_M23_failed_release_command_is_not_rolled_back():
    state = zdd.FleetState.uniform(3)
    fleet = SimulatedFleet(state, faults=Faults(release_command_fails=True), seed=0)
    report = simulate_fleet(
        fleet, zdd.Desired.from_fleet(state, V2), zdd.Rolling(release_command="bin/migrate")
    )
    assert report.outcome == "failed", (report.outcome, report.error, report.final)
    assert sorted(m for m, *_ in report.final) == ["m1", "m2", "m3"]


# M27 -- ExecuteOptions.deadline bounds the deployment
def test_M27_deadline():
    state = zdd.FleetState.uniform(4)
    report = zdd.simulate(
        state,
        zdd.Desired.from_fleet(state, V2),
        zdd.Rolling(max_unavailable=1),
        options=zdd.ExecuteOptions(deadline=30),
    )
    assert report.outcome != "converged", report.outcome
    assert "did not finish within 30s" in (report.error or "")


# M27 (core) -- the deadline, without the simulator (whose loop spins on a past wake)
def test_M27_deadline_core():
    core, _state = _in_place(
        3, zdd.ExecuteOptions(deadline=30), max_unavailable=1, wait_timeout=3600
    )
    one(core, "cordon", "m1")
    core.tick(31.0)
    assert core.mode != "forward"
    assert "did not finish within 30s" in (core._failure or "")


# M28 -- a permanent failure is not retried
def test_M28_permanent_failure_is_not_retried():
    core, _state = _in_place(2, max_unavailable=1)
    core.action_failed(0.2, one(core, "cordon", "m1"), "422", transient=False)
    assert core.mode == "draining"
    core.tick(5.0)
    assert sent(core) == []


# S04 -- region waves: one region at a time, even with room for more
def test_S04_region_waves_do_not_overlap():
    machines = [
        Machine(id="m1", version="v1", region="ord"),
        Machine(id="m2", version="v1", region="ord"),
        Machine(id="m3", version="v1", region="ams"),
        Machine(id="m4", version="v1", region="ams"),
    ]
    state = zdd.FleetState(machines=machines)
    plan = zdd.plan(
        state,
        zdd.Desired.from_fleet(state, V2),
        zdd.Rolling(max_unavailable=3, region_waves=["ord", "ams"], drain_delay=0),
    )
    region = {m.id: m.region for m in machines}
    last_ord = max(
        i for i, s in enumerate(plan.steps) for a in s.actions if region.get(a.machine) == "ord"
    )
    first_ams = min(
        i for i, s in enumerate(plan.steps) for a in s.actions if region.get(a.machine) == "ams"
    )
    assert first_ams > last_ord, plan.text() if hasattr(plan, "text") else plan


# M31 -- immediate does not wait for a first check result
def test_M31_immediate_does_not_settle():
    state = zdd.FleetState(
        machines=[Machine(id=f"m{i}", version="v1", health=Health.UNKNOWN) for i in (1, 2)]
    )
    core = _ExecutorCore(zdd.Desired.from_fleet(state, V2), zdd.Immediate())
    core.begin(0.0, state)
    assert core.watched == frozenset()
    assert [c.action.kind for c in core.commands()] == ["label"]


def test_never_silent_a_heartbeat_says_what_is_waited_on() -> None:
    """While a machine is waited on, a ``waiting`` line comes at least every 10 s
    (issue 11): which machine, how long of its timeout, what it was last seen as."""

    class Said(Reporter):
        def __init__(self) -> None:
            self.lines: list[tuple[float, str]] = []

        def waiting(self, elapsed: float, what: str) -> None:
            self.lines.append((elapsed, what))

    said = Said()
    state = zdd.FleetState(
        machines=[Machine(id="m1", version="v1"), Machine(id="m2", version="v1")]
    )
    core = _ExecutorCore(
        zdd.Desired.from_fleet(state, V2),
        zdd.Rolling(max_unavailable=1, drain_delay=0.0, wait_timeout=300.0),
        reporter=said,
    )
    core.begin(0.0, state)
    for _ in range(6):  # label, cordon, update: whatever comes, answer it
        for kind, machine, ref in sent(core):
            m = None
            if machine:
                m = Machine(
                    id=machine,
                    version="v2" if kind == "update" else "v1",
                    state=MachineState.STARTING,
                    health=Health.UNKNOWN,
                    cordoned=kind != "uncordon",
                )
            core.action_done(0.0, ref, m)
    assert core.last.wake_at is not None and core.last.wake_at <= 10.0
    said.lines.clear()
    for t in range(1, 46):
        core.tick(float(t))
    beats = [(t, w) for t, w in said.lines if w.startswith("still waiting")]
    assert len(beats) >= 4, said.lines
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(beats)]
    assert all(g <= 10.0 for g in gaps), gaps
    assert "healthy (" in beats[-1][1] and "of 300s" in beats[-1][1]
    assert "last seen starting, unknown" in beats[-1][1]
