"""Strategy configurations: frozen, validated, keyword-only values with Fly's defaults.

Programmatic durations are seconds (``wait_timeout=300``) or Go duration text
(``wait_timeout="5m"``). Reading them from a fly.toml is ``_config.py``'s.
"""

from __future__ import annotations

import math
import shlex
from typing import Any, ClassVar, TypeAlias

import attrs

from ._durations import parse_duration
from ._errors import InvalidConfig, describe
from ._plan import redact_command
from ._record import MAX_GROUP_MACHINES

__all__ = [
    "FLY_MAX_UNAVAILABLE",
    "STRATEGY_NAMES",
    "BlueGreen",
    "Canary",
    "CanaryStep",
    "Immediate",
    "Rolling",
    "Strategy",
    "common_options",
    "strategy_from_name",
]


def _secs(value: object, field: str) -> float:
    return parse_duration(value, field=field, bare_unit=1.0)


def _command(value: object, field: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidConfig("must be a command line (a string)", field=field)
    try:
        shlex.split(value)
    except ValueError as exc:
        raise InvalidConfig(f"cannot be split like a shell would: {exc}", field=field) from None
    return value


def _redacted_command(command: str | None) -> str:
    return repr(redact_command(command)) if command is not None else "None"


# attrs converters must be named functions for mypy: one per field.
def _wait_timeout(v: object) -> float:
    return _secs(v, "wait_timeout")


def _release_command_timeout(v: object) -> float:
    return _secs(v, "release_command_timeout")


def _post_deploy_command_timeout(v: object) -> float:
    return _secs(v, "post_deploy_command_timeout")


def _min_healthy_time(v: object) -> float:
    return _secs(v, "min_healthy_time")


def _drain_delay(v: object) -> float:
    return _secs(v, "drain_delay")


def _keep_blue_for(v: object) -> float:
    return _secs(v, "keep_blue_for")


def _bake(v: object) -> float:
    return _secs(v, "canary_steps.bake")


def _release_command(v: object) -> str | None:
    return _command(v, "release_command")


def _post_deploy_command(v: object) -> str | None:
    return _command(v, "post_deploy_command")


def _allow_downtime(value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidConfig("must be true or false", field="allow_downtime")
    return value


def _waves(value: object) -> tuple[str, ...] | bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list | tuple) and all(isinstance(r, str) and r for r in value):
        if len(set(value)) != len(value):
            raise InvalidConfig("lists a region twice", field="region_waves")
        return tuple(value)
    raise InvalidConfig(
        "must be true (every region, primary first) or a list of region names in order",
        field="region_waves",
    )


@attrs.frozen(kw_only=True)
class _Common:
    """Options every strategy has."""

    wait_timeout: float = attrs.field(default=300.0, converter=_wait_timeout)
    release_command: str | None = attrs.field(
        default=None, converter=_release_command, repr=_redacted_command
    )
    release_command_timeout: float = attrs.field(default=300.0, converter=_release_command_timeout)
    post_deploy_command: str | None = attrs.field(
        default=None, converter=_post_deploy_command, repr=_redacted_command
    )
    post_deploy_command_timeout: float = attrs.field(
        default=300.0, converter=_post_deploy_command_timeout
    )
    min_healthy_time: float = attrs.field(default=0.0, converter=_min_healthy_time)
    drain_delay: float = attrs.field(default=10.0, converter=_drain_delay)
    region_waves: tuple[str, ...] | bool = attrs.field(default=False, converter=_waves)
    auto_rollback: bool = True
    allow_downtime: bool = attrs.field(default=False, converter=_allow_downtime)

    name: ClassVar[str] = ""


def _count(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidConfig(
            f"must be a number (a fraction such as 0.25, or a count such as 2), "
            f"got {describe(value)}",
            field=field,
        )
    try:
        x = float(value)
    except OverflowError:
        raise InvalidConfig(f"at most {MAX_GROUP_MACHINES}", field=field) from None
    if not math.isfinite(x):
        raise InvalidConfig(f"must be finite, got {describe(value)}", field=field)
    if x < 0:
        raise InvalidConfig(
            f"must not be negative, got {describe(value)}; use a fraction such as 0.25 or a count",
            field=field,
        )
    if x > MAX_GROUP_MACHINES:
        raise InvalidConfig(
            f"at most {MAX_GROUP_MACHINES} (a group's most machines), got {describe(value)}",
            field=field,
        )
    return x


def _max_unavailable(v: object) -> float | None:
    return None if v is None else _count(v, "max_unavailable")


def _max_surge(v: object) -> float:
    return _count(v, "max_surge")


def _fraction_or_count(x: float, n: int, *, at_least_one: bool) -> int:
    if x == 0:
        return 0
    if x < 1:
        k = math.ceil(n * x - 1e-9)
        return max(1, k) if at_least_one else k
    return math.floor(x)


@attrs.frozen(kw_only=True)
class Immediate(_Common):
    """Update every machine at once; no health waits. Nothing is promised."""

    name: ClassVar[str] = "immediate"


#: Fly's default ``max_unavailable`` (flyctl's ``--max-unavailable``).
FLY_MAX_UNAVAILABLE = 0.33


@attrs.frozen(kw_only=True)
class Rolling(_Common):
    """Replace machines a few at a time, holding a floor of serving machines.

    Attributes:
        max_unavailable: a fraction in (0, 1) of each group's desired machines,
            rounded up and at least 1, or a count >= 1 (truncated). ``None``
            (not set): 0 when ``max_surge`` is set (create before destroy),
            else Fly's default 0.33.
        max_surge: extra machines allowed above the desired count while
            deploying (create before destroy), as in Kubernetes: a fraction
            rounds up, a count is truncated. 0 (Fly's behaviour) updates in place.

    Whatever the budget, a group that serves traffic keeps at least one
    machine serving (``allow_downtime`` lifts that): see
    ``docs/decisions/0008-never-zero.md``.
    """

    max_unavailable: float | None = attrs.field(default=None, converter=_max_unavailable)
    max_surge: float = attrs.field(default=0.0, converter=_max_surge)

    name: ClassVar[str] = "rolling"

    def __attrs_post_init__(self) -> None:
        if self.max_unavailable == 0 and self.max_surge == 0:
            raise InvalidConfig(
                "max_unavailable 0 with max_surge 0 allows no progress; set max_surge "
                "(e.g. 1, the zero-downtime form) or a max_unavailable above 0",
                field="max_unavailable",
            )

    @property
    def effective_max_unavailable(self) -> float:
        """``max_unavailable`` as set, or its default: 0 with a surge, else Fly's 0.33."""
        if self.max_unavailable is not None:
            return self.max_unavailable
        return 0.0 if self.max_surge > 0 else FLY_MAX_UNAVAILABLE

    def unavailable_budget(self, desired: int, *, in_place: bool = False) -> int:
        """Machines of a group of ``desired`` that may be out of service at once.

        ``in_place``: the group has machines that must be updated in place (they
        hold volumes, which a surge machine cannot take over). With
        ``max_unavailable`` not set, those updates use Fly's default budget
        instead of the surge default of 0, which could never let them go.
        """
        x = self.effective_max_unavailable
        if in_place and self.max_unavailable is None:
            x = FLY_MAX_UNAVAILABLE
        return _fraction_or_count(x, desired, at_least_one=True)

    def surge_budget(self, desired: int) -> int:
        """Machines a group of ``desired`` may hold above ``desired``."""
        return _fraction_or_count(self.max_surge, desired, at_least_one=False)


def _gate(value: object, field: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidConfig("must be a gate name (a string)", field=field)
    return value


def _switch_gate(v: object) -> str | None:
    return _gate(v, "switch_gate")


def _step_gate(v: object) -> str | None:
    return _gate(v, "canary_steps.gate")


@attrs.frozen(kw_only=True)
class BlueGreen(_Common):
    """Start a full set of hidden greens, switch when all are healthy, retire blues.

    Attributes:
        switch_gate: when set, hold the switch until this gate is approved.
        keep_blue_for: keep the stopped blues this long after the switch (a
            fast way back), then destroy them.
    """

    switch_gate: str | None = attrs.field(default=None, converter=_switch_gate)
    keep_blue_for: float = attrs.field(default=0.0, converter=_keep_blue_for)

    name: ClassVar[str] = "bluegreen"


@attrs.frozen(kw_only=True)
class CanaryStep:
    """One progressive canary step.

    Attributes:
        machines: canary machines serving during this step (>= 1).
        weight: percent of the group's traffic sent to the canaries (1-100), where
            the provider supports weights; ``None`` gives them their even share
            (resetting an earlier step's weight).
        bake: how long to watch the canaries before going on.
        gate: a gate that must be approved before going on.
    """

    machines: int = 1
    weight: int | None = None
    bake: float = attrs.field(default=0.0, converter=_bake)
    gate: str | None = attrs.field(default=None, converter=_step_gate)

    def __attrs_post_init__(self) -> None:
        if isinstance(self.machines, bool) or not isinstance(self.machines, int):
            raise InvalidConfig("must be a whole number >= 1", field="canary_steps.machines")
        if self.machines < 1:
            raise InvalidConfig(
                f"must be >= 1, got {describe(self.machines)}", field="canary_steps.machines"
            )
        if self.machines > MAX_GROUP_MACHINES:
            raise InvalidConfig(
                f"at most {MAX_GROUP_MACHINES} (a group's most machines), "
                f"got {describe(self.machines)}",
                field="canary_steps.machines",
            )
        if self.weight is not None and (
            isinstance(self.weight, bool)
            or not isinstance(self.weight, int)
            or not 1 <= self.weight <= 100
        ):
            raise InvalidConfig(
                f"must be a whole percentage from 1 to 100, got {describe(self.weight)}",
                field="canary_steps.weight",
            )


def _steps(value: object) -> tuple[CanaryStep, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(s, CanaryStep) for s in value):
        raise InvalidConfig("must be a list of CanaryStep", field="canary_steps")
    return tuple(value)


@attrs.frozen(kw_only=True)
class Canary(_Common):
    """A canary phase, then promotion by a rolling update.

    With no ``steps`` this is flyctl's form: one canary machine per group is
    started hidden, health-checked and destroyed, then the group rolls with
    ``then``. With steps, canaries take traffic through each step (its weight,
    bake and gate) and stay: in the promotion they count among the group's
    machines, so the roll retires as many outdated machines as there are
    canaries and updates the rest in place.

    Attributes:
        steps: the progressive steps; empty for flyctl's form.
        then: the rolling update that promotes the release.
    """

    steps: tuple[CanaryStep, ...] = attrs.field(default=(), converter=_steps)
    then: Rolling = attrs.field(factory=Rolling)

    name: ClassVar[str] = "canary"

    @property
    def canary_machines(self) -> int:
        """The most canary machines any step asks for (1 in flyctl's form); rollbacks size
        their surge with it."""
        return max((s.machines for s in self.steps), default=1)


Strategy: TypeAlias = Immediate | Rolling | BlueGreen | Canary


def common_options(strategy: Strategy) -> dict[str, Any]:
    """The options every strategy has (``wait_timeout``, commands, drains...), by name:
    what carries over when a strategy is swapped for another."""
    return {f.name: getattr(strategy, f.name) for f in attrs.fields(_Common)}


#: Every strategy's class: a fifth strategy adds its class here and to ``Strategy``,
#: and its planner module registers in ``_planning.STRATEGIES``.
STRATEGY_CLASSES: tuple[type[Strategy], ...] = (Immediate, Rolling, BlueGreen, Canary)
STRATEGY_NAMES = tuple(cls.name for cls in STRATEGY_CLASSES)
_CLASSES: dict[str, type[Strategy]] = {cls.name: cls for cls in STRATEGY_CLASSES}


def strategy_from_name(name: str, **options: Any) -> Strategy:
    """Build the strategy called ``name`` (as in fly.toml) with ``options``.

    Options a strategy does not have are ignored when they are Fly's
    (``max_unavailable`` outside rolling and canary, as flyctl does) and an error
    otherwise.
    """
    key = name.strip().lower() if isinstance(name, str) else name
    cls = _CLASSES.get(key) if isinstance(key, str) else None
    if cls is None:
        raise InvalidConfig(
            f"unsupported strategy {describe(name)}; choose one of {', '.join(STRATEGY_NAMES)}",
            field="strategy",
        )
    fields = {f.name for f in attrs.fields(cls)}
    if cls is Canary:
        rolling_opts = {k: options.pop(k) for k in ("max_unavailable", "max_surge") if k in options}
        if rolling_opts:
            common = {
                k: v for k, v in options.items() if k in {f.name for f in attrs.fields(_Common)}
            }
            options["then"] = Rolling(**rolling_opts, **common)
    for key_ in list(options):
        if key_ not in fields:
            if key_ in _FLY_STRATEGY_KEYS:
                del options[key_]
                continue
            name_ = "canary_steps" if key_ == "steps" else key_
            raise InvalidConfig(
                f"does not apply to the {cls.name} strategy", field=f"deploy.{name_}"
            )
    return cls(**options)


# Keys that come from Fly's own [deploy] and are silently ignored where they do not apply.
_FLY_STRATEGY_KEYS = frozenset({"max_unavailable"})
