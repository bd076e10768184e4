"""The timeline picture: ``render_svg`` and ``zdd simulate --svg``."""

from __future__ import annotations

import itertools
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import attrs
import pytest

import zdd
from zdd import (
    Config,
    FleetState,
    FrozenMap,
    SimulationReport,
    load_config,
    plan,
    simulate,
    strategy_from_name,
)
from zdd.cli import main
from zdd.providers.simulated import SimulatedFleet
from zdd.sim import TimelinePoint
from zdd.sim._report import MAX_TRACKS
from zdd.sim._svg import render_svg

SVG = "{http://www.w3.org/2000/svg}"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(strategy: str = "rolling", *, seed: int = 0) -> SimulationReport:
    state = FleetState.uniform(4)
    return simulate(state, Config().desired(state, "v2"), strategy_from_name(strategy), seed=seed)


def bare(report: SimulationReport, **changes: object) -> SimulationReport:
    """``report`` without the story fields (a report made by hand), changed."""
    return attrs.evolve(report, marks=(), machines=(), groups=(), overload=(), **changes)


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


def with_class(root: ET.Element, name: str) -> list[ET.Element]:
    return [e for e in root.iter() if e.get("class") == name]


def point(t: float, **by_version: int) -> TimelinePoint:
    n = sum(by_version.values())
    return TimelinePoint(t=t, serving=n, machines=n, by_version=FrozenMap(by_version))


def test_parses_and_has_the_title_and_figures() -> None:
    report = run()
    root = parse(render_svg(report))
    shown = texts(root)
    assert "Simulated rolling deployment: converged" in shown
    assert root.findtext(f"{SVG}title") == "Simulated rolling deployment: converged"
    summary = next(t for t in shown if t.startswith("makespan"))
    assert f"makespan {report.makespan_s:.1f}s" in summary
    assert f"min serving {report.min_serving}" in summary
    assert f"max machines {report.max_machines}" in summary
    assert f"failed requests {report.failed_requests}/" in summary
    assert f"dropped connections {report.dropped_connections}" in summary
    assert len(with_class(root, "serving")) == 1


def scenario(name: str) -> tuple[zdd.Plan, SimulationReport, FleetState]:
    """A strategy's plan and its simulation, as ``zdd plan`` and ``zdd simulate`` run them."""
    config, n, kw = Config(), 4, {}
    if name in ("bluegreen", "canary", "rollback"):
        config = load_config(
            EXAMPLES
            / {"bluegreen": "fly-bluegreen.toml", "canary": "fly-canary.toml"}.get(name, "fly.toml")
        )
        n = 6 if name == "canary" else 4
    strategy = {
        "immediate": zdd.Immediate(allow_downtime=True),
        "rolling": zdd.Rolling(max_unavailable=2),
        "surge": zdd.Rolling(max_surge=2),
    }.get(name, config.strategy)
    if name == "overload":
        strategy, n, kw = zdd.Rolling(max_unavailable=2), 6, {"capacity": 20.0}
    if name == "rollback":
        kw = {"target_health": "failing"}
    state = FleetState.uniform(n)
    desired = config.desired(state, "v2")
    report = simulate(state, desired, strategy, seed=1, boot_sigma=0.3, **kw)  # type: ignore[arg-type]
    return plan(state, desired, strategy), report, state


STRATEGIES = ["immediate", "rolling", "surge", "bluegreen", "canary", "overload"]


