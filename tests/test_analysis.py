"""Metric gates, the pure side: conditions, outcomes, verdicts, record entries."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zdd import InvalidConfig
from zdd._analysis import (
    Condition,
    Measurement,
    MetricGate,
    next_due,
    outcome,
    render_query,
    verdict,
)


def gate(**kw: object) -> MetricGate:
    args: dict[str, object] = {
        "name": "canary-ok",
        "query": 'sum(x{version="{{canary}}"})',
        "condition": Condition.parse("<= 0.01"),
        "url": "https://api.fly.io/prometheus/personal",
        "count": 5,
    }
    args.update(kw)
    return MetricGate(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "value", "stable", "holds"),
    [
        ("<= 0.01", 0.01, None, True),
        ("< 0.01", 0.01, None, False),
        ("<= 1%", 0.011, None, False),
        (">= 99.9%", 0.9995, None, True),
        ("<= stable * 1.5 + 0.5%", 0.065, 0.04, True),
        ("<= stable * 1.5 + 0.5%", 0.0651, 0.04, False),
        (">= stable - 0.02", 0.95, 0.96, True),
        ("<= stable", 0.1, None, None),
    ],
)
def test_conditions(text: str, value: float, stable: float | None, holds: bool | None) -> None:
    assert Condition.parse(text).holds(value, stable) is holds


@pytest.mark.parametrize("text", ["", "== 1", "<= x", "<= stable * ", "<= ²", 5, "<= 1e999999"])
def test_bad_conditions_name_the_field(text: object) -> None:
    with pytest.raises(InvalidConfig) as info:
        Condition.parse(text, "deploy.analysis.g.condition")
    assert info.value.field == "deploy.analysis.g.condition"


@pytest.mark.parametrize(
    ("no_data", "expected"), [("inconclusive", "inconclusive"), ("fail", "fail"), ("pass", "pass")]
)
def test_no_data(no_data: str, expected: str) -> None:
    g = gate(no_data=no_data)
    assert outcome(g, None, None)[0] == expected
    assert outcome(g, math.nan, None)[0] == expected  # 0/0: a ratio with no requests


def test_relative_without_stable_data_is_inconclusive() -> None:
    g = gate(condition=Condition.parse("<= stable * 2"))
    assert outcome(g, 0.01, None) == ("inconclusive", "the stable release has no data")
    assert outcome(g, 0.01, 0.01)[0] == "pass"


def _m(i: int, result: str) -> Measurement:
    return Measurement(index=i, at=float(i), outcome=result)  # type: ignore[arg-type]


outcomes = st.lists(st.sampled_from(["pass", "fail", "inconclusive"]), max_size=30)


@given(
    outcomes,
    st.integers(1, 10),
    st.integers(0, 5),
    st.integers(0, 5),
)
@settings(max_examples=500)
def test_verdict_follows_the_limits(
    results: list[str], count: int, failure_limit: int, inconclusive_limit: int
) -> None:
    g = gate(count=count, failure_limit=failure_limit, inconclusive_limit=inconclusive_limit)
    taken = [_m(i, r) for i, r in enumerate(results)]
    v = verdict(g, taken)
    fails, incs = results.count("fail"), results.count("inconclusive")
    if fails > failure_limit:
        assert v == "fail"
    elif incs > inconclusive_limit:
        assert v == "inconclusive"
    elif len(results) >= count:
        assert v == "pass"
    else:
        assert v == "pending"
    # a decided gate stays decided whatever comes next (the analysis stops there)
    if v in ("fail", "inconclusive"):
        assert verdict(g, [*taken, _m(len(taken), "pass")]) == v


def test_a_resumed_analysis_continues_where_it_was() -> None:
    g = gate(interval=60.0, count=3)
    taken = [_m(0, "pass"), Measurement(index=1, at=60.0, outcome="pass")]
    assert next_due(g, [], 5.0) == 5.0
    assert next_due(g, taken, 0.0) == 120.0
    # round trip through the record
    decoded = [Measurement.decode(m.index, m.encode()) for m in taken]
    assert decoded == taken
    assert verdict(g, [m for m in decoded if m is not None]) == "pending"


@given(
    st.sampled_from(["pass", "fail", "inconclusive"]),
    st.floats(0, 1e9, allow_nan=False),
    st.none() | st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False),
    st.none() | st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False),
    st.text(max_size=200),
)
@settings(max_examples=500)
def test_measurements_round_trip_through_the_record(
    result: str, at: float, value: float | None, stable: float | None, note: str
) -> None:
    m = Measurement(index=2, at=at, outcome=result, value=value, stable=stable, note=note)  # type: ignore[arg-type]
    text = m.encode()
    back = Measurement.decode(2, text)
    assert back is not None
    assert back.outcome == m.outcome
    assert back.at == pytest.approx(m.at, abs=1e-3)
    for a, b in ((back.value, m.value), (back.stable, m.stable)):
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            assert a == pytest.approx(b, rel=1e-5, abs=1e-300)
    assert ";" not in back.note


@given(st.text(max_size=80))
def test_damaged_record_entries_are_ignored_not_raised(text: str) -> None:
    m = Measurement.decode(0, text)
    assert m is None or m.outcome in ("pass", "fail", "inconclusive")


def test_queries_are_rendered_and_escaped() -> None:
    q = render_query(
        'x{version="{{canary}}",group="{{ group }}"} / x{version="{{stable}}"}',
        canary='v2"}or vector(1)#',
        stable="v1",
        group="app",
    )
    assert q == 'x{version="v2\\"}or vector(1)#",group="app"} / x{version="v1"}'


def test_from_table_reads_fly_toml_and_names_bad_fields() -> None:
    g = MetricGate.from_table(
        "canary-ok",
        {
            "query": 'sum(x{version="{{canary}}"})',
            "condition": "<= stable * 1.5 + 0.5%",
            "url": "https://api.fly.io/prometheus/personal",
            "token_env": "FLY_METRICS_TOKEN",
            "interval": "30s",
            "count": 4,
            "failure_limit": 1,
            "no_data": "fail",
        },
    )
    assert (g.interval, g.count, g.failure_limit, g.no_data) == (30.0, 4, 1, "fail")
    assert g.condition.relative and g.condition.factor == 1.5
    base = {"query": "up", "condition": "<= 1", "url": "https://x.example"}
    cases = {
        "deploy.analysis.g.count": {**base, "count": 0},
        "deploy.analysis.g.no_data": {**base, "no_data": "maybe"},
        "deploy.analysis.g.interval": {**base, "interval": "forever"},
        "deploy.analysis.g.url": {**base, "url": "ftp://x"},
        "deploy.analysis.g.query": {**base, "query": "x{v='{{canry}}'}"},
        "deploy.analysis.g.condition": {**base, "condition": "== 1"},
        "deploy.analysis.g.colour": {**base, "colour": "red"},
        "deploy.analysis.g.token_env": {**base, "token_env": "not a name"},
    }
    for field, table in cases.items():
        with pytest.raises(InvalidConfig) as info:
            MetricGate.from_table("g", table)
        assert info.value.field == field, (field, str(info.value))


def test_gates_from_a_fly_toml() -> None:
    import tomllib

    from zdd._analysis import gates_from_table

    doc = tomllib.loads(
        """
[deploy.analysis.canary-ok]
query = 'sum(x{version="{{canary}}"})'
condition = "<= 1%"
url = "https://api.fly.io/prometheus/personal"
token_env = "FLY_METRICS_TOKEN"
interval = "1m"
"""
    )
    gates = gates_from_table(doc["deploy"]["analysis"])
    assert list(gates) == ["canary-ok"] and gates["canary-ok"].interval == 60.0
    assert gates_from_table(None) == {}
    with pytest.raises(InvalidConfig) as info:
        gates_from_table({"bad name!": {}})
    assert info.value.field == "deploy.analysis"
    with pytest.raises(InvalidConfig) as info:
        gates_from_table([1])
    assert info.value.field == "deploy.analysis"
