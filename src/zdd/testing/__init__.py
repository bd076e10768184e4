"""Helpers for people who write providers: the provider contract, one rule at a time.

The contract is a list of rules (:data:`RULES`), each a check that raises
``AssertionError`` naming what is broken. Run them all with
``check_provider(make)``, or one pytest test per rule::

    @pytest.mark.parametrize("rule", zdd.testing.RULES, ids=zdd.testing.rule_name)
    def test_my_provider(rule):
        zdd.testing.check_rule(rule, lambda state: MyProvider.for_tests(state))

``make`` receives a small starting fleet (three started, passing machines
``m1..m3`` on ``v1``, group ``app``) and must return a provider over a fleet
with those machines (ids may differ if the provider assigns its own: the checks
only use the ids that ``observe()`` reports). ``wait(provider, seconds)`` lets
time pass for the provider (default: ``time.sleep``; a simulated fleet advances
its virtual clock); rules that wait for a machine to get somewhere poll it for
up to ``timeout`` seconds of that time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs

from .._errors import ActionFailed, DeploymentLocked, ZddError
from .._model import Capabilities, FleetState, Machine, MachineState, Release
from .._plan import Cordon, Create, Destroy, Label, Stop, Uncordon, Update
from .._record import DEPLOYING, PHASE, TARGET
from ..providers import Provider

__all__ = ["RULES", "Rule", "check_provider", "check_rule", "rule_name"]

Wait = Callable[[Provider, float], None]


def _sleep(p: Provider, seconds: float) -> None:
    time.sleep(seconds)


@attrs.frozen
class _Ctx:
    p: Provider
    wait: Wait
    timeout: float

    def eventually(self, mid: str, ok: Callable[[Machine | None], bool], what: str) -> None:
        waited = 0.0
        step = 0.05
        while True:
            if ok(self.p.machine(mid)):
                return
            if waited >= self.timeout:
                raise AssertionError(f"{mid} did not get {what} within {self.timeout:g}s")
            self.wait(self.p, step)
            waited += step
            step = min(step * 2, 1.0)


Rule = Callable[[_Ctx], None]


def rule_name(rule: Rule) -> str:
    """A rule's name, for test ids."""
    return rule.__name__.lstrip("_")


def check_rule(
    rule: Rule,
    make: Callable[[FleetState], Provider],
    *,
    wait: Wait | None = None,
    timeout: float = 30.0,
) -> None:
    """Check one rule of the contract on a fresh provider from ``make``."""
    rule(_Ctx(make(FleetState.uniform(3)), wait or _sleep, timeout))


def _observes(c: _Ctx) -> None:
    p = c.p
    state = p.observe()
    assert isinstance(state, FleetState), "observe() must return a FleetState"
    assert len(state.live) == 3, "observe() must list the fleet's live machines"
    for m in state.machines:
        one = p.machine(m.id)
        assert isinstance(one, Machine), "machine(id) must return the Machine"
        assert one.id == m.id and one.version == m.version, "machine(id) must match observe()"
    assert p.machine("no-such-machine") is None, "machine() of an unknown id must be None"
    assert isinstance(p.capabilities(), Capabilities), "capabilities() must be Capabilities"


def _settle(p: Provider, m: Machine) -> Machine:
    got = p.machine(m.id)
    assert got is not None, f"{m.id} vanished"
    return got


def _cordons(c: _Ctx) -> None:
    p = c.p
    m = p.observe().machines[0]
    p.perform(Cordon(group=m.group, machine=m.id))
    assert _settle(p, m).cordoned, "cordon must mark the machine cordoned"
    p.perform(Cordon(group=m.group, machine=m.id))  # idempotent
    p.perform(Uncordon(group=m.group, machine=m.id))
    assert not _settle(p, m).cordoned, "uncordon must clear the cordon"


def _creates_once_per_key(c: _Ctx) -> None:
    p = c.p
    before = len(p.observe().live)
    create = Create(group="app", region="ord", version="v2", key="contract-key-1", role="surge")
    first = p.perform(create)
    again = p.perform(create)
    assert isinstance(first, Machine), "create must return the new Machine"
    assert isinstance(again, Machine) and again.id == first.id, (
        "a second create with the same key must return the same machine"
    )
    assert first.labels.get("zdd.key") == "contract-key-1", "a created machine carries zdd.key"
    assert len(p.observe().live) == before + 1, "the same key must never create two machines"


def _writes_the_record(c: _Ctx) -> None:
    p = c.p
    p.perform(Label(group="*", values={PHASE: DEPLOYING, TARGET: "app=v2"}))
    record = p.observe().record
    assert record.get(PHASE) == DEPLOYING, "a record label must show in observe().record"
    assert record.get(TARGET) == "app=v2"


def _locks(c: _Ctx) -> None:
    p = c.p
    p.acquire_lock("first", 60.0)
    p.acquire_lock("first", 60.0)  # the same owner extends
    try:
        p.acquire_lock("second", 60.0)
    except DeploymentLocked as exc:
        assert exc.holder == "first", "DeploymentLocked must name the holder"
    else:
        raise AssertionError("a second owner must get DeploymentLocked while the lock is held")
    p.release_lock("first")
    p.acquire_lock("second", 60.0)
    p.release_lock("second")


