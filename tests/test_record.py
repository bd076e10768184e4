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


@pytest.mark.parametrize("text", ["ord", "ord:x", ":3", "ord:²"])
def test_a_damaged_shape_is_an_invalid_fleet_state(text: str) -> None:
    with pytest.raises(r.MalformedRecord):
        r.decode_regions(text)
    with pytest.raises(zdd.InvalidFleetState):
        zdd._model.decode_regions(text)
