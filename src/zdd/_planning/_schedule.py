"""The scheduler shared by the planners: per-machine pipelines under budgets.

Theory of operation. A planner turns each machine that needs work into a
:class:`Task`: a pipeline of *elements*, each element being what that machine
does in one step (some actions, then some waits). Tasks that take a serving
machine out of service need *room* (serving machines above the group's floor);
tasks that add a machine need a *slot* (live machines below the group's
ceiling). The scheduler walks step indices: at each index it admits the tasks
the budgets allow (first come, first served, one region wave at a time), emits
the next element of every admitted task, and returns budget when a task's last
element is done. The first step of the result is what to do now; the rest is
the preview, assuming every action succeeds.

Rules:
1. Budgets are counted from what is observed: a machine already down (updating,
   booting, failed) is not serving, so it already uses room.
2. Room is taken when a task is admitted and given back one step after its last
   element, never earlier: a plan never relies on concurrent actions finishing
   in a favourable order.
3. Nothing here knows which strategy is running.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import NamedTuple

import attrs

from .._errors import PlanningImpossible
from .._plan import Action


class Element(NamedTuple):
    """What one task does in one step (a named tuple: planners make many)."""

    actions: tuple[Action, ...] = ()
    waits: tuple[Action, ...] = ()


@attrs.define
class Task:
    """One machine's remaining work.

    Attributes:
        elements: the steps of its pipeline, in order.
        wave: its region wave (0 when waves are off).
        needs_room: it takes a serving machine out of service when admitted.
        cost: the serving machines that counts as taking out (1; 0 for a machine
            presumed serving but not counted as serving, whose health is not known
            yet: taking it out still needs the others to hold the floor).
        needs_slot: it adds a live machine when admitted.
        gain: serving machines it adds when done.
        frees_slot: it removes a live machine when done.
    """

    elements: list[Element]
    wave: int = 0
    needs_room: bool = False
    cost: int = 1
    needs_slot: bool = False
    gain: int = 0
    frees_slot: bool = False


@attrs.frozen
class Budget:
    """A group's limits: serving never below ``floor``, live never above ``ceiling``.

    ``note`` is added to every step's reason (why the limits are what they are).
    """

    group: str
    desired: int
    floor: int
    ceiling: int
    serving: int
    live: int
    note: str = ""


@attrs.frozen
class GroupStep:
    actions: tuple[Action, ...]
    waits: tuple[Action, ...]
    why: str


@attrs.frozen
class Barrier:
    """Steps that run one after another, every action of a step at once.

    ``floor``: serving machines the group keeps while they run (an executor holds
    a take-out that would go below it); ``None``: no floor.
    """

    steps: tuple[GroupStep, ...]
    floor: int | None = None


@attrs.frozen
class Scheduled:
    """Tasks admitted under a budget (see :func:`schedule`).

    ``why``, when given, replaces the budget figures as every step's reason.
    ``warning``, when given, says why this phase may take the group's serving
    machines to zero (shown before the plan).
    """

    tasks: tuple[Task, ...]
    budget: Budget
    why: str | None = None
    warning: str | None = None


Phase = Barrier | Scheduled


def lay_out(phases: Sequence[Phase]) -> list[GroupStep]:
    """The steps of a group's phases, one phase after the other."""
    out: list[GroupStep] = []
    for phase in phases:
        if isinstance(phase, Barrier):
            out.extend(phase.steps)
        else:
            steps = schedule(phase.tasks, phase.budget)
            if phase.why is not None:
                steps = [GroupStep(s.actions, s.waits, phase.why) for s in steps]
            out.extend(steps)
    return out


