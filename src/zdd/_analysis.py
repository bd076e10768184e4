"""Metric analysis: what a metric gate is, and how its measurements decide it.

Pure (no I/O, no clock): :class:`MetricGate` is a gate's configuration (a PromQL
template, a condition, how often and how many times to measure, the limits, and
what no data means); :func:`outcome` judges one measurement; :func:`verdict`
turns the measurements so far into a gate result; :class:`Measurement` encodes
itself into the deployment record so a resumed executor continues an analysis
instead of restarting it. The HTTP side is ``zdd._prometheus``; the executor side
is ``zdd.analysis``.

Semantics (Argo Rollouts' ``failureLimit``/``inconclusiveLimit``, with Flagger's
"no data" made a choice):

* a measurement is ``pass`` when the condition holds, ``fail`` when it does not,
  ``inconclusive`` when it could not be judged: no data under
  ``no_data = "inconclusive"``, the metrics server unreachable after retries, or
  a relative condition whose stable release has no data;
* the gate **fails** as soon as more than ``failure_limit`` measurements failed,
  is **inconclusive** (the deployment pauses for an operator: ``zdd gate NAME
  pass|fail``) as soon as more than ``inconclusive_limit`` were inconclusive, and
  **passes** once ``count`` measurements were taken within both limits;
  otherwise it is ``pending`` and the next measurement is due ``interval`` after
  the last.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Literal

import attrs

from ._durations import format_duration, parse_duration
from ._errors import InvalidConfig

__all__ = [
    "MAX_COUNT",
    "Condition",
    "Measurement",
    "MetricGate",
    "NoData",
    "Outcome",
    "analysis_began_key",
    "gates_from_table",
    "measurement_key",
    "measurements_in",
    "next_due",
    "outcome",
    "render_query",
    "verdict",
]

NoData = Literal["fail", "inconclusive", "pass"]
Outcome = Literal["pass", "fail", "inconclusive"]
_NO_DATA: tuple[NoData, ...] = ("fail", "inconclusive", "pass")
_OPS = ("<=", ">=", "<", ">")

_NUMBER = r"[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?%?"
_ABSOLUTE = re.compile(rf"^\s*(<=|>=|<|>)\s*({_NUMBER})\s*$")
_RELATIVE = re.compile(
    rf"^\s*(<=|>=|<|>)\s*stable(?:\s*\*\s*({_NUMBER}))?(?:\s*([-+])\s*({_NUMBER}))?\s*$"
)
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")
_PLACEHOLDERS = ("canary", "stable", "group")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_GATE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
#: the most measurements a gate may take (a record entry each)
MAX_COUNT = 1000


def _number(text: str) -> float:
    if text.endswith("%"):
        return float(text[:-1]) / 100.0
    return float(text)


@attrs.frozen
class Condition:
    """What a measurement must satisfy: ``value OP threshold`` (absolute), or
    ``value OP stable * factor + offset`` (the canary against the stable release).

    Written as text: ``"<= 0.01"``, ``"<= 1%"`` (percent means /100), ``"<= stable *
    1.5 + 0.5%"``, ``">= stable - 0.02"``.
    """

    op: str
    threshold: float | None = None
    factor: float = 1.0
    offset: float = 0.0
    text: str = ""

    @property
    def relative(self) -> bool:
        return self.threshold is None

    @classmethod
    def parse(cls, text: object, field: str = "condition") -> Condition:
        if not isinstance(text, str) or len(text) > 200:
            raise InvalidConfig(
                'must be a condition such as "<= 0.01" or "<= stable * 1.5 + 0.5%"', field=field
            )
        if not text.isascii():
            raise InvalidConfig("must be ASCII (digits 0-9)", field=field)
        numbers = re.findall(_NUMBER, text)
        if any(not math.isfinite(_number(n)) or len(n) > 30 for n in numbers):
            raise InvalidConfig("numbers must be finite (at most 30 characters)", field=field)
        m = _ABSOLUTE.match(text)
        if m:
            return cls(op=m.group(1), threshold=_number(m.group(2)), text=text.strip())
        m = _RELATIVE.match(text)
        if m:
            factor = _number(m.group(2)) if m.group(2) else 1.0
            offset = _number(m.group(4)) if m.group(4) else 0.0
            if m.group(3) == "-":
                offset = -offset
            return cls(op=m.group(1), factor=factor, offset=offset, text=text.strip())
        raise InvalidConfig(
            'must be "OP NUMBER" or "OP stable [* FACTOR] [+|- OFFSET]" with OP one of '
            '<=, <, >=, > (e.g. "<= 0.01", "<= stable * 1.5 + 0.5%")',
            field=field,
        )

    def bound(self, stable: float | None) -> float | None:
        """The number a value is compared with (``None``: relative, stable unknown)."""
        if self.threshold is not None:
            return self.threshold
        if stable is None:
            return None
        return stable * self.factor + self.offset

    def holds(self, value: float, stable: float | None) -> bool | None:
        """Whether ``value`` satisfies it; ``None`` when it cannot be judged."""
        bound = self.bound(stable)
        if bound is None:
            return None
        if self.op == "<=":
            return value <= bound
        if self.op == "<":
            return value < bound
        if self.op == ">=":
            return value >= bound
        return value > bound


def _limit(value: object, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidConfig(f"must be a whole number from {low} to {high}", field=field)
    return value


@attrs.frozen(kw_only=True)
class MetricGate:
    """A gate answered by measuring a metric (see the module docstring).

    Attributes:
        name: the gate's name (what a canary step's ``gate`` or ``switch_gate`` names).
        query: a PromQL template; ``{{canary}}``, ``{{stable}}`` and ``{{group}}`` are
            replaced with the canary's version, the stable release's version and the
            process group (escaped for a PromQL string).
        condition: what each measurement must satisfy.
        url: the Prometheus-compatible API's base URL (``.../api/v1/query`` is added).
        token_env: the environment variable holding a bearer token (never printed).
        interval: seconds between measurements.
        count: how many measurements decide the gate.
        failure_limit: failed measurements tolerated (more fails the gate).
        inconclusive_limit: inconclusive ones tolerated (more pauses for an operator).
        no_data: what an empty result (or NaN) means.
        stable_query: the query for the stable release, for a relative condition
            (default: ``query`` itself, rendered with the stable version as ``canary``).
        timeout: seconds one query may take.
        initial_delay: seconds to wait before the first measurement (new series
            need a few scrapes, and a ``rate()`` window, before they have data).
    """

    name: str
    query: str
    condition: Condition
    url: str
    token_env: str | None = None
    interval: float = 60.0
    count: int = 5
    failure_limit: int = 0
    inconclusive_limit: int = 0
    no_data: NoData = "inconclusive"
    stable_query: str | None = None
    timeout: float = 10.0
    initial_delay: float = 0.0

    def __attrs_post_init__(self) -> None:
        where = f"analysis.{self.name}"
        if not isinstance(self.name, str) or not _GATE_NAME.match(self.name):
            raise InvalidConfig(
                "must be a gate name: letters, digits, '.', '_', '-' (at most 63)",
                field="analysis",
            )
        for key, text in (("query", self.query), ("stable_query", self.stable_query)):
            if text is None and key == "stable_query":
                continue
            if not isinstance(text, str) or not text.strip() or len(text) > 10_000:
                raise InvalidConfig(
                    "must be a PromQL query (at most 10,000 characters)", field=f"{where}.{key}"
                )
            for ph in _PLACEHOLDER.findall(text):
                if ph not in _PLACEHOLDERS:
                    raise InvalidConfig(
                        f"names {{{{{ph}}}}}; the placeholders are {{{{canary}}}}, "
                        "{{stable}} and {{group}}",
                        field=f"{where}.{key}",
                    )
        if not isinstance(self.url, str) or not re.match(r"^https?://[^\s/]+", self.url):
            raise InvalidConfig(
                "must be the metrics server's URL, e.g. https://api.fly.io/prometheus/ORG",
                field=f"{where}.url",
            )
        if self.token_env is not None and not (
            isinstance(self.token_env, str) and _ENV_NAME.match(self.token_env)
        ):
            raise InvalidConfig(
                "must be the name of an environment variable", field=f"{where}.token_env"
            )
        if not (isinstance(self.interval, int | float) and 0.1 <= self.interval <= 86_400):
            raise InvalidConfig("must be from 0.1s to 24h", field=f"{where}.interval")
        if not (isinstance(self.timeout, int | float) and 0.1 <= self.timeout <= 300):
            raise InvalidConfig("must be from 0.1s to 5m", field=f"{where}.timeout")
        if not (isinstance(self.initial_delay, int | float) and 0 <= self.initial_delay <= 86_400):
            raise InvalidConfig("must be from 0s to 24h", field=f"{where}.initial_delay")
        _limit(self.count, f"{where}.count", 1, MAX_COUNT)
        _limit(self.failure_limit, f"{where}.failure_limit", 0, MAX_COUNT)
        _limit(self.inconclusive_limit, f"{where}.inconclusive_limit", 0, MAX_COUNT)
        if self.no_data not in _NO_DATA:
            raise InvalidConfig("must be one of fail, inconclusive, pass", field=f"{where}.no_data")

    def describe(self) -> str:
        return (
            f"{self.name}: {self.condition.text}, {self.count} x every "
            f"{format_duration(self.interval)}, failure limit {self.failure_limit}, "
            f"inconclusive limit {self.inconclusive_limit}, no data {self.no_data}"
        )

    @classmethod
    def from_table(cls, name: str, table: object) -> MetricGate:
        """A gate from fly.toml's ``[deploy.analysis.<name>]`` table."""
        where = f"deploy.analysis.{name}"
        if not isinstance(table, Mapping):
            raise InvalidConfig("must be a table", field=where)
        known = {
            "query",
            "stable_query",
            "condition",
            "url",
            "token_env",
            "interval",
            "count",
            "failure_limit",
            "inconclusive_limit",
            "no_data",
            "timeout",
            "initial_delay",
        }
        for key in table:
            if key not in known:
                raise InvalidConfig(
                    f"unknown key; the keys are {', '.join(sorted(known))}",
                    field=f"{where}.{str(key)[:40]}",
                )
        for key in ("query", "condition", "url"):
            if key not in table:
                raise InvalidConfig("is required", field=f"{where}.{key}")

        def duration(key: str, default: float) -> float:
            if key not in table:
                return default
            try:
                return parse_duration(table[key], field=f"{where}.{key}")
            except InvalidConfig as exc:
                raise InvalidConfig(exc.reason, field=f"{where}.{key}") from None

        try:
            return cls(
                name=name,
                query=table["query"],
                stable_query=table.get("stable_query"),
                condition=Condition.parse(table["condition"], f"{where}.condition"),
                url=table["url"],
                token_env=table.get("token_env"),
                interval=duration("interval", 60.0),
                timeout=duration("timeout", 10.0),
                initial_delay=duration("initial_delay", 0.0),
                count=table.get("count", 5),
                failure_limit=table.get("failure_limit", 0),
                inconclusive_limit=table.get("inconclusive_limit", 0),
                no_data=table.get("no_data", "inconclusive"),
            )
        except InvalidConfig as exc:
            field = exc.field or where
            if not field.startswith("deploy."):
                field = "deploy." + field
            raise InvalidConfig(exc.reason, field=field) from None


