from __future__ import annotations

import pytest

import zdd
from zdd import InvalidConfig, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("5s", 5.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1h", 3600.0),
        ("1.5h", 5400.0),
        ("2h45m", 9900.0),
        ("300us", 0.0003),
        ("300µs", 0.0003),
        ("10ns", 1e-8),
        (".5s", 0.5),
        ("+5s", 5.0),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, field="x") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "5", "5 s", "5x", "1m-3s", "abc", "1.2.3s", "-", "."])
def test_malformed_durations_name_the_field(text: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        parse_duration(text, field="deploy.wait_timeout")
    assert info.value.field == "deploy.wait_timeout"
    assert str(info.value).startswith("deploy.wait_timeout: ")


def test_negative_durations_are_refused() -> None:
    with pytest.raises(InvalidConfig, match="negative"):
        parse_duration("-5s", field="x")
    assert parse_duration("-5s", field="x", allow_negative=True) == -5.0


def test_bare_numbers_need_a_unit_from_the_caller() -> None:
    with pytest.raises(InvalidConfig, match="no unit"):
        parse_duration(30, field="x")
    assert parse_duration(2000, field="x", bare_unit=1e-3) == 2.0
    assert parse_duration(30, field="x", bare_unit=1.0) == 30.0


@pytest.mark.parametrize("value", [True, None, [1], {"s": 1}, float("nan"), float("inf")])
def test_non_durations(value: object) -> None:
    with pytest.raises(InvalidConfig):
        parse_duration(value, field="x", bare_unit=1.0)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.5, "500ms"), (5, "5s"), (90, "1m30s"), (3600, "1h"), (5400, "1h30m")],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text, field="x") == pytest.approx(seconds)


def test_strategy_fields_take_text_or_seconds() -> None:
    assert zdd.Rolling(wait_timeout="2m").wait_timeout == 120
    assert zdd.Rolling(wait_timeout=30).wait_timeout == 30
    with pytest.raises(InvalidConfig, match="wait_timeout"):
        zdd.Rolling(wait_timeout="-1s")
    with pytest.raises(InvalidConfig, match="drain_delay"):
        zdd.BlueGreen(drain_delay="soon")
