"""Simulation: run a deployment against the simulated fleet on a virtual clock.

``zdd.simulate(state, desired, strategy)`` builds a
:class:`~zdd.providers.simulated.SimulatedFleet`, runs the executor against it
with the virtual-clock driver, and returns a :class:`SimulationReport`: did it
converge or roll back, the least serving capacity, the most machines, how long
it took, the requests that failed and why, the timeline.
"""

from __future__ import annotations

from ._report import SimulationReport, TimelinePoint
from ._run import simulate, simulate_fleet

__all__ = ["SimulationReport", "TimelinePoint", "simulate", "simulate_fleet"]
