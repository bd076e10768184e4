"""The fleet model: frozen values describing machines, releases and what is desired.

Everything here is an immutable value (``@attrs.frozen``): a planner reads them
and never changes them; a new state is a new value (``attrs.evolve``).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar, overload

import attrs

from . import _record
from ._errors import InvalidConfig, InvalidFleetState, describe

__all__ = [
    "Capabilities",
    "DeploymentRecord",
    "Desired",
    "FleetState",
    "FrozenMap",
    "GroupSpec",
    "Health",
    "HealthCheck",
    "Machine",
    "MachineState",
    "Mount",
    "Release",
]

_V = TypeVar("_V")
REDACTED = "<redacted>"


class FrozenMap(Mapping[str, _V]):
    """An immutable, hashable mapping with sorted keys (labels, env, records)."""

    __slots__ = ("_hash", "_items")

    def __init__(self, items: Mapping[str, _V] | Iterable[tuple[str, _V]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items: dict[str, _V] = dict(sorted(pairs, key=lambda kv: kv[0]))
        self._hash: int | None = None

    def __getitem__(self, key: str) -> _V:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(self._items.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._items == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"

    def set(self, key: str, value: _V) -> FrozenMap[_V]:
        """A copy with ``key`` set to ``value``."""
        new = dict(self._items)
        new[key] = value
        return FrozenMap(new)

    def update(self, other: Mapping[str, _V]) -> FrozenMap[_V]:
        """A copy with every key of ``other`` set."""
        new = dict(self._items)
        new.update(other)
        return FrozenMap(new)


def _frozen_str_map(value: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> FrozenMap[str]:
    if value is None:
        return FrozenMap()
    if isinstance(value, FrozenMap):
        return value
    return FrozenMap(value)


def str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    """Converter: any iterable of strings to a tuple."""
    return tuple(value)


def _checks_tuple(value: Iterable[HealthCheck]) -> tuple[HealthCheck, ...]:
    return tuple(value)


def _mounts_tuple(value: Iterable[Mount]) -> tuple[Mount, ...]:
    return tuple(value)


def frozen_str_map(value: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> FrozenMap[str]:
    """Converter: a mapping (or pairs) of strings to a :class:`FrozenMap`."""
    return _frozen_str_map(value)


def _frozen_int_map(value: Mapping[str, int] | Iterable[tuple[str, int]]) -> FrozenMap[int]:
    if isinstance(value, FrozenMap):
        return value
    return FrozenMap(value)


class MachineState(enum.StrEnum):
    """Fly's machine states."""

    CREATED = "created"
    STARTING = "starting"
    STARTED = "started"
    STOPPING = "stopping"
    STOPPED = "stopped"
    SUSPENDED = "suspended"
    FAILED = "failed"
    UPDATING = "updating"
    REPLACING = "replacing"
    DESTROYING = "destroying"
    DESTROYED = "destroyed"


#: States in which a machine is gone or going: it counts for nothing.
GONE = frozenset({MachineState.DESTROYING, MachineState.DESTROYED})


class Health(enum.StrEnum):
    """A machine's aggregate health: the worst of its checks (Fly's check statuses)."""

    PASSING = "passing"
    WARNING = "warning"
    CRITICAL = "critical"
    UNKNOWN = "unknown"


@attrs.frozen(kw_only=True)
class HealthCheck:
    """One health check, as Fly describes it.

    Durations are seconds. ``type`` is ``"http"`` or ``"tcp"``; ``method``,
    ``path`` and ``headers`` only matter for http checks. Header values may be
    secrets and are redacted in the repr.
    """

    type: str = attrs.field(validator=attrs.validators.in_(("http", "tcp")))
    name: str = ""
    port: int | None = None
    grace_period: float = 0.0
    interval: float = 15.0
    timeout: float = 2.0
    method: str = "GET"
    path: str = "/"
    headers: FrozenMap[str] = attrs.field(
        factory=FrozenMap, converter=_frozen_str_map, repr=lambda h: _redacted_repr(h)
    )
    processes: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)


@attrs.frozen(kw_only=True)
class Mount:
    """A volume mount of a release (``[mounts]`` in fly.toml)."""

    source: str
    destination: str
    processes: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)


def _redacted_repr(mapping: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{k!r}: {REDACTED!r}" for k in mapping) + "}"


