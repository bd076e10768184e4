"""The timeline as a hand-written SVG picture (standard library only).

A stacked step chart of live machines per version over time, the serving
machines as a line on top, numbered markers where each step began (listed in a
legend below the chart), a title and the figures that matter. The same report
always gives the same bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from xml.sax.saxutils import escape

import attrs

from ._report import SimulationReport, TimelinePoint

__all__ = ["render_svg"]

WIDTH = 820
LEFT, RIGHT = 56, 24
PLOT_W = WIDTH - LEFT - RIGHT
PLOT_H = 240
ROW = 18  # one row of step markers, or of a legend
MAX_MARKER_ROWS = 4
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
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def render_svg(report: SimulationReport) -> str:
    """Serving capacity by version over time, with step markers, as SVG text."""
    points = report.timeline
    end = max([report.makespan_s, *(p.t for p in points[-1:])])
    top = max([report.max_machines, 1, *(max(p.machines, p.serving) for p in points)])
    y_step = max(1, int(_nice(top / 6)))
    header = 66 if report.error else 48
    span = end * 1.03 if end > 0 else 1.0  # a little room to show the final state
    badges = _place_badges(report.steps, span)
    rows = 1 + max((row for _, _, row in badges), default=-1)
    plot_top = header + 12 + rows * ROW
    frame = _Frame(span=span, top=-(-top // y_step) * y_step, plot_top=plot_top)
    first: dict[str, int] = {}  # versions stack in order of appearance, oldest at the bottom
    for i, p in enumerate(points):
        for v in p.by_version:
            first.setdefault(v, i)
    versions = sorted(first, key=lambda v: (first[v], _natural(v)))
    colours = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(versions)}
    title = f"Simulated {report.strategy} deployment: {report.outcome.replace('_', ' ')}"
    settling = bool(points) and end > report.makespan_s + 1e-9
    downtime = any(p.serving == 0 for p in points)

    parts = [_text(title, LEFT, 24, size=16, weight="bold"), _text(_summary(report), LEFT, 44)]
    if report.error:
        parts.append(_text(f"error: {report.error}", LEFT, 62, fill=DOWN))
    parts += _axes(frame, y_step)
    parts += _chart(frame, points, versions, colours)
    if settling:
        sx = frame.x(report.makespan_s)
        parts.append(
            f'<rect x="{sx:.1f}" y="{plot_top}" width="{LEFT + PLOT_W - sx:.1f}"'
            f' height="{PLOT_H}" fill="url(#settle)"/>'
        )
        parts.append(_line(sx, plot_top, sx, frame.bottom, stroke=INK, dash="2 2"))
    parts += _markers(frame, report.steps, badges, header + 12)
    legend, y = _legends(frame, versions, colours, report.steps, downtime, settling)
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
            ' stroke-width="2.5" stroke-opacity="0.8"/></pattern></defs>',
            f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
            *parts,
            "</svg>",
            "",
        ]
    )


@attrs.frozen
class _Frame:
    """The plot area: seconds ``0..span`` across, machines ``0..top`` up."""

    span: float
    top: int
    plot_top: int

    @property
    def bottom(self) -> int:
        return self.plot_top + PLOT_H

    def x(self, t: float) -> float:
        return LEFT + PLOT_W * min(max(t, 0.0), self.span) / self.span

    def y(self, n: float) -> float:
        return self.bottom - PLOT_H * n / self.top


def _summary(report: SimulationReport) -> str:
    return (
        f"makespan {report.makespan_s:.1f}s · min serving {report.min_serving}"
        f" · max machines {report.max_machines}"
        f" · failed requests {report.failed_requests}/{report.total_requests}"
        f" · dropped connections {report.dropped_connections}"
        + (f" · resumed {report.resumed}x" if report.resumed else "")
    )


def _place_badges(
    steps: Iterable[tuple[float, str]], span: float
) -> list[tuple[float, float, int]]:
    """``(x, badge x, row)`` of each step's marker.

    A badge goes in the first row where it fits at its step's instant, else in
    a new row (up to ``MAX_MARKER_ROWS``), else where it moves right the least.
    """
    frame = _Frame(span=span, top=1, plot_top=0)
    rights: list[float] = []  # how far right each row is taken
    out = []
    for n, (t, _) in enumerate(steps, 1):
        x, half = frame.x(t), 5 + 3 * len(str(n))
        shifts = [max(0.0, right - (x - half)) for right in rights]
        if len(rights) < MAX_MARKER_ROWS and all(shifts):
            rights.append(0.0)
            shifts.append(0.0)
        row = min(range(len(shifts)), key=lambda r: (shifts[r], r))
        bx = min(x + shifts[row], WIDTH - half)
        rights[row] = bx + half + 2
        out.append((x, bx, row))
    return out


def _axes(frame: _Frame, y_step: int) -> list[str]:
    out = []
    for i in range(frame.top // y_step + 1):
        y = frame.y(i * y_step)
        out.append(_line(LEFT, y, LEFT + PLOT_W, y, stroke="#e6e6e6"))
        out.append(_text(str(i * y_step), LEFT - 6, y + 4, anchor="end", size=11))
    x_step = _nice(frame.span / 8)
    for i in range(int(frame.span / x_step + 1e-9) + 1):
        x = frame.x(i * x_step)
        out.append(_line(x, frame.bottom, x, frame.bottom + 4, stroke=AXIS))
        out.append(_text(_num(i * x_step), x, frame.bottom + 16, anchor="middle", size=11))
    out.append(_text("seconds", LEFT + PLOT_W / 2, frame.bottom + 32, anchor="middle", size=11))
    mid = (frame.plot_top + frame.bottom) / 2
    out.append(
        f'<text x="16" y="{mid:.1f}" font-size="11" text-anchor="middle"'
        f' transform="rotate(-90 16 {mid:.1f})">machines</text>'
    )
    return out


def _chart(
    frame: _Frame,
    points: tuple[TimelinePoint, ...],
    versions: list[str],
    colours: dict[str, str],
) -> list[str]:
    """One stacked step area per version, the serving line, the stretches with none serving."""
    if not points:
        mid = (frame.plot_top + frame.bottom) / 2
        return [
            _text("no timeline recorded", LEFT + PLOT_W / 2, mid, anchor="middle"),
            *_frame_lines(frame),
        ]
    ends = [p.t for p in points[1:]] + [frame.span]
    segments = [(frame.x(p.t), frame.x(t1), p) for p, t1 in zip(points, ends, strict=True)]
    out = []
    for k, v in enumerate(versions):
        upper, lower = [], []
        for x0, x1, p in segments:
            base = sum(p.by_version.get(u, 0) for u in versions[:k])
            hi, lo = frame.y(base + p.by_version.get(v, 0)), frame.y(base)
            upper += [(x0, hi), (x1, hi)]
            lower += [(x0, lo), (x1, lo)]
        out.append(
            f'<path class="version" d="{_path([*upper, *reversed(lower)])} Z"'
            f' fill="{colours[v]}" fill-opacity="0.85"><title>{_esc(v)}</title></path>'
        )
    out += _frame_lines(frame)
    for x0, x1, p in segments:
        if p.serving == 0 and x1 > x0:
            out.append(
                f'<rect class="down" x="{x0:.1f}" y="{frame.bottom - 3}" width="{x1 - x0:.1f}"'
                f' height="6" fill="{DOWN}"/>'
            )
    line = [(x, frame.y(p.serving)) for x0, x1, p in segments for x in (x0, x1)]
    out.append(
        f'<path class="serving" d="{_path(line)}" fill="none" stroke="{INK}"'
        ' stroke-width="2" stroke-linejoin="round"/>'
    )
    return out


def _markers(
    frame: _Frame,
    steps: Sequence[tuple[float, str]],
    badges: Sequence[tuple[float, float, int]],
    band_top: float,
) -> list[str]:
    """A dashed line and a numbered badge per step (class ``step``)."""
    out = []
    markers = sorted(enumerate(zip(badges, steps, strict=True), 1), key=lambda m: m[1][0][2])
    for n, ((x, bx, row), (t, why)) in markers:  # top row first: lower stems pass over no badge
        y = band_top + row * ROW + ROW / 2 - 2
        stem = _path([(x, frame.bottom), (x, frame.plot_top), (bx, y + 7)])
        out.append(
            f'<g class="step"><title>{_esc(f"{n}. {t:.1f}s {why}")}</title>'
            f'<path d="{stem}" fill="none" stroke="#555555" stroke-dasharray="4 3"/>'
            + _badge(n, bx, y)
            + "</g>"
        )
    return out


def _legends(
    frame: _Frame,
    versions: Sequence[str],
    colours: Mapping[str, str],
    steps: Sequence[tuple[float, str]],
    downtime: bool,
    settling: bool,
) -> tuple[list[str], float]:
    """The key (wrapped to the width), then one line per step; and the last baseline."""
    key = [(v, f'<rect width="12" height="12" y="-10" fill="{colours[v]}"/>') for v in versions]
    key.append(("serving", _line(0, -4, 12, -4, stroke=INK, width=2)))
    if downtime:
        key.append(("no machine serving", f'<rect width="12" height="5" y="-6" fill="{DOWN}"/>'))
    if settling:
        swatch = '<rect width="12" height="12" y="-10" fill="url(#settle)" stroke="#cccccc"/>'
        key.append(("after the executor ended (machines settling)", swatch))
    out = []
    y = frame.bottom + 52.0
    x = float(LEFT)
    for label, swatch in key:
        w = 24 + 7 * len(label)
        if x + w > WIDTH - RIGHT and x > LEFT:
            x, y = float(LEFT), y + ROW
        out.append(f'<g transform="translate({x:.1f} {y:.1f})">{swatch}</g>')
        out.append(_text(label, x + 16, y, max_px=WIDTH - RIGHT - x - 16))
        x += w
    for n, (t, why) in enumerate(steps, 1):
        y += ROW
        out.append(
            '<g class="step-legend">'
            + _badge(n, LEFT + 4 + 3 * len(str(n)), y - 4)
            + _text(f"{t:.1f}s", LEFT + 84, y, anchor="end")
            + _text(why, LEFT + 92, y, max_px=WIDTH - RIGHT - LEFT - 92)
            + "</g>"
        )
    return out, y


def _frame_lines(frame: _Frame) -> list[str]:
    return [
        _line(LEFT, frame.plot_top, LEFT, frame.bottom, stroke=AXIS),
        _line(LEFT, frame.bottom, LEFT + PLOT_W, frame.bottom, stroke=AXIS),
    ]


def _badge(n: int, x: float, y: float) -> str:
    """A numbered, rounded marker centred on ``(x, y)``."""
    w = 10 + 6 * len(str(n))
    return (
        f'<rect x="{x - w / 2:.1f}" y="{y - 7:.1f}" width="{w}" height="14" rx="7"'
        ' fill="#ffffff" stroke="#555555"/>' + _text(str(n), x, y + 3.5, anchor="middle", size=10)
    )


def _natural(text: str) -> list[tuple[int, str]]:
    """A sort key that puts ``v2`` before ``v10``."""
    return [(int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"(\d+)", text)]


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
