"""Hypothesis strategies for zdd's property tests: fleets, desired shapes, strategy configs.

Everything drawn here shrinks toward the ordinary case: a started, passing,
uncordoned machine of group ``app`` in ``ord`` on the old version, without a
volume; a desired shape equal to the fleet's; a strategy with Fly's defaults.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from hypothesis import strategies as st

import zdd
from zdd import Health, MachineState

GROUPS = ("app", "worker", "web")
REGIONS = ("ord", "ams", "syd")
OLD = "v1"
TARGET = "v2"
CHECK = zdd.HealthCheck(type="http", path="/health")

# Weighted by repetition; the first element is what a failing example shrinks to.
_STATES = [MachineState.STARTED] * 8 + [
    MachineState.STOPPED,
    MachineState.FAILED,
    MachineState.SUSPENDED,
    MachineState.CREATED,
    MachineState.STARTING,
    MachineState.UPDATING,
]
_HEALTH = [Health.PASSING] * 6 + [Health.CRITICAL, Health.WARNING, Health.UNKNOWN]
_CORDONED = [False] * 6 + [True]
_VERSIONS = [OLD] * 5 + [TARGET, TARGET, "v0"]
_HAS_VOLUME = [False] * 4 + [True]
_DROP_GROUP = [False] * 5 + [True]


def release(*, checks: bool = True, version: str = TARGET) -> zdd.Release:
    """The target release (with an http check unless ``checks=False``)."""
    return zdd.Release(version=version, checks=[CHECK] if checks else [])


@st.composite
def fleets(
    draw: st.DrawFn,
    *,
    min_machines: int = 0,
    max_machines: int = 40,
    volumes: bool = False,
    ordinary: bool = False,
    prefer_big: bool = False,
    groups: Sequence[str] = GROUPS,
    regions: Sequence[str] = REGIONS,
) -> zdd.FleetState:
    """Random fleets of ``min_machines``..``max_machines`` machines ``m1..mN``.

    Machines spread over 1-3 of ``groups`` and 1-3 of ``regions``. States are
    mostly started, health mostly passing, a few cordoned, some already on the
    target version. ``volumes`` gives some machines a volume; ``ordinary``
    makes every machine started, passing, uncordoned, without a volume;
    ``prefer_big`` draws at least 15 machines half the time.
    """
    chosen_groups = draw(st.lists(st.sampled_from(groups), min_size=1, max_size=3, unique=True))
    chosen_regions = draw(st.lists(st.sampled_from(regions), min_size=1, max_size=3, unique=True))
    if ordinary:
        fields = st.tuples(
            st.sampled_from(chosen_groups),
            st.sampled_from(chosen_regions),
            st.just(MachineState.STARTED),
            st.just(Health.PASSING),
            st.just(False),
            st.sampled_from(_VERSIONS),
            st.just(False),
        )
    else:
        fields = st.tuples(
            st.sampled_from(chosen_groups),
            st.sampled_from(chosen_regions),
            st.sampled_from(_STATES),
            st.sampled_from(_HEALTH),
            st.sampled_from(_CORDONED),
            st.sampled_from(_VERSIONS),
            st.sampled_from(_HAS_VOLUME) if volumes else st.just(False),
        )
    # With prefer_big, half the time a big fleet (hypothesis alone draws mostly
    # short lists); a failing example still shrinks to a short list.
    big = prefer_big and draw(st.sampled_from([False, True]), label="big fleet")
    least = max(min_machines, min(max_machines, 15)) if big else min_machines
    rows = draw(st.lists(fields, min_size=least, max_size=max_machines))
    machines = [
        zdd.Machine(
            id=f"m{i}",
            version=version,
            group=group,
            region=region,
            state=state,
            health=health,
            cordoned=cordoned,
            volume=f"vol_m{i}" if has_volume else None,
        )
        for i, (group, region, state, health, cordoned, version, has_volume) in enumerate(rows, 1)
    ]
    return zdd.FleetState(machines=machines)


@st.composite
def desireds(
    draw: st.DrawFn,
    state: zdd.FleetState,
    *,
    scale: bool | None = None,
    checks: bool = True,
    max_per_region: int = 15,
) -> zdd.Desired:
    """The fleet's shape on the target release, or (``scale``) a changed shape.

    ``scale=None`` changes it sometimes, ``True`` always, ``False`` never. A
    changed shape either changes each group's count per region by -3..+3 (never
    below 0, at most ``max_per_region``, possibly in a region the group is not
    in yet), or moves 1-3 machines of each group from one region to another;
    and now and then a group is dropped (no longer desired).
    """
    rel = release(checks=checks)
    desired = zdd.Desired.from_fleet(state, rel)
    if scale is False or (scale is None and not draw(st.booleans(), label="scale")):
        return desired
    move = draw(st.booleans(), label="move machines between regions")
    specs = []
    for spec in desired.groups:
        if draw(st.sampled_from(_DROP_GROUP), label=f"drop group {spec.name}"):
            continue  # no longer desired: its machines are retired
        counts = dict(spec.regions)
        if move and any(counts.values()):
            # the same count, k machines moved from one region to another
            src = draw(st.sampled_from(sorted(r for r, n in counts.items() if n)))
            dst = draw(st.sampled_from([r for r in REGIONS if r != src]))
            k = draw(st.integers(1, min(3, counts[src])))
            counts[src] -= k
            counts[dst] = counts.get(dst, 0) + k
        else:
            extra = draw(st.lists(st.sampled_from(REGIONS), max_size=1, unique=True))
            for region in sorted(set(counts) | set(extra)):
                delta = draw(st.integers(-3, 3), label=f"{spec.name}.{region}")
                counts[region] = min(max_per_region, max(0, counts.get(region, 0) + delta))
        specs.append(zdd.GroupSpec(name=spec.name, release=rel, regions=counts))
    return zdd.Desired(groups=specs)


def is_scaled(state: zdd.FleetState, desired: zdd.Desired) -> bool:
    """Whether ``desired`` changes the fleet's shape (not only its release)."""
    same = zdd.Desired.from_fleet(state, release())
    return [(g.name, dict(g.regions)) for g in same.groups] != [
        (g.name, dict(g.regions)) for g in desired.groups
    ]


