"""The timeline picture: ``render_svg`` and ``zdd simulate --svg``."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import attrs
import pytest

from zdd import Config, FleetState, FrozenMap, SimulationReport, simulate, strategy_from_name
from zdd.cli import main
from zdd.sim import TimelinePoint
from zdd.sim._svg import render_svg

SVG = "{http://www.w3.org/2000/svg}"


def run(strategy: str = "rolling", *, seed: int = 0) -> SimulationReport:
    state = FleetState.uniform(4)
    return simulate(state, Config().desired(state, "v2"), strategy_from_name(strategy), seed=seed)


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


@pytest.mark.parametrize("strategy", ["rolling", "canary", "immediate"])
def test_one_area_per_version_and_one_marker_per_step(strategy: str) -> None:
    report = run(strategy)
    root = parse(render_svg(report))
    versions = {v for p in report.timeline for v in p.by_version}
    assert versions == {"v1", "v2"}
    assert len(with_class(root, "version")) == len(versions)
    assert len(with_class(root, "step")) == len(report.steps) > 0
    assert len(with_class(root, "step-legend")) == len(report.steps)


def test_many_versions_and_many_steps() -> None:
    versions = {f"v{i}": 1 for i in range(12)}
    points = tuple(point(5.0 * i, **versions) for i in range(12))
    steps = tuple((0.5 * (i // 3), f"step {i}") for i in range(30))  # clustered in time
    report = attrs.evolve(run(), timeline=points, steps=steps, makespan_s=60.0)
    root = parse(render_svg(report))
    areas = with_class(root, "version")
    assert len(areas) == 12
    assert [a.findtext(f"{SVG}title") for a in areas][:3] == ["v0", "v1", "v2"]  # v2 before v10
    assert len(with_class(root, "step")) == 30


def test_escapes_hostile_text() -> None:
    hostile = '<script>alert("x")</script>&amp;'
    report = attrs.evolve(
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
    return attrs.evolve(run(), timeline=(), steps=())


def _one_point_zero_makespan() -> SimulationReport:
    return attrs.evolve(
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
    return attrs.evolve(run(), timeline=points, makespan_s=99.75, max_machines=102)


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
    assert len(with_class(root, "step")) == len(report.steps)
    assert len(with_class(root, "serving")) == (1 if report.timeline else 0)
    height = float(root.get("height", "0"))
    assert root.get("viewBox") == f"0 0 {root.get('width')} {root.get('height')}"
    assert all(0 < float(t.get("y", "0")) < height for t in root.iter(f"{SVG}text"))


def test_downtime_is_marked() -> None:
    root = parse(render_svg(run("immediate")))
    assert with_class(root, "down")
    assert "no machine serving" in texts(root)
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
