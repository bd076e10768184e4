"""The deployment record's schema: every key zdd writes, spelled here and nowhere else.

The record is a flat map of strings (so that every provider can store it: Fly
machine metadata, a state file, the simulator's memory). What cannot be read
from the machines themselves lives in it: which deployment is running, its
phase, the shape and versions it started from, canary progress, bluegreen's
switch, gate answers, when a pause began (docs/decisions/0005).

This module is the bottom layer: it imports nothing of zdd's. Writers use the
key functions; readers use :class:`RecordView`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import attrs

__all__ = [
    "OP_ABORT",
    "OP_PROMOTE",
    "APPROVED",
    "DEPLOYING",
    "DEPLOYMENT",
    "DONE",
    "PASSED",
    "PHASE",
    "ROLLBACK_OF",
    "ROLLED_BACK",
    "ROLLING_BACK",
    "STRATEGY",
    "SWITCHED",
    "TARGET",
    "RecordView",
    "bluegreen_key",
    "canary_key",
    "decode_regions",
    "desired_key",
    "encode_regions",
    "encode_target",
    "from_key",
    "gate_key",
    "instruction",
    "op_gate_key",
    "image_key",
    "is_ascii_digits",
    "parse_ascii_int",
    "parse_target",
    "pause_key",
    "start_key",
]

#: The most machines one process group may have (docs/limits.md).
MAX_GROUP_MACHINES = 10_000
#: The most digits :func:`parse_ascii_int` reads (a 64-bit integer has 19).
_MAX_DIGITS = 18


def is_ascii_digits(text: str) -> bool:
    """``text`` is one or more ASCII digits ``0``-``9`` (not ``²``, not Arabic-Indic
    digits, which ``str.isdigit`` accepts and ``int`` may not)."""
    return bool(text) and text.isascii() and text.isdigit()


def parse_ascii_int(text: str, *, max_digits: int = _MAX_DIGITS) -> int | None:
    """``text`` as a whole number when it is ASCII digits and at most ``max_digits``
    of them; ``None`` otherwise."""
    if not is_ascii_digits(text) or len(text) > max_digits:
        return None
    return int(text)


#: The deployment's phase: one of the four values below.
PHASE = "phase"
DEPLOYING = "deploying"
DONE = "done"
ROLLING_BACK = "rolling_back"
ROLLED_BACK = "rolled_back"
#: Which deployment: ``group=version`` pairs (:func:`encode_target`).
TARGET = "target"
#: The strategy's name.
STRATEGY = "strategy"
#: While rolling back: the target of the deployment being rolled back.
ROLLBACK_OF = "rollback_of"
#: The deployer that last wrote the record (its lock owner): what the leases it
#: holds are described with, so that its own leases are never taken for a stranger's.
DEPLOYMENT = "deployment"

#: A gate's answer once approved (``gate.<name>``).
APPROVED = "approved"
#: Bluegreen's ``bluegreen.<group>`` once the greens took the traffic.
SWITCHED = "switched"
#: Canary's ``canary.<group>`` once flyctl's smoke-test canary passed.
PASSED = "passed"


def desired_key(group: str) -> str:
    """The shape the deployment aims at (machines per region, :func:`encode_regions`)."""
    return f"desired.{group}"


def start_key(group: str) -> str:
    """The shape the group had when the deployment began: what a rollback restores."""
    return f"start.{group}"


def from_key(group: str) -> str:
    """The version most of the group ran when the deployment began."""
    return f"from.{group}"


def canary_key(group: str) -> str:
    """Canary progress: ``passed`` (flyctl's form) or the count of steps done."""
    return f"canary.{group}"


def bluegreen_key(group: str) -> str:
    """``switched`` once the group's greens took the traffic."""
    return f"bluegreen.{group}"


def gate_key(name: str) -> str:
    """``approved`` once gate ``name`` passed."""
    return f"gate.{name}"


#: Operators' instructions (``zdd gate``, ``zdd abort``, ``zdd promote``): written by
#: another process through the provider's instruction channel, never by the deployer,
#: each naming the deployment's target so a leftover one never acts on the next.
OP_ABORT = "op.abort"
OP_PROMOTE = "op.promote"


def op_gate_key(name: str) -> str:
    """An operator's answer to gate ``name``: ``pass <target>`` or ``fail <target>``."""
    return f"op.gate.{name}"


def instruction(values: Mapping[str, str], key: str, target: str | None) -> str | None:
    """The instruction under ``key`` when it names ``target``: its word (``pass``,
    ``fail``) for a gate, ``"yes"`` for abort and promote; ``None`` otherwise."""
    raw = values.get(key)
    if raw is None or not target or len(raw) > 10_000:
        return None
    word, _, named = raw.partition(" ")
    if key.startswith("op.gate."):
        return word if word in ("pass", "fail") and named == target else None
    return "yes" if raw == target else None


def image_key(group: str, version: str) -> str:
    """The image ``version`` of ``group`` ran when the deployment began: what a resumed
    rollback restores on a provider that cannot read it back from the machines."""
    return f"image.{group}.{version}"


def pause_key(key: str) -> str:
    """When the pause (bake, keep-blues, proxy wait) ``key`` began, as a float."""
    return f"pause.{key}"


_DESIRED = desired_key("")


def encode_regions(regions: Mapping[str, int]) -> str:
    """``{"ams": 2, "ord": 3}`` -> ``"ams:2,ord:3"``."""
    return ",".join(f"{r}:{n}" for r, n in sorted(regions.items()))


class MalformedRecord(ValueError):
    """A record value that does not parse (the model turns it into InvalidFleetState)."""


def decode_regions(text: str) -> dict[str, int]:
    """The inverse of :func:`encode_regions`.

    Raises:
        MalformedRecord: the text is not ``region:count`` pairs.
    """
    out: dict[str, int] = {}
    if not text:
        return out
    for part in text.split(","):
        region, sep, n = part.rpartition(":")
        count = parse_ascii_int(n) if sep and region else None
        if count is None:
            raise MalformedRecord("is not region:count pairs")
        out[region] = count
        if sum(out.values()) > MAX_GROUP_MACHINES:
            raise MalformedRecord(f"asks for more than {MAX_GROUP_MACHINES} machines")
    return out


def encode_target(pairs: Iterable[tuple[str, str]]) -> str:
    """``[("app", "v2"), ("worker", "v2")]`` -> ``"app=v2,worker=v2"``."""
    return ",".join(f"{g}={v}" for g, v in pairs)


def parse_target(text: str) -> dict[str, str]:
    """The inverse of :func:`encode_target` (``{}`` for text that is not one)."""
    out: dict[str, str] = {}
    for part in text.split(",") if text else ():
        group, sep, version = part.partition("=")
        if sep and group:
            out[group] = version
    return out


@attrs.frozen
class RecordView:
    """A typed read view of a deployment record."""

    values: Mapping[str, str]

    @property
    def phase(self) -> str | None:
        return self.values.get(PHASE)

    @property
    def target(self) -> str | None:
        return self.values.get(TARGET)

    @property
    def rollback_of(self) -> str | None:
        return self.values.get(ROLLBACK_OF)

    @property
    def deployment(self) -> str | None:
        return self.values.get(DEPLOYMENT)

    def image(self, group: str, version: str) -> str | None:
        return self.values.get(image_key(group, version))

    @property
    def strategy(self) -> str | None:
        return self.values.get(STRATEGY)

    def target_versions(self) -> dict[str, str]:
        """The versions the deployment in the record aims at, per group (while rolling
        back: those of the deployment being rolled back)."""
        return parse_target(self.rollback_of or self.target or "")

    def in_progress(self) -> bool:
        return self.phase in (DEPLOYING, ROLLING_BACK)

    def deploying(self, target: str) -> bool:
        """The record says deployment ``target`` is under way."""
        return self.phase == DEPLOYING and self.target == target

    def rolling_back(self, target: str) -> bool:
        """The record says deployment ``target`` is being rolled back."""
        return self.phase == ROLLING_BACK and self.rollback_of == target

    def desired_groups(self) -> dict[str, str]:
        """Each group's ``desired.<group>`` shape, as encoded."""
        return {
            k.removeprefix(_DESIRED): v for k, v in self.values.items() if k.startswith(_DESIRED)
        }

    def desired(self, group: str) -> str | None:
        return self.values.get(desired_key(group))

    def start(self, group: str) -> str | None:
        return self.values.get(start_key(group))

    def from_version(self, group: str) -> str | None:
        return self.values.get(from_key(group))

    def canary(self, group: str) -> str | None:
        return self.values.get(canary_key(group))

    def switched(self, group: str) -> bool:
        return self.values.get(bluegreen_key(group)) == SWITCHED

    def approved(self, gate: str) -> bool:
        return self.values.get(gate_key(gate)) == APPROVED

    def pause_started(self, key: str) -> float | None:
        raw = self.values.get(pause_key(key))
        if raw is None or not raw.isascii() or len(raw) > 64:
            return None
        try:
            value = float(raw)
        except ValueError:
            return None
        return value if math.isfinite(value) else None
