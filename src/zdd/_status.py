"""What a deployment record says, for ``zdd status`` (pure: no I/O).

:func:`status_of` reads a fleet's deployment record into a
:class:`DeploymentStatus`: the phase, strategy, versions, canary and bluegreen
progress, the gates (approved, measured, answered) and operators' instructions
not yet acted on. Its :attr:`~DeploymentStatus.exit_code` is what ``zdd status``
exits with: 0 done, 1 rolled back, 4 in progress.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ._analysis import Measurement, measurements_in
from ._model import FleetState
from ._record import (
    APPROVED,
    DEPLOYING,
    DONE,
    OP_ABORT,
    OP_PROMOTE,
    ROLLED_BACK,
    ROLLING_BACK,
    RecordView,
    parse_target,
)

__all__ = ["EXIT_IN_PROGRESS", "DeploymentStatus", "status_of"]

#: ``zdd status``'s exit code while a deployment (or its rollback) is in progress.
EXIT_IN_PROGRESS = 4


@attrs.frozen(kw_only=True)
class DeploymentStatus:
    """A deployment as its record tells it."""

    phase: str
    strategy: str | None
    target: Mapping[str, str]
    target_text: str  # as recorded: what an instruction names
    from_versions: Mapping[str, str]
    rollback_of: str | None
    machines: Mapping[str, Mapping[str, int]]  # group -> version -> live machines
    canary: Mapping[str, str]
    switched: tuple[str, ...]
    gates: Mapping[str, str]  # name -> approved | answered pass/fail | measuring
    measurements: Mapping[str, tuple[Measurement, ...]]
    instructions: Mapping[str, str]

    @property
    def in_progress(self) -> bool:
        return self.phase in (DEPLOYING, ROLLING_BACK)

    @property
    def exit_code(self) -> int:
        if self.in_progress:
            return EXIT_IN_PROGRESS
        return 1 if self.phase == ROLLED_BACK else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "in_progress": self.in_progress,
            "strategy": self.strategy,
            "target": dict(self.target),
            "from": dict(self.from_versions),
            "rollback_of": self.rollback_of,
            "machines": {g: dict(v) for g, v in self.machines.items()},
            "canary_steps_done": dict(self.canary),
            "switched": list(self.switched),
            "gates": {
                name: {
                    "state": state,
                    "measurements": [
                        {
                            "index": m.index,
                            "at": round(m.at, 3),
                            "outcome": m.outcome,
                            "value": m.value,
                            "stable": m.stable,
                            "note": m.note,
                        }
                        for m in self.measurements.get(name, ())
                    ],
                }
                for name, state in self.gates.items()
            },
            "instructions": dict(self.instructions),
        }

    def to_text(self) -> str:
        target = ", ".join(f"{g} -> {v}" for g, v in self.target.items()) or "?"
        lines = [f"deployment: {self.phase.replace('_', ' ')} ({self.strategy or '?'}): {target}"]
        if self.from_versions:
            lines.append(
                "  from      " + ", ".join(f"{g} {v}" for g, v in self.from_versions.items())
            )
        if self.rollback_of:
            lines.append(f"  rolling back {self.rollback_of}")
        for group, versions in self.machines.items():
            shown = ", ".join(f"{n} on {v}" for v, n in versions.items())
            lines.append(f"  machines  {group}: {shown}")
        for group, done in self.canary.items():
            lines.append(f"  canary    {group}: {done} step(s) done")
        for group in self.switched:
            lines.append(f"  bluegreen {group}: switched")
        for name, state in self.gates.items():
            lines.append(f"  gate      {name}: {state}")
            for m in self.measurements.get(name, ()):
                lines.append(f"            {m.describe()}")
        for key, value in self.instructions.items():
            lines.append(f"  waiting   {key} = {value} (not yet acted on)")
        return "\n".join(lines)


def status_of(state: FleetState) -> DeploymentStatus | None:
    """The deployment ``state``'s record describes; ``None`` when there is none."""
    record = dict(state.record)
    view = RecordView(state.record)
    phase = view.phase
    if phase not in (DEPLOYING, DONE, ROLLING_BACK, ROLLED_BACK):
        return None
    target = view.target or ""
    targets = parse_target(target) if target else {}
    groups = sorted(set(targets) | set(view.desired_groups()))
    machines: dict[str, dict[str, int]] = {}
    for m in state.live:
        machines.setdefault(m.group, {})
        machines[m.group][m.version] = machines[m.group].get(m.version, 0) + 1
    gates: dict[str, str] = {}
    measured: dict[str, tuple[Measurement, ...]] = {}
    for key, value in record.items():
        if key.startswith("gate.") and value == APPROVED:
            gates[key[len("gate.") :]] = "approved"
        elif key.startswith("analysis.") and key.count(".") >= 2:
            name = key[len("analysis.") : key.rindex(".")]
            gates.setdefault(name, "measuring")
        elif key.startswith("op.gate."):
            name = key[len("op.gate.") :]
            word, _, named = value.partition(" ")
            if named == target and gates.get(name) != "approved":
                gates[name] = f"answered {word} by an operator"
    for name in gates:
        ms = measurements_in(record, name)
        if ms:
            measured[name] = tuple(ms)
    instructions = {
        k: v
        for k, v in record.items()
        if k in (OP_ABORT, OP_PROMOTE) and v == target and phase == DEPLOYING
    }
    return DeploymentStatus(
        phase=phase,
        strategy=view.strategy,
        target=targets,
        target_text=target,
        from_versions={g: v for g in groups if (v := view.from_version(g))},
        rollback_of=view.rollback_of,
        machines={g: dict(sorted(v.items())) for g, v in sorted(machines.items())},
        canary={g: c for g in groups if (c := view.canary(g))},
        switched=tuple(g for g in groups if view.switched(g)),
        gates=dict(sorted(gates.items())),
        measurements=measured,
        instructions=instructions,
    )
