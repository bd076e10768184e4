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

from collections.abc import Mapping
from typing import Final

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
        source: what the field is read from (``"fleet JSON"``), if it is said.
    """

    def __init__(
        self, message: str, *, field: str | None = None, source: str | None = None
    ) -> None:
        if field is not None:
            field = _printable(field)
        text = f"{field}: {message}" if field else message
        super().__init__(f"{source}: {text}" if source else text)
        self.field = field
        self.reason = message
        self.source = source


def _printable(field: str) -> str:
    """A field name on one line: keys come from the user's file and may hold anything."""
    if field.isprintable() and len(field) <= 200:
        return field
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in field[:200])


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


# ---------------------------------------------------------------------------
# Input limits (docs/limits.md): what every loader refuses before it reads a value.

#: Deepest nesting of arrays and tables a fly.toml or fleet JSON may have.
MAX_DEPTH: Final = 64
#: Integers in input must fit in 64 bits (TOML's own range).
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**63 - 1
#: Longest run of digits a number in input may have (2**63 has 19 digits).
MAX_INT_DIGITS: Final = 19
_SHOWN = 40


def describe(value: object) -> str:
    """How an error message shows a value it refuses: short strings and small numbers
    as themselves, anything else by its type only (a value may be huge, deeply nested
    or a secret: ``repr`` of it may itself fail, or leak)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        if INT_MIN <= value <= INT_MAX:
            return str(value)
        return "an integer outside 64 bits"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        if len(value) > _SHOWN:
            return repr(value[:_SHOWN]) + "..."
        return repr(value)
    return f"a value of type {type(value).__name__}"


def check_limits(data: object, where: str, error: type[InvalidConfig]) -> None:
    """Refuse ``data`` (decoded JSON or TOML) nested deeper than :data:`MAX_DEPTH` or
    holding an integer outside 64 bits, naming the path. Iterative: no recursion to
    blow up, and a cycle counts as too deep."""
    stack: list[tuple[object, str, int]] = [(data, where, 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            if not INT_MIN <= value <= INT_MAX:
                raise error("integer out of range; numbers must fit in 64 bits", field=path or None)
            continue
        if isinstance(value, Mapping):
            children: list[tuple[object, str]] = [
                (v, f"{path}.{_key(k)}" if path else _key(k)) for k, v in value.items()
            ]
        elif isinstance(value, list | tuple):
            children = [(v, f"{path}[{i}]") for i, v in enumerate(value)]
        else:
            continue
        if depth >= MAX_DEPTH:
            raise error(f"nested deeper than {MAX_DEPTH} levels", field=path or None)
        stack.extend((v, p, depth + 1) for v, p in children)


def _key(key: object) -> str:
    return key[:_SHOWN] if isinstance(key, str) else "?"