@pytest.mark.parametrize("name", STRATEGIES)
def test_one_marker_per_step_of_the_plan(name: str) -> None:
    the_plan, report, _ = scenario(name)
    assert report.converged
    root = parse(render_svg(report))
    versions = {v for p in report.timeline for v in p.by_version}
    assert len(with_class(root, "version")) == len(versions) == 2
    markers = sorted(with_class(root, "step"), key=lambda m: int(m.get("data-n", "0")))
    assert [int(m.get("data-n", "0")) for m in markers] == list(range(1, len(the_plan.steps) + 1))
    for m, step in zip(markers, the_plan.steps, strict=True):  # the badge says what the plan says
        assert m.findtext(f"{SVG}title", "").endswith(f"s {' '.join(step.why.split())}")
    # the legend lists every step, runs of one reason on one line
    listed = [g.get("data-n", "") for g in with_class(root, "step-legend")]
    numbers = [n for ns in listed for n in range(int(ns.split("-")[0]), int(ns.split("-")[-1]) + 1)]
    assert numbers == list(range(1, len(the_plan.steps) + 1))
    # every marker's stem stands on the time axis, inside the picture
    width = float(root.get("width", "0"))
    for m in markers:
        d = m.find(f"{SVG}path")
        assert d is not None
        x = float(d.get("d", "").split()[1].split(",")[0])
        assert 0 < x < width


def test_the_story_of_bluegreen_and_canary_is_marked() -> None:
    _, report, _ = scenario("bluegreen")
    whys = [m.why for m in report.marks]
    assert any("switch: release 4 greens" in w for w in whys)
    assert any("destroy 4 blues" in w for w in whys)
    assert all(m.t is not None for m in report.marks)
    _, report, _ = scenario("canary")
    shown = {m.why for m in report.marks if m.t is not None}
    for want in ("step 1 of 2: bake", "step 2 of 2: 2 canaries healthy", "step 2 of 2: gate"):
        assert any(want in w for w in shown), want


def test_a_rollback_is_marked_and_unreached_steps_are_listed() -> None:
    the_plan, report, _ = scenario("rollback")
    assert report.rolled_back
    root = parse(render_svg(report))
    reached = [m for m in report.marks if m.plan and m.t is not None]
    extra = [m for m in report.marks if not m.plan]
    assert 0 < len(reached) < len(the_plan.steps)
    assert [m.why for m in extra] == ["roll back to the starting release"]
    assert len(with_class(root, "step")) == len(reached) + 1
    assert "not reached" in texts(root)
    assert "roll back to the starting release" in texts(root)


def test_floor_and_ceiling_per_group() -> None:
    _, report, _ = scenario("rolling")
    root = parse(render_svg(report))
    (floor,) = with_class(root, "floor")
    (ceiling,) = with_class(root, "ceiling")
    assert floor.get("data-group") == ceiling.get("data-group") == "app"
    assert (floor.get("data-value"), ceiling.get("data-value")) == ("2", "4")  # 4 - 2, no surge
    _, report, _ = scenario("surge")
    root = parse(render_svg(report))
    assert [e.get("data-value") for e in with_class(root, "floor")] == ["4"]
    assert [e.get("data-value") for e in with_class(root, "ceiling")] == ["6"]
    # two groups: a chart and limits each
    config = load_config(EXAMPLES / "fly-regions.toml")
    state = zdd.load_fleet(EXAMPLES / "fleet-regions.json")
    report = simulate(state, config.desired(state, "v2"), config.strategy)
    root = parse(render_svg(report))
    groups = {g.name for g in report.groups}
    assert groups == {"app", "worker"}
    assert {e.get("data-group") for e in with_class(root, "ceiling")} == groups
    assert {f"group {g}" for g in groups} <= set(texts(root))


@pytest.mark.parametrize(
    ("capacity", "over"), [(None, False), (20.0, True), (100.0, False)], ids=str
)
def test_overload_is_shaded_iff_over_capacity(capacity: float | None, over: bool) -> None:
    state = FleetState.uniform(6)
    report = simulate(
        state, Config().desired(state, "v2"), zdd.Rolling(max_unavailable=2), capacity=capacity
    )
    assert (report.failed_by_cause["over_capacity"] > 0) is over
    root = parse(render_svg(report))
    assert bool(with_class(root, "overload")) is over
    assert any(t.startswith("over capacity") for t in texts(root)) is over


def _rows(root: ET.Element) -> dict[str, list[tuple[float, float]]]:
    out = {}
    for g in with_class(root, "machine"):
        rects = [r for r in g.iter(f"{SVG}rect") if r.get("class") == "seg"]
        out[g.get("data-id", "")] = [
            (float(r.get("x", "0")), float(r.get("width", "0"))) for r in rects
        ]
    return out


