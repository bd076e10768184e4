"""A hypothesis state machine over the executor's core and the simulated fleet.

Rules move the world one thing at a time -- the simulator's next event (an action
completing, a boot, a check), an action that fails (transient or not), a machine
that crashes, a check that flaps, the executor killed and a new one resumed from
the observed fleet -- and after every rule the invariants hold:

* the floor, as the executor must keep it: no take-out of a serving machine was
  issued while its group's serving count was at or below the floor;
* the ceiling: a group's live machines never exceed its ceiling;
* no duplicate creates: no two live machines carry the same idempotency key;
* no volume destroyed: every volume of the start is still attached to a machine.

The driver here is written against the core's one entry point (``handle``), as
``zdd.sim``'s is, so that the rules can interleave the world's events freely.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs
import strategies as zst
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import zdd
from zdd import Health, Machine, MachineState
from zdd._errors import ActionFailed
from zdd._executor import (
    ActionDone,
    ActionError,
    Begin,
    Commands,
    Event,
    ExecutorCore,
    FullObserved,
    MachineSeen,
    Tick,
)
from zdd.providers.simulated import ReleaseBehaviour, SimulatedFleet

CHECK = zdd.HealthCheck(type="http", path="/health", interval=5.0)
V2 = zdd.Release(version="v2", checks=[CHECK])


_floor = zst.promised_floor


def _ceiling(strategy: zdd.Strategy, n: int) -> int:
    if isinstance(strategy, zdd.BlueGreen):
        return 2 * n
    if isinstance(strategy, zdd.Canary):
        then = strategy.then
        return n + max(strategy.canary_machines, then.surge_budget(n), 1)
    assert isinstance(strategy, zdd.Rolling)
    return n + max(strategy.surge_budget(n), 1 if n == 1 else 0)


class ExecutorMachine(RuleBasedStateMachine):
    @initialize(
        counts=st.lists(st.integers(1, 5), min_size=1, max_size=2),
        kind=st.sampled_from(["rolling", "surge", "bluegreen", "canary"]),
        health=st.sampled_from(["passing", "passing", "flaky"]),
        seed=st.integers(0, 999),
    )
    def start(self, counts: list[int], kind: str, health: str, seed: int) -> None:
        machines = []
        for g, n in zip(("app", "web"), counts, strict=False):
            machines += [Machine(id=f"{g}{i}", version="v1", group=g) for i in range(1, n + 1)]
        self.state0 = zdd.FleetState(machines=machines)
        self.desired = zdd.Desired.from_fleet(self.state0, V2)
        common: dict[str, Any] = {"drain_delay": 1, "wait_timeout": 120}
        self.strategy: zdd.Strategy = {
            "rolling": zdd.Rolling(**common),
            "surge": zdd.Rolling(max_surge=1, **common),
            "bluegreen": zdd.BlueGreen(**common),
            "canary": zdd.Canary(steps=[zdd.CanaryStep(machines=1)], **common),
        }[kind]
        self.fleet = SimulatedFleet(
            self.state0,
            releases={"v2": ReleaseBehaviour(boot_time=3, health=health, check_interval=5)},  # type: ignore[arg-type]
            default=ReleaseBehaviour(boot_time=3, check_interval=5),
            seed=seed,
        )
        self.fleet.desired_count = {g.name: g.count for g in self.desired.groups}
        self.floors = {g.name: _floor(self.strategy, g.count) for g in self.desired.groups}
        self.ceilings = {g.name: _ceiling(self.strategy, g.count) for g in self.desired.groups}
        self.violations: list[str] = []
        self.fail_next: bool | None = None  # None: no failure; True/False: transient?
        self.generation = 0
        self._new_core()
        self.fleet.listener = self._listener

    # -- the driver ----------------------------------------------------------------

    def _new_core(self) -> None:
        self.generation += 1
        self.core = ExecutorCore(
            self.desired,
            self.strategy,
            options=zdd.ExecuteOptions(gates=lambda name: "pass"),
            capabilities=self.fleet.capabilities(),
        )
        self.last = Commands()
        self.feed(Begin(self.fleet.now, self.fleet.observe()))

    def feed(self, event: Event, generation: int | None = None) -> None:
        if generation is not None and generation != self.generation:
            return  # an answer to an executor that died
        cmds = self.core.handle(event)
        self.last = cmds
        gen = self.generation
        for p in cmds.perform:
            self._check_take_out(p.action)
            ref = p.ref
            fail, self.fail_next = self.fail_next, None

            def done(m: Machine | None, ref: int = ref, fail: bool | None = fail) -> None:
                if fail is None:
                    self.feed(ActionDone(self.fleet.now, ref, m), gen)
                else:
                    error = ActionFailed("injected failure", transient=fail)
                    self.feed(ActionError(self.fleet.now, ref, str(error), fail), gen)

            def failed(e: Exception, ref: int = ref) -> None:
                transient = bool(getattr(e, "transient", False))
                self.feed(ActionError(self.fleet.now, ref, str(e), transient), gen)

            self.fleet.perform_async(p.action, done, failed)
        for mid in sorted(cmds.report):
            self.feed(MachineSeen(self.fleet.now, mid, self.fleet.machine(mid)), gen)
        if self.last.full_observe and gen == self.generation:
            self.feed(FullObserved(self.fleet.now, self.fleet.observe()), gen)
        wake = self.last.wake_at
        if wake is not None and not self.last.finished:
            self.fleet.schedule(wake, lambda g=gen: self._tick(g))

    def _tick(self, gen: int) -> None:
        if gen == self.generation and not self.last.finished:
            self.feed(Tick(self.fleet.now), gen)

    def _listener(self, machine_id: str) -> None:
        if not self.last.finished:
            self.feed(MachineSeen(self.fleet.now, machine_id, self.fleet.machine(machine_id)))

    def _check_take_out(self, action: zdd.Action) -> None:
        wrong = zst.take_out_at_floor(self.fleet, action, self.floors)
        if wrong is not None:
            self.violations.append(wrong)

    # -- the rules -------------------------------------------------------------------

    def advance(self, n: int) -> None:
        for _ in range(n):
            if self.last.finished or not self.fleet.step():
                break

    @rule(n=st.integers(1, 20))
    def run_events(self, n: int) -> None:
        """The world goes on: the simulator's next ``n`` events."""
        self.advance(n)
        if self.last.finished and self.last.result is not None:
            event(f"outcome: {self.last.result.outcome}")

    @precondition(lambda self: not self.last.finished)
    @rule(transient=st.booleans())
    def fail_the_next_action(self, transient: bool) -> None:
        self.fail_next = transient

    @precondition(lambda self: not self.last.finished)
    @rule(data=st.data())
    def crash_a_machine(self, data: st.DataObject) -> None:
        running = sorted(
            m for m, x in self.fleet.machines.items() if x.state is MachineState.STARTED
        )
        if running:
            m = self.fleet.machines[data.draw(st.sampled_from(running))]
            self.fleet._crashing = True
            try:
                self.fleet._set(m, state=MachineState.FAILED, health=Health.CRITICAL)
            finally:
                self.fleet._crashing = False

    @precondition(lambda self: not self.last.finished)
    @rule(data=st.data())
    def flap_a_check(self, data: st.DataObject) -> None:
        started = sorted(
            m
            for m, x in self.fleet.machines.items()
            if x.state is MachineState.STARTED and x.health is Health.PASSING
        )
        if started:
            m = self.fleet.machines[data.draw(st.sampled_from(started))]
            self.fleet._set(m, health=Health.CRITICAL)
            self.fleet._schedule_check(m, 5.0)  # the next check decides again

    @precondition(lambda self: not self.last.finished)
    @rule()
    def kill_the_executor_and_resume(self) -> None:
        """The executor dies (its answers are lost); a new one starts from the fleet."""
        self._new_core()

    # -- the invariants ------------------------------------------------------------

    @invariant()
    def no_take_out_at_or_below_the_floor(self) -> None:
        assert not self.violations, self.violations[:3]

    @invariant()
    def the_ceiling_holds(self) -> None:
        for g, ceiling in self.ceilings.items():
            live = self.fleet.max_live.get(g, 0)
            assert live <= max(ceiling, self.fleet.desired_count.get(g, 0)), (
                f"{g}: {live} live at some instant > ceiling {ceiling}"
            )

    @invariant()
    def no_duplicate_creates(self) -> None:
        keys = Counter(
            m.labels["zdd.key"]
            for m in self.fleet.machines.values()
            if m.live and "zdd.key" in m.labels
        )
        assert all(n == 1 for n in keys.values()), keys

    @invariant()
    def no_volume_destroyed(self) -> None:
        volumes = {m.volume for m in self.state0.machines if m.volume}
        alive = {m.volume for m in self.fleet.machines.values() if m.live and m.volume}
        assert volumes <= alive


ExecutorMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_executor_state_machine = ExecutorMachine.TestCase


def test_the_machine_runs_a_deployment_to_its_end() -> None:
    """Sanity of the harness: with only the world's events, a deployment converges."""
    m = ExecutorMachine()
    m.start(counts=[3], kind="surge", health="passing", seed=1)
    for _ in range(200):
        m.advance(20)
        if m.last.finished:
            break
    assert m.last.result is not None and m.last.result.converged, m.last.result
    m.no_take_out_at_or_below_the_floor()
    assert attrs.has(type(m.last))
