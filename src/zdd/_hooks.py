"""The reporter's hooks, with nothing in them: what the executor's core calls.

Kept apart from ``zdd.reporters`` (which writes to streams) so that the core's
module imports nothing that does I/O. ``zdd.reporters.Reporter`` is this class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._plan import Action

if TYPE_CHECKING:
    from ._analysis import Measurement
    from ._executor import DeployResult

__all__ = ["Reporter"]


class Reporter:
    """Hooks called by the executor; all do nothing here."""

    def deployment_started(self, elapsed: float, summary: str, strategy: str) -> None:
        """A deployment (or its resumption) began."""

    def step_started(self, elapsed: float, why: str) -> None:
        """A step, or a phase of a group, began; ``why`` says what it is for."""

    def action_started(self, elapsed: float, action: Action) -> None:
        """The executor asked the provider to carry out ``action``."""

    def action_finished(self, elapsed: float, action: Action, error: str | None) -> None:
        """``action`` is done (``error`` is ``None``) or failed for good."""

    def waiting(self, elapsed: float, what: str) -> None:
        """The executor waits: for a machine's health, a pause, a drain."""

    def gate(self, elapsed: float, name: str, result: str) -> None:
        """A gate was evaluated: ``pass``, ``fail``, ``inconclusive`` or ``pending``."""

    def measurement(self, elapsed: float, gate: str, measurement: Measurement) -> None:
        """A metric gate took a measurement (also recorded in the deployment record)."""

    def rollback_started(self, elapsed: float, reason: str) -> None:
        """The deployment failed and the executor is rolling back."""

    def finished(self, elapsed: float, result: DeployResult) -> None:
        """The deployment is over: converged, rolled back, or failed."""
