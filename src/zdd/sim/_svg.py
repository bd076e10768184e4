"""The timeline as a hand-written SVG picture (standard library only).

Per process group, a stacked step chart of live machines per version over time,
the serving machines as a line on top, the plan's floor and ceiling as dashed
lines, stretches over capacity shaded and stretches with nothing serving as a red
strip; below, one row per machine, named as the plan names it, coloured by what
it is doing. Numbered markers show where each step of the plan began (numbered
as ``zdd plan`` numbers them, listed below the chart), then the executor's own
(a rollback, a re-plan). The same report always gives the same bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape

import attrs

from ._report import GroupTrack, MachineTrack, Mark, SimulationReport, TimelinePoint

__all__ = ["render_svg"]

WIDTH = 820
LEFT, RIGHT = 56, 24
PLOT_H = 240  # one group's chart; several groups share the height
GROUP_H = 150  # each chart's height when there are several groups
GAP = 34  # between charts (room for the group's name)
ROW = 18  # one row of step markers, or of a legend
TRACK = 14  # one machine's row
MAX_MARKER_ROWS = 4
SLIVER_PX = 4.0  # a dip in live machines (or a spike in serving) narrower is not drawn
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#b07aa1",
    "#76b7b2",
    "#edc948",
    "#9c755f",
    "#ff9da7",
)
INK, AXIS, DOWN = "#1b1b1b", "#999999", "#d62728"
FLOOR, CEILING, OVER = "#2ca02c", "#7b3294", "#b2182b"
#: How a machine's row shows each phase: (fill or None for its version's colour, opacity).
PHASES: dict[str, tuple[str | None, float]] = {
    "serving": (None, 1.0),
    "booting": (None, 0.35),
    "hidden": (None, 0.6),
    "unhealthy": ("#f4a3a3", 1.0),
    "stopped": ("#c7c7c7", 1.0),
    "failed": (DOWN, 1.0),
}
PHASE_LABELS = {
    "serving": "serving",
    "booting": "booting (no check result yet)",
    "hidden": "healthy, cordoned",
    "unhealthy": "checks critical",
    "stopped": "stopped",
    "failed": "failed",
}
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def render_svg(report: SimulationReport) -> str:
    """Serving capacity by group and version over time, machine by machine, with
    step markers, as SVG text."""
    points = report.timeline
    tracks = report.machines
    groups: Sequence[GroupTrack] = report.groups or (
        (GroupTrack(name="", timeline=points),) if points else ()
    )
    ends = [report.makespan_s, *(p.t for p in points[-1:])]
    ends += [s[1] for m in tracks for s in m.segments[-1:]]
    ends += [g.timeline[-1].t for g in groups if g.timeline]
    end = max(ends)
    header = 66 if report.error else 48
    span = end * 1.03 if end > 0 else 1.0  # a little room to show the final state
    left = LEFT
    if tracks:
        left = min(200, max(LEFT, 14 + round(6.6 * max(len(m.id) for m in tracks))))
    marks = _marks(report)
    badges = _place_badges([m.t for m in marks if m.t is not None], span, left)
    rows = 1 + max((row for _, _, row in badges), default=-1)
    plot_top = header + 12 + rows * ROW
    first: dict[str, int] = {}  # versions stack in order of appearance, oldest at the bottom
    for i, p in enumerate(points):
        for v in p.by_version:
            first.setdefault(v, len(points) + i)
    for g in groups:
        for i, p in enumerate(g.timeline):
            for v in p.by_version:
                first[v] = min(first.get(v, i), i)
    for m in tracks:
        for seg in m.segments:
            first.setdefault(seg[3], 10**9)
    versions = sorted(first, key=lambda v: (first[v], _natural(v)))
    colours = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(versions)}
    title = f"Simulated {report.strategy} deployment: {report.outcome.replace('_', ' ')}"
    settling = bool(points or tracks) and end > report.makespan_s + 1e-9

    parts = [_text(title, LEFT, 24, size=16, weight="bold"), _text(_summary(report), LEFT, 44)]
    if report.error:
        parts.append(_text(f"error: {report.error}", LEFT, 62, fill=DOWN))
    height_each = PLOT_H if len(groups) <= 1 else GROUP_H
    frames: list[_Frame] = []
    y = float(plot_top)
    downtime = over = floors = ceilings = False
    late: list[str] = []  # drawn over the settle window
    labelled = len(groups) > 1 or bool(tracks)
    for g in groups:
        if frames:
            y += GAP
        elif labelled and g.name:
            y += 18  # room for the group's name under the markers
        top = max([1, *(max(p.machines, p.serving) for p in g.timeline)])
        top = max([top, *(c for *_, c in g.limits if c is not None)])
        top = max([top, *(f for *_, f, _ in g.limits if f is not None)])
        y_step = max(1, int(_nice(top / (6 if height_each == PLOT_H else 4))))
        frame = _Frame(
            span=span, top=-(-top // y_step) * y_step, plot_top=y, height=height_each, left=left
        )
        frames.append(frame)
        if g.name and labelled:
            parts.append(_text(f"group {g.name}", left, y - 6, weight="bold", size=11))
        parts += _axes(frame, y_step, labels=g is groups[-1] and not tracks)
        chart, strips = _chart(frame, g.timeline, versions, colours)
        parts += chart
        late += strips
        downtime = downtime or bool(strips)
        for t0, t1 in report.overload:
            over = True
            x0, x1 = frame.x(t0), frame.x(t1)
            parts.append(
                f'<rect class="overload" x="{x0:.1f}" y="{frame.plot_top:.1f}"'
                f' width="{max(x1 - x0, 1.0):.1f}" height="{frame.height}"'
                f' fill="url(#over)" stroke="{OVER}" stroke-opacity="0.6">'
                f"<title>over capacity {t0:.1f}s to {t1:.1f}s</title></rect>"
            )
        for t0, t1, floor, ceiling in g.limits:
            x0, x1 = frame.x(t0), frame.x(t1)
            for value, kind, colour in ((floor, "floor", FLOOR), (ceiling, "ceiling", CEILING)):
                if value is None:
                    continue
                floors, ceilings = floors or kind == "floor", ceilings or kind == "ceiling"
                ly = frame.y(value)
                label: dict[str, Any] = {"size": 10, "fill": colour, "halo": True}
                parts.append(
                    f'<g class="{kind}" data-group="{_esc(g.name)}" data-value="{value}">'
                    f"<title>{_esc(f'{g.name} {kind} {value}')}</title>"
                    + _line(x0, ly, x1, ly, stroke=colour, width=1.5, dash="6 3")
                    + (
                        _text(f"{kind} {value}", x1 - 3, ly - 3, anchor="end", **label)
                        if kind == "ceiling"
                        else _text(f"{kind} {value}", x0 + 3, ly + 11, **label)
                    )
                    + "</g>"
                )
        y = frame.bottom
    if not groups:
        frame = _Frame(span=span, top=1, plot_top=y, height=PLOT_H, left=left)
        frames.append(frame)
        parts += _axes(frame, 1, labels=not tracks)
        parts += _chart(frame, (), versions, colours)[0]
        y = frame.bottom
    lanes_top = y + (GAP if tracks else 0)
    if tracks:
        parts.append(_text("machines", left, lanes_top - 6, weight="bold", size=11))
        parts += _lanes(report, tracks, span, left, lanes_top, colours)
        y = lanes_top + TRACK * len(tracks)
        lane_frame = _Frame(span=span, top=1, plot_top=lanes_top, height=y - lanes_top, left=left)
        parts += _time_axis(lane_frame)
    else:
        lane_frame = frames[-1]
    chart_top, chart_bottom = frames[0].plot_top, lane_frame.bottom
    if settling:
        sx = frames[0].x(report.makespan_s)
        for f in [*frames, *([lane_frame] if tracks else [])]:
            parts.append(
                f'<rect class="settle" x="{sx:.1f}" y="{f.plot_top:.1f}"'
                f' width="{left + _plot_w(left) - sx:.1f}" height="{f.height:.1f}"'
                ' fill="url(#settle)"/>'
            )
            parts.append(_line(sx, f.plot_top, sx, f.bottom, stroke=INK, dash="2 2"))
    parts += late
    shown = [m for m in marks if m.t is not None]
    parts += _markers(shown, badges, header + 12, chart_top, chart_bottom)
    phases = [ph for ph in PHASES if any(s[2] == ph for m in tracks for s in m.segments)]
    legend, y = _legends(
        chart_bottom,
        left,
        versions,
        colours,
        marks,
        downtime=downtime,
        settling=settling,
        over=report.capacity if over else None,
        floors=floors,
        ceilings=ceilings,
        phases=phases,
    )
    parts += legend
    height = round(y + 14)
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}"'
            f' viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12"'
            ' role="img">',
            f"<title>{_esc(title)}</title>",
            '<defs><pattern id="settle" width="6" height="6" patternUnits="userSpaceOnUse"'
            ' patternTransform="rotate(45)"><rect width="6" height="6" fill="#ffffff"'
            ' fill-opacity="0.35"/><line x1="0" y1="0" x2="0" y2="6" stroke="#ffffff"'
            ' stroke-width="2.5" stroke-opacity="0.8"/></pattern>'
            '<pattern id="over" width="7" height="7" patternUnits="userSpaceOnUse"'
            f' patternTransform="rotate(-45)"><line x1="0" y1="0" x2="0" y2="7" stroke="{OVER}"'
            ' stroke-width="1.5" stroke-opacity="0.7"/></pattern></defs>',
            f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
            *parts,
            "</svg>",
            "",
        ]
    )


def _plot_w(left: float) -> float:
    return WIDTH - left - RIGHT


@attrs.frozen
class _Frame:
    """One plot area: seconds ``0..span`` across, machines ``0..top`` up."""

    span: float
    top: int
    plot_top: float
    height: float = PLOT_H
    left: float = LEFT

    @property
    def bottom(self) -> float:
        return self.plot_top + self.height

    def x(self, t: float) -> float:
        return self.left + _plot_w(self.left) * min(max(t, 0.0), self.span) / self.span

    def y(self, n: float) -> float:
        return self.bottom - self.height * n / self.top


def _marks(report: SimulationReport) -> list[Mark]:
    """The plan's steps with their times, or (a report without them) the executor's phases."""
    if report.marks:
        return list(report.marks)
    return [Mark(n=n, t=t, why=why) for n, (t, why) in enumerate(report.steps, 1)]


def _summary(report: SimulationReport) -> str:
    return (
        f"makespan {report.makespan_s:.1f}s · min serving {report.min_serving}"
        f" · max machines {report.max_machines}"
        f" · failed requests {report.failed_requests}/{report.total_requests}"
        f" · dropped connections {report.dropped_connections}"
        + (f" · resumed {report.resumed}x" if report.resumed else "")
    )


def _place_badges(
    times: Iterable[float], span: float, left: float = LEFT
) -> list[tuple[float, float, int]]:
    """``(x, badge x, row)`` of each step's marker.

    A badge goes in the first row where it fits at its step's instant, else in
    a new row (up to ``MAX_MARKER_ROWS``), else where it moves right the least.
    """
    frame = _Frame(span=span, top=1, plot_top=0, left=left)
    rights: list[float] = []  # how far right each row is taken
    out = []
    for n, t in enumerate(times, 1):
        x, half = frame.x(t), 5 + 3 * len(str(n + 10))
        shifts = [max(0.0, right - (x - half)) for right in rights]
        if len(rights) < MAX_MARKER_ROWS and all(shifts):
            rights.append(0.0)
            shifts.append(0.0)
        row = min(range(len(shifts)), key=lambda r: (shifts[r], r))
        bx = min(x + shifts[row], WIDTH - half)
        rights[row] = bx + half + 2
        out.append((x, bx, row))
    return out


def _axes(frame: _Frame, y_step: int, *, labels: bool) -> list[str]:
    out = []
    for i in range(frame.top // y_step + 1):
        y = frame.y(i * y_step)
        out.append(_line(frame.left, y, frame.left + _plot_w(frame.left), y, stroke="#e6e6e6"))
        out.append(_text(str(i * y_step), frame.left - 6, y + 4, anchor="end", size=11))
    if labels:
        out += _time_axis(frame)
    mid = (frame.plot_top + frame.bottom) / 2
    out.append(
        f'<text x="16" y="{mid:.1f}" font-size="11" text-anchor="middle"'
        f' transform="rotate(-90 16 {mid:.1f})">machines</text>'
    )
    return out


def _time_axis(frame: _Frame) -> list[str]:
    out = []
    x_step = _nice(frame.span / 8)
    for i in range(int(frame.span / x_step + 1e-9) + 1):
        x = frame.x(i * x_step)
        out.append(_line(x, frame.bottom, x, frame.bottom + 4, stroke=AXIS))
        out.append(_text(_num(i * x_step), x, frame.bottom + 16, anchor="middle", size=11))
    mid = frame.left + _plot_w(frame.left) / 2
    out.append(_text("seconds", mid, frame.bottom + 32, anchor="middle", size=11))
    return out


def _smooth(frame: _Frame, points: Sequence[TimelinePoint], key: str) -> list[TimelinePoint]:
    """``points`` without the slivers: a point narrower than ``SLIVER_PX`` where live
    machines dip (``key="machines"``) or serving ones peak (``key="serving"``) between
    its neighbours (a destroy and a create a moment apart) is left out."""
    out: list[TimelinePoint] = []
    for i, p in enumerate(points):
        if 0 < i < len(points) - 1 and out:
            prev, nxt = out[-1], points[i + 1]
            narrow = frame.x(nxt.t) - frame.x(p.t) < SLIVER_PX
            here, before, after = getattr(p, key), getattr(prev, key), getattr(nxt, key)
            dip = here < before and here < after if key == "machines" else False
            peak = here > before and here > after if key == "serving" else False
            if narrow and (dip or peak):
                continue
        out.append(p)
    return out


def _chart(
    frame: _Frame,
    points: Sequence[TimelinePoint],
    versions: list[str],
    colours: dict[str, str],
) -> tuple[list[str], list[str]]:
    """One stacked step area per version and the serving line; and the red strips of
    the stretches with none serving (drawn last, over the settle window)."""
    if not points:
        mid = (frame.plot_top + frame.bottom) / 2
        return [
            _text(
                "no timeline recorded", frame.left + _plot_w(frame.left) / 2, mid, anchor="middle"
            ),
            *_frame_lines(frame),
        ], []

    def segments(pts: Sequence[TimelinePoint]) -> list[tuple[float, float, TimelinePoint]]:
        ends = [p.t for p in pts[1:]] + [frame.span]
        return [(frame.x(p.t), frame.x(t1), p) for p, t1 in zip(pts, ends, strict=True)]

    areas = segments(_smooth(frame, points, "machines"))
    out = []
    for k, v in enumerate(versions):
        if not any(p.by_version.get(v) for p in points):
            continue
        upper, lower = [], []
        for x0, x1, p in areas:
            base = sum(p.by_version.get(u, 0) for u in versions[:k])
            hi, lo = frame.y(base + p.by_version.get(v, 0)), frame.y(base)
            upper += [(x0, hi), (x1, hi)]
            lower += [(x0, lo), (x1, lo)]
        out.append(
            f'<path class="version" d="{_path([*upper, *reversed(lower)])} Z"'
            f' fill="{colours[v]}" fill-opacity="0.85"><title>{_esc(v)}</title></path>'
        )
    out += _frame_lines(frame)
    served = False
    strips = []
    for x0, x1, p in segments(points):
        served = served or p.serving > 0 or (p is points[0] and p.machines > 0)
        if p.serving == 0 and served and x1 > x0:
            strips.append(
                f'<rect class="down" x="{x0:.1f}" y="{frame.bottom - 8:.1f}"'
                f' width="{max(x1 - x0, 1.5):.1f}" height="8" fill="{DOWN}"/>'
            )
    line = [
        (x, frame.y(p.serving))
        for x0, x1, p in segments(_smooth(frame, points, "serving"))
        for x in (x0, x1)
    ]
    out.append(
        f'<path class="serving" d="{_path(line)}" fill="none" stroke="{INK}"'
        ' stroke-width="2" stroke-linejoin="round"/>'
    )
    return out, strips


def _lanes(
    report: SimulationReport,
    tracks: Sequence[MachineTrack],
    span: float,
    left: float,
    top: float,
    colours: Mapping[str, str],
) -> list[str]:
    """One row per machine: its name, then stretches that touch, coloured by phase."""
    frame = _Frame(span=span, top=1, plot_top=top, left=left)
    out = []
    for i, m in enumerate(tracks):
        y = top + i * TRACK
        rects = []
        for t0, t1, phase, version in m.segments:
            # whole tenths of a pixel, so that one stretch ends where the next begins
            x0, x1 = round(frame.x(t0) * 10), round(frame.x(t1) * 10)
            if x1 <= x0:
                continue
            fill, opacity = PHASES.get(phase, ("#888888", 1.0))
            extra = "" if opacity == 1.0 else f' fill-opacity="{opacity:g}"'
            rects.append(
                f'<rect class="seg" data-phase="{_esc(phase)}" x="{x0 / 10:.1f}"'
                f' y="{y + 1:.1f}" width="{(x1 - x0) / 10:.1f}" height="{TRACK - 2}"'
                f' fill="{fill or colours.get(version, "#888888")}"{extra}>'
                f"<title>{_esc(f'{m.id} ({m.group}, {version}): {phase} {t0:.1f}s to {t1:.1f}s')}"
                "</title></rect>"
            )
        out.append(
            f'<g class="machine" data-id="{_esc(m.id)}" data-group="{_esc(m.group)}">'
            + _text(m.id, left - 6, y + TRACK - 3, anchor="end", size=10, max_px=left - 10)
            + "".join(rects)
            + "</g>"
        )
    bottom = top + TRACK * len(tracks)
    out.append(_line(left, top, left, bottom, stroke=AXIS))
    out.append(_line(left, bottom, left + _plot_w(left), bottom, stroke=AXIS))
    return out


def _markers(
    marks: Sequence[Mark],
    badges: Sequence[tuple[float, float, int]],
    band_top: float,
    chart_top: float,
    chart_bottom: float,
) -> list[str]:
    """A dashed line and a numbered badge per step (class ``step``)."""
    out = []
    markers = sorted(zip(badges, marks, strict=True), key=lambda m: m[0][2])
    for (x, bx, row), mark in markers:  # top row first: lower stems pass over no badge
        y = band_top + row * ROW + ROW / 2 - 2
        stem = _path([(x, chart_bottom), (x, chart_top), (bx, y + 7)])
        colour = "#555555" if mark.plan else DOWN
        assert mark.t is not None
        out.append(
            f'<g class="step" data-n="{mark.n}"><title>'
            f"{_esc(f'{mark.n}. {mark.t:.1f}s {mark.why}')}</title>"
            f'<path d="{stem}" fill="none" stroke="{colour}" stroke-dasharray="4 3"/>'
            + _badge(mark.n, bx, y, colour)
            + "</g>"
        )
    return out


def _legends(
    chart_bottom: float,
    left: float,
    versions: Sequence[str],
    colours: Mapping[str, str],
    marks: Sequence[Mark],
    *,
    downtime: bool,
    settling: bool,
    over: float | None,
    floors: bool,
    ceilings: bool,
    phases: Sequence[str],
) -> tuple[list[str], float]:
    """The key (wrapped to the width), then one line per step; and the last baseline."""
    key = [(v, f'<rect width="12" height="12" y="-10" fill="{colours[v]}"/>') for v in versions]
    key.append(("serving", _line(0, -4, 12, -4, stroke=INK, width=2)))
    if floors:
        key.append(("floor", _line(0, -4, 12, -4, stroke=FLOOR, width=1.5, dash="4 2")))
    if ceilings:
        key.append(("ceiling", _line(0, -4, 12, -4, stroke=CEILING, width=1.5, dash="4 2")))
    if over is not None:
        swatch = f'<rect width="12" height="12" y="-10" fill="url(#over)" stroke="{OVER}"/>'
        key.append((f"over capacity ({over:g} rps a machine)", swatch))
    if downtime:
        key.append(("no machine serving", f'<rect width="12" height="8" y="-8" fill="{DOWN}"/>'))
    if settling:
        swatch = '<rect width="12" height="12" y="-10" fill="url(#settle)" stroke="#cccccc"/>'
        key.append(("after the executor ended (machines settling)", swatch))
    for ph in phases:
        if ph == "serving":
            continue
        fill, opacity = PHASES[ph]
        swatch = (
            f'<rect width="12" height="12" y="-10" fill="{fill or PALETTE[0]}"'
            f' fill-opacity="{opacity:g}"/>'
        )
        key.append((f"machine {PHASE_LABELS[ph]}", swatch))
    out = []
    y = chart_bottom + 52.0
    x = float(LEFT)
    for label, swatch in key:
        w = 24 + 12 * 0.62 * len(label)
        if x + w > WIDTH - RIGHT and x > LEFT:
            x, y = float(LEFT), y + ROW
        out.append(f'<g transform="translate({x:.1f} {y:.1f})">{swatch}</g>')
        out.append(_text(label, x + 16, y, max_px=WIDTH - RIGHT - x - 16))
        x += w
    runs: list[list[Mark]] = []  # steps in a row with the same reason share a line
    for mark in marks:
        last = runs[-1][-1] if runs else None
        if (
            last is not None
            and (last.why, last.plan, last.t is None) == (mark.why, mark.plan, mark.t is None)
            and last.n + 1 == mark.n
        ):
            runs[-1].append(mark)
        else:
            runs.append([mark])
    when_x = LEFT + (178 if any(len(r) > 1 for r in runs) else 100)
    for run in runs:
        y += ROW
        a, b = run[0], run[-1]
        colour = "#555555" if a.plan else DOWN
        if a.t is None or b.t is None:
            when = "not reached"
        else:
            when = f"{a.t:.1f}s" if a is b else f"{a.t:.1f}s to {b.t:.1f}s"
        x = LEFT + 4 + 3 * len(str(a.n))
        badges = _badge(a.n, x, y - 4, colour)
        if a is not b:
            x2 = x + 10 + 3 * len(str(a.n)) + 3 * len(str(b.n)) + 8
            badges += _text("\u2013", (x + x2) / 2, y, anchor="middle") + _badge(
                b.n, x2, y - 4, colour
            )
        ns = str(a.n) if a is b else f"{a.n}-{b.n}"
        out.append(
            f'<g class="step-legend" data-n="{ns}">'
            + badges
            + _text(when, when_x, y, anchor="end", fill=INK if a.t is not None else AXIS)
            + _text(a.why, when_x + 8, y, max_px=WIDTH - RIGHT - when_x - 8)
            + "</g>"
        )
    return out, y


def _frame_lines(frame: _Frame) -> list[str]:
    right = frame.left + _plot_w(frame.left)
    return [
        _line(frame.left, frame.plot_top, frame.left, frame.bottom, stroke=AXIS),
        _line(frame.left, frame.bottom, right, frame.bottom, stroke=AXIS),
    ]


def _badge(n: int, x: float, y: float, colour: str = "#555555") -> str:
    """A numbered, rounded marker centred on ``(x, y)``."""
    w = 10 + 6 * len(str(n))
    return (
        f'<rect x="{x - w / 2:.1f}" y="{y - 7:.1f}" width="{w}" height="14" rx="7"'
        f' fill="#ffffff" stroke="{colour}"/>'
        + _text(str(n), x, y + 3.5, anchor="middle", size=10, fill=colour)
    )


def _natural(text: str) -> list[tuple[int, str]]:
    """A sort key that puts ``v2`` before ``v10``."""
    return [
        (int(part), "") if part.isascii() and part.isdigit() and len(part) <= 18 else (-1, part)
        for part in re.split(r"([0-9]+)", text)
    ]


def _nice(raw: float) -> float:
    """The smallest of 1, 2, 5 times a power of ten that is at least ``raw``."""
    if raw <= 0:
        return 1.0
    mag = 10.0 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw * (1 - 1e-9))


def _num(value: float) -> str:
    value = round(value, 6)
    return str(int(value)) if value == int(value) else f"{value:g}"


def _esc(text: str) -> str:
    """One line of text, safe inside an XML element."""
    return escape(_NOT_XML.sub("\ufffd", " ".join(text.split())))


def _text(
    text: str,
    x: float,
    y: float,
    *,
    anchor: str = "start",
    size: int = 12,
    weight: str = "normal",
    fill: str = INK,
    max_px: float = WIDTH - LEFT - 8,
    halo: bool = False,
) -> str:
    """A ``<text>``, cut to fit ``max_px`` (the whole text then shows as a tooltip)."""
    text = " ".join(text.split())
    fits = max(4, int(max_px / (size * 0.62)))
    tip = ""
    if len(text) > fits:
        tip = f"<title>{_esc(text)}</title>"
        text = text[: fits - 1] + "…"
    extra = "" if anchor == "start" else f' text-anchor="{anchor}"'
    extra += "" if weight == "normal" else f' font-weight="{weight}"'
    extra += "" if size == 12 else f' font-size="{size}"'
    if halo:  # readable over the chart
        extra += ' stroke="#ffffff" stroke-width="3" paint-order="stroke"'
    return f'<text x="{x:.1f}" y="{y:.1f}" fill="{fill}"{extra}>{tip}{_esc(text)}</text>'


def _line(
    x0: float, y0: float, x1: float, y1: float, *, stroke: str, width: float = 1, dash: str = ""
) -> str:
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    extra += f' stroke-width="{width:g}"' if width != 1 else ""
    return (
        f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" stroke="{stroke}"{extra}/>'
    )


def _path(points: Iterable[tuple[float, float]]) -> str:
    """``M x,y L x,y ...`` without repeated points."""
    parts: list[str] = []
    for x, y in points:
        p = f"{x:.1f},{y:.1f}"
        if not parts or parts[-1] != p:
            parts.append(p)
    return "M " + " L ".join(parts)