def desired_release(desired: zdd.Desired) -> zdd.Release:
    """The release ``desired`` deploys (the same for every group here)."""
    return desired.groups[0].release if desired.groups else release()


# -- strategy configs ---------------------------------------------------------

_common = {
    "drain_delay": st.sampled_from([0, 10]),
    "region_waves": st.booleans(),
}
fractions = st.integers(10, 99).map(lambda k: k / 100)
counts = st.integers(1, 5)


def immediates() -> st.SearchStrategy[zdd.Immediate]:
    return st.builds(zdd.Immediate, **_common)


@st.composite
def rollings(draw: st.DrawFn, *, with_zero_unavailable: bool = True) -> zdd.Rolling:
    """Rolling with ``max_unavailable`` a fraction, a count, not set (or 0 with a surge)."""
    surge = draw(st.one_of(st.just(0), fractions, counts), label="max_surge")
    # None: not set (0 with a surge, Fly's 0.33 without)
    choices: list[st.SearchStrategy[float | None]] = [counts, fractions, st.just(None)]
    if with_zero_unavailable and surge:
        choices.append(st.just(0))
    unavailable = draw(st.one_of(*choices), label="max_unavailable")
    return zdd.Rolling(
        max_unavailable=unavailable,
        max_surge=surge,
        drain_delay=draw(_common["drain_delay"]),
        region_waves=draw(_common["region_waves"]),
    )


def bluegreens() -> st.SearchStrategy[zdd.BlueGreen]:
    return st.builds(
        zdd.BlueGreen,
        switch_gate=st.sampled_from([None, "switch"]),
        keep_blue_for=st.sampled_from([0, 30]),
        **_common,
    )


canary_steps = st.builds(
    zdd.CanaryStep,
    machines=st.integers(1, 3),
    weight=st.none() | st.integers(1, 100),
    bake=st.integers(0, 60),
    gate=st.none() | st.sampled_from(["analysis", "approval"]),
)


def canaries(*, progressive: bool | None = None) -> st.SearchStrategy[zdd.Canary]:
    """Canary in flyctl's form (no steps) or with 1-3 progressive steps."""
    if progressive is None:
        steps = st.lists(canary_steps, max_size=3)
    elif progressive:
        steps = st.lists(canary_steps, min_size=1, max_size=3)
    else:
        steps = st.just([])
    return st.builds(zdd.Canary, steps=steps, then=rollings(), **_common)


def any_strategy(*, volumes: bool = False) -> st.SearchStrategy[zdd.Strategy]:
    """Any strategy; with ``volumes``, only those that support volumes."""
    if volumes:
        return st.one_of(immediates(), rollings())
    return st.one_of(immediates(), rollings(), bluegreens(), canaries())


# -- config and fleet JSON fuzzing --------------------------------------------

