"""The executor's core: a sans-I/O state machine that decides what to perform next.

Theory of operation (the pattern of h11's ``Connection``). :class:`ExecutorCore`
performs nothing, reads no clock and starts no thread; this module is covered by
the purity test. A driver feeds it one frozen event at a time through
:meth:`ExecutorCore.handle` -- :class:`Begin` (the observed fleet),
:class:`ActionDone`, :class:`ActionError`, :class:`MachineSeen`,
:class:`Observed` (the whole fleet, at a poll), :class:`FullObserved` (the whole
fleet, when the core asked for it), :class:`Tick` (time passed),
:class:`Interrupt` and :class:`Abort` -- each carrying the driver's ``now``, and
carries out the frozen :class:`Commands` it gets back: what to perform, which
machines to report, when to wake it, whether to look at the whole fleet. Two
drivers run it: :func:`zdd.execute` (threads and wall time, for real providers)
and the simulator's virtual clock (``zdd.sim``).

The core runs a :class:`~zdd._planning.Blueprint` online: each group's tasks
are admitted as their budget allows and every completed action may admit more
at once (a sliding window, not lockstep batches), through the planner's own
:class:`~zdd._planning.Scheduler`. A full re-plan from observed state happens at
the start, on resume, after the last task (to catch drift, such as a machine
that crashed meanwhile), when every take-out is held by the floor, and when
rolling back.

Failures: an action that still fails after ``retries`` attempts, a machine not
healthy within ``wait_timeout`` (or found failed), a gate that fails, a floor
held for longer than ``wait_timeout``, or the overall deadline. Rolling,
bluegreen (before its switch) and canary then roll back automatically
(``auto_rollback``): in-flight actions finish, the fleet is observed, and the
strategy's own rollback plan runs with its floor; every machine the deployment
created is destroyed. A failed rollback is reported, never rolled back again.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal, ParamSpec, Protocol, TypeAlias, runtime_checkable

import attrs

from ._analysis import Measurement, analysis_began_key, measurement_key, measurements_in
from ._errors import (
    ActionFailed,
    DeploymentLocked,
    DeploymentSuperseded,
    DeployTimeout,
    InvalidConfig,
    PlanningImpossible,
    ProviderContractError,
    ZddError,
)
from ._hooks import Reporter
from ._model import Capabilities, Desired, FleetState, Health, Machine, MachineState
from ._plan import Action, Create, Gate, Label, Pause, Stop, Update, WaitHealthy
from ._planning import (
    NO_FLOOR,
    Blueprint,
    Element,
    Scheduled,
    Scheduler,
    Task,
    blueprint,
    can_roll_back,
    rollback_desired,
    rollback_strategy,
    target_of,
)
from ._record import (
    APPROVED,
    OP_ABORT,
    OP_PROMOTE,
    PHASE,
    ROLLBACK_OF,
    ROLLING_BACK,
    TARGET,
    RecordView,
    gate_key,
    instruction,
    op_gate_key,
    pause_key,
)
from ._strategies import Immediate, Rolling, Strategy

__all__ = [
    "Abort",
    "ActionDone",
    "ActionError",
    "Begin",
    "Commands",
    "DeployResult",
    "Event",
    "ExecuteOptions",
    "ExecutorCore",
    "FullObserved",
    "GateResolver",
    "GateResult",
    "Interrupt",
    "MachineSeen",
    "Observed",
    "Perform",
    "Tick",
]

_P = ParamSpec("_P")
GateResult = Literal["pass", "fail", "inconclusive", "pending"]
GateResolver = Callable[[str], GateResult]


@attrs.frozen(kw_only=True)
class GateContext:
    """What a gate resolver with state (a metric analysis) is told at each visit.

    Attributes:
        name: the gate.
        group: the process group it holds.
        canary: the version being deployed to it; ``stable``: the one it replaces.
        waited: seconds since the gate began waiting (on the executor's clock, kept
            in the record: a resumed executor goes on from there).
        measurements: what was measured so far (from the record).
    """

    name: str
    group: str
    canary: str
    stable: str
    waited: float
    measurements: tuple[Measurement, ...] = ()


@attrs.frozen(kw_only=True)
class GateAnswer:
    """A resolver's answer: the result, new measurements (the core records and reports
    each), when to ask again (seconds from now; ``None``: ``gate_poll``), and why (said
    when the gate fails or stays inconclusive)."""

    result: GateResult
    measurements: tuple[Measurement, ...] = ()
    next_check: float | None = None
    reason: str = ""


@runtime_checkable
class StatefulGateResolver(Protocol):
    """A gate resolver that measures (``zdd.analysis.MetricGates``): asked with a
    :class:`GateContext` and the driver's clock, answers with a :class:`GateAnswer`."""

    def resolve(self, context: GateContext) -> GateAnswer: ...


@attrs.frozen(kw_only=True)
class ExecuteOptions:
    """How an executor runs.

    Attributes:
        concurrency: provider calls in flight at once (flyctl's default: 8).
        retries: attempts for an action that fails transiently before giving up.
        retry_backoff: seconds before the first retry; doubles each time.
        deadline: the whole deployment's limit in seconds (``None``: none).
        gates: a result per gate name, or a callable; a gate not listed is
            ``pending`` until ``gate_timeout``.
        gate_timeout: how long a gate may stay pending or inconclusive.
        gate_poll: how often a pending gate is asked again.
        max_rounds: re-plans after the last task before the core gives up on drift.
    """

    concurrency: int = 8
    retries: int = 3
    retry_backoff: float = 1.0
    deadline: float | None = None
    gates: Mapping[str, GateResult] | GateResolver | StatefulGateResolver = attrs.field(
        factory=dict
    )
    gate_timeout: float = 3600.0
    gate_poll: float = 5.0
    max_rounds: int = 3

    def __attrs_post_init__(self) -> None:
        if self.concurrency < 1:
            raise InvalidConfig("must be at least 1", field="concurrency")
        if self.retries < 0:
            raise InvalidConfig("must be >= 0", field="retries")

    def gate(self, name: str) -> GateResult:
        if isinstance(self.gates, StatefulGateResolver):
            raise TypeError("a stateful gate resolver is asked with resolve()")
        if callable(self.gates):
            return self.gates(name)
        return self.gates.get(name, "pending")


