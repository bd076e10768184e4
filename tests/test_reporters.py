"""The text reporter colours a terminal only, and never with NO_COLOR."""

from __future__ import annotations

import io

import pytest

import zdd
from zdd.reporters import TextReporter, use_color


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(reporter: TextReporter) -> str:
    state = zdd.FleetState(machines=[zdd.Machine(id="m1", version="v1")])
    desired = zdd.Desired.from_fleet(state, zdd.Release(version="v2"))
    zdd.simulate(state, desired, zdd.Rolling(), reporter=reporter)
    stream = reporter.stream
    assert isinstance(stream, io.StringIO)
    return stream.getvalue()


def test_a_pipe_gets_no_colour() -> None:
    assert use_color(io.StringIO(), {}) is False
    out = _run(TextReporter(io.StringIO()))
    assert "\033[" not in out
    assert "finished: converged" in out


def test_a_terminal_gets_colour() -> None:
    assert use_color(_Tty(), {"TERM": "xterm"}) is True
    out = _run(TextReporter(_Tty(), color=True))
    assert "finished: \033[32mconverged\033[0m" in out


def test_no_color_and_dumb_terminals_are_honoured() -> None:
    assert use_color(_Tty(), {"NO_COLOR": "1"}) is False
    assert use_color(_Tty(), {"NO_COLOR": ""}) is True  # the spec: set *and* non-empty
    assert use_color(_Tty(), {"TERM": "dumb"}) is False


def test_auto_detection_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    assert TextReporter(_Tty()).color is False
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", "xterm-256color")
    assert TextReporter(_Tty()).color is True


def test_clock_values_in_the_record_read_as_times() -> None:
    """A pause's or an analysis' start is a float on the executor's clock: a wall-clock
    one reads as UTC, a simulated one as it is; JSON lines keep the value."""
    label = zdd.Label(
        group="*",
        values={
            "pause.app.switch": repr(1796238001.25),
            "analysis.errors.began": "30.0",
            "phase": "deploying",
        },
    )
    text = TextReporter(io.StringIO(), color=False)
    text.action_started(12.0, label)
    line = text.stream.getvalue()  # type: ignore[attr-defined]
    assert "pause.app.switch=2026-12-02T" in line and "1796238001" not in line
    assert "analysis.errors.began=30.0" in line and "phase=deploying" in line
    lines = zdd.reporters.JsonLinesReporter(io.StringIO())
    lines.action_started(12.0, label)
    assert "1796238001.25" in lines.stream.getvalue()  # type: ignore[attr-defined]