def _promql_string(text: str) -> str:
    """``text`` as the inside of a double-quoted PromQL string."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_query(template: str, *, canary: str, stable: str, group: str) -> str:
    """``template`` with ``{{canary}}``, ``{{stable}}`` and ``{{group}}`` filled in."""
    values = {"canary": canary, "stable": stable, "group": group}
    return _PLACEHOLDER.sub(lambda m: _promql_string(values[m.group(1)]), template)


@attrs.frozen(kw_only=True)
class Measurement:
    """One measurement of a metric gate, as recorded.

    ``at`` is on the executor's clock (seconds since the gate began waiting);
    ``value``/``stable`` are ``None`` where there was no data; ``note`` says why it
    was inconclusive or failed (no data, unreachable, ...), never a secret.
    """

    index: int
    at: float
    outcome: Outcome
    value: float | None = None
    stable: float | None = None
    note: str = ""

    def encode(self) -> str:
        def num(x: float | None) -> str:
            return "-" if x is None else f"{x:.6g}"

        note = re.sub(r"[^A-Za-z0-9 ._:/()'-]", "", self.note)[:120]
        return f"{self.outcome};{self.at:.3f};{num(self.value)};{num(self.stable)};{note}"

    @classmethod
    def decode(cls, index: int, text: str) -> Measurement | None:
        """A measurement from its record entry; ``None`` when the entry is damaged."""
        parts = text.split(";", 4)
        if len(parts) != 5 or parts[0] not in ("pass", "fail", "inconclusive"):
            return None

        def num(x: str) -> float | None:
            if x == "-":
                return None
            if not re.fullmatch(r"-?[0-9.]+(?:e[-+]?[0-9]+)?|nan|inf|-inf", x) or len(x) > 40:
                raise ValueError(x)
            return float(x)

        try:
            at = float(parts[1]) if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", parts[1]) else None
            if at is None or not math.isfinite(at):
                return None
            outcome: Outcome = parts[0]  # type: ignore[assignment]
            return cls(
                index=index,
                at=at,
                outcome=outcome,
                value=num(parts[2]),
                stable=num(parts[3]),
                note=parts[4],
            )
        except ValueError:
            return None

    def describe(self) -> str:
        shown = "no data" if self.value is None else f"{self.value:.4g}"
        if self.stable is not None:
            shown += f" (stable {self.stable:.4g})"
        tail = f": {self.note}" if self.note else ""
        return f"measurement {self.index + 1}: {shown} -> {self.outcome}{tail}"


def outcome(gate: MetricGate, value: float | None, stable: float | None) -> tuple[Outcome, str]:
    """Judge one measurement: ``value`` the canary's (``None``/NaN: no data),
    ``stable`` the stable release's for a relative condition."""
    if value is None or math.isnan(value):
        if gate.no_data == "pass":
            return "pass", "no data (no_data = pass)"
        if gate.no_data == "fail":
            return "fail", "no data (no_data = fail)"
        return "inconclusive", "no data"
    if gate.condition.relative and (stable is None or math.isnan(stable)):
        return "inconclusive", "the stable release has no data"
    holds = gate.condition.holds(value, stable)
    if holds is None:  # pragma: no cover - covered by the test above
        return "inconclusive", "cannot judge"
    bound = gate.condition.bound(stable)
    return ("pass", "") if holds else ("fail", f"not {gate.condition.op} {bound:.4g}")


