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

One scheduler (:class:`Scheduler`: ``admit()``, ``done(task)``) does this for
both: :func:`schedule` runs it for a preview, finishing every element of a step
at the step's end; the executor runs it online, on real completions. A barrier
(steps that run one after another) is one chained task under an unbounded
budget, so it goes through the same scheduler.

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
    """What one task does in one step (a named tuple: planners make many): some
    actions, then some waits; ``why``, when given, is that step's reason (a
    barrier's steps carry their own)."""

    actions: tuple[Action, ...] = ()
    waits: tuple[Action, ...] = ()
    why: str | None = None


#: A group's part of one step: the same thing as an element (one type for both).
GroupStep = Element


def _elements(value: Sequence[Element]) -> tuple[Element, ...]:
    return tuple(value)


@attrs.frozen(eq=False)
class Task:
    """One machine's remaining work (frozen; compared by identity).

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

    elements: tuple[Element, ...] = attrs.field(converter=_elements)
    wave: int = 0
    needs_room: bool = False
    cost: int = 1
    needs_slot: bool = False
    gain: int = 0
    frees_slot: bool = False


#: A floor that holds nothing (no take-out is ever refused under it).
NO_FLOOR = -(10**12)


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

    @classmethod
    def unbounded(cls, group: str, floor: int | None = None) -> Budget:
        """No ceiling, and ``floor`` (none when ``None``): a barrier's budget."""
        return cls(
            group=group,
            desired=0,
            floor=NO_FLOOR if floor is None else floor,
            ceiling=-NO_FLOOR,
            serving=0,
            live=0,
        )


@attrs.frozen
class Scheduled:
    """Tasks admitted under a budget (see :class:`Scheduler`).

    ``why``, when given, replaces the budget figures as every step's reason.
    ``warning``, when given, says why this phase may take the group's serving
    machines to zero (shown before the plan).
    """

    tasks: tuple[Task, ...]
    budget: Budget
    why: str | None = None
    warning: str | None = None


#: What a group planner returns: its phases, one after the other.
Phase = Scheduled


def barrier(group: str, steps: Sequence[Element], *, floor: int | None = None) -> Scheduled:
    """Steps that run one after another, every action of a step at once: one chained
    task under an unbounded budget. ``floor``: serving machines the group keeps while
    they run (an executor holds a take-out that would go below it)."""
    return Scheduled((Task(steps),), Budget.unbounded(group, floor))


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


class Scheduler:
    """Admits a phase's tasks as its budget allows, one region wave at a time.

    ``admit()`` returns the tasks that may start now (taking room and slots);
    ``done(task)`` gives back what a finished task returns. The preview
    (:func:`schedule`) and the executor drive the same object.
    """

    def __init__(self, phase: Scheduled) -> None:
        self.phase = phase
        self.budget = phase.budget
        self.waves, self.queues = queue_tasks([t for t in phase.tasks if t.elements])
        self.serving = phase.budget.serving
        self.live = phase.budget.live
        self.active = 0
        self._wave_i = 0
        self._active_by_wave: dict[int, int] = {}

    @property
    def group(self) -> str:
        return self.budget.group

    @property
    def finished(self) -> bool:
        """Every task admitted and done."""
        return self.active == 0 and all(not any(q) for q in self.queues.values())

    @property
    def stuck(self) -> bool:
        """Work remains and nothing runs (after an ``admit()`` that gave nothing)."""
        return self.active == 0 and not self.finished

    def admit(self) -> list[Task]:
        """The tasks the budgets allow now."""
        while (
            self._wave_i < len(self.waves)
            and not any(self.queues[self.waves[self._wave_i]])
            and not self._active_by_wave.get(self.waves[self._wave_i])
        ):
            self._wave_i += 1
        if self._wave_i >= len(self.waves):
            return []
        out = self._admit_wave(self.waves[self._wave_i])
        if not out and self.active == 0:
            # the wave is blocked: a later wave that can make progress goes first, so
            # that region waves never make a possible plan impossible
            for wave in self.waves[self._wave_i + 1 :]:
                out = self._admit_wave(wave)
                if out:
                    break
        self.active += len(out)
        for t in out:
            self._active_by_wave[t.wave] = self._active_by_wave.get(t.wave, 0) + 1
        return out

    def done(self, task: Task) -> None:
        """``task``'s last element is done: it returns its budget."""
        self.active -= 1
        self._active_by_wave[task.wave] -= 1
        self.serving += task.gain
        if task.frees_slot:
            self.live -= 1

    def _admit_wave(self, wave: int) -> list[Task]:
        free, slot, room = self.queues[wave]
        out: list[Task] = []
        while free:
            out.append(free.popleft())
        while slot and self.live + 1 <= self.budget.ceiling:
            task = slot.popleft()
            self.live += 1
            if task.needs_room:
                self.serving -= 1
            out.append(task)
        while room and self.serving - room[0].cost >= self.budget.floor:
            task = room.popleft()
            out.append(task)
            self.serving -= task.cost
        return out

    def why(self) -> str:
        """The reason of a step laid out now: the budget's figures."""
        b = self.budget
        unavailable = max(0, b.desired - self.serving)
        allowed = min(b.desired, max(0, b.desired - b.floor))
        why = (
            f"{b.group}: {unavailable} of {b.desired} unavailable "
            f"(budget {allowed}), {self.live} machine{'' if self.live == 1 else 's'} "
            f"(ceiling {b.ceiling})"
        )
        return f"{why}; {b.note}" if b.note else why

    def stuck_message(self) -> str:
        wave = self.waves[min(self._wave_i, len(self.waves) - 1)]
        return _stuck_message(self.budget, self.serving, self.live, self.queues, wave)


def lay_out(phases: Sequence[Phase]) -> list[Element]:
    """The steps of a group's phases, one phase after the other."""
    out: list[Element] = []
    for phase in phases:
        out.extend(schedule(phase))
    return out


def schedule(phase: Scheduled) -> list[Element]:
    """Lay ``phase`` out in steps: every element of a step finishes at its end.

    Raises:
        PlanningImpossible: when work remains and no task can ever be admitted.
    """
    sch = Scheduler(phase)
    active: list[tuple[Task, int]] = []  # (task, index of next element)
    out: list[Element] = []
    while True:
        active.extend((t, 0) for t in sch.admit())
        if not active:
            if sch.finished:
                return out
            raise PlanningImpossible(sch.stuck_message())
        actions: list[Action] = []
        waits: list[Action] = []
        whys: list[str] = []
        still: list[tuple[Task, int]] = []
        done: list[Task] = []
        for task, i in active:
            el = task.elements[i]
            actions.extend(el.actions)
            waits.extend(el.waits)
            if el.why is not None:
                whys.append(el.why)
            if i + 1 < len(task.elements):
                still.append((task, i + 1))
            else:
                done.append(task)
        why = phase.why if phase.why is not None else (whys[0] if whys else sch.why())
        out.append(Element(tuple(actions), tuple(waits), why))
        for task in done:
            sch.done(task)
        active = still


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
