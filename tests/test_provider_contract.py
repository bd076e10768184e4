from __future__ import annotations

import pytest

import zdd
from zdd.providers import Provider
from zdd.providers.simulated import SimulatedFleet
from zdd.testing import check_provider


def test_the_simulated_fleet_keeps_the_contract() -> None:
    check_provider(lambda state: SimulatedFleet(state))


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


def test_the_check_catches_a_broken_provider() -> None:
    with pytest.raises(AssertionError, match="same key"):
        check_provider(lambda state: _Forgetful(state))
