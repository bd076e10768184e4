"""Providers: the adapters through which an executor observes and changes a fleet.

A provider decides nothing: it reports what is there and carries out one
action when asked. :class:`Provider` is the protocol (structural: subclassing
is not needed); ``zdd.providers.simulated`` is the embedded default.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .._model import Capabilities, FleetState, Machine
from .._plan import Action

__all__ = ["Capabilities", "Provider"]


@runtime_checkable
class Provider(Protocol):
    """The contract between the executor and a fleet.

    Every method may raise :class:`zdd.ActionFailed` (``transient=True`` when a
    retry may succeed); anything else that escapes is a contract breach.
    """

    def observe(self) -> FleetState:
        """The whole fleet now, with the deployment record."""
        ...

    def machine(self, machine_id: str) -> Machine | None:
        """One machine now (``None`` when it does not exist)."""
        ...

    def perform(self, action: Action) -> Machine | None:
        """Carry out one effect action (never a wait) and block until the provider
        accepted it; return the machine it created or changed, if any.

        ``Create`` must be idempotent on ``action.key``: if a machine carrying
        that key exists, return it instead of creating another. ``Label`` with
        ``machine=None`` writes the deployment record.
        """
        ...

    def capabilities(self) -> Capabilities:
        """What this provider supports."""
        ...

    def acquire_lock(self, owner: str, ttl: float) -> None:
        """Take (or, for the same ``owner``, extend) the fleet's deployment lock.

        Raises :class:`zdd.DeploymentLocked` naming the holder when someone else
        holds it and it has not expired; an expired lock is taken over.
        """
        ...

    def release_lock(self, owner: str) -> None:
        """Give the lock back (nothing happens if ``owner`` does not hold it)."""
        ...