@attrs.frozen(kw_only=True)
class Release:
    """What a group should run: the version and its image, env, checks, mounts.

    Environment values are secrets as far as zdd is concerned: they never appear
    in reprs, plans or logs. ``serves_traffic`` is false for a group that takes no
    traffic through the proxy (a worker: no service and no check); only groups
    that serve are held above zero serving machines.
    """

    version: str = attrs.field()
    image: str = ""
    env: FrozenMap[str] = attrs.field(
        factory=FrozenMap, converter=_frozen_str_map, repr=lambda e: _redacted_repr(e)
    )
    checks: tuple[HealthCheck, ...] = attrs.field(default=(), converter=_checks_tuple)
    mounts: tuple[Mount, ...] = attrs.field(default=(), converter=_mounts_tuple)
    kill_signal: str = "SIGINT"
    kill_timeout: float = 5.0
    serves_traffic: bool = True
    #: The app's decoded configuration file (fly.toml), for providers that build a
    #: machine from it as their own tools do; ``None`` when there is none. Not part
    #: of equality, never in a repr (``[env]`` holds secrets).
    app_config: Mapping[str, Any] | None = attrs.field(default=None, eq=False, repr=False)

    @version.validator
    def _check_version(self, _: object, value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise InvalidConfig("must be a non-empty string, e.g. 'v2'", field="version")


@attrs.frozen(kw_only=True)
class Machine:
    """One machine as observed.

    Attributes:
        id: the provider's machine id.
        version: the release version it runs.
        group: its process group.
        region: where it runs.
        state: Fly's machine state.
        health: the aggregate of its checks.
        cordoned: true when the proxy sends it no traffic.
        volume: the id of the volume attached to it, if any.
        labels: metadata; zdd keeps its own under ``zdd.*``.
    """

    id: str
    version: str
    group: str = "app"
    region: str = "ord"
    state: MachineState = attrs.field(default=MachineState.STARTED, converter=MachineState)
    health: Health = attrs.field(default=Health.PASSING, converter=Health)
    cordoned: bool = False
    volume: str | None = None
    labels: FrozenMap[str] = attrs.field(factory=FrozenMap, converter=_frozen_str_map)

    @property
    def live(self) -> bool:
        """Not destroyed nor being destroyed."""
        return self.state not in GONE

    @property
    def serving(self) -> bool:
        """Started, passing its checks and not cordoned: taking traffic."""
        return (
            self.state is MachineState.STARTED
            and self.health is Health.PASSING
            and not self.cordoned
        )

    @property
    def presumed_serving(self) -> bool:
        """Serving, or started and not cordoned with no check result yet (as after a
        proxy restart): not known to be down, so never taken out as if it were."""
        return (
            self.state is MachineState.STARTED
            and self.health in (Health.PASSING, Health.UNKNOWN)
            and not self.cordoned
        )


_NATURAL = re.compile(r"([0-9]+)")


def natural_key(text: str) -> tuple[Any, ...]:
    """Sort key that orders ``m2`` before ``m10``.

    Only ASCII digits count as numbers (``m²`` is text), and a run of digits is
    compared by its length without leading zeros, then its text: the number's
    order, with no ``int()`` of a run that may be thousands of digits long.
    """
    parts = _NATURAL.split(text)
    key: list[Any] = []
    for i, p in enumerate(parts):
        if i % 2:
            digits = p.lstrip("0")
            key.append((len(digits), digits))
        else:
            key.append(p)
    return tuple(key)


#: The deployment record: what cannot be read from the machines themselves
#: (which deployment, its phase, canary progress, approvals). A flat string map,
#: so every provider can store it (Fly metadata, the simulator's state).
DeploymentRecord = FrozenMap[str]


def _sorted_machines(machines: Iterable[Machine]) -> tuple[Machine, ...]:
    out = tuple(machines)
    for m in out:
        if not isinstance(m, Machine):
            raise InvalidFleetState(
                f"expected Machine values, got {type(m).__name__}", field="machines"
            )
        if not isinstance(m.id, str) or not m.id:
            raise InvalidFleetState("must be a non-empty string", field="machines.id")
    return tuple(sorted(out, key=lambda m: natural_key(m.id)))


@attrs.frozen(kw_only=True)
class FleetState:
    """A snapshot of the fleet: its machines (sorted by id) and the deployment record."""

    machines: tuple[Machine, ...] = attrs.field(default=(), converter=_sorted_machines)
    record: FrozenMap[str] = attrs.field(factory=FrozenMap, converter=_frozen_str_map)
    _by_id: dict[str, Machine] = attrs.field(init=False, eq=False, repr=False, hash=False)

    def __attrs_post_init__(self) -> None:
        by_id: dict[str, Machine] = {}
        for m in self.machines:
            if not isinstance(m, Machine):
                raise InvalidFleetState(
                    f"expected Machine values, got {type(m).__name__}", field="machines"
                )
            if m.id in by_id:
                raise InvalidFleetState(
                    f"duplicate machine id {describe(m.id)}; every machine needs its own id",
                    field="machines",
                )
            by_id[m.id] = m
        object.__setattr__(self, "_by_id", by_id)

    @overload
    def get(self, machine_id: str) -> Machine | None: ...
    @overload
    def get(self, machine_id: str, default: Machine) -> Machine: ...
    def get(self, machine_id: str, default: Machine | None = None) -> Machine | None:
        """The machine with this id, or ``default``."""
        return self._by_id.get(machine_id, default)

    def __contains__(self, machine_id: object) -> bool:
        return machine_id in self._by_id

    @property
    def live(self) -> tuple[Machine, ...]:
        """Machines that are not destroyed nor being destroyed."""
        return tuple(m for m in self.machines if m.live)

    def groups(self) -> tuple[str, ...]:
        """Names of the groups with live machines, sorted."""
        return tuple(sorted({m.group for m in self.machines if m.live}))

    @classmethod
    def uniform(
        cls,
        count: int,
        *,
        version: str = "v1",
        group: str = "app",
        region: str = "ord",
        prefix: str = "m",
    ) -> FleetState:
        """``count`` started, passing machines ``m1..mN``: the ``--machines N`` fleet."""
        return cls(
            machines=[
                Machine(id=f"{prefix}{i}", version=version, group=group, region=region)
                for i in range(1, count + 1)
            ]
        )


@attrs.frozen(kw_only=True)
class GroupSpec:
    """What one process group should become: its release and machines per region."""

    name: str
    release: Release
    regions: FrozenMap[int] = attrs.field(converter=_frozen_int_map)

    def __attrs_post_init__(self) -> None:
        for region, n in self.regions.items():
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise InvalidConfig(
                    f"machine count must be a whole number >= 0, got {describe(n)}",
                    field=f"groups.{self.name}.regions.{region}",
                )
        if self.count > _record.MAX_GROUP_MACHINES:
            raise InvalidConfig(
                f"at most {_record.MAX_GROUP_MACHINES} machines per group, "
                f"got {describe(self.count)}",
                field=f"groups.{self.name}",
            )

    @property
    def count(self) -> int:
        """Machines desired in this group, all regions together."""
        return sum(self.regions.values())


def encode_regions(regions: Mapping[str, int]) -> str:
    """``{"ams": 2, "ord": 3}`` -> ``"ams:2,ord:3"`` (for the deployment record)."""
    return _record.encode_regions(regions)


def decode_regions(text: str, key: str | None = None) -> dict[str, int]:
    """The inverse of :func:`encode_regions`; malformed text (or a shape of more than
    ``MAX_GROUP_MACHINES``) is an invalid fleet state naming the record's ``key``."""
    try:
        return _record.decode_regions(text)
    except _record.MalformedRecord as exc:
        raise InvalidFleetState(
            f"{exc} (got {describe(text)}); the deployment record is damaged",
            field=f"record.{key}" if key else "record",
        ) from None


def _sorted_groups(groups: Iterable[GroupSpec]) -> tuple[GroupSpec, ...]:
    return tuple(sorted(groups, key=lambda g: g.name))


@attrs.frozen(kw_only=True)
class Desired:
    """The fleet a deployment should produce: one :class:`GroupSpec` per process group."""

    groups: tuple[GroupSpec, ...] = attrs.field(converter=_sorted_groups)

    def __attrs_post_init__(self) -> None:
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise InvalidConfig("each process group may appear once", field="groups")

    def group(self, name: str) -> GroupSpec | None:
        """The spec of group ``name``, if desired."""
        for g in self.groups:
            if g.name == name:
                return g
        return None

    @classmethod
    def single(
        cls, release: Release, count: int, *, group: str = "app", region: str = "ord"
    ) -> Desired:
        """One group of ``count`` machines in one region."""
        return cls(groups=[GroupSpec(name=group, release=release, regions={region: count})])

    @classmethod
    def from_fleet(
        cls,
        state: FleetState,
        release: Release | Mapping[str, Release],
    ) -> Desired:
        """Keep the fleet's shape (machines per group and region), change the release.

        ``release`` is one release for every group, or a release per group name.
        Destroyed machines do not count. While a deployment is in progress
        (the record's ``phase`` is ``deploying``), the shape written in the
        deployment record (``desired.<group>``) wins, so a resumed deployment aims
        at the fleet it started from rather than at its own half-way point.
        """
        counts: dict[str, dict[str, int]] = {}
        record = _record.RecordView(state.record)
        shapes = record.desired_groups()
        if record.phase == _record.DEPLOYING and shapes:
            for group, value in shapes.items():
                counts[group] = decode_regions(value, _record.desired_key(group))
        else:
            for m in state.machines:
                if m.live:
                    counts.setdefault(m.group, {}).setdefault(m.region, 0)
                    counts[m.group][m.region] += 1
        specs = []
        for name, regions in counts.items():
            rel = release if isinstance(release, Release) else release.get(name)
            if rel is None:
                raise InvalidConfig(
                    f"no release given for process group {describe(name)}", field="release"
                )
            specs.append(GroupSpec(name=name, release=rel, regions=regions))
        return cls(groups=specs)


@attrs.frozen(kw_only=True)
class Capabilities:
    """What a provider can do beyond the basics: data the planner reads, so that a
    plan never relies on what its provider cannot do.

    Attributes:
        traffic_weights: honours ``Uncordon.weight`` (canary traffic shares).
        cordon: can stop routing to a machine without stopping it.
        volumes: machines can hold volumes.
    """

    traffic_weights: bool = False
    cordon: bool = True
    volumes: bool = False
