"""The provider contract (``zdd.testing``), one test per rule, on the simulated fleet
and on the Fly provider against the project's Machines API test server (the local
provider runs it in tests/test_local_provider.py, where HAProxy is at hand)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fly_server import FlyMachinesServer

import zdd
from zdd.providers import Provider
from zdd.providers.simulated import SimulatedFleet
from zdd.testing import RULES, Rule, check_provider, check_rule, rule_name

TOKEN = "contract-test-token-0123456789"


def _sim_wait(p: Provider, seconds: float) -> None:
    assert isinstance(p, SimulatedFleet)
    until = p.now + seconds
    while p.next_event_at is not None and p.next_event_at <= until:
        p.step()
    p._advance(until)


@pytest.mark.parametrize("rule", RULES, ids=rule_name)
def test_the_simulated_fleet_keeps_the_contract(rule: Rule) -> None:
    check_rule(rule, lambda state: SimulatedFleet(state), wait=_sim_wait)


@pytest.fixture
def fly(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FlyMachinesServer]]:
    monkeypatch.setenv("FLY_API_TOKEN", TOKEN)
    monkeypatch.delenv("ZDD_FLY_API_URL", raising=False)
    servers: list[FlyMachinesServer] = []
    yield servers
    for srv in servers:
        assert srv.violations == [], srv.violations
        srv.__exit__(None, None, None)


@pytest.mark.parametrize(
    "rule",
    RULES,
    ids=rule_name,
)
def test_the_fly_provider_keeps_the_contract(rule: Rule, fly: list[FlyMachinesServer]) -> None:
    from zdd.providers.fly import FlyMachines

    def make(state: zdd.FleetState) -> Provider:
        srv = FlyMachinesServer(state, token=TOKEN, speed=50.0)
        srv.__enter__()
        fly.append(srv)
        # what a v2 machine looks like (actions built by hand carry no release)
        v2 = zdd.Release(version="v2", image="registry.fly.io/hello:v2")
        return FlyMachines("hello", base_url=srv.url, releases={"v2": v2})

    check_rule(rule, make)


def test_the_simulated_fleet_is_a_provider() -> None:
    assert isinstance(SimulatedFleet(zdd.FleetState.uniform(1)), Provider)


class _Forgetful(SimulatedFleet):
    """Breaks the contract: creates twice for one key."""

    def perform(self, action: zdd.Action) -> zdd.Machine | None:
        if isinstance(action, zdd.Create):
            action = zdd.Create(
                group=action.group,
                region=action.region,
                version=action.version,
                key=action.key + f"-{self.api_calls}",
                role=action.role,
            )
        return super().perform(action)


class _Sticky(SimulatedFleet):
    """Breaks the contract: Label(replace=True) merges instead of replacing."""

    def perform(self, action: zdd.Action) -> zdd.Machine | None:
        if isinstance(action, zdd.Label) and action.replace:
            action = zdd.Label(group=action.group, values=action.values)
        return super().perform(action)


@pytest.mark.parametrize(("broken", "match"), [(_Forgetful, "same key"), (_Sticky, "replace=True")])
def test_the_check_catches_a_broken_provider(broken: type[SimulatedFleet], match: str) -> None:
    with pytest.raises(AssertionError, match=match):
        check_provider(lambda state: broken(state), wait=_sim_wait)