@attrs.frozen(kw_only=True)
class DeployResult:
    """How a deployment ended.

    Attributes:
        outcome: ``converged``, ``rolled_back`` or ``failed``.
        error: why it did not converge, if it did not.
        actions: provider calls made (retries included).
        elapsed: seconds from start to end on the executor's clock.
        exception: the same reason as a typed error (``ActionFailed``,
            ``DeployTimeout``, ``PlanningImpossible``, ``ProviderContractError``,
            ``DeploymentLocked``...), for callers that act on its kind.
    """

    outcome: Literal["converged", "rolled_back", "failed"]
    error: str | None = None
    actions: int = 0
    elapsed: float = 0.0
    exception: ZddError | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def converged(self) -> bool:
        return self.outcome == "converged"

    @property
    def rolled_back(self) -> bool:
        return self.outcome == "rolled_back"

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "error": self.error,
            "actions": self.actions,
            "elapsed_s": round(self.elapsed, 3),
            "error_kind": type(self.exception).__name__ if self.exception else None,
        }


@attrs.frozen
class Perform:
    """A command to the driver: carry out ``action``; answer with ``ref``."""

    ref: int
    action: Action


# -- events in, commands out -------------------------------------------------------


@attrs.frozen
class Begin:
    """Start (or resume) from the observed fleet."""

    now: float
    state: FleetState


@attrs.frozen
class ActionDone:
    """The provider carried out the action ``ref``; ``machine`` is its answer, if any."""

    now: float
    ref: int
    machine: Machine | None = None


@attrs.frozen
class ActionError:
    """The action ``ref`` failed; ``transient`` failures are retried."""

    now: float
    ref: int
    error: str
    transient: bool = True
    kind: type[ZddError] = ActionFailed


@attrs.frozen
class MachineSeen:
    """The latest state of one machine (``None``: it is gone). Watched machines
    (:attr:`Commands.watched`) must be reported; any other may be, and keeps the
    core's view of the fleet (the floor it holds) fresh."""

    now: float
    machine_id: str
    machine: Machine | None


@attrs.frozen
class Observed:
    """The whole fleet, observed at a poll (as :attr:`Commands.view` asks)."""

    now: float
    state: FleetState


@attrs.frozen
class FullObserved:
    """The whole fleet, as the core asked (:attr:`Commands.full_observe`)."""

    now: float
    state: FleetState


@attrs.frozen
class Tick:
    """Time passed: timers, deadlines, gates."""

    now: float


@attrs.frozen
class Interrupt:
    """The user asked to stop: roll back where the strategy can, else stop."""

    now: float


@attrs.frozen
class Abort:
    """Stop now as failed, without rolling back (the driver cannot go on: its lock was
    lost, say). ``kind``: the error's type, for :attr:`DeployResult.exception`."""

    now: float
    reason: str
    kind: type[ZddError] = ZddError


Event: TypeAlias = (
    Begin
    | ActionDone
    | ActionError
    | MachineSeen
    | Observed
    | FullObserved
    | Tick
    | Interrupt
    | Abort
)


@attrs.frozen
class Commands:
    """What the driver does after an event.

    Attributes:
        perform: actions to carry out now, each exactly once (answer each with
            :class:`ActionDone` or :class:`ActionError` and its ``ref``).
        report: machines to report at once with :class:`MachineSeen` (new watches).
        watched: machines to report at every poll.
        view: report the whole fleet at every poll (:class:`Observed`): the core is
            taking machines out of service, and holds the floor against it.
        full_observe: report the whole fleet once, when nothing is in flight
            (:class:`FullObserved`).
        wake_at: when to send :class:`Tick` if nothing else happens first.
        finished: the deployment is over (``result`` says how).
        interrupt_pending: a Ctrl-C arrived inside a reporter hook; send
            :class:`Interrupt` once the core's answer is carried out.
    """

    perform: tuple[Perform, ...] = ()
    report: frozenset[str] = frozenset()
    watched: frozenset[str] = frozenset()
    view: bool = False
    full_observe: bool = False
    wake_at: float | None = None
    finished: bool = False
    result: DeployResult | None = None
    interrupt_pending: bool = False


# -- the core --------------------------------------------------------------------


@attrs.define(eq=False)
class _Run:
    """One task being carried out: its element, what is in flight, what it waits for."""

    task: Task
    owner: Scheduler | None
    idx: int = 0
    in_flight: int = 0
    queued: int = 0
    waits: list[Action] = attrs.Factory(list)
    waits_started: float = 0.0
    took: list[str] = attrs.Factory(list)  # machines it took out of service


Mode = Literal["forward", "draining", "rollback", "finished"]


