"""Example tests for the executor: the threaded driver on an in-memory provider (real
threads, wall clock), reporters, and gates and bakes in the simulator.

``MemoryProvider`` is a small thread-safe :class:`zdd.providers.Provider`:
machines boot ``boot`` seconds after an update, create or start (then pass
their checks, unless their version is in ``failing``); ``fail`` makes one
kind of action raise what it is given. Every test keeps to well under two
seconds: no drain delay, short timeouts, a 50 ms poll.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs
import pytest

import zdd
from zdd.providers import Capabilities
from zdd.reporters import JsonLinesReporter, Reporter, TextReporter

CHECK = zdd.HealthCheck(type="http", path="/health", interval=1)
V2 = zdd.Release(version="v2", checks=[CHECK])
FAST = zdd.ExecuteOptions(retry_backoff=0.01)
POLL = 0.05


class MemoryProvider:
    """A thread-safe in-memory fleet (see the module docstring)."""

    def __init__(
        self,
        machines: list[zdd.Machine],
        *,
        boot: float = 0.0,
        failing: frozenset[str] = frozenset(),
        fail: dict[str, Callable[[zdd.Action], None]] | None = None,
    ) -> None:
        self._mutex = threading.Lock()
        self.machines = {m.id: m for m in machines}
        self.record: dict[str, str] = {}
        self.boot = boot
        self.failing = failing
        self.fail = dict(fail or {})
        self._ready_at: dict[str, float] = {}
        self._ids = 0
        self.lock: tuple[str, float] | None = None  # (owner, expires, monotonic)
        self.lock_log: list[tuple[str, str]] = []  # ("acquire" | "release", owner)
        self.performed: list[zdd.Action] = []
        self.threads: set[str] = set()

    # -- helpers -------------------------------------------------------------

    def _settle(self, mid: str) -> zdd.Machine:
        m = self.machines[mid]
        ready = self._ready_at.get(mid)
        if m.state is zdd.MachineState.STARTING and ready is not None and time.monotonic() >= ready:
            health = zdd.Health.CRITICAL if m.version in self.failing else zdd.Health.PASSING
            m = attrs.evolve(m, state=zdd.MachineState.STARTED, health=health)
            self.machines[mid] = m
            del self._ready_at[mid]
        return m

    def _boot(self, m: zdd.Machine, **changes: Any) -> zdd.Machine:
        m = attrs.evolve(m, state=zdd.MachineState.STARTING, health=zdd.Health.UNKNOWN, **changes)
        self.machines[m.id] = m
        self._ready_at[m.id] = time.monotonic() + self.boot
        return self._settle(m.id)

    @property
    def live(self) -> list[zdd.Machine]:
        with self._mutex:
            return [self._settle(i) for i in sorted(self.machines)]

    # -- the Provider protocol -------------------------------------------------

    def observe(self) -> zdd.FleetState:
        with self._mutex:
            return zdd.FleetState(
                machines=[self._settle(i) for i in list(self.machines)], record=self.record
            )

    def machine(self, machine_id: str) -> zdd.Machine | None:
        with self._mutex:
            return self._settle(machine_id) if machine_id in self.machines else None

    def capabilities(self) -> Capabilities:
        return Capabilities(cordon=True)

    def acquire_lock(self, owner: str, ttl: float) -> None:
        with self._mutex:
            now = time.monotonic()
            if self.lock is not None and self.lock[0] != owner and now < self.lock[1]:
                raise zdd.DeploymentLocked(f"locked by {self.lock[0]}", holder=self.lock[0])
            self.lock = (owner, now + ttl)
            self.lock_log.append(("acquire", owner))

    def release_lock(self, owner: str) -> None:
        with self._mutex:
            self.lock_log.append(("release", owner))
            if self.lock is not None and self.lock[0] == owner:
                self.lock = None

    def perform(self, action: zdd.Action) -> zdd.Machine | None:
        self.threads.add(threading.current_thread().name)
        hook = self.fail.get(action.kind)
        if hook is not None:
            hook(action)
        with self._mutex:
            self.performed.append(action)
            if isinstance(action, zdd.Label) and action.machine is None:
                if action.replace:
                    self.record.clear()
                self.record.update(action.values)
                return None
            if isinstance(action, zdd.RunCommand):
                return None
            if isinstance(action, zdd.Create):
                for m in self.machines.values():
                    if m.labels.get("zdd.key") == action.key:
                        return m
                self._ids += 1
                m = zdd.Machine(
                    id=f"new{self._ids}",
                    version=action.version,
                    group=action.group,
                    region=action.region,
                    cordoned=action.hidden,
                    labels={"zdd.key": action.key, "zdd.role": action.role},
                )
                return self._boot(m)
            if action.machine not in self.machines:
                raise zdd.ActionFailed(f"machine {action.machine} not found (404)")
            m = self._settle(action.machine)
            if isinstance(action, zdd.Update):
                return self._boot(m, version=action.version)
            if isinstance(action, zdd.Start):
                if m.state in (zdd.MachineState.STARTED, zdd.MachineState.STARTING):
                    return m
                return self._boot(m)
            if isinstance(action, zdd.Stop):
                m = attrs.evolve(m, state=zdd.MachineState.STOPPED, health=zdd.Health.UNKNOWN)
            elif isinstance(action, zdd.Destroy):
                del self.machines[m.id]
                self._ready_at.pop(m.id, None)
                return attrs.evolve(m, state=zdd.MachineState.DESTROYED)
            elif isinstance(action, zdd.Cordon):
                m = attrs.evolve(m, cordoned=True)
            elif isinstance(action, zdd.Uncordon):
                m = attrs.evolve(m, cordoned=False)
            elif isinstance(action, zdd.Label):
                m = attrs.evolve(m, labels=m.labels.update(action.values))
            self.machines[m.id] = m
            return m


def fleet(n: int, *, version: str = "v1") -> list[zdd.Machine]:
    return [zdd.Machine(id=f"m{i}", version=version) for i in range(1, n + 1)]


def deploy(provider: Any, strategy: zdd.Strategy, n: int, **kwargs: Any) -> zdd.DeployResult:
    kwargs.setdefault("options", FAST)
    kwargs.setdefault("poll_interval", POLL)
    t0 = time.monotonic()
    result = zdd._execute.execute(provider, zdd.Desired.single(V2, n), strategy, **kwargs)
    assert time.monotonic() - t0 < 5.0, "hang guard: these deployments take well under 2s"
    return result


def assert_all(provider: MemoryProvider, version: str, n: int) -> None:
    machines = provider.live
    assert len(machines) == n, machines
    for m in machines:
        assert m.version == version, m
        assert m.serving, m


def assert_lock_released(provider: MemoryProvider) -> None:
    assert provider.lock is None, f"the lock is still held by {provider.lock[0]}"
    assert provider.lock_log, "the lock was never taken"
    assert provider.lock_log[0][0] == "acquire"
    assert provider.lock_log[-1][0] == "release"
    owners = {owner for _, owner in provider.lock_log}
    assert len(owners) == 1, owners


# -- the floor, held against what is observed -------------------------------------


def test_the_threaded_driver_holds_a_take_out_while_a_machine_is_down():
    """Rolling 3 machines, max_unavailable 1 (floor 2). When m1 is cordoned, m3 fails
    its checks (it recovers 0.6 s later). m2's cordon waits until m3 serves again:
    the driver observes the fleet at every poll, the core holds the take-out, and when
    nothing else can go on it re-plans and repairs m3 (updating it in place: it is
    down anyway)."""
    provider: MemoryProvider
    recovered_at: list[float] = []

    def crash_m3(action: zdd.Action) -> None:
        if action.machine != "m1" or recovered_at:
            return
        with provider._mutex:
            provider.machines["m3"] = attrs.evolve(
                provider.machines["m3"], health=zdd.Health.CRITICAL
            )

        def recover() -> None:
            time.sleep(0.6)
            with provider._mutex:
                provider.machines["m3"] = attrs.evolve(
                    provider.machines["m3"], health=zdd.Health.PASSING
                )
                recovered_at.append(time.monotonic())

        threading.Thread(target=recover, daemon=True).start()

    seen: list[tuple[str, float, bool]] = []

    def note_cordon(action: zdd.Action) -> None:
        crash_m3(action)
        with provider._mutex:
            m3 = provider.machines.get("m3")
            seen.append((action.machine or "", time.monotonic(), bool(m3 and m3.serving)))

    # boots take 0.3 s: m1 is seen healthy by the same look at the fleet that sees m3
    # down (a crash between two looks is not observed: the view is at most one poll old)
    provider = MemoryProvider(fleet(3), boot=0.3, fail={"cordon": note_cordon})
    result = deploy(
        provider, zdd.Rolling(max_unavailable=1, drain_delay=0), 3, observe_interval=POLL
    )
    assert result.converged, result.error
    assert_all(provider, "v2", 3)
    m2 = [(t, m3_serving) for mid, t, m3_serving in seen if mid == "m2"]
    assert m2, seen
    _, m3_serving = m2[0]
    assert m3_serving, "m2 was cordoned while m3 was down: the group went below its floor"


# -- the threaded driver converges -------------------------------------------------


@pytest.mark.parametrize("boot", [0.0, 0.02])
def test_rolling_converges(boot: float):
    """Rolling, machines updated in place on real threads: every machine ends on v2,
    serving; the lock was taken and given back."""
    provider = MemoryProvider(fleet(4), boot=boot)
    result = deploy(provider, zdd.Rolling(max_unavailable=2, drain_delay=0), 4)
    assert result.outcome == "converged", result.error
    assert result.converged and result.error is None
    assert result.actions > 0 and result.elapsed >= 0
    assert_all(provider, "v2", 4)
    assert {m.id for m in provider.live} == {"m1", "m2", "m3", "m4"}
    assert provider.record["phase"] == "done"
    assert_lock_released(provider)
    assert all(name.startswith("zdd") for name in provider.threads), provider.threads


def test_rolling_with_surge_converges():
    """Rolling with a surge and no unavailability: replacements, then retirements."""
    provider = MemoryProvider(fleet(3), boot=0.01)
    result = deploy(provider, zdd.Rolling(max_unavailable=0, max_surge=1, drain_delay=0), 3)
    assert result.converged, result.error
    assert_all(provider, "v2", 3)
    assert not {"m1", "m2", "m3"} & {m.id for m in provider.live}


@pytest.mark.parametrize("boot", [0.0, 0.02])
def test_bluegreen_converges(boot: float):
    """Bluegreen: greens created hidden, released, blues cordoned, stopped, destroyed."""
    provider = MemoryProvider(fleet(3), boot=boot)
    result = deploy(provider, zdd.BlueGreen(drain_delay=0), 3)
    assert result.outcome == "converged", result.error
    assert_all(provider, "v2", 3)
    assert all(m.id.startswith("new") for m in provider.live), "the blues were not retired"
    kinds = [a.kind for a in provider.performed]
    first_blue_change = min(
        i for i, a in enumerate(provider.performed) if a.machine in {"m1", "m2", "m3"}
    )
    assert kinds.count("create") == 3
    assert "uncordon" in kinds[:first_blue_change], "a blue was touched before the switch"
    assert_lock_released(provider)


# -- failures ----------------------------------------------------------------------


def _raise(exc: BaseException) -> Callable[[zdd.Action], None]:
    def hook(action: zdd.Action) -> None:
        raise exc

    return hook


def test_a_provider_raising_anything_else_is_a_contract_error():
    """A provider raising something other than a ZddError from perform() breaks its
    contract: the deployment ends in a failed result naming it (ProviderContractError,
    "provider raised"), never an escaping exception; the lock is released."""
    provider = MemoryProvider(fleet(2), fail={"update": _raise(RuntimeError("boom"))})
    result = deploy(provider, zdd.Immediate(), 2)
    assert result.outcome == "failed"
    assert result.error is not None
    assert "provider raised RuntimeError: boom" in result.error
    assert_lock_released(provider)


def test_a_contract_error_rolls_back_where_the_strategy_can():
    """The same breach under rolling is a failure like any other: it rolls back (the
    machine it hit was only cordoned: the rollback releases it)."""
    provider = MemoryProvider(fleet(2), fail={"update": _raise(RuntimeError("boom"))})
    result = deploy(provider, zdd.Rolling(max_unavailable=1, drain_delay=0), 2)
    assert result.outcome == "rolled_back"
    assert "provider raised RuntimeError: boom" in (result.error or "")
    assert_all(provider, "v1", 2)
    assert_lock_released(provider)


def test_a_contract_error_during_the_rollback_is_a_failed_result():
    """When the rollback meets the broken provider too, the result is failed (never a
    rollback of the rollback, never an escaping exception)."""
    provider = MemoryProvider(
        fleet(2),
        fail={
            "update": _raise(RuntimeError("boom")),
            "uncordon": _raise(ValueError("bang")),
        },
    )
    result = deploy(provider, zdd.Rolling(max_unavailable=1, drain_delay=0), 2)
    assert result.outcome == "failed"
    assert (result.error or "").startswith("rollback failed: ")
    assert "provider raised ValueError: bang" in (result.error or "")
    assert_lock_released(provider)


def test_a_provider_failing_on_a_create_rolls_back():
    """A contract error on a create (bluegreen, before the switch) rolls back: the blues
    are untouched and still serve."""
    provider = MemoryProvider(fleet(2), fail={"create": _raise(KeyError("capacity"))})
    result = deploy(provider, zdd.BlueGreen(drain_delay=0), 2)
    assert result.outcome == "rolled_back"
    assert "provider raised KeyError" in (result.error or "")
    assert_all(provider, "v1", 2)
    assert_lock_released(provider)


def test_transient_failures_are_retried():
    """ActionFailed(transient=True) is retried (with backoff) until it succeeds."""
    failures = iter([True, True, False] * 100)

    def flaky(action: zdd.Action) -> None:
        if next(failures):
            raise zdd.ActionFailed("HTTP 503", transient=True)

    provider = MemoryProvider(fleet(2), fail={"update": flaky})
    result = deploy(provider, zdd.Rolling(max_unavailable=1, drain_delay=0), 2)
    assert result.converged, result.error
    assert_all(provider, "v2", 2)


def test_a_provider_returning_garbage_is_a_contract_error():
    """perform() must return a Machine or None: anything else fails the action."""
    provider = MemoryProvider(fleet(1))
    real = provider.perform

    def perform(action: zdd.Action) -> Any:
        out = real(action)
        return "ok" if isinstance(action, zdd.Update) else out

    provider.perform = perform  # type: ignore[method-assign]
    result = deploy(provider, zdd.Immediate(), 1)
    assert result.outcome == "failed"
    assert "provider returned str, not a Machine" in (result.error or "")
    assert_lock_released(provider)


@pytest.mark.parametrize("method", ["observe", "machine"])
def test_a_provider_raising_from_observe_or_machine_is_a_contract_error(method: str):
    """A non-ZddError from observe() or machine() is a contract breach too: it comes
    out as ProviderContractError naming it, never as the provider's own exception;
    the lock is released. (An escaping RuntimeError was a bug, fixed in c07fa14.)"""
    provider = MemoryProvider(fleet(2), boot=0.01)

    def broken(*args: Any) -> Any:
        raise RuntimeError(f"{method} exploded")

    setattr(provider, method, broken)
    with pytest.raises(zdd.ProviderContractError, match=f"RuntimeError from {method}"):
        deploy(provider, zdd.Rolling(max_unavailable=1, drain_delay=0), 2)
    assert_lock_released(provider)


def test_a_release_that_never_gets_healthy_rolls_back():
    """A machine of the new release that never passes its checks: the deployment
    rolls back after wait_timeout, every machine on v1 again and serving."""
    provider = MemoryProvider(fleet(3), boot=0.01, failing=frozenset({"v2"}))
    strategy = zdd.Rolling(max_unavailable=1, drain_delay=0, wait_timeout=0.3)
    result = deploy(provider, strategy, 3)
    assert result.outcome == "rolled_back"
    assert "not healthy within 0.3s" in (result.error or "")
    assert_all(provider, "v1", 3)
    assert provider.record["phase"] == "rolled_back"
    assert_lock_released(provider)


def test_a_failing_bluegreen_destroys_its_greens():
    provider = MemoryProvider(fleet(2), boot=0.01, failing=frozenset({"v2"}))
    result = deploy(provider, zdd.BlueGreen(drain_delay=0, wait_timeout=0.3), 2)
    assert result.outcome == "rolled_back"
    assert_all(provider, "v1", 2)
    assert {m.id for m in provider.live} == {"m1", "m2"}, "a green survived"


# -- the lock ----------------------------------------------------------------------


def test_a_fleet_locked_by_someone_else_fails_fast():
    """Exclusion: the second executor fails at once with DeploymentLocked naming the
    holder; it performs nothing, and the holder keeps the lock."""
    provider = MemoryProvider(fleet(2))
    provider.acquire_lock("alice@laptop:42", 60)
    t0 = time.monotonic()
    with pytest.raises(zdd.DeploymentLocked, match="alice@laptop:42") as err:
        deploy(provider, zdd.Rolling(drain_delay=0), 2, owner="bob@ci")
    assert time.monotonic() - t0 < 0.5
    assert err.value.holder == "alice@laptop:42"
    assert provider.performed == []
    assert provider.lock is not None and provider.lock[0] == "alice@laptop:42"


def test_an_expired_lock_is_taken_over():
    provider = MemoryProvider(fleet(2))
    provider.acquire_lock("crashed-executor", 0.0)
    result = deploy(provider, zdd.Rolling(max_unavailable=1, drain_delay=0), 2, owner="bob")
    assert result.converged, result.error
    assert provider.lock is None
    assert ("acquire", "bob") in provider.lock_log and provider.lock_log[-1] == ("release", "bob")


def test_the_lock_is_refreshed_during_a_long_deployment():
    """The lock is renewed every lock_ttl / 3 seconds while the executor runs."""
    provider = MemoryProvider(fleet(2), boot=0.1)
    result = deploy(
        provider, zdd.Rolling(max_unavailable=1, drain_delay=0), 2, owner="me", lock_ttl=0.15
    )
    assert result.converged, result.error
    acquires = [entry for entry in provider.lock_log if entry == ("acquire", "me")]
    assert len(acquires) >= 3, provider.lock_log
    assert_lock_released(provider)


# -- reporters ---------------------------------------------------------------------

HOOKS = (
    "deployment_started",
    "step_started",
    "action_started",
    "action_finished",
    "waiting",
    "gate",
    "rollback_started",
    "finished",
)


class Tee(Reporter):
    """Forwards every hook to ``inner`` and counts the calls."""

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattribute__(self, name: str) -> Any:
        if name in HOOKS:
            inner = object.__getattribute__(self, "inner")
            calls = object.__getattribute__(self, "calls")

            def hook(*args: Any) -> None:
                calls.append(name)
                getattr(inner, name)(*args)

            return hook
        return object.__getattribute__(self, name)


@pytest.mark.parametrize("failing", [False, True], ids=["converges", "rolls-back"])
def test_text_reporter_writes_one_line_per_event(failing: bool):
    stream = io.StringIO()
    tee = Tee(TextReporter(stream))
    provider = MemoryProvider(
        fleet(2), boot=0.01, failing=frozenset({"v2"}) if failing else frozenset()
    )
    strategy = zdd.Rolling(max_unavailable=1, drain_delay=0, wait_timeout=0.2)
    result = deploy(provider, strategy, 2, reporter=tee)
    lines = stream.getvalue().splitlines()
    assert len(lines) == len(tee.calls) > 3
    for line in lines:
        assert re.match(r"\[ *\d+\.\ds\] +\S", line), line
    assert tee.calls[0] == "deployment_started" and tee.calls[-1] == "finished"
    assert lines[-1].endswith(f"finished: {result.outcome}" + (f" ({result.error})" * failing))
    assert ("rollback_started" in tee.calls) is failing


@pytest.mark.parametrize("failing", [False, True], ids=["converges", "rolls-back"])
def test_json_lines_reporter_writes_one_object_per_event(failing: bool):
    stream = io.StringIO()
    tee = Tee(JsonLinesReporter(stream))
    provider = MemoryProvider(
        fleet(2), boot=0.01, failing=frozenset({"v2"}) if failing else frozenset()
    )
    strategy = zdd.Rolling(max_unavailable=1, drain_delay=0, wait_timeout=0.2)
    result = deploy(provider, strategy, 2, reporter=tee)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["event"] for r in records] == tee.calls
    times = [r["t"] for r in records]
    assert all(isinstance(t, int | float) and t >= 0 for t in times)
    assert times == sorted(times), "elapsed time goes backwards"
    assert records[-1] == {"t": records[-1]["t"], "event": "finished", **result.to_json()}
    started = [r for r in records if r["event"] == "action_started"]
    assert started and all(r["action"]["kind"] for r in started)


def test_reporters_in_the_simulator_use_virtual_time():
    """In the simulator, ``elapsed`` is virtual: a bake of an hour shows as an hour."""
    stream = io.StringIO()
    strategy = zdd.Canary(steps=[zdd.CanaryStep(machines=1, bake=3600)], drain_delay=0)
    state = zdd.FleetState.uniform(2)
    report = zdd.simulate(
        state, zdd.Desired.single(V2, 2), strategy, reporter=JsonLinesReporter(stream)
    )
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert report.converged
    assert records[-1]["event"] == "finished"
    assert records[-1]["t"] >= 3600


# -- the simulator: immediate, gates and bakes ------------------------------------


@pytest.mark.parametrize("concurrency", [1, 8, 32])
def test_immediate_updates_every_machine_at_once(concurrency: int):
    """Immediate: every machine at once, bounded by the API concurrency -- 24 updates
    take ceil(24 / concurrency) API round trips, plus the two record labels."""
    state = zdd.FleetState.uniform(24)
    options = zdd.ExecuteOptions(concurrency=concurrency)
    report = zdd.simulate(
        state, zdd.Desired.single(V2, 24), zdd.Immediate(), options=options, api_latency=0.5
    )
    assert report.outcome == "converged"
    rounds = -(-24 // concurrency) + 2
    assert report.makespan_s == pytest.approx(rounds * 0.5)


# -- gates and bakes in the simulator -----------------------------------------------


@pytest.mark.parametrize(("result", "outcome"), [("fail", "rolled_back"), ("pass", "converged")])
def test_a_bluegreen_switch_gate(result: str, outcome: str):
    """A failing switch gate rolls back (greens destroyed, blues untouched); a passing
    one lets the switch happen."""
    state = zdd.FleetState.uniform(3)
    strategy = zdd.BlueGreen(switch_gate="qa", drain_delay=0)
    options = zdd.ExecuteOptions(gates={"qa": result})  # type: ignore[dict-item]
    report = zdd.simulate(state, zdd.Desired.single(V2, 3), strategy, options=options)
    assert report.outcome == outcome, report.error
    if outcome == "rolled_back":
        assert report.rolled_back
        assert "gate 'qa' failed" in (report.error or "")
        assert sorted(i for i, *_ in report.final) == ["m1", "m2", "m3"]
        assert report.min_serving_by_group["app"] == 3
    else:
        assert report.converged
        assert not {"m1", "m2", "m3"} & {i for i, *_ in report.final}


def test_a_pending_gate_times_out_and_rolls_back():
    state = zdd.FleetState.uniform(2)
    strategy = zdd.BlueGreen(switch_gate="qa", drain_delay=0)
    options = zdd.ExecuteOptions(gate_timeout=120, gate_poll=10)
    report = zdd.simulate(state, zdd.Desired.single(V2, 2), strategy, options=options)
    assert report.outcome == "rolled_back"
    assert "still pending after 120s" in (report.error or "")
    assert report.makespan_s >= 120


@pytest.mark.parametrize("bake", [30, 600])
@pytest.mark.parametrize("machines", [1, 2])
def test_a_canary_bake_takes_at_least_its_time(bake: int, machines: int):
    state = zdd.FleetState.uniform(4)
    steps = [zdd.CanaryStep(machines=machines, bake=bake)]
    report = zdd.simulate(
        state, zdd.Desired.single(V2, 4), zdd.Canary(steps=steps, drain_delay=0), boot_time=5
    )
    assert report.converged, report.error
    assert report.makespan_s >= bake
    # the promotion (the rolling phase) begins after the bake
    canary = [t for t, why in report.steps if why.startswith("app: canary")]
    promotion = [t for t, why in report.steps if why.startswith("app: rolling")]
    assert canary and promotion, report.steps
    assert promotion[0] >= canary[0] + bake


def test_canary_steps_bake_one_after_another():
    steps = [zdd.CanaryStep(machines=1, bake=100), zdd.CanaryStep(machines=2, bake=200)]
    state = zdd.FleetState.uniform(4)
    report = zdd.simulate(state, zdd.Desired.single(V2, 4), zdd.Canary(steps=steps), boot_time=5)
    assert report.converged, report.error
    assert report.makespan_s >= 300


def test_the_result_carries_the_typed_error():
    """DeployResult.exception is the failure as a typed error: the caller can act on
    its kind (a timeout, a provider's failure, a contract breach)."""
    provider = MemoryProvider(fleet(2), failing=frozenset({"v2"}))
    result = deploy(provider, zdd.Rolling(wait_timeout=0.2, drain_delay=0), 2)
    assert result.rolled_back
    assert isinstance(result.exception, zdd.DeployTimeout)
    assert str(result.exception) == result.error
    assert result.to_json()["error_kind"] == "DeployTimeout"

    def garbage(action: zdd.Action) -> None:
        raise RuntimeError("oops")

    provider = MemoryProvider(fleet(2), fail={"cordon": garbage})
    result = deploy(provider, zdd.Rolling(drain_delay=0), 2)
    assert isinstance(result.exception, zdd.ProviderContractError), result
    converged = deploy(MemoryProvider(fleet(2)), zdd.Rolling(drain_delay=0), 2)
    assert converged.converged and converged.exception is None
