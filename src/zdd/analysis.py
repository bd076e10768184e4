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
from ._executor import GateAnswer, GateContext, GateResolver, GateResult
from ._prometheus import MetricQueryError, MetricsUnavailable, PrometheusClient

__all__ = [
    "Condition",
    "GateQueryFailed",
    "Measurement",
    "MetricAnalysis",
    "MetricGate",
    "MetricGates",
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


class MetricGates:
    """The executor's resolver for metric gates (``ExecuteOptions(gates=...)``).

    Each visit of a waiting gate takes at most the one measurement that is due
    (``interval`` after the last, on the executor's clock), which the executor
    records and reports; a resumed executor passes the recorded ones back, so the
    analysis continues instead of restarting. Gates that are not metric gates are
    answered by ``manual`` (answers given up front, or a callable), else pending.

    An ``inconclusive`` verdict pauses the deployment for an operator (``zdd gate
    NAME pass|fail``) until ``gate_timeout``; a refused query fails the gate with
    the server's reason.
    """

    def __init__(
        self,
        analysis: MetricAnalysis,
        manual: Mapping[str, GateResult] | GateResolver | None = None,
    ) -> None:
        self.analysis = analysis
        self.manual = manual

    def __repr__(self) -> str:
        return f"MetricGates({self.analysis!r})"

    def resolve(self, context: GateContext) -> GateAnswer:
        gate = self.analysis.gates.get(context.name)
        if gate is None:
            if callable(self.manual):
                return GateAnswer(result=self.manual(context.name))
            return GateAnswer(result=(self.manual or {}).get(context.name, "pending"))
        taken = list(context.measurements)
        result = verdict(gate, taken)
        if result != "pending":
            return GateAnswer(result=_result(result), reason=_why(gate, taken, result))
        due = next_due(gate, taken, 0.0)
        if context.waited + 1e-6 < due:
            return GateAnswer(result="pending", next_check=due - context.waited)
        try:
            m = self.analysis.measure(
                context.name,
                canary=context.canary,
                stable=context.stable,
                group=context.group,
                index=max((x.index for x in taken), default=-1) + 1,
                at=context.waited,
            )
        except GateQueryFailed as exc:
            return GateAnswer(result="fail", reason=str(exc))
        taken.append(m)
        result = verdict(gate, taken)
        return GateAnswer(
            result=_result(result),
            measurements=(m,),
            next_check=gate.interval,
            reason=_why(gate, taken, result),
        )


def _result(text: str) -> GateResult:
    if text == "pass":
        return "pass"
    if text == "fail":
        return "fail"
    if text == "inconclusive":
        return "inconclusive"
    return "pending"


def _why(gate: MetricGate, taken: list[Measurement], result: str) -> str:
    failed = sum(1 for m in taken if m.outcome == "fail")
    inconclusive = sum(1 for m in taken if m.outcome == "inconclusive")
    if result == "fail":
        return (
            f"{failed} of {len(taken)} measurements failed {gate.condition.text} "
            f"(failure limit {gate.failure_limit})"
        )
    if result == "inconclusive":
        return (
            f"{inconclusive} of {len(taken)} measurements inconclusive (limit "
            f"{gate.inconclusive_limit}); answer it: zdd gate {gate.name} pass|fail"
        )
    return ""
