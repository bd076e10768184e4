"""The timeline as a hand-written SVG picture (placeholder until the renderer lands)."""

from __future__ import annotations

from ._report import SimulationReport

__all__ = ["render_svg"]


def render_svg(report: SimulationReport) -> str:
    """Serving capacity by version over time, with step markers, as SVG text."""
    raise NotImplementedError("the SVG renderer is being written")
