"""Plans: provider-neutral actions grouped into steps, rendered as text and JSON.

A :class:`Plan` is an ordered tuple of :class:`Step`. A step's ``actions`` are
independent and may run concurrently; the step ends when all of them are done
and then its ``waits`` hold (a machine healthy, a pause over, a gate approved).
Every action names its process group (``"*"`` for the whole app) and its
machine (``None`` where there is none yet, or none at all).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar, TypeAlias

import attrs

from ._durations import format_duration
from ._model import FrozenMap, Release, frozen_str_map, str_tuple

__all__ = [
    "ACTION_KINDS",
    "Action",
    "Cordon",
    "Create",
    "Destroy",
    "Gate",
    "Label",
    "Pause",
    "Plan",
    "RunCommand",
    "Start",
    "Step",
    "Stop",
    "Uncordon",
    "Update",
    "WaitHealthy",
    "redact_command",
]

APP = "*"
_URL_CREDENTIALS = re.compile(r"(://[^/\s:@]+):[^@\s/]+@")
_ASSIGNMENT = re.compile(r"(?<![\w-])([A-Za-z_][A-Za-z0-9_]*)=(\S+)")
_SECRET_FLAG = re.compile(
    r"(--?[\w-]*(?:password|passwd|token|secret|key|credential)[\w-]*)([= ])(\S+)", re.IGNORECASE
)


def redact_command(command: str) -> str:
    """Hide the values of ``NAME=value`` words and ``--password x`` style flags."""
    out = _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}:<redacted>@", command)
    out = _ASSIGNMENT.sub(lambda m: f"{m.group(1)}=<redacted>", out)
    return _SECRET_FLAG.sub(lambda m: f"{m.group(1)}{m.group(2)}<redacted>", out)


def _to_json_value(value: object) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _to_json_value(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_to_json_value(v) for v in value]
    return value


@attrs.frozen(kw_only=True)
class Action:
    """Base of every action. ``kind`` names it in JSON and text."""

    kind: ClassVar[str] = ""
    group: str
    machine: str | None = None

    def to_json(self) -> dict[str, Any]:
        """This action as a JSON-ready dict: ``kind``, ``machine``, ``group``, then fields
        (the release an action carries for its provider is not part of the plan format)."""
        out: dict[str, Any] = {"kind": self.kind, "machine": self.machine, "group": self.group}
        for f in attrs.fields(type(self)):
            if f.name in ("group", "machine", "release"):
                continue
            out[f.name] = _to_json_value(getattr(self, f.name))
        return out

    def describe(self) -> str:
        """One human line, without the kind."""
        return self.machine or ""


@attrs.frozen(kw_only=True)
class Create(Action):
    """Create a machine of ``version`` in ``region``, hidden from traffic when ``hidden``.

    ``key`` is an idempotency key: a provider finding a machine with this key
    must not create another. ``role`` says why it exists: ``surge`` (a rolling
    update's replacement), ``new`` (scaling up, or an immediate deployment),
    ``green``, ``canary``. ``release`` is what a machine of ``version`` looks like
    (image, env, checks, kill signal): what the provider builds it from.
    """

    kind: ClassVar[str] = "create"
    region: str
    version: str
    key: str
    role: str = "new"
    hidden: bool = True
    release: Release | None = attrs.field(default=None, repr=False)

    def describe(self) -> str:
        vis = "hidden" if self.hidden else "visible"
        return f"{self.key} ({self.role}, {self.version}, {self.region}, {vis})"


def _after_drain(drain: float) -> str:
    return f" (after {format_duration(drain)} cordoned)" if drain else ""


@attrs.frozen(kw_only=True)
class Update(Action):
    """Update a machine in place to ``version`` (it restarts), then start it.

    ``drain``: the machine must have been cordoned this many seconds before the
    update begins, so that its connections finish (0: no wait). ``release``: what a
    machine of ``version`` looks like (``None``, or one without an image, when the
    planner does not know it, as in a rollback: the provider keeps what it knows).
    """

    kind: ClassVar[str] = "update"
    version: str
    from_version: str
    drain: float = 0.0
    release: Release | None = attrs.field(default=None, repr=False)

    def describe(self) -> str:
        return f"{self.machine} {self.from_version} -> {self.version}{_after_drain(self.drain)}"


@attrs.frozen(kw_only=True)
class Start(Action):
    """Start a stopped, suspended, created or failed machine."""

    kind: ClassVar[str] = "start"


@attrs.frozen(kw_only=True)
class Stop(Action):
    """Stop a machine with its kill signal, waiting up to ``timeout`` seconds.

    ``drain``: as for :class:`Update`, how long it must have been cordoned first.
    """

    kind: ClassVar[str] = "stop"
    signal: str = "SIGINT"
    timeout: float = 5.0
    drain: float = 0.0

    def describe(self) -> str:
        return (
            f"{self.machine} ({self.signal}, {format_duration(self.timeout)})"
            f"{_after_drain(self.drain)}"
        )


@attrs.frozen(kw_only=True)
class Destroy(Action):
    """Destroy a machine (it never holds a volume: planners see to that)."""

    kind: ClassVar[str] = "destroy"


@attrs.frozen(kw_only=True)
class Cordon(Action):
    """Stop routing new traffic to a machine."""

    kind: ClassVar[str] = "cordon"


@attrs.frozen(kw_only=True)
class Uncordon(Action):
    """Route traffic to a machine (release it).

    ``weight``: the percentage of its group's traffic that the canaries share, for
    providers that support weights (the provider records it as the machine's
    ``zdd.weight`` label); ``None`` gives the machine its even share again.
    """

    kind: ClassVar[str] = "uncordon"
    weight: int | None = None

    def describe(self) -> str:
        w = f" (weight {self.weight}%)" if self.weight is not None else ""
        return f"{self.machine}{w}"


@attrs.frozen(kw_only=True)
class WaitHealthy(Action):
    """Wait until a machine is started and passing, for ``min_healthy_time`` in a row."""

    kind: ClassVar[str] = "wait_healthy"
    timeout: float = 300.0
    min_healthy_time: float = 0.0

    def describe(self) -> str:
        held = f", held {format_duration(self.min_healthy_time)}" if self.min_healthy_time else ""
        return f"{self.machine} (timeout {format_duration(self.timeout)}{held})"


@attrs.frozen(kw_only=True)
class Pause(Action):
    """Wait ``duration`` seconds: a canary's bake, a keep-blues window.

    ``key`` names the pause within its deployment: an executor records when it
    began under ``pause.<key>`` so that a resumed deployment does not start it
    over, and knows a pause it has finished.
    """

    kind: ClassVar[str] = "pause"
    duration: float
    reason: str
    key: str
    machines: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)

    def describe(self) -> str:
        return f"{format_duration(self.duration)} ({self.reason})"


@attrs.frozen(kw_only=True)
class Gate(Action):
    """Wait for gate ``name`` to be approved (manual approval or an analysis)."""

    kind: ClassVar[str] = "gate"
    name: str
    reason: str = ""

    def describe(self) -> str:
        return f"{self.name}" + (f" ({self.reason})" if self.reason else "")


@attrs.frozen(kw_only=True)
class RunCommand(Action):
    """Run the release command (before any machine changes) or the post-deploy command.

    The command is redacted (``NAME=value`` words, secret-looking flags) in JSON,
    text and repr.
    """

    kind: ClassVar[str] = "run_command"
    phase: str
    command: str = attrs.field(repr=redact_command)
    target: str
    timeout: float = 300.0
    release: Release | None = attrs.field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["command"] = redact_command(self.command)
        return out

    def describe(self) -> str:
        return (
            f"{self.phase}: {redact_command(self.command)} "
            f"(timeout {format_duration(self.timeout)})"
        )


@attrs.frozen(kw_only=True)
class Label(Action):
    """Write ``values`` into the deployment record (``machine=None``) or a machine's labels.

    ``replace``: the record becomes exactly ``values`` (a new deployment's first
    label, so that nothing of the previous deployment is read as this one's);
    otherwise ``values`` are merged in.
    """

    kind: ClassVar[str] = "label"
    values: FrozenMap[str] = attrs.field(converter=frozen_str_map)
    replace: bool = False

    def describe(self) -> str:
        target = self.machine or "record"
        pairs = ", ".join(f"{k}={v}" for k, v in self.values.items())
        return f"{target}: {pairs}" + (" (replacing the record)" if self.replace else "")


ACTION_KINDS: tuple[str, ...] = (
    "create",
    "update",
    "start",
    "stop",
    "destroy",
    "cordon",
    "uncordon",
    "wait_healthy",
    "pause",
    "gate",
    "run_command",
    "label",
)
WAIT_KINDS = frozenset({"wait_healthy", "pause", "gate"})

AnyAction: TypeAlias = Action


_KIND_ORDER = {k: i for i, k in enumerate(ACTION_KINDS)}


def _sort_actions(actions: Iterable[Action]) -> tuple[Action, ...]:
    # Stable: within a group and kind, actions keep the order they were given in
    # (planners give them in machine order).
    return tuple(sorted(actions, key=lambda a: (a.group, _KIND_ORDER[a.kind])))


@attrs.frozen(kw_only=True)
class Step:
    """Actions that may run at once, then conditions to wait for.

    Attributes:
        actions: effects (create, update, start, stop, destroy, cordon,
            uncordon, run_command, label), independent of each other.
        waits: conditions (wait_healthy, pause, gate) that must hold, after the
            actions are done, before the step ends.
        why: the reason for this step (budgets used, phase).
    """

    actions: tuple[Action, ...] = attrs.field(default=(), converter=_sort_actions)
    waits: tuple[Action, ...] = attrs.field(default=(), converter=_sort_actions)
    why: str = ""

    def __iter__(self) -> Iterator[Action]:
        yield from self.actions
        yield from self.waits

    def to_json(self) -> dict[str, Any]:
        """``{"why", "actions": [...], "wait": [...]}``."""
        return {
            "why": self.why,
            "actions": [a.to_json() for a in self.actions],
            "wait": [w.to_json() for w in self.waits],
        }


def _steps_tuple(steps: Iterable[Step]) -> tuple[Step, ...]:
    return tuple(steps)


@attrs.frozen(kw_only=True)
class Plan:
    """An ordered tuple of steps, for one strategy. Empty when nothing is to be done.

    ``warnings``: one line per process group that the plan may take to zero serving
    machines (strategy immediate, a one-machine group whose machine holds a
    volume), naming the cause and the fix; empty when ``allow_downtime`` is set.
    """

    strategy: str
    steps: tuple[Step, ...] = attrs.field(default=(), converter=_steps_tuple)
    summary: str = ""
    warnings: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)

    def __bool__(self) -> bool:
        return bool(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def actions(self) -> Iterator[Action]:
        """Every action and wait of every step, in order."""
        for step in self.steps:
            yield from step

    def to_json(self) -> dict[str, Any]:
        """The documented plan format (see ``docs/plan-format.md``)."""
        return {
            "format": 1,
            "strategy": self.strategy,
            "summary": self.summary,
            "warnings": list(self.warnings),
            "steps": [s.to_json() for s in self.steps],
        }

    def to_json_text(self) -> str:
        """The JSON format as indented text."""
        return json.dumps(self.to_json(), indent=2, sort_keys=False)

    def to_text(self) -> str:
        """Numbered steps, one action a line, each step with its reason."""
        lines = [f"warning: {w}" for w in self.warnings]
        lines.append(
            f"Plan ({self.strategy}): {self.summary}" if self.summary else f"Plan ({self.strategy})"
        )
        if not self.steps:
            lines.append("  nothing to do: the fleet already matches what is desired")
            return "\n".join(lines)
        width = len(str(len(self.steps)))
        for i, step in enumerate(self.steps, 1):
            lines.append(f"{i:>{width}}. {step.why}" if step.why else f"{i:>{width}}.")
            pad = " " * (width + 2)
            for a in step.actions:
                lines.append(f"{pad}{a.kind:<17} {a.describe()}{_group_suffix(a)}")
            for w in step.waits:
                lines.append(f"{pad}{'then ' + w.kind:<17} {w.describe()}{_group_suffix(w)}")
        return "\n".join(lines)


def _group_suffix(action: Action) -> str:
    return "" if action.group == APP else f"  [{action.group}]"