def _fails_with_zdd_errors(c: _Ctx) -> None:
    p = c.p
    try:
        p.perform(Cordon(group="app", machine="no-such-machine"))
    except ActionFailed:
        pass
    except ZddError:
        pass
    else:
        raise AssertionError("an action on an unknown machine must raise ActionFailed")


#: The release the contract deploys (an image, as a real platform needs one).
_V2 = Release(version="v2", image="registry.example/contract:v2")


def _creates_hidden_machines_that_do_not_serve(c: _Ctx) -> None:
    release = _V2
    create = Create(
        group="app",
        region="ord",
        version="v2",
        key="contract-hidden",
        role="green",
        release=release,
    )
    m = c.p.perform(create)
    assert isinstance(m, Machine), "create must return the new Machine"
    assert m.cordoned, "a hidden create must come up cordoned (no traffic)"
    c.eventually(m.id, lambda x: x is not None and x.state is MachineState.STARTED, "started")
    got = c.p.machine(m.id)
    assert got is not None and not got.serving, "a hidden machine must not serve before uncordon"
    c.p.perform(Uncordon(group="app", machine=m.id))
    c.eventually(m.id, lambda x: x is not None and x.serving, "serving after uncordon")


def _updates_in_place(c: _Ctx) -> None:
    m = c.p.observe().machines[0]
    release = _V2
    c.p.perform(
        Update(group=m.group, machine=m.id, version="v2", from_version=m.version, release=release)
    )
    c.eventually(
        m.id,
        lambda x: x is not None and x.version == "v2" and x.state is MachineState.STARTED,
        "updated to v2 and started",
    )
    assert c.p.machine(m.id) is not None, "an update keeps the machine (same id)"


def _stops(c: _Ctx) -> None:
    m = c.p.observe().machines[0]
    c.p.perform(Cordon(group=m.group, machine=m.id))
    c.p.perform(Stop(group=m.group, machine=m.id, signal="SIGTERM", timeout=5.0))
    c.eventually(m.id, lambda x: x is not None and x.state is MachineState.STOPPED, "stopped")
    got = c.p.machine(m.id)
    assert got is not None and not got.serving, "a stopped machine does not serve"


def _destroys(c: _Ctx) -> None:
    before = {m.id for m in c.p.observe().live}
    m = c.p.observe().machines[0]
    c.p.perform(Cordon(group=m.group, machine=m.id))
    c.p.perform(Stop(group=m.group, machine=m.id, signal="SIGTERM", timeout=5.0))
    c.eventually(m.id, lambda x: x is not None and x.state is MachineState.STOPPED, "stopped")
    c.p.perform(Destroy(group=m.group, machine=m.id))
    c.eventually(m.id, lambda x: x is None, "gone (machine() is None after a destroy)")
    assert {x.id for x in c.p.observe().live} == before - {m.id}, "destroy removes one machine"


def _replaces_the_record(c: _Ctx) -> None:
    c.p.perform(Label(group="*", values={PHASE: DEPLOYING, TARGET: "app=v2", "extra": "1"}))
    c.p.perform(Label(group="*", values={TARGET: "app=v3"}, replace=True))
    record = c.p.observe().record
    assert record.get(TARGET) == "app=v3", "Label(replace=True) must write its values"
    assert "extra" not in record and PHASE not in record, (
        "Label(replace=True) must drop the keys it does not send (a new deployment's record)"
    )


def _lets_an_expired_lock_be_taken_over(c: _Ctx) -> None:
    c.p.acquire_lock("dead-deployer", 1.0)
    try:
        c.p.acquire_lock("next", 60.0)
    except DeploymentLocked:
        pass
    else:
        raise AssertionError("a lock must hold until it expires")
    c.wait(c.p, 2.5)
    c.p.acquire_lock("next", 60.0)  # expired: taken over
    c.p.release_lock("next")


def _tells_the_truth_about_cordons(c: _Ctx) -> None:
    caps = c.p.capabilities()
    assert isinstance(caps, Capabilities)
    if not caps.cordon:
        return
    m = c.p.observe().machines[0]
    c.p.perform(Cordon(group=m.group, machine=m.id))
    c.eventually(m.id, lambda x: x is not None and not x.serving, "out of traffic when cordoned")
    got = c.p.machine(m.id)
    assert got is not None and got.state is MachineState.STARTED, "a cordon does not stop it"


#: The contract, one rule each (see the module docstring).
RULES: tuple[Rule, ...] = (
    _observes,
    _cordons,
    _creates_once_per_key,
    _creates_hidden_machines_that_do_not_serve,
    _updates_in_place,
    _stops,
    _destroys,
    _writes_the_record,
    _replaces_the_record,
    _locks,
    _lets_an_expired_lock_be_taken_over,
    _tells_the_truth_about_cordons,
    _fails_with_zdd_errors,
)


def check_provider(
    make: Callable[[FleetState], Provider],
    *,
    wait: Wait | None = None,
    timeout: float = 30.0,
    rules: tuple[Rule, ...] = RULES,
) -> None:
    """Assert every rule of the contract, each on a fresh provider from ``make``."""
    for rule in rules:
        check_rule(rule, make, wait=wait, timeout=timeout)