@pytest.mark.parametrize("name", [*STRATEGIES, "rollback"])
def test_a_machine_row_has_no_gaps(name: str) -> None:
    _, report, _ = scenario(name)
    rows = _rows(parse(render_svg(report)))
    assert rows
    for mid, rects in rows.items():
        assert rects, mid
        for (x0, w0), (x1, _) in itertools.pairwise(rects):
            assert math.isclose(x0 + w0, x1, abs_tol=0.051), (mid, x0, w0, x1)


def test_no_sliver_where_a_destroy_and_a_create_are_a_moment_apart() -> None:
    dip = (point(0.0, v1=2), point(10.0, v1=1), point(10.05, v1=1, v2=1), point(20.0, v2=2))
    flat = (point(0.0, v1=2), point(10.05, v1=1, v2=1), point(20.0, v2=2))

    def areas(points: tuple[TimelinePoint, ...]) -> list[str]:
        root = parse(render_svg(bare(run(), timeline=points, makespan_s=20.0, steps=())))
        return [e.get("d", "") for e in with_class(root, "version")]

    assert areas(dip) == areas(flat)
    # a dip wide enough to see is drawn
    wide = (point(0.0, v1=2), point(8.0, v1=1), point(10.05, v1=1, v2=1), point(20.0, v2=2))
    assert areas(wide) != areas(flat)


def test_names_in_the_picture_are_the_plan_names() -> None:
    for name in STRATEGIES:
        the_plan, report, state = scenario(name)
        created = {a.key for a in the_plan.actions() if isinstance(a, zdd.Create)}
        touched = {a.machine for a in the_plan.actions() if a.machine}
        ids = {m.id for m in state.machines} | created
        rows = set(_rows(parse(render_svg(report))))
        assert rows == ids, name
        assert touched <= ids
        assert {i for i, *_ in report.final} <= ids


