"""Progress reporting: a :class:`Reporter` with a no-op hook per event.

Subclass it and override what you need (the resolvelib pattern). Every hook
gets ``elapsed``: seconds since the deployment began, on the executor's clock
(wall time for real providers, virtual time in the simulator).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from ._hooks import Reporter
from ._plan import Action, Label, redact_command

if TYPE_CHECKING:
    from ._analysis import Measurement
    from ._executor import DeployResult

__all__ = ["JsonLinesReporter", "Reporter", "TextReporter", "use_color"]

_RED, _YELLOW, _GREEN, _BOLD, _RESET = "\033[31m", "\033[33m", "\033[32m", "\033[1m", "\033[0m"


def use_color(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether to colour what goes to ``stream``: only a terminal, never with ``NO_COLOR``
    set to anything non-empty (https://no-color.org) or ``TERM=dumb``."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):
        return False


def _is_clock_key(key: str) -> bool:
    """Record keys whose value is a time on the executor's clock (a float)."""
    return key.startswith("pause.") or (key.startswith("analysis.") and key.endswith(".began"))


def _clock_text(value: str) -> str:
    """A wall-clock time (after 2001) as UTC ISO 8601; a virtual one as it is."""
    try:
        seconds = float(value)
    except ValueError:
        return value
    if not math.isfinite(seconds) or not 1e9 <= seconds < 1e11:
        return value
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _describe(action: Action) -> str:
    if isinstance(action, Label) and any(_is_clock_key(k) for k in action.values):
        shown = {k: _clock_text(v) if _is_clock_key(k) else v for k, v in action.values.items()}
        action = attrs.evolve(action, values=shown)
    text = action.describe()
    return f"{action.kind} {text}".strip()


class TextReporter(Reporter):
    """One line per event, prefixed with the elapsed time (the CLI's default).

    ``color``: colour failures, rollbacks and the outcome; ``None`` (the default)
    colours only a terminal and honours ``NO_COLOR`` (see :func:`use_color`).
    """

    def __init__(self, stream: TextIO | None = None, *, color: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.color = use_color(self.stream) if color is None else color

    def _paint(self, text: str, colour: str) -> str:
        return f"{colour}{text}{_RESET}" if self.color else text

    def _line(self, elapsed: float, text: str) -> None:
        print(f"[{elapsed:8.1f}s] {text}", file=self.stream, flush=True)

    def deployment_started(self, elapsed: float, summary: str, strategy: str) -> None:
        self._line(elapsed, f"deploying ({strategy}): {summary}")

    def step_started(self, elapsed: float, why: str) -> None:
        self._line(elapsed, f"step: {why}")

    def action_started(self, elapsed: float, action: Action) -> None:
        self._line(elapsed, f"  start  {_describe(action)}")

    def action_finished(self, elapsed: float, action: Action, error: str | None) -> None:
        status = "done  " if error is None else self._paint("FAILED", _RED)
        tail = "" if error is None else f": {error}"
        self._line(elapsed, f"  {status} {_describe(action)}{tail}")

    def waiting(self, elapsed: float, what: str) -> None:
        self._line(elapsed, f"  wait   {what}")

    def gate(self, elapsed: float, name: str, result: str) -> None:
        self._line(elapsed, f"  gate   {name}: {result}")

    def measurement(self, elapsed: float, gate: str, measurement: Measurement) -> None:
        text = measurement.describe()
        if measurement.outcome == "fail":
            text = text.replace("-> fail", "-> " + self._paint("fail", _RED))
        self._line(elapsed, f"  gate   {gate}: {text}")

    def rollback_started(self, elapsed: float, reason: str) -> None:
        self._line(elapsed, self._paint("ROLLING BACK", _BOLD + _YELLOW) + f": {reason}")

    def finished(self, elapsed: float, result: DeployResult) -> None:
        outcome = self._paint(result.outcome, _GREEN if result.converged else _RED)
        self._line(elapsed, f"finished: {outcome}" + (f" ({result.error})" if result.error else ""))


class JsonLinesReporter(Reporter):
    """One JSON object per event: ``{"t": elapsed, "event": name, ...}``."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout

    def _emit(self, elapsed: float, event: str, **fields: Any) -> None:
        record = {"t": round(elapsed, 3), "event": event, **fields}
        print(json.dumps(record), file=self.stream, flush=True)

    def deployment_started(self, elapsed: float, summary: str, strategy: str) -> None:
        self._emit(elapsed, "deployment_started", summary=summary, strategy=strategy)

    def step_started(self, elapsed: float, why: str) -> None:
        self._emit(elapsed, "step_started", why=why)

    def action_started(self, elapsed: float, action: Action) -> None:
        self._emit(elapsed, "action_started", action=action.to_json())

    def action_finished(self, elapsed: float, action: Action, error: str | None) -> None:
        self._emit(elapsed, "action_finished", action=action.to_json(), error=error)

    def waiting(self, elapsed: float, what: str) -> None:
        self._emit(elapsed, "waiting", what=what)

    def gate(self, elapsed: float, name: str, result: str) -> None:
        self._emit(elapsed, "gate", name=name, result=result)

    def measurement(self, elapsed: float, gate: str, measurement: Measurement) -> None:
        self._emit(
            elapsed,
            "measurement",
            gate=gate,
            index=measurement.index,
            at=round(measurement.at, 3),
            outcome=measurement.outcome,
            value=measurement.value,
            stable=measurement.stable,
            note=measurement.note,
        )

    def rollback_started(self, elapsed: float, reason: str) -> None:
        self._emit(elapsed, "rollback_started", reason=redact_command(reason))

    def finished(self, elapsed: float, result: DeployResult) -> None:
        self._emit(elapsed, "finished", **result.to_json())
