"""Fleet JSON: how a fleet is written down for the CLI and for tests.

``{"machines": [{"id", "version", "group", "region", "state", "health",
"cordoned", "volume", "labels"}], "record": {...}}``; only ``id`` and
``version`` are required (see ``docs/fleet-format.md``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._errors import MAX_DEPTH, MAX_INT_DIGITS, InvalidFleetState, check_limits, describe
from ._model import FleetState, Health, Machine, MachineState

__all__ = ["fleet_from_json", "fleet_to_json", "load_fleet"]

_KEYS = ("id", "version", "group", "region", "state", "health", "cordoned", "volume", "labels")


def _str(entry: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = entry.get(key, default)
    if not isinstance(value, str) or not value:
        if value is None and default is None:
            raise InvalidFleetState("is required (a non-empty string)", field=f"{where}.{key}")
        raise InvalidFleetState(
            f"must be a non-empty string, got {describe(value)}", field=f"{where}.{key}"
        )
    return value


def fleet_from_json(data: object) -> FleetState:
    """Build a :class:`FleetState` from decoded fleet JSON, naming any bad field
    (``fleet JSON: machines[3].id: ...``)."""
    try:
        return _fleet_from_json(data)
    except InvalidFleetState as exc:
        if exc.source:
            raise
        field = None if exc.field == "fleet" else exc.field
        raise InvalidFleetState(exc.reason, field=field, source="fleet JSON") from None


def _fleet_from_json(data: object) -> FleetState:
    if not isinstance(data, Mapping):
        raise InvalidFleetState('must be an object: {"machines": [...]}', field="fleet")
    check_limits(data, "", InvalidFleetState)
    unknown = [k for k in data if k not in ("machines", "record")]
    if unknown:
        raise InvalidFleetState(
            f"unknown key {describe(unknown[0])}; a fleet has 'machines' and 'record'",
            field="fleet",
        )
    raw = data.get("machines")
    if not isinstance(raw, list):
        raise InvalidFleetState("must be a list of machine objects", field="machines")
    machines = []
    for i, entry in enumerate(raw):
        where = f"machines[{i}]"
        if not isinstance(entry, Mapping):
            raise InvalidFleetState("must be an object with at least id and version", field=where)
        for key in entry:
            if key not in _KEYS:
                raise InvalidFleetState(
                    f"unknown key {describe(key)}; a machine has {', '.join(_KEYS)}", field=where
                )
        state = entry.get("state", "started")
        if not isinstance(state, str) or state not in MachineState.__members__.values():
            raise InvalidFleetState(
                f"{describe(state)} is not a machine state; use one of "
                f"{', '.join(s.value for s in MachineState)}",
                field=f"{where}.state",
            )
        health = entry.get("health", "passing")
        if not isinstance(health, str) or health not in Health.__members__.values():
            raise InvalidFleetState(
                f"{describe(health)} is not a health; use one of "
                f"{', '.join(h.value for h in Health)}",
                field=f"{where}.health",
            )
        cordoned = entry.get("cordoned", False)
        if not isinstance(cordoned, bool):
            raise InvalidFleetState("must be true or false", field=f"{where}.cordoned")
        volume = entry.get("volume")
        if volume is not None and (not isinstance(volume, str) or not volume):
            raise InvalidFleetState("must be a volume id or null", field=f"{where}.volume")
        labels = entry.get("labels", {})
        if not isinstance(labels, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise InvalidFleetState("must be an object of strings", field=f"{where}.labels")
        machines.append(
            Machine(
                id=_str(entry, "id", where),
                version=_str(entry, "version", where),
                group=_str(entry, "group", where, "app"),
                region=_str(entry, "region", where, "ord"),
                state=MachineState(state),
                health=Health(health),
                cordoned=cordoned,
                volume=volume,
                labels=labels,
            )
        )
    record = data.get("record", {})
    if not isinstance(record, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in record.items()
    ):
        raise InvalidFleetState("must be an object of strings", field="record")
    return FleetState(machines=machines, record=record)


class _TooLong(ValueError):
    pass


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _TooLong(text)
    return int(text)


def _parse_constant(text: str) -> float:
    raise _TooLong(text)


def parse_fleet_json(text: str, where: str = "fleet JSON") -> object:
    """Decode fleet JSON text within zdd's limits (docs/limits.md): nesting at most
    ``MAX_DEPTH`` deep, integers within 64 bits, no NaN or Infinity."""
    try:
        data = json.loads(text, parse_int=_parse_int, parse_constant=_parse_constant)
    except json.JSONDecodeError as exc:
        raise InvalidFleetState(
            f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
            field="fleet",
        ) from None
    except _TooLong:
        raise InvalidFleetState(
            f"{where}: a number is out of range (integers must fit in 64 bits; "
            f"NaN and Infinity are not JSON)",
            field="fleet",
        ) from None
    except RecursionError:
        raise InvalidFleetState(
            f"{where}: nested deeper than {MAX_DEPTH} levels", field="fleet"
        ) from None
    except ValueError as exc:  # e.g. a lone surrogate; never a value echoed
        raise InvalidFleetState(
            f"{where}: not valid JSON ({exc.__class__.__name__})", field="fleet"
        ) from None
    return data


def load_fleet(path: str | Path) -> FleetState:
    """Read fleet JSON from a file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidFleetState(f"{p}: no such file", field="fleet") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidFleetState(
            f"{p}: cannot read it ({exc.__class__.__name__})", field="fleet"
        ) from None
    return fleet_from_json(parse_fleet_json(text, str(p)))


def fleet_to_json(state: FleetState) -> dict[str, Any]:
    """The JSON form of a fleet (inverse of :func:`fleet_from_json`)."""
    return {
        "machines": [
            {
                "id": m.id,
                "version": m.version,
                "group": m.group,
                "region": m.region,
                "state": m.state.value,
                "health": m.health.value,
                "cordoned": m.cordoned,
                "volume": m.volume,
                "labels": dict(m.labels),
            }
            for m in state.machines
        ],
        "record": dict(state.record),
    }