def verdict(gate: MetricGate, measurements: Sequence[Measurement]) -> str:
    """``pass``, ``fail``, ``inconclusive`` or ``pending`` (more measurements due)."""
    failed = sum(1 for m in measurements if m.outcome == "fail")
    inconclusive = sum(1 for m in measurements if m.outcome == "inconclusive")
    if failed > gate.failure_limit:
        return "fail"
    if inconclusive > gate.inconclusive_limit:
        return "inconclusive"
    if len(measurements) >= gate.count:
        return "pass"
    return "pending"


def next_due(gate: MetricGate, measurements: Sequence[Measurement], began: float) -> float:
    """When the next measurement is due (on the clock ``began`` is on)."""
    if not measurements:
        return began + gate.initial_delay
    return max(m.at for m in measurements) + gate.interval


# -- the deployment record ---------------------------------------------------------


def analysis_began_key(gate: str) -> str:
    """When gate ``gate`` began waiting (the executor's clock): ``analysis.<gate>.began``."""
    return f"analysis.{gate}.began"


def measurement_key(gate: str, index: int) -> str:
    """Measurement ``index`` of gate ``gate``: ``analysis.<gate>.<index>``."""
    return f"analysis.{gate}.{index}"


def measurements_in(record: Mapping[str, str], gate: str) -> list[Measurement]:
    """The measurements of ``gate`` in ``record``, by index (damaged entries skipped;
    indexes past :data:`MAX_COUNT` ignored)."""
    prefix = f"analysis.{gate}."
    out = []
    for key, value in record.items():
        if not key.startswith(prefix):
            continue
        tail = key[len(prefix) :]
        if not (tail.isascii() and tail.isdigit()) or len(tail) > 4 or int(tail) >= MAX_COUNT:
            continue
        m = Measurement.decode(int(tail), value)
        if m is not None:
            out.append(m)
    return sorted(out, key=lambda m: m.index)


def gates_from_table(table: object, where: str = "deploy.analysis") -> dict[str, MetricGate]:
    """The metric gates of fly.toml's ``[deploy.analysis.<name>]`` tables."""
    if table is None:
        return {}
    if not isinstance(table, Mapping):
        raise InvalidConfig("must be a table of gates: [deploy.analysis.<name>]", field=where)
    if len(table) > 100:
        raise InvalidConfig("at most 100 metric gates", field=where)
    gates = {}
    for name, body in table.items():
        if not isinstance(name, str) or not _GATE_NAME.match(name):
            raise InvalidConfig(
                "gate names are letters, digits, '.', '_', '-' (at most 63)", field=where
            )
        gates[name] = MetricGate.from_table(name, body)
    return gates