def test_progress_and_errors_use_the_plan_names(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--machines", "2", "--config", str(EXAMPLES / "fly.toml")]
    assert main(["plan", *args]) == 0
    planned = capsys.readouterr().out
    assert "v2-app-surge-ord-1" in planned
    main(["simulate", *args, "--target-health", "failing", "--progress"])
    out = capsys.readouterr()
    both = out.out + out.err
    assert "machine v2-app-surge-ord-1 was not healthy" in both
    assert "v2-app-surge-ord-1 healthy" in both  # what progress waits on
    assert not re.search(r"\bsim[0-9]+\b", both)


def test_a_created_machine_takes_a_free_name() -> None:
    state = FleetState(machines=[zdd.Machine(id="v2-app-surge-ord-1", version="v1")])
    fleet = SimulatedFleet(state)
    create = zdd.Create(group="app", region="ord", version="v2", key="v2-app-surge-ord-1")
    made = fleet.perform(create)
    assert made is not None and made.id == "v2-app-surge-ord-1-2"
    assert fleet.perform(create) == made  # idempotent on the key
    again = fleet.perform(attrs.evolve(create, key="v2-app-surge-ord-2"))
    assert again is not None and again.id == "v2-app-surge-ord-2"


def test_a_large_fleet_is_drawn_without_rows() -> None:
    state = FleetState.uniform(MAX_TRACKS + 2)
    report = simulate(state, Config().desired(state, "v2"), zdd.Rolling(max_unavailable=0.5))
    root = parse(render_svg(report))
    assert not with_class(root, "machine")
    assert len(with_class(root, "version")) == 2


def test_many_versions_and_many_steps() -> None:
    versions = {f"v{i}": 1 for i in range(12)}
    points = tuple(point(5.0 * i, **versions) for i in range(12))
    steps = tuple((0.5 * (i // 3), f"step {i}") for i in range(30))  # clustered in time
    report = bare(run(), timeline=points, steps=steps, makespan_s=60.0)
    root = parse(render_svg(report))
    areas = with_class(root, "version")
    assert len(areas) == 12
    assert [a.findtext(f"{SVG}title") for a in areas][:3] == ["v0", "v1", "v2"]  # v2 before v10
    assert len(with_class(root, "step")) == 30


def test_escapes_hostile_text() -> None:
    hostile = '<script>alert("x")</script>&amp;'
    report = bare(
        run(),
        strategy="<b>&",
        error=f"{hostile}\x00\x1b",
        steps=((1.0, "<script>&"), (2.0, hostile), (3.0, "new\nline " + "x" * 500)),
    )
    svg = render_svg(report)
    assert "<script" not in svg and "<b>" not in svg
    assert "&lt;script&gt;&amp;" in svg
    root = parse(svg)
    shown = texts(root)
    assert "<script>&" in shown
    assert hostile in shown
    assert any(t.startswith("Simulated <b>& deployment") for t in shown)
    assert any(t.startswith(f"error: {hostile}") for t in shown)
    assert len(with_class(root, "step")) == 3


def test_same_report_same_bytes() -> None:
    first, second = render_svg(run("canary", seed=7)), render_svg(run("canary", seed=7))
    assert first == second
    assert first.encode() == second.encode()


def _empty() -> SimulationReport:
    return bare(run(), timeline=(), steps=())


def _one_point_zero_makespan() -> SimulationReport:
    return bare(
        run(), timeline=(point(0.0, v1=4),), makespan_s=0.0, steps=((0.0, "nothing to do"),)
    )


def _four_hundred_points() -> SimulationReport:
    points = tuple(
        TimelinePoint(
            t=0.25 * i,
            serving=max(0, 100 - i % 7),
            machines=100 + i % 3,
            by_version=FrozenMap({"v1": 100 - i // 4, "v2": i // 4 + i % 3}),
        )
        for i in range(400)
    )
    return bare(run(), timeline=points, makespan_s=99.75, max_machines=102)


@pytest.mark.parametrize(
    "make",
    [_empty, _one_point_zero_makespan, _four_hundred_points, lambda: run("bluegreen")],
    ids=["empty", "one-point", "400-points", "failed-at-once"],
)
def test_edge_cases(make: object) -> None:
    assert callable(make)
    report = make()
    svg = render_svg(report)
    root = parse(svg)
    assert not re.search(r"nan|inf", svg, re.IGNORECASE)
    versions = {v for p in report.timeline for v in p.by_version}
    assert len(with_class(root, "version")) == len(versions)
    marks = report.marks or report.steps
    assert len(with_class(root, "step")) == len(
        [m for m in report.marks if m.t is not None] or marks
    )
    assert len(with_class(root, "serving")) == (1 if report.timeline else 0)
    height = float(root.get("height", "0"))
    assert root.get("viewBox") == f"0 0 {root.get('width')} {root.get('height')}"
    assert all(0 < float(t.get("y", "0")) < height for t in root.iter(f"{SVG}text"))


def test_downtime_is_marked() -> None:
    state = FleetState.uniform(1)
    report = simulate(state, Config().desired(state, "v2"), zdd.Immediate(allow_downtime=True))
    root = parse(render_svg(report))
    (strip,) = with_class(root, "down")
    assert float(strip.get("height", "0")) >= 6 and float(strip.get("width", "0")) > 100
    assert "no machine serving" in texts(root)
    assert report.downtime_by_group["app"] == pytest.approx(10.0)
    assert not with_class(parse(render_svg(run("rolling"))), "down")


def test_cli_writes_the_svg(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "timeline.svg"
    code = main(["simulate", "--machines", "4", "--svg", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0
    assert f"timeline written to {out}" in stdout
    root = parse(out.read_text(encoding="utf-8"))
    assert "Simulated rolling deployment: converged" in texts(root)


def test_cli_svg_to_an_unwritable_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "--machines", "2", "--svg", str(tmp_path / "no" / "such.svg")])
    assert code == 2
    assert capsys.readouterr().err.startswith("zdd: error: --svg: cannot write")
