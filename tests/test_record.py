"""The deployment record's schema (src/zdd/_record.py): keys written in one place,
read through a typed view."""

from __future__ import annotations

import pytest

import zdd
from zdd import _record as r


def test_targets_round_trip() -> None:
    pairs = [("app", "v2"), ("worker", "v2")]
    assert r.encode_target(pairs) == "app=v2,worker=v2"
    assert r.parse_target("app=v2,worker=v2") == dict(pairs)
    assert r.parse_target("") == {}
    assert r.parse_target("garbage") == {}


def test_the_view_reads_what_the_planner_writes() -> None:
    state = zdd.FleetState.uniform(3)
    desired = zdd.Desired.from_fleet(state, zdd.Release(version="v2"))
    values = zdd._planning.start_record(state, desired, zdd.Rolling())
    view = r.RecordView(values)
    assert view.deploying("app=v2") and view.in_progress()
    assert not view.rolling_back("app=v2")
    assert view.target_versions() == {"app": "v2"}
    assert view.from_version("app") == "v1"
    assert r.decode_regions(view.start("app") or "") == {"ord": 3}
    assert view.desired_groups() == {"app": "ord:3"}
    assert view.strategy == "rolling"


def test_the_view_of_gates_pauses_canaries_and_switches() -> None:
    view = r.RecordView(
        {
            r.gate_key("qa"): r.APPROVED,
            r.pause_key("app.switch"): "12.5",
            r.pause_key("broken"): "soon",
            r.canary_key("app"): "2",
            r.bluegreen_key("app"): r.SWITCHED,
            r.PHASE: r.ROLLING_BACK,
            r.ROLLBACK_OF: "app=v2",
            r.TARGET: "app=v1",
        }
    )
    assert view.approved("qa") and not view.approved("other")
    assert view.pause_started("app.switch") == 12.5
    assert view.pause_started("broken") is None and view.pause_started("none") is None
    assert view.canary("app") == "2" and view.switched("app") and not view.switched("web")
    assert view.rolling_back("app=v2") and view.target_versions() == {"app": "v2"}


@pytest.mark.parametrize(
    "text",
    [
        "ord",
        "ord:x",
        ":3",
        "ord:²",
        "ord:\u0663",  # an Arabic-Indic three
        "ord:1000000000",  # more than a group's 10,000 machines
        "ord:6000,ams:6000",
        "ord:" + "9" * 5000,  # beyond int()'s 4,300 digits
        "ord:-1",
        "ord: 3",
    ],
)
def test_a_damaged_shape_is_an_invalid_fleet_state(text: str) -> None:
    with pytest.raises(r.MalformedRecord):
        r.decode_regions(text)
    with pytest.raises(zdd.InvalidFleetState):
        zdd._model.decode_regions(text)


def test_a_damaged_shape_names_its_key() -> None:
    with pytest.raises(zdd.InvalidFleetState) as info:
        zdd._model.decode_regions("ord:1000000000", "desired.app")
    assert info.value.field == "record.desired.app"
    assert "10000" in str(info.value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("42", 42),
        ("007", 7),
        ("", None),
        ("²", None),
        ("\u0663", None),
        ("-1", None),
        (" 1", None),
        ("1_000", None),
        ("9" * 18, int("9" * 18)),
        ("9" * 19, None),
        ("9" * 5000, None),
    ],
)
def test_numbers_in_the_record_are_ascii_digits(text: str, value: int | None) -> None:
    assert r.parse_ascii_int(text) == value
    assert r.is_ascii_digits(text) == (text != "" and all(c in "0123456789" for c in text))


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1e400", "\u0661\u0662", "9" * 5000])
def test_a_damaged_pause_start_reads_as_none(raw: str) -> None:
    assert r.RecordView({"pause.x": raw}).pause_started("x") is None