class ExecutorCore:
    """Decides what to perform next; performs nothing (see the module docstring).

    Args:
        desired: what the deployment should produce.
        strategy: how.
        options: concurrency, retries, deadline, gates.
        reporter: progress hooks.
    """

    def __init__(
        self,
        desired: Desired,
        strategy: Strategy,
        *,
        options: ExecuteOptions | None = None,
        reporter: Reporter | None = None,
        capabilities: Capabilities | None = None,
    ) -> None:
        self.desired = desired
        self.strategy = strategy
        #: what the provider can do: the plans are made for it
        self.capabilities = capabilities
        self.options = options or ExecuteOptions()
        self.reporter = reporter or Reporter()
        self.mode: Mode = "forward"
        self.result: DeployResult | None = None
        self._t0 = 0.0
        self._now = 0.0
        self._refs = itertools.count(1)
        self._seq = itertools.count()
        self._ready: list[tuple[float, int, Action, _Run, int]] = []  # (at, seq, action, run, try)
        self._in_flight: dict[int, tuple[Action, _Run, int]] = {}
        self._out: list[Perform] = []
        self._ids: dict[str, str] = {}  # create key -> machine id
        self._cordoned_at: dict[str, float] = {}
        self._record: dict[str, str] = {}
        self._watch: dict[str, list[tuple[_Run, WaitHealthy, float]]] = {}
        self._last_said = 0.0  # when a reporter hook was last called (the heartbeat's)
        self._healthy_since: dict[str, float] = {}
        self._booted_since_watch: set[str] = set()
        self._waiting: list[_Run] = []  # runs whose actions are done and waits pending
        self._chain: list[Element] = []
        self._chain_run: _Run | None = None
        self._stage: Literal["settle", "prefix", "groups", "suffix", "idle"] = "idle"
        self._groups_bp: Blueprint | None = None
        self._suffix: tuple[Element, ...] = ()
        self._groups: dict[str, list[Any]] = {}
        self._group_phase: dict[str, Scheduler | None] = {}
        self._rounds = 0
        self._want_full_observe = False
        self._failure: str | None = None
        self._failure_kind: type[ZddError] = ActionFailed
        self._actions = 0
        self._timers: list[tuple[float, int, str | None]] = []
        self._forward_target = target_of(desired)
        self._rollback_desired: Desired | None = None
        self._rollback_strategy: Rolling | None = None
        self._watch_changes: set[str] = set()
        # the floor held against what is observed (docs/decisions/0008-never-zero.md)
        self._view: dict[str, Machine] = {}  # every machine as last observed
        self._taken: set[str] = set()  # taken out by this core, not released since
        self._avail: dict[str, set[str]] = {}  # group -> serving, not taken
        self._held: dict[str, list[tuple[Action, _Run, int]]] = {}  # group -> take-outs held
        self._held_since: dict[str, float] = {}
        self._held_reported: set[str] = set()
        self._breach: str | None = None  # a released machine took its group to the floor
        self._confirmed: set[str] = set()  # observed serving (not only said so by an answer)
        self._next_stall_replan = float("-inf")
        self._stall_backoff = _STALL_BACKOFF
        self._stalled = False
        self._settling: dict[str, float] = {}  # machine -> deadline for a first check result
        self._settle_state: FleetState | None = None
        #: a KeyboardInterrupt arrived inside a reporter hook; the driver should
        #: call :meth:`interrupt` (and clear it)
        self.interrupt_pending = False

    # -- the one entry point ------------------------------------------------------

    def handle(self, event: Event) -> Commands:
        """Take one event; answer with what the driver must do now."""
        match event:
            case Begin(now, state):
                self._on_begin(now, state)
            case ActionDone(now, ref, machine):
                self._on_action_done(now, ref, machine)
            case ActionError(now, ref, error, transient, kind):
                self._on_action_error(now, ref, error, transient=transient, kind=kind)
            case MachineSeen(now, machine_id, machine):
                self._on_machine_seen(now, machine, machine_id)
            case Observed(now, state):
                self._on_observed(now, state)
            case FullObserved(now, state):
                self._on_full_observed(now, state)
            case Tick(now):
                self._on_tick(now)
            case Interrupt(now):
                self.interrupt_pending = False
                self._on_interrupt(now)
            case Abort(now, reason, kind):
                self._on_abort(now, reason, kind)
            case _:  # pragma: no cover - the type says it cannot happen
                raise TypeError(f"not an executor event: {event!r}")
        return Commands(
            perform=tuple(self._take_performs()),
            report=frozenset(self._take_new_watches()),
            watched=self.watched,
            view=self.wants_view,
            full_observe=self.wants_full_observe,
            wake_at=self.wake_at,
            finished=self.finished,
            result=self.result,
            interrupt_pending=self.interrupt_pending,
        )

    # -- what the driver reads -------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.mode == "finished"

    def _take_performs(self) -> list[Perform]:
        """Actions to perform now (each exactly once)."""
        out, self._out = self._out, []
        return out

    @property
    def watched(self) -> frozenset[str]:
        """Machines whose state the driver must report (:class:`MachineSeen`)."""
        return frozenset(self._watch) | frozenset(self._settling)

    @property
    def wants_view(self) -> bool:
        """True while the core takes machines out of service: the driver should then
        report the whole fleet with :meth:`observed` at every poll (the floor is held
        against what is observed), or every change of any machine with
        :meth:`machine_seen`."""
        return self._stage == "groups" and self.mode in ("forward", "rollback")

    def _take_new_watches(self) -> set[str]:
        """Machines watched since the last call (the driver reports them at once)."""
        out, self._watch_changes = self._watch_changes, set()
        return out

    @property
    def wants_full_observe(self) -> bool:
        """True when the driver should call :meth:`full_observed` with the whole fleet."""
        return self._want_full_observe

    @property
    def wake_at(self) -> float | None:
        """When the driver should call :meth:`tick` if nothing else happens first."""
        times = []
        if self._timers:
            times.append(self._timers[0][0])
        if self._held_since:
            times.append(min(self._held_since.values()) + self._hold_timeout)
        if self._ready and len(self._in_flight) < self.options.concurrency:
            times.append(self._ready[0][0])
        if self.options.deadline is not None and self.mode != "finished":
            times.append(self._t0 + self.options.deadline)
        if self.mode != "finished" and (self._watch or self._held or self._waiting):
            times.append(self._last_said + HEARTBEAT)  # (cheap: the text is built when due)
        return min(times) if times else None

    def _heartbeat_text(self) -> str | None:
        """What is waited on, for the heartbeat (``None``: nothing is)."""
        if self.mode == "finished":
            return None
        parts = []
        for mid, entries in sorted(self._watch.items()):
            deadline = max(d for _, _, d in entries)
            timeout = max(w.timeout for _, w, _ in entries)
            waited = self._now - (deadline - timeout)
            seen = self._view.get(mid)
            status = f"{seen.state.value}, {seen.health.value}" if seen is not None else "not seen"
            parts.append(f"{mid} healthy ({waited:.0f}s of {timeout:g}s; last seen {status})")
        for group, held in sorted(self._held.items()):
            if held:
                parts.append(f"{group}: {len(held)} take-out(s) held at the floor")
        for run in self._waiting:
            for w in run.waits:
                if isinstance(w, Pause | Gate):
                    parts.append(w.describe() if isinstance(w, Pause) else f"gate {w.name}")
        if not parts:
            return None
        more = f" and {len(parts) - 4} more" if len(parts) > 4 else ""
        return "still waiting: " + "; ".join(parts[:4]) + more

    @property
    def actions(self) -> int:
        return self._actions

    # -- events ----------------------------------------------------------------

    def _on_begin(self, now: float, state: FleetState) -> None:
        """Start (or resume) from the observed fleet."""
        self._now = self._t0 = now
        self._see_all(state)
        unknown = [
            m.id
            for m in state.machines
            if m.live
            and m.presumed_serving
            and not m.serving
            and self.desired.group(m.group) is not None
        ]
        if unknown and not isinstance(self.strategy, Immediate):
            # no check result yet (a proxy restart): not down, not known to serve; wait
            # for a first result before planning, so none is taken out as if it were down
            self._stage = "settle"
            deadline = now + self.strategy.wait_timeout
            for mid in unknown:
                self._settling[mid] = deadline
                self._watch_changes.add(mid)
            self._timer(deadline, None)
            self._emit(
                self.reporter.waiting,
                0.0,
                f"a first check result for {', '.join(unknown[:5])}"
                f"{'...' if len(unknown) > 5 else ''} (health unknown)",
            )
            return
        self._begin_planning(state)

    def _begin_planning(self, state: FleetState) -> None:
        self._stage = "idle"
        self._record = dict(state.record)
        try:
            if RecordView(state.record).rolling_back(self._forward_target):
                # resuming a rollback of this very deployment
                self._prepare_rollback(state)
                self.mode = "rollback"
                bp = self._blueprint(state)
            else:
                bp = self._blueprint(state)
                bp.layout()  # fail fast: a plan that cannot be laid out cannot run
        except ZddError as exc:
            self._finish("failed", str(exc), type(exc))
            return
        self._emit(self.reporter.deployment_started, 0.0, bp.summary, bp.strategy)
        self._start_blueprint(bp)
        self._pump()

    def _on_action_done(self, now: float, ref: int, machine: Machine | None = None) -> None:
        """The provider carried out the action ``ref``; ``machine`` is its result, if any."""
        self._now = now
        entry = self._in_flight.pop(ref, None)
        if entry is None:
            return
        action, run, _ = entry
        self._emit(self.reporter.action_finished, self._elapsed, action, None)
        if machine is not None and action.kind != "label":
            self._see(machine.id, machine, observed=False)
        if isinstance(action, Create):
            if machine is None:
                self._fail(
                    f"provider created {action.key} but returned no machine",
                    ProviderContractError,
                )
            else:
                self._ids[action.key] = machine.id
        elif action.kind == "cordon" and action.machine:
            self._cordoned_at[action.machine] = now
        elif action.kind == "uncordon" and action.machine:
            self._cordoned_at.pop(action.machine, None)
            self._release(action.machine)
        elif action.kind == "destroy" and action.machine:
            self._see(action.machine, None)
        elif isinstance(action, Label) and action.machine is None:
            if action.replace:
                self._record.clear()
            self._record.update(action.values)
        run.in_flight -= 1
        self._advance(run)
        self._pump()

    def _on_action_error(
        self,
        now: float,
        ref: int,
        error: str,
        *,
        transient: bool = True,
        kind: type[ZddError] = ActionFailed,
    ) -> None:
        """The action ``ref`` failed; transient failures are retried."""
        self._now = now
        entry = self._in_flight.pop(ref, None)
        if entry is None:
            return
        action, run, attempt = entry
        if transient and attempt < self.options.retries and self.mode != "draining":
            delay = self.options.retry_backoff * (2**attempt)
            run.in_flight -= 1
            run.queued += 1
            heapq.heappush(self._ready, (now + delay, next(self._seq), action, run, attempt + 1))
        else:
            run.in_flight -= 1
            self._emit(self.reporter.action_finished, self._elapsed, action, error)
            self._fail(f"{action.kind} {action.describe()} failed: {error}", kind)
        self._pump()

    def _on_machine_seen(self, now: float, machine: Machine | None, machine_id: str) -> None:
        """The latest state of a machine (``None``: it is gone).

        Watched machines (:attr:`watched`) must be reported; any other machine
        may be, and keeps the core's view of the fleet (the floor it holds) fresh.
        """
        self._now = now
        self._see(machine_id, machine)
        if machine_id in self._settling and (
            machine is None or not machine.presumed_serving or machine.health is not Health.UNKNOWN
        ):
            del self._settling[machine_id]  # a first check result (or it is gone)
            self._maybe_settled()
        runs = self._watch.get(machine_id)
        if not runs:
            if self._breach is not None or (self._ready and self._ready[0][0] <= now):
                self._pump()  # a held take-out may go now, or the release is failing
            return
        if machine is not None and machine.state in _BOOTING:
            self._booted_since_watch.add(machine_id)
        crashed = (
            machine is not None
            and machine.state is MachineState.FAILED
            and machine_id in self._booted_since_watch
        )
        if machine is None or machine.state is MachineState.DESTROYED or crashed:
            # a machine that boots and then fails is not waited out to the timeout
            what = "is gone" if machine is None else f"is {machine.state.value}"
            self._fail(f"machine {machine_id} {what} while waiting for it to be healthy")
            self._pump()
            return
        healthy = machine.state is MachineState.STARTED and machine.health is Health.PASSING
        if healthy:
            self._healthy_since.setdefault(machine_id, now)
        else:
            self._healthy_since.pop(machine_id, None)
        self._check_health(machine_id)
        self._pump()

    def _on_observed(self, now: float, state: FleetState) -> None:
        """The whole fleet, observed (as :attr:`wants_view` asks, at every poll): the
        core's view is refreshed and every watched machine in it is reported."""
        self._now = now
        self._see_all(state)
        self._take_instructions(state.record)
        for mid in sorted(self.watched):
            m = state.get(mid)
            if m is not None and (mid in self._watch or mid in self._settling):
                # (a machine missing from a list may only be too new for it: the
                # driver reads it on its own)
                self._on_machine_seen(now, m, mid)
        self._pump()

    def _on_full_observed(self, now: float, state: FleetState) -> None:
        """The whole fleet, as the core asked (:attr:`wants_full_observe`)."""
        self._now = now
        self._want_full_observe = False
        if not self._in_flight:
            # nothing is under way: whatever earlier runs took out counts as observed
            self._taken.clear()
            self._avail.clear()
        self._see_all(state)
        if self._stage == "settle":
            self._begin_planning(state)
            return
        self._record.update(state.record)
        self._take_instructions(state.record)
        try:
            if self.mode == "draining":
                self._prepare_rollback(state)
                self.mode = "rollback"
                assert self._rollback_desired is not None
                values = {
                    PHASE: ROLLING_BACK,
                    TARGET: target_of(self._rollback_desired),
                    ROLLBACK_OF: self._forward_target,
                }
                # plan as the resumed rollback will see it: the record already says so
                state = FleetState(machines=state.machines, record=state.record.update(values))
                self._emit(
                    self.reporter.step_started, self._elapsed, "roll back to the starting release"
                )
                bp = self._blueprint(state)
                bp.layout()
                self._start_blueprint(bp, first=Label(group="*", values=values))
            elif self._stage == "groups" and self._stalled:
                # every run held by the floor: re-plan from what is observed (a crashed
                # machine is repaired, a flapping one waited on), not counted as drift
                self._stalled = False
                self._emit(
                    self.reporter.step_started, self._elapsed, "re-plan: every take-out is held"
                )
                self._start_groups(self._blueprint(state))
            elif self._stage == "groups":
                bp = self._blueprint(state)
                if not bp.empty and any(_work(p) for _, ps in bp.groups for p in ps):
                    self._rounds += 1
                    if self._rounds > self.options.max_rounds:
                        self._fail(
                            "the fleet keeps drifting away from the plan", PlanningImpossible
                        )
                    else:
                        self._emit(
                            self.reporter.step_started,
                            self._elapsed,
                            "re-plan from the observed fleet",
                        )
                        self._start_groups(bp)
                else:
                    self._start_suffix()
        except ZddError as exc:
            self._finish("failed", str(exc), type(exc))
        self._pump()

    def _on_abort(self, now: float, reason: str, kind: type[ZddError]) -> None:
        """Stop now as failed, without rolling back (the driver cannot go on)."""
        self._now = now
        if issubclass(kind, DeploymentLocked):
            reason = _stopped(reason, kind, self.mode == "rollback")
        self._finish("failed", reason, kind)

    def _on_interrupt(self, now: float) -> None:
        """The user asked to stop: roll back where the strategy can, else stop."""
        self._now = now
        self._fail("interrupted by the user", ZddError)
        self._pump()

    def _on_tick(self, now: float) -> None:
        """Time passed; check timers, deadlines and gates."""
        self._now = now
        if self.mode == "finished":
            return
        if now >= self._last_said + HEARTBEAT:
            text = self._heartbeat_text()
            self._last_said = now  # (also when there is nothing to say: next one in 10 s)
            if text is not None:  # never silent for long: say what is waited on
                self._emit(self.reporter.waiting, self._elapsed, text)
        if self.options.deadline is not None and now >= self._t0 + self.options.deadline:
            self._fail(
                f"the deployment did not finish within {self.options.deadline:g}s", DeployTimeout
            )
        late = sorted(mid for mid, at in self._settling.items() if now >= at)
        if late and self._stage == "settle":
            self._settling.clear()
            self._finish(
                "failed",
                f"no check result for {', '.join(late[:5])}{'...' if len(late) > 5 else ''} "
                f"within {self.strategy.wait_timeout:g}s (wait_timeout); nothing was changed. "
                f"Is the proxy running its health checks?",
                DeployTimeout,
            )
            return
        for group, since in sorted(self._held_since.items()):
            if now >= since + self._hold_timeout and self.mode != "draining":
                floor = self._held_floor(group)
                self._fail(
                    f"group {group!r}: {len(self._avail.get(group, ()))} machines serving, at "
                    f"or below its floor of {floor}, for {self._hold_timeout:g}s (wait_timeout): "
                    f"zdd takes no more out (a released machine failing its checks, or a "
                    f"machine that crashed)",
                    DeployTimeout,
                )
                break
        due: set[str] = set()
        general = False
        while self._timers and self._timers[0][0] <= now:
            _, _, key = heapq.heappop(self._timers)
            if key is None:
                general = True
            else:
                due.add(key)
        for machine_id in sorted(due):
            self._check_health(machine_id)
        if general:
            for run in list(self._waiting):
                self._check_waits(run)
        self._pump()

    # -- internals ---------------------------------------------------------------

    # the view and the observed floor

    def _see_all(self, state: FleetState) -> None:
        seen = set()
        for m in state.machines:
            seen.add(m.id)
            self._see(m.id, m if m.live else None)
        for mid in [mid for mid in self._view if mid not in seen]:
            self._see(mid, None)

    def _see(self, machine_id: str, machine: Machine | None, *, observed: bool = True) -> None:
        """Record what was seen of one machine (``observed``: by an observation, not
        in a provider's answer to an action); keep the serving sets right."""
        old = self._view.get(machine_id)
        if machine is None or not machine.live:
            if old is not None:
                del self._view[machine_id]
                self._avail.get(old.group, set()).discard(machine_id)
            self._taken.discard(machine_id)
            self._confirmed.discard(machine_id)
            return
        if observed and machine.serving:
            self._confirmed.add(machine_id)
        self._view[machine_id] = machine
        if old is not None and old.group != machine.group:
            self._avail.get(old.group, set()).discard(machine_id)
        avail = self._avail.setdefault(machine.group, set())
        if machine.serving and machine_id not in self._taken:
            if machine_id not in avail:
                avail.add(machine_id)
                if machine.group in self._held:
                    self._retry_held(machine.group)
        elif machine_id in avail:
            avail.discard(machine_id)
            self._check_breach(machine, len(avail))

    def _check_breach(self, machine: Machine, serving: int) -> None:
        """A machine of the release being deployed stopped serving on its own (it failed
        its checks or crashed after it was released): when that leaves its group at or
        below the floor, the release is failing, and the deployment rolls back before
        the group goes lower (where it cannot roll back, take-outs are held instead)."""
        if self.mode != "forward" or self._stage != "groups" or self._breach is not None:
            return
        failed = machine.state is not MachineState.STARTED or machine.health in (
            Health.CRITICAL,
            Health.WARNING,
        )
        if machine.id not in self._confirmed or machine.cordoned or not failed:
            return  # not known to have served, or not a failure (a cordon, no result yet)
        spec = self.desired.group(machine.group)
        if spec is None or machine.version != spec.release.version:
            return
        pr = self._group_phase.get(machine.group)
        if pr is None or pr.budget.floor < 1 or serving > pr.budget.floor:
            return
        if not self._can_roll_back():
            return  # (bluegreen after its switch) hold, and repair by re-planning
        self._breach = (
            f"group {machine.group!r}: {machine.id} ({machine.version}) stopped serving after "
            f"it was released ({machine.state.value}, checks {machine.health.value}), leaving "
            f"{serving} serving against a floor of {pr.budget.floor}"
        )

    def _release(self, machine_id: str) -> None:
        """``machine_id`` was released to traffic: it counts again once it serves."""
        if machine_id in self._taken:
            self._taken.discard(machine_id)
            m = self._view.get(machine_id)
            if m is not None:
                self._see(machine_id, m)

    def _takes_out(self, action: Action) -> str | None:
        """The machine ``action`` takes out of service, if it does: a cordon, stop,
        update or destroy of a machine observed serving, or presumed to (started and
        uncordoned with no check result yet)."""
        if action.kind not in _TAKE_OUT or action.machine is None:
            return None
        m = self._view.get(action.machine)
        if m is None or not m.presumed_serving or action.machine in self._taken:
            return None
        return action.machine

    def _floor_of(self, run: _Run) -> int | None:
        pr = run.owner
        if pr is None or pr.budget.floor <= NO_FLOOR:
            return None
        return pr.budget.floor

    def _admissible(self, group: str, machine_id: str, floor: int) -> bool:
        """Taking ``machine_id`` out leaves the group at or above ``floor``, counting
        only machines observed serving and not already being taken out."""
        avail = self._avail.get(group, set())
        return len(avail) - (machine_id in avail) >= floor

    @property
    def _hold_timeout(self) -> float:
        strategy = self._rollback_strategy if self.mode == "rollback" else self.strategy
        return (strategy or self.strategy).wait_timeout

    def _held_floor(self, group: str) -> int | None:
        for _, run, _ in self._held.get(group, ()):
            return self._floor_of(run)
        return None

    def _hold(self, action: Action, run: _Run, attempt: int) -> None:
        self._held.setdefault(action.group, []).append((action, run, attempt))
        self._held_since.setdefault(action.group, self._now)

    def _report_held(self) -> None:
        for group in sorted(self._held):
            if group in self._held_reported:
                continue
            self._held_reported.add(group)
            action, run, _ = self._held[group][0]
            self._emit(
                self.reporter.waiting,
                self._elapsed,
                f"{group}: {len(self._avail.get(group, ()))} serving, at its floor of "
                f"{self._floor_of(run)}; {action.kind} {action.machine} held until more serve",
            )
        self._held_reported.intersection_update(self._held)

    def _retry_held(self, group: str) -> None:
        """Give the held take-outs of ``group`` another chance (the next pump decides)."""
        for action, run, attempt in self._held.pop(group, []):
            heapq.heappush(self._ready, (self._now, next(self._seq), action, run, attempt))

    def _maybe_stalled(self) -> None:
        """Every run is held by the floor and nothing else can happen: re-plan from a
        fresh observation (with a growing pause between such re-plans)."""
        if (
            not self._held
            or self._in_flight
            or self._ready
            or self._waiting
            or self._watch
            or self._want_full_observe
            or self._stage != "groups"
            or self.mode not in ("forward", "rollback")
        ):
            return
        # first give the fleet a moment to recover by itself (a flap, a restart)
        at = max(self._next_stall_replan, min(self._held_since.values()) + _STALL_BACKOFF)
        if self._now < at:
            self._timer(at, None)
            return
        self._next_stall_replan = self._now + self._stall_backoff
        self._stall_backoff = min(self._stall_backoff * 2, _STALL_BACKOFF_MAX)
        self._held.clear()  # the runs are dropped; the re-plan makes them anew
        self._stalled = True
        self._want_full_observe = True

    def _maybe_settled(self) -> None:
        if self._stage == "settle" and not self._settling:
            self._want_full_observe = True

    def _emit(self, hook: Callable[_P, None], *args: _P.args, **kwargs: _P.kwargs) -> None:
        """Call a reporter hook (a bound method: a misspelled one fails the type check,
        not silently). A reporter never breaks a deployment: the hook's own errors are
        dropped, and a Ctrl-C raised inside it is kept for the driver to act on once
        the core's state is consistent (see :attr:`interrupt_pending`)."""
        self._last_said = self._now
        try:
            hook(*args, **kwargs)
        except KeyboardInterrupt:
            self.interrupt_pending = True
        except Exception:  # a reporter's bug is not the deployment's
            pass

    @property
    def _elapsed(self) -> float:
        return self._now - self._t0

    def _blueprint(self, state: FleetState) -> Blueprint:
        if self.mode == "rollback" or self.mode == "draining":
            assert self._rollback_desired is not None and self._rollback_strategy is not None
            return blueprint(
                state, self._rollback_desired, self._rollback_strategy, self.capabilities
            )
        return blueprint(state, self.desired, self.strategy, self.capabilities)

    def _prepare_rollback(self, state: FleetState) -> None:
        self._rollback_desired = rollback_desired(state, self.desired)
        self._rollback_strategy = rollback_strategy(self.strategy)

    def _start_blueprint(self, bp: Blueprint, first: Action | None = None) -> None:
        prefix = [Element(s.actions, s.waits) for s in bp.prefix]
        if first is not None:
            prefix.insert(0, Element((first,)))
        self._groups_bp = bp
        self._suffix = tuple(Element(s.actions, s.waits) for s in bp.suffix)
        if prefix:
            self._stage = "prefix"
            self._start_chain(prefix)
        else:
            self._start_groups(bp)

    def _start_chain(self, elements: list[Element]) -> None:
        run = _Run(task=Task(elements), owner=None)
        self._chain_run = run
        self._begin_element(run)

    def _start_groups(self, bp: Blueprint) -> None:
        self._stage = "groups"
        self._groups = {name: list(phases) for name, phases in bp.groups}
        self._group_phase = {}
        for name in self._groups:
            self._next_phase(name)
        self._maybe_groups_done()

    def _next_phase(self, group: str) -> None:
        phases = self._groups[group]
        while phases:
            phase = phases.pop(0)
            tasks = [t for t in phase.tasks if t.elements]
            if not tasks:
                continue
            pr = Scheduler(phase)
            self._group_phase[group] = pr
            first = next((t.elements[0].why for t in tasks if t.elements[0].why), None)
            self._emit(
                self.reporter.step_started,
                self._elapsed,
                phase.why
                or first
                or f"{group}: rolling, floor {max(0, pr.budget.floor)} serving, "
                f"ceiling {pr.budget.ceiling} machines",
            )
            self._admit(pr)
            return
        self._group_phase[group] = None

    def _admit(self, pr: Scheduler) -> None:
        if self.mode == "draining":
            return
        for task in pr.admit():
            run = _Run(task=task, owner=pr)
            self._begin_element(run)
        if pr.stuck:
            self._fail(
                f"group {pr.group!r}: no task can be admitted (serving {pr.serving}, "
                f"floor {pr.budget.floor}, live {pr.live}, ceiling {pr.budget.ceiling})",
                PlanningImpossible,
            )

    def _begin_element(self, run: _Run) -> None:
        el = run.task.elements[run.idx]
        for action in el.actions:
            at = self._now
            if isinstance(action, Update | Stop) and action.drain > 0 and action.machine:
                machine = self._ids.get(action.machine, action.machine)
                cordoned = self._cordoned_at.setdefault(machine, self._now)
                at = max(at, cordoned + action.drain)
                if at > self._now:
                    self._emit(
                        self.reporter.waiting,
                        self._elapsed,
                        f"{machine}: drain {action.drain:g}s before {action.kind}",
                    )
            run.queued += 1
            heapq.heappush(self._ready, (at, next(self._seq), action, run, 0))
        run.waits = list(el.waits)
        self._advance(run)

    def _advance(self, run: _Run) -> None:
        if run.in_flight or run.queued:
            return
        if run.waits:
            if run not in self._waiting:
                run.waits_started = self._now
                self._waiting.append(run)
                self._start_waits(run)
            self._check_waits(run)
            return
        self._element_done(run)

    def _start_waits(self, run: _Run) -> None:
        for w in run.waits:
            if isinstance(w, WaitHealthy) and w.machine:
                machine = self._ids.get(w.machine, w.machine)
                self._watch.setdefault(machine, []).append((run, w, self._now + w.timeout))
                self._timer(self._now + w.timeout, machine)
                self._watch_changes.add(machine)
                self._booted_since_watch.discard(machine)
                self._emit(self.reporter.waiting, self._elapsed, f"{machine} healthy")
            elif isinstance(w, Pause):
                key = pause_key(w.key)
                started = RecordView(self._record).pause_started(w.key)
                if started is None:
                    started = self._now
                    self._record[key] = repr(started)
                    self._enqueue_side(Label(group="*", values={key: repr(started)}))
                self._emit(self.reporter.waiting, self._elapsed, f"{w.describe()}")
            elif isinstance(w, Gate):
                self._emit(self.reporter.waiting, self._elapsed, f"gate {w.name}")

    def _check_health(self, machine_id: str) -> None:
        runs = self._watch.get(machine_id)
        if not runs:
            return
        since = self._healthy_since.get(machine_id)
        keep = []
        satisfied = []
        for run, w, deadline in runs:
            if since is not None and self._now >= since + w.min_healthy_time:
                satisfied.append((run, w))
            elif self._now >= deadline:
                self._fail(
                    f"machine {machine_id} was not healthy within {w.timeout:g}s (wait_timeout)",
                    DeployTimeout,
                )
                return
            else:
                keep.append((run, w, deadline))
                if since is not None:
                    self._timer(since + w.min_healthy_time, machine_id)
        if keep:
            self._watch[machine_id] = keep
        else:
            del self._watch[machine_id]
            self._healthy_since.pop(machine_id, None)
            self._booted_since_watch.discard(machine_id)
        for run, w in satisfied:
            run.waits.remove(w)
            self._check_waits(run)

    def _instruction(self, key: str) -> str | None:
        """An operator's instruction for this deployment (``zdd gate/abort/promote``)."""
        if self.mode != "forward":
            return None
        return instruction(self._record, key, self._forward_target)

    def _take_instructions(self, record: Mapping[str, str]) -> None:
        """Operators' instructions, as the provider observed them: an abort rolls back
        now; an answer or a promotion is acted on at once by the waits it concerns."""
        ops = {k: v for k, v in record.items() if k.startswith("op.")}
        if not ops or all(self._record.get(k) == v for k, v in ops.items()):
            return
        self._record.update(ops)
        if self.mode == "finished":
            return
        if self._instruction(OP_ABORT):
            self._emit(self.reporter.gate, self._elapsed, "abort", "requested by an operator")
            self._fail("aborted by an operator (zdd abort)")
            return
        for run in list(self._waiting):
            self._check_waits(run)

    def _check_waits(self, run: _Run) -> None:
        promoted = self._instruction(OP_PROMOTE) is not None
        for w in list(run.waits):
            if isinstance(w, Pause):
                started = RecordView(self._record).pause_started(w.key) or self._now
                if promoted or self._now >= started + w.duration:
                    run.waits.remove(w)
                else:
                    self._set_wake(started + w.duration)
            elif isinstance(w, Gate):
                self._check_gate(run, w)
        if not any(isinstance(w, WaitHealthy) for w in run.waits) and not run.waits:
            if run in self._waiting:
                self._waiting.remove(run)
            self._element_done(run)

    def _check_gate(self, run: _Run, gate: Gate) -> None:
        if RecordView(self._record).approved(gate.name):
            run.waits.remove(gate)
            return
        poll = self.options.gate_poll
        reason = ""
        answered = self._instruction(op_gate_key(gate.name))
        if answered is None and self._instruction(OP_PROMOTE):
            answered = "pass"
        if answered is not None:
            result: GateResult = "pass" if answered == "pass" else "fail"
            reason = ": answered by an operator"
        elif isinstance(self.options.gates, StatefulGateResolver):
            answer = self._ask_resolver(gate)
            result = answer.result
            reason = f": {answer.reason}" if answer.reason else ""
            if answer.next_check is not None:
                poll = max(0.0, answer.next_check)
        else:
            result = self.options.gate(gate.name)
        self._emit(self.reporter.gate, self._elapsed, gate.name, result)
        if result == "pass":
            run.waits.remove(gate)
            self._record[gate_key(gate.name)] = APPROVED
            self._enqueue_side(Label(group="*", values={gate_key(gate.name): APPROVED}))
        elif result == "fail":
            self._fail(f"gate {gate.name!r} failed{reason}")
        elif self._now - run.waits_started >= self.options.gate_timeout:
            self._fail(
                f"gate {gate.name!r} still {result} after {self.options.gate_timeout:g}s{reason}",
                DeployTimeout,
            )
        else:
            self._set_wake(self._now + (poll if result == "pending" else self.options.gate_poll))

    def _ask_resolver(self, gate: Gate) -> GateAnswer:
        """Ask a stateful resolver; record and report its new measurements."""
        resolver = self.options.gates
        assert isinstance(resolver, StatefulGateResolver)
        began_key = analysis_began_key(gate.name)
        began = _float(self._record.get(began_key))
        if began is None:
            began = self._now
            self._record[began_key] = repr(began)
            self._enqueue_side(Label(group="*", values={began_key: repr(began)}))
        record = RecordView(self._record)
        spec = next((g for g in self.desired.groups if g.name == gate.group), None)
        context = GateContext(
            name=gate.name,
            group=gate.group,
            canary=spec.release.version if spec is not None else "",
            stable=record.from_version(gate.group) or "",
            waited=max(0.0, self._now - began),
            measurements=tuple(measurements_in(self._record, gate.name)),
        )
        answer = resolver.resolve(context)
        values = {}
        for m in answer.measurements:
            key = measurement_key(gate.name, m.index)
            values[key] = m.encode()
            self._emit(self.reporter.measurement, self._elapsed, gate.name, m)
        if values:
            self._record.update(values)
            self._enqueue_side(Label(group="*", values=values))
        return answer

    def _enqueue_side(self, action: Action) -> None:
        """An action nobody waits for (record keeping)."""
        run = _Run(task=Task([Element((action,))]), owner=None)
        run.queued += 1
        heapq.heappush(self._ready, (self._now, next(self._seq), action, run, 0))

    def _element_done(self, run: _Run) -> None:
        if run.in_flight or run.queued or run.waits:
            return
        if run in self._waiting:
            self._waiting.remove(run)
        if self.mode == "finished":
            return
        run.idx += 1
        if run.idx < len(run.task.elements) and self.mode != "draining":
            self._begin_element(run)
            return
        if run.idx < len(run.task.elements):
            return  # draining: stop here
        # the task is complete: what it took out counts again once observed serving
        for mid in run.took:
            self._release(mid)
        if run is self._chain_run:
            self._chain_run = None
            if self._stage == "prefix":
                assert self._groups_bp is not None
                self._start_groups(self._groups_bp)
            elif self._stage == "suffix":
                self._finish("rolled_back" if self.mode == "rollback" else "converged", None)
            return
        pr = run.owner
        if pr is None:
            return  # a side action
        pr.done(run.task)
        if pr.finished:
            if self._group_phase.get(pr.group) is pr:
                self._next_phase(pr.group)
            self._maybe_groups_done()
        else:
            self._admit(pr)

    def _maybe_groups_done(self) -> None:
        if self._stage != "groups" or self.mode == "draining":
            return
        if all(pr is None for pr in self._group_phase.values()):
            # every group is done: observe the fleet and re-plan before the suffix
            self._want_full_observe = True

    def _start_suffix(self) -> None:
        self._stage = "suffix"
        if self._suffix:
            self._start_chain(list(self._suffix))
        else:
            self._finish("rolled_back" if self.mode == "rollback" else "converged", None)

    def _fail(self, reason: str, kind: type[ZddError] = ActionFailed) -> None:
        if self.mode in ("finished", "draining"):
            return
        self._failure = reason
        self._failure_kind = kind
        if issubclass(kind, DeploymentLocked):
            # someone else holds the fleet now: neither going on nor rolling back is
            # ours to do; stop where we are, the record saying so
            self._finish("failed", _stopped(reason, kind, self.mode == "rollback"), kind)
            return
        if self.mode == "rollback":
            self._finish("failed", f"rollback failed: {reason}{_RESUME_ROLLBACK}", kind)
            return
        if self._can_roll_back():
            self.mode = "draining"
            self._emit(self.reporter.rollback_started, self._elapsed, reason)
            self._ready = [
                r for r in self._ready if r[3].owner is None and r[3] is not self._chain_run
            ]
            heapq.heapify(self._ready)
            self._held.clear()
            self._held_since.clear()
            self._watch.clear()
            self._waiting.clear()
            self._maybe_drained()
        elif RecordView(self._record).deploying(self._forward_target):
            self._finish("failed", reason + _RESUME, kind)
        else:
            self._finish("failed", reason + _UNCHANGED, kind)

    def _can_roll_back(self) -> bool:
        if not RecordView(self._record).deploying(self._forward_target):
            return False  # nothing was changed yet (the release command failed, or earlier)
        return can_roll_back(self.strategy, self._record, self.desired)

    def _maybe_drained(self) -> None:
        if self.mode == "draining" and not self._in_flight:
            self._ready.clear()
            self._want_full_observe = True

    def _finish(
        self,
        outcome: Literal["converged", "rolled_back", "failed"],
        error: str | None,
        kind: type[ZddError] | None = None,
    ) -> None:
        if self.mode == "finished":
            return
        self.mode = "finished"
        self._ready.clear()
        self._held.clear()
        self._held_since.clear()
        self._settling.clear()
        self._watch.clear()
        self._waiting.clear()
        if outcome == "rolled_back" and error is None:
            error = self._failure
        if outcome == "rolled_back" and kind is None:
            kind = self._failure_kind
        self.result = DeployResult(
            outcome=outcome,
            error=error,
            actions=self._actions,
            elapsed=self._elapsed,
            exception=_typed(kind or ZddError, error) if error is not None else None,
        )
        self._emit(self.reporter.finished, self._elapsed, self.result)

    def _set_wake(self, at: float) -> None:
        self._timer(at, None)

    def _timer(self, at: float, machine_id: str | None) -> None:
        """Wake at ``at`` to re-check a machine's health (or, for ``None``, pauses and gates)."""
        heapq.heappush(self._timers, (at, next(self._seq), machine_id))

    def _pump(self) -> None:
        """Start ready actions up to the concurrency bound."""
        if self._breach is not None:
            reason, self._breach = self._breach, None
            self._fail(reason)
        if self.mode == "draining":
            self._maybe_drained()
        while (
            self._ready
            and len(self._in_flight) < self.options.concurrency
            and self._ready[0][0] <= self._now
            and self.mode != "finished"
        ):
            _, _, action, run, attempt = heapq.heappop(self._ready)
            action = self._resolve(action)
            out = self._takes_out(action)
            if out is not None:
                floor = self._floor_of(run)
                if floor is not None and not self._admissible(action.group, out, floor):
                    self._hold(action, run, attempt)
                    continue
            if action.kind in _TAKE_OUT and action.machine and action.machine not in self._taken:
                # whatever its state now, a machine zdd acts on is not counted on (nor is
                # its stop or update a failure) until its task is done or it is released
                self._taken.add(action.machine)
                self._avail.get(action.group, set()).discard(action.machine)
                # whatever it served as before, it must be seen serving again to count
                self._confirmed.discard(action.machine)
                run.took.append(action.machine)
            run.queued -= 1
            run.in_flight += 1
            ref = next(self._refs)
            self._in_flight[ref] = (action, run, attempt)
            self._actions += 1
            if attempt == 0:
                self._emit(self.reporter.action_started, self._elapsed, action)
            self._out.append(Perform(ref, action))
        if self._held_since:
            for group in [g for g in self._held_since if g not in self._held]:
                del self._held_since[group]
        self._report_held()
        self._maybe_stalled()

    def _resolve(self, action: Action) -> Action:
        if action.machine is not None and action.machine in self._ids:
            return attrs.evolve(action, machine=self._ids[action.machine])
        return action