FLY_KEYS = (
    "app",
    "primary_region",
    "kill_signal",
    "kill_timeout",
    "build",
    "image",
    "env",
    "deploy",
    "strategy",
    "max_unavailable",
    "max_surge",
    "wait_timeout",
    "release_command",
    "release_command_timeout",
    "post_deploy_command",
    "post_deploy_command_timeout",
    "min_healthy_time",
    "drain_delay",
    "region_waves",
    "auto_rollback",
    "switch_gate",
    "keep_blue_for",
    "canary_steps",
    "machines",
    "weight",
    "bake",
    "gate",
    "checks",
    "type",
    "grace_period",
    "interval",
    "timeout",
    "method",
    "path",
    "headers",
    "name",
    "value",
    "port",
    "processes",
    "http_service",
    "internal_port",
    "services",
    "http_checks",
    "tcp_checks",
    "mounts",
    "source",
    "destination",
)
MACHINE_KEYS = (
    "machines",
    "record",
    "id",
    "version",
    "group",
    "region",
    "state",
    "health",
    "cordoned",
    "volume",
    "labels",
)
_WORDS = (
    *(s.value for s in MachineState),
    *(h.value for h in Health),
    *zdd.STRATEGY_NAMES,
    "http",
    "tcp",
    "GET",
    "/health",
    "app",
    "ord",
    "v1",
    "30s",
    "1m30s",
    "500ms",
    "0",
    "-1s",
    "1.5h",
    "10",
)


#: Integers beyond what a float can hold (no TOML file can hold them either).
HUGE_INTS = st.integers(min_value=2**1024) | st.integers(max_value=-(2**1024))


def _scalars(*, huge_ints: bool = False) -> st.SearchStrategy[Any]:
    ints = st.integers(-(2**63), 2**63 - 1)
    if huge_ints:
        ints = ints | HUGE_INTS
    return st.one_of(
        st.none(),
        st.booleans(),
        ints,
        st.floats(),
        st.text(max_size=12),
        st.sampled_from(_WORDS),
    )


def nested_data(
    keys: Sequence[str], *, none: bool = True, huge_ints: bool = False
) -> st.SearchStrategy[Any]:
    """JSON/TOML-like values whose dict keys are mostly drawn from ``keys``."""
    scalars = _scalars(huge_ints=huge_ints)
    if not none:
        scalars = scalars.filter(lambda v: v is not None)
    key = st.sampled_from(keys) | st.text(max_size=8)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(key, inner, max_size=6),
        max_leaves=30,
    )


def config_mappings(*, huge_ints: bool = False) -> st.SearchStrategy[Mapping[str, Any]]:
    """Random fly.toml-shaped mappings (most keys real fly.toml names)."""
    key = st.sampled_from(FLY_KEYS) | st.text(max_size=8)
    return st.dictionaries(key, nested_data(FLY_KEYS, huge_ints=huge_ints), max_size=8)


def _toml_key(k: str) -> str:
    return _toml_string(k)


