"""Metric gates answered from the simulated fleet's own traffic.

The simulator knows every request it sent and which release failed it
(``ReleaseBehaviour.error_rate``), so a metric gate's query needs no server:
each measurement is the error ratio of the canary's requests since the previous
measurement (over all its requests so far, for the first), judged by the gate's
condition, no-data setting and limits exactly as a real analysis is. A PromQL
query is not evaluated: the simulator measures what the demo's and Fly's
error-ratio queries measure.
"""

from __future__ import annotations

from collections.abc import Mapping

from .._analysis import Measurement, MetricGate, outcome
from ..analysis import MetricAnalysis
from ..providers.simulated import SimulatedFleet

__all__ = ["SimulatedAnalysis"]


class SimulatedAnalysis(MetricAnalysis):
    """:class:`~zdd.analysis.MetricAnalysis` over a :class:`SimulatedFleet`'s traffic."""

    def __init__(self, gates: Mapping[str, MetricGate], fleet: SimulatedFleet) -> None:
        super().__init__(gates)
        self.fleet = fleet
        self._marks: dict[tuple[str, str], tuple[float, float]] = {}

    def __repr__(self) -> str:
        return f"SimulatedAnalysis(gates={sorted(self.gates)!r})"

    def _ratio(self, name: str, version: str) -> float | None:
        key = (name, version)
        since = self._marks.get(key)
        value = self.fleet.error_ratio(version, since)
        self._marks[key] = self.fleet.counts(version)
        return value

    def measure(
        self, name: str, *, canary: str, stable: str, group: str, index: int, at: float
    ) -> Measurement:
        gate = self.gates[name]
        value = self._ratio(name, canary)
        stable_value = self._ratio(name, stable) if gate.condition.relative else None
        result, note = outcome(gate, value, stable_value)
        return Measurement(
            index=index, at=at, outcome=result, value=value, stable=stable_value, note=note
        )
