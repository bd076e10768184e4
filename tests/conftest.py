"""Hypothesis profiles for the property tests, and the test lanes.

``ci`` (the default, also what CI runs): 200 examples a property, no deadline.
``thorough``: 5000 examples a property, for a long run before a release.
Pick one with the environment variable ``HYPOTHESIS_PROFILE``.

Lanes (markers): ``haproxy`` (real HAProxy and processes), ``prometheus`` (a real
Prometheus server), ``slow`` (the executor and planner properties, the Fly end-to-end
runs). ``pytest -m "not slow and not haproxy and not prometheus"`` is the fast lane
(about a minute); plain ``pytest`` runs everything.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# CI explores the same examples every run (a red CI is reproducible, not a dice
# roll); HYPOTHESIS_PROFILE=thorough explores afresh, 5,000 examples a property.
settings.register_profile(
    "ci",
    max_examples=200,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    parent=settings.get_profile("ci"),
    max_examples=5000,
    derandomize=False,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


_LANES = {
    "test_demo.py": "haproxy",
    "test_local_provider.py": "haproxy",
    "test_local_deploy.py": "haproxy",
    "test_demo_analysis.py": "haproxy",
    "test_analysis_prometheus.py": "prometheus",
    "test_execute_properties.py": "slow",
    "test_plan_properties.py": "slow",
    "test_fly_deploy.py": "slow",
    "test_fly_faults.py": "slow",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        lane = _LANES.get(item.path.name)
        if lane is not None:
            item.add_marker(getattr(pytest.mark, lane))