def _toml_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        elif 0xD800 <= ord(ch) <= 0xDFFF:
            out.append("?")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def to_toml_value(value: Any) -> str | None:
    """``value`` as an inline TOML value, or ``None`` when TOML cannot hold it (null)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if -(2**63) <= value < 2**63 else None
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        items = [v for v in (to_toml_value(x) for x in value) if v is not None]
        return "[" + ", ".join(items) + "]"
    if isinstance(value, dict):
        pairs = []
        for k, v in value.items():
            text = to_toml_value(v)
            if text is not None:
                pairs.append(f"{_toml_key(k)} = {text}")
        return "{" + ", ".join(pairs) + "}"
    raise TypeError(type(value))


def to_toml(mapping: Mapping[str, Any]) -> str:
    """A mapping as TOML text (top-level keys, inline tables and arrays)."""
    lines = []
    for k, v in mapping.items():
        text = to_toml_value(v)
        if text is not None:
            lines.append(f"{_toml_key(k)} = {text}")
    return "\n".join(lines) + "\n"


def config_texts() -> st.SearchStrategy[str]:
    """Random text, and TOML text of random fly.toml-shaped mappings."""
    return st.one_of(
        st.text(),
        config_mappings().map(to_toml),
    )


def fleet_json() -> st.SearchStrategy[Any]:
    """Random JSON-like fleets: mostly ``{"machines": [...], "record": {...}}``."""
    machine = st.dictionaries(
        st.sampled_from(MACHINE_KEYS[2:]) | st.text(max_size=6),
        st.sampled_from(_WORDS) | nested_data(MACHINE_KEYS),
        max_size=9,
    )
    anything = nested_data(MACHINE_KEYS)
    fleet = st.fixed_dictionaries(
        {"machines": st.lists(machine | anything, max_size=5) | anything},
        optional={
            "record": st.dictionaries(st.text(max_size=6), st.text(max_size=6) | _scalars())
            | anything
        },
    )
    return st.one_of(fleet, anything)


@st.composite
def scenarios(
    draw: st.DrawFn, *, scale: bool | None = None, **fleet_options: Any
) -> tuple[zdd.FleetState, zdd.Desired]:
    """A fleet (``fleets(prefer_big=True, **fleet_options)``) and what it should become."""
    state = draw(fleets(**{"prefer_big": True, **fleet_options}))
    return state, draw(desireds(state, scale=scale))


def one_group(regions: Mapping[str, int], *, group: str = "app") -> zdd.Desired:
    """A desired shape of one group on the target release (for explicit examples)."""
    return zdd.Desired(groups=[zdd.GroupSpec(name=group, release=release(), regions=regions)])


# -- the documented floors, spelled out for the property tests ------------------------


def rolling_floor(r: zdd.Rolling, n: int, *, in_place: bool, bound: bool) -> int:
    """``max(1, n - max_unavailable)`` (docs/decisions/0008-never-zero.md), spelled out
    here from the documented rules rather than taken from the planner: a fraction rounds
    up (at least 1), a count truncates; not set, it is 0 with a surge (Fly's 0.33 for a
    group whose machines must update in place); a one-machine group whose only machine
    holds a volume is the one exception (it must go down, with a warning)."""
    x = r.max_unavailable
    if x is None:
        x = 0.33 if in_place or not r.max_surge else 0.0
    mu = 0 if x == 0 else (max(1, math.ceil(n * x - 1e-9)) if x < 1 else math.floor(x))
    floor = n - mu
    if n >= 1 and floor < 1 and not (n == 1 and bound) and not r.allow_downtime:
        floor = 1
    return floor


def borrowed_surge(r: zdd.Rolling, n: int, *, in_place: bool, bound: bool, serving: bool) -> int:
    """1 when a one-machine group may borrow a surge machine (the budget alone would
    take its only serving machine out), else 0. An upper bound: ``serving`` (an outdated
    machine serves at the start) is not required, since a re-plan borrows as soon as
    one serves again."""
    del serving
    if n != 1 or bound or r.allow_downtime or r.surge_budget(n) > 0:
        return 0
    return (
        1
        if rolling_floor(attrs.evolve(r, allow_downtime=True), n, in_place=in_place, bound=bound)
        < 1
        else 0
    )


def group_facts(state: zdd.FleetState, group: str, version: str) -> tuple[bool, bool, bool]:
    """(some outdated machine of the group holds a volume, one of those is serving, some
    outdated machine serves)."""
    outdated = [m for m in state.live if m.group == group and m.version != version]
    volumes = [m for m in outdated if m.volume]
    return (
        bool(volumes),
        any(m.presumed_serving for m in volumes),
        any(m.presumed_serving for m in outdated),
    )


def promised_floor(strategy: zdd.Strategy, n: int) -> int:
    """The floor promised to a serving group of ``n`` (no volumes), from the documented
    rules: ``desired`` for bluegreen, ``max(1, desired - max_unavailable)`` for rolling
    and canary's promotion."""
    if isinstance(strategy, zdd.BlueGreen):
        return n
    rolling = strategy.then if isinstance(strategy, zdd.Canary) else strategy
    assert isinstance(rolling, zdd.Rolling)
    return max(1, n - rolling.unavailable_budget(n)) if n else 0


#: Action kinds that take a serving machine out of service.
TAKE_OUT = ("cordon", "stop", "update", "destroy")


def take_out_at_floor(fleet: Any, action: zdd.Action, floors: Mapping[str, int]) -> str | None:
    """What is wrong when ``action`` is issued now on the simulated ``fleet``: a take-out
    of a serving machine while its group serves at or below its floor (``None``: fine,
    or not a take-out of a serving machine)."""
    m = fleet.machines.get(action.machine or "")
    if action.kind not in TAKE_OUT or m is None or not m.serving:
        return None
    serving = fleet.serving.get(m.group, 0)
    floor = floors.get(m.group)
    if floor is not None and serving <= floor:
        return (
            f"t={fleet.now:g}: {action.kind} {m.id} with {serving} of {m.group} "
            f"serving, floor {floor}"
        )
    return None
