"""Metric analysis against a Prometheus-compatible API: the side that measures.

:class:`MetricAnalysis` holds the metric gates (``[deploy.analysis.<name>]``)
and takes one measurement at a time; what a measurement means and how
measurements decide a gate is pure (``zdd._analysis``: :class:`MetricGate`,
:func:`outcome`, :func:`verdict`). :func:`run_analysis` measures a gate to its
verdict on a given clock (what a script or a test uses; the executor measures
one due measurement per visit, recording each in the deployment record).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from ._analysis import (
    Condition,
    Measurement,
    MetricGate,
    next_due,
    outcome,
    render_query,
    verdict,
)
from ._errors import ZddError
from ._prometheus import MetricQueryError, MetricsUnavailable, PrometheusClient

__all__ = [
    "Condition",
    "GateQueryFailed",
    "Measurement",
    "MetricAnalysis",
    "MetricGate",
    "MetricQueryError",
    "MetricsUnavailable",
    "PrometheusClient",
    "run_analysis",
    "verdict",
]


class GateQueryFailed(ZddError):
    """A metric gate's query was refused: the message names the gate."""


class MetricAnalysis:
    """Measures metric gates.

    Args:
        gates: the metric gates by name.
        environ: where ``token_env`` is read (default ``os.environ``).
        client: ``(gate) -> PrometheusClient`` (default: one per URL and token).
    """

    def __init__(
        self,
        gates: Mapping[str, MetricGate],
        *,
        environ: Mapping[str, str] | None = None,
        client: Callable[[MetricGate], PrometheusClient] | None = None,
    ) -> None:
        self.gates = dict(gates)
        self._environ = environ
        self._client_for = client or self._default_client
        self._clients: dict[tuple[str, str | None], PrometheusClient] = {}

    def __repr__(self) -> str:
        return f"MetricAnalysis(gates={sorted(self.gates)!r})"

    def _default_client(self, gate: MetricGate) -> PrometheusClient:
        key = (gate.url, gate.token_env)
        if key not in self._clients:
            self._clients[key] = PrometheusClient.from_env(
                gate.url, gate.token_env, environ=self._environ, timeout=gate.timeout
            )
        return self._clients[key]

    def measure(
        self, name: str, *, canary: str, stable: str, group: str, index: int, at: float
    ) -> Measurement:
        """Take measurement ``index`` of gate ``name`` (at ``at`` on the caller's clock).

        An unreachable server is an ``inconclusive`` measurement (the client has
        retried); a refused query raises :class:`GateQueryFailed` naming the gate.
        """
        gate = self.gates[name]
        try:
            client = self._client_for(gate)
            query = render_query(gate.query, canary=canary, stable=stable, group=group)
            value = client.query(query)
            stable_value: float | None = None
            if gate.condition.relative:
                template = gate.stable_query or gate.query
                stable_query = render_query(
                    template,
                    canary=stable if gate.stable_query is None else canary,
                    stable=stable,
                    group=group,
                )
                stable_value = client.query(stable_query)
        except MetricsUnavailable as exc:
            return Measurement(
                index=index, at=at, outcome="inconclusive", note=f"unreachable: {exc}"[:120]
            )
        except (MetricQueryError, ZddError) as exc:
            raise GateQueryFailed(f"gate {name!r}: {exc}") from None
        result, note = outcome(gate, value, stable_value)
        return Measurement(
            index=index, at=at, outcome=result, value=value, stable=stable_value, note=note
        )


def run_analysis(
    analysis: MetricAnalysis,
    name: str,
    *,
    canary: str,
    stable: str,
    group: str = "app",
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_measurement: Callable[[Measurement], None] | None = None,
) -> tuple[str, list[Measurement]]:
    """Measure gate ``name`` until it has a verdict: ``pass``, ``fail`` or
    ``inconclusive``. Returns the verdict and the measurements."""
    gate = analysis.gates[name]
    began = clock()
    taken: list[Measurement] = []
    while True:
        result = verdict(gate, taken)
        if result != "pending":
            return result, taken
        due = next_due(gate, taken, 0.0)
        wait = due - (clock() - began)
        if wait > 0:
            sleep(wait)
        m = analysis.measure(
            name,
            canary=canary,
            stable=stable,
            group=group,
            index=len(taken),
            at=max(0.0, clock() - began),
        )
        taken.append(m)
        if on_measurement is not None:
            on_measurement(m)