def schedule(tasks: Sequence[Task], budget: Budget) -> list[GroupStep]:
    """Lay ``tasks`` out in steps under ``budget``.

    Raises:
        PlanningImpossible: when work remains and no task can ever be admitted.
    """
    tasks = [t for t in tasks if t.elements]
    if not tasks:
        return []
    waves, queues = queue_tasks(tasks)
    serving = budget.serving
    live = budget.live
    active: list[tuple[Task, int]] = []  # (task, index of next element)
    out: list[GroupStep] = []
    wave_i = 0
    while True:
        while (
            wave_i < len(waves)
            and not any(queues[waves[wave_i]])
            and not _in_wave(active, waves[wave_i])
        ):
            wave_i += 1
        if wave_i >= len(waves) and not active:
            break
        if wave_i < len(waves):
            new, serving, live = admit_wave(queues[waves[wave_i]], serving, live, budget)
            active.extend((t, 0) for t in new)
        if not active:
            # the wave is blocked: a later wave that can make progress goes first
            new, serving, live = unblock(queues, waves[wave_i + 1 :], serving, live, budget)
            active.extend((t, 0) for t in new)
        if not active:
            raise PlanningImpossible(_stuck_message(budget, serving, live, queues, waves[wave_i]))
        actions: list[Action] = []
        waits: list[Action] = []
        still: list[tuple[Task, int]] = []
        done: list[Task] = []
        for task, i in active:
            el = task.elements[i]
            actions.extend(el.actions)
            waits.extend(el.waits)
            if i + 1 < len(task.elements):
                still.append((task, i + 1))
            else:
                done.append(task)
        unavailable = max(0, budget.desired - serving)
        allowed = min(budget.desired, max(0, budget.desired - budget.floor))
        why = (
            f"{budget.group}: {unavailable} of {budget.desired} unavailable "
            f"(budget {allowed}), {live} machine{'' if live == 1 else 's'} "
            f"(ceiling {budget.ceiling})"
        )
        if budget.note:
            why += f"; {budget.note}"
        out.append(GroupStep(tuple(actions), tuple(waits), why))
        for task in done:
            serving += task.gain
            if task.frees_slot:
                live -= 1
        active = still
    return out


Queues = dict[int, tuple[deque[Task], deque[Task], deque[Task]]]


def queue_tasks(tasks: Sequence[Task]) -> tuple[list[int], Queues]:
    """The waves in order, and per wave the free tasks, the tasks needing a slot and
    the tasks needing room (FIFO each; among those needing room, the ones that cost
    nothing -- their machine's health is not known yet -- go first: they never wait
    behind a take-out that must wait)."""
    waves = sorted({t.wave for t in tasks})
    queues: Queues = {w: (deque(), deque(), deque()) for w in waves}
    for t in sorted(tasks, key=lambda t: t.needs_room and t.cost > 0):
        free, slot, room = queues[t.wave]
        if t.needs_slot:
            slot.append(t)
        elif t.needs_room:
            room.append(t)
        else:
            free.append(t)
    return waves, queues


def admit_wave(
    queues: tuple[deque[Task], deque[Task], deque[Task]],
    serving: int,
    live: int,
    budget: Budget,
) -> tuple[list[Task], int, int]:
    """Admit a wave's tasks as the budgets allow: (tasks, serving, live) after."""
    free, slot, room = queues
    out: list[Task] = []
    while free:
        out.append(free.popleft())
    while slot and live + 1 <= budget.ceiling:
        task = slot.popleft()
        live += 1
        if task.needs_room:
            serving -= 1
        out.append(task)
    while room and serving - room[0].cost >= budget.floor:
        task = room.popleft()
        out.append(task)
        serving -= task.cost
    return out, serving, live


def unblock(
    queues: dict[int, tuple[deque[Task], deque[Task], deque[Task]]],
    later: Sequence[int],
    serving: int,
    live: int,
    budget: Budget,
) -> tuple[list[Task], int, int]:
    """When the current wave can admit nothing and nothing runs, the first later wave
    with something admissible goes ahead (a repair, a create, a retirement that frees
    a slot), so that region waves never make a possible plan impossible."""
    for wave in later:
        out, serving, live = admit_wave(queues[wave], serving, live, budget)
        if out:
            return out, serving, live
    return [], serving, live


def _in_wave(active: list[tuple[Task, int]], wave: int) -> bool:
    return any(t.wave == wave for t, _ in active)


def _stuck_message(
    budget: Budget,
    serving: int,
    live: int,
    queues: dict[int, tuple[deque[Task], deque[Task], deque[Task]]],
    wave: int,
) -> str:
    _, slot, room = queues[wave]
    if room and not slot:
        unknown = sum(1 for t in room if t.cost == 0)
        if unknown:
            return (
                f"group {budget.group!r}: {serving} of {budget.desired} machines are known "
                f"to serve and {unknown} have no check result yet (health unknown), against "
                f"a floor of {budget.floor}; wait for their checks to report"
            )
        return (
            f"group {budget.group!r}: {serving} of {budget.desired} machines are serving, "
            f"and taking one more out of service would go below the floor of "
            f"{budget.floor}; repair the machines that are down, raise max_unavailable, "
            f"or set max_surge"
        )
    return (
        f"group {budget.group!r}: {live} machines are live and the ceiling is "
        f"{budget.ceiling}, with {serving} serving against a floor of {budget.floor}; "
        f"no step can make progress. Raise max_surge or max_unavailable"
    )
