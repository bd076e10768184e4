"""The zdd error family, split by whose fault it is.

* The caller's: :class:`InvalidConfig` (a strategy, a fly.toml, a flag) and
  :class:`InvalidFleetState` (a fleet description that cannot be real).
* No safe plan exists: :class:`PlanningImpossible`.
* The world's: :class:`ActionFailed`, :class:`DeployTimeout`.
* A provider breaking its contract: :class:`ProviderContractError`.
* Someone else holds the fleet: :class:`DeploymentLocked`.

Every error zdd raises on purpose is a :class:`ZddError`; any other exception
escaping the library is a bug.
"""

from __future__ import annotations

__all__ = [
    "ActionFailed",
    "DeployTimeout",
    "DeploymentLocked",
    "DeploymentSuperseded",
    "InvalidConfig",
    "InvalidFleetState",
    "PlanningImpossible",
    "ProviderContractError",
    "ZddError",
]


class ZddError(Exception):
    """Base of every error zdd raises on purpose.

    ``str(err)`` is one line that names what is wrong and, where there is one,
    the fix.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidConfig(ZddError):
    """A strategy, configuration file or flag is wrong.

    Attributes:
        field: the dotted name of the offending setting (``"deploy.max_unavailable"``),
            or ``None`` when the problem is not tied to one field.
        reason: the message without the field name.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message


class InvalidFleetState(InvalidConfig):
    """A fleet description is inconsistent (duplicate ids, unknown states, ...)."""


class PlanningImpossible(ZddError):
    """No plan can reach the desired state while keeping zdd's guarantees."""


class ActionFailed(ZddError):
    """A provider could not carry out an action.

    Attributes:
        transient: true when trying again may succeed (a timeout, a 5xx, a
            rate limit); the executor retries those with backoff.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class DeployTimeout(ZddError):
    """A machine or the whole deployment did not get where it should in time."""


class ProviderContractError(ZddError):
    """A provider answered something its protocol does not allow."""


class DeploymentLocked(ZddError):
    """Another executor holds the fleet.

    Attributes:
        holder: who holds the lock.
        since: when they took it (free text or ISO 8601), if known.
    """

    def __init__(self, message: str, *, holder: str, since: str | None = None) -> None:
        super().__init__(message)
        self.holder = holder
        self.since = since


class DeploymentSuperseded(DeploymentLocked):
    """This deployer's leases lapsed (it was paused past them) and another deployment
    has written to the fleet since: it stops without touching the fleet again.

    Attributes:
        holder: the deployment that ran since, when known.
    """