#: Action kinds that take a serving machine out of service.
_TAKE_OUT = frozenset({"cordon", "stop", "update", "destroy"})
#: Pause before re-planning a fleet whose every take-out is held (doubles to the max).
_STALL_BACKOFF = 5.0
_STALL_BACKOFF_MAX = 60.0

_BOOTING = frozenset(
    {MachineState.STARTING, MachineState.STARTED, MachineState.UPDATING, MachineState.REPLACING}
)


#: The longest the core stays silent while it waits (a heartbeat ``waiting`` line).
HEARTBEAT = 10.0

_RESUME = (
    "; stopped where it was (the record says the deployment is in progress): "
    "run the same deploy again to resume it"
)
_RESUME_ROLLBACK = (
    "; stopped where it was (the record says the rollback is in progress): "
    "run the same deploy again to finish the rollback"
)
_UNCHANGED = "; nothing was changed: run the same deploy again"


def _stopped(reason: str, kind: type[ZddError], rolling_back: bool) -> str:
    """The message of a deployment stopped because the fleet is not ours any more."""
    what = "rollback" if rolling_back else "deployment"
    if issubclass(kind, DeploymentSuperseded):
        return f"{reason}; the {what} stopped without changing anything more"
    return (
        f"{reason}; the {what} stopped where it was (the record says it is in progress): "
        f"run the same deploy again once the lock is free, and it resumes"
    )


def _typed(kind: type[ZddError], message: str) -> ZddError:
    """The failure as an error of its kind (the message names the holder of a lock)."""
    if issubclass(kind, DeploymentLocked):
        return (
            DeploymentSuperseded if issubclass(kind, DeploymentSuperseded) else DeploymentLocked
        )(message, holder="")
    try:
        return kind(message)
    except TypeError:  # a third party's error class that needs more than a message
        return ZddError(message)


def _work(phase: Scheduled) -> bool:
    return any(t.elements for t in phase.tasks)


def _float(text: str | None) -> float | None:
    """A finite number from a record value; ``None`` when absent or damaged."""
    if text is None or len(text) > 40:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
