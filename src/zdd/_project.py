"""Projection: the state a step leaves behind if every action in it succeeds.

Pure, like the planners. It is how a plan is previewed as a timeline and how
the tests replay a plan to check the invariants at every step.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from ._model import FleetState, FrozenMap, Health, Machine, MachineState
from ._plan import (
    Action,
    Cordon,
    Create,
    Destroy,
    Gate,
    Label,
    Plan,
    Start,
    Step,
    Stop,
    Uncordon,
    Update,
    WaitHealthy,
)
from ._record import APPROVED, gate_key

__all__ = ["apply_actions", "apply_step", "replay"]


def apply_actions(state: FleetState, actions: Iterable[Action]) -> FleetState:
    """Apply actions (effects or waits) as if each succeeded, in order."""
    machines = {m.id: m for m in state.machines}
    record = state.record
    for a in actions:
        m = machines.get(a.machine) if a.machine is not None else None
        if isinstance(a, Create):
            machines[a.key] = Machine(
                id=a.key,
                version=a.version,
                group=a.group,
                region=a.region,
                state=MachineState.STARTED,
                health=Health.UNKNOWN,
                cordoned=a.hidden,
                labels={"zdd.key": a.key, "zdd.role": a.role},
            )
        elif isinstance(a, Label):
            if a.machine is None:
                record = a.values if a.replace else record.update(a.values)
            elif m is not None:
                machines[m.id] = attrs.evolve(m, labels=m.labels.update(a.values))
        elif isinstance(a, Gate):
            record = record.set(gate_key(a.name), APPROVED)
        elif m is None:
            continue
        elif isinstance(a, Update):
            machines[m.id] = attrs.evolve(
                m, version=a.version, state=MachineState.STARTED, health=Health.UNKNOWN
            )
        elif isinstance(a, Start):
            machines[m.id] = attrs.evolve(m, state=MachineState.STARTED, health=Health.UNKNOWN)
        elif isinstance(a, Stop):
            machines[m.id] = attrs.evolve(m, state=MachineState.STOPPED, health=Health.UNKNOWN)
        elif isinstance(a, Destroy):
            del machines[m.id]
        elif isinstance(a, Cordon):
            machines[m.id] = attrs.evolve(m, cordoned=True)
        elif isinstance(a, Uncordon):
            labels = (
                m.labels.set("zdd.weight", str(a.weight))
                if a.weight is not None
                else FrozenMap({k: v for k, v in m.labels.items() if k != "zdd.weight"})
            )
            machines[m.id] = attrs.evolve(m, cordoned=False, labels=labels)
        elif isinstance(a, WaitHealthy):
            machines[m.id] = attrs.evolve(m, state=MachineState.STARTED, health=Health.PASSING)
    return FleetState(machines=machines.values(), record=record)


def apply_step(state: FleetState, step: Step) -> FleetState:
    """The state after ``step``: its actions, then its waits."""
    return apply_actions(state, step)


def replay(state: FleetState, plan: Plan) -> list[FleetState]:
    """Every state a plan passes through: the start, then one per step."""
    out = [state]
    for step in plan.steps:
        state = apply_step(state, step)
        out.append(state)
    return out
