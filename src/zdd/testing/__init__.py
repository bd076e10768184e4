"""Helpers for people who write providers: a contract check any provider should pass.

``check_provider(make)`` builds a fresh provider with ``make(state)`` for each
check and asserts the :class:`~zdd.providers.Provider` contract the executor
relies on. It raises ``AssertionError`` naming the broken rule, so it drops
into any test runner::

    def test_my_provider_keeps_the_contract():
        zdd.testing.check_provider(lambda state: MyProvider.for_tests(state))

``make`` receives a small starting fleet (three started, passing machines
``m1..m3`` on ``v1``, group ``app``) and must return a provider over a fleet
with those machines (ids may differ if the provider assigns its own: the checks
only use the ids that ``observe()`` reports).
"""

from __future__ import annotations

from collections.abc import Callable

from .._errors import ActionFailed, DeploymentLocked, ZddError
from .._model import FleetState, Machine
from .._plan import Cordon, Create, Label, Uncordon
from .._record import DEPLOYING, PHASE, TARGET
from ..providers import Capabilities, Provider

__all__ = ["check_provider"]


def check_provider(make: Callable[[FleetState], Provider]) -> None:
    """Assert the provider contract on fresh providers from ``make``."""
    for check in (
        _observes,
        _cordons,
        _creates_once_per_key,
        _writes_the_record,
        _locks,
        _fails_with_zdd_errors,
    ):
        check(make(FleetState.uniform(3)))


def _observes(p: Provider) -> None:
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


def _cordons(p: Provider) -> None:
    m = p.observe().machines[0]
    p.perform(Cordon(group=m.group, machine=m.id))
    assert _settle(p, m).cordoned, "cordon must mark the machine cordoned"
    p.perform(Cordon(group=m.group, machine=m.id))  # idempotent
    p.perform(Uncordon(group=m.group, machine=m.id))
    assert not _settle(p, m).cordoned, "uncordon must clear the cordon"


def _creates_once_per_key(p: Provider) -> None:
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


def _writes_the_record(p: Provider) -> None:
    p.perform(Label(group="*", values={PHASE: DEPLOYING, TARGET: "app=v2"}))
    record = p.observe().record
    assert record.get(PHASE) == DEPLOYING, "a record label must show in observe().record"
    assert record.get(TARGET) == "app=v2"


def _locks(p: Provider) -> None:
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


def _fails_with_zdd_errors(p: Provider) -> None:
    try:
        p.perform(Cordon(group="app", machine="no-such-machine"))
    except ActionFailed:
        pass
    except ZddError:
        pass
    else:
        raise AssertionError("an action on an unknown machine must raise ActionFailed")
