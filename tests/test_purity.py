"""The planning core does no I/O, reads no clock, draws no randomness and logs nothing.

Two checks: statically, the pure modules import only an allowlist (and each
other); dynamically, planning still works with the clock, randomness, file
opening, sockets and logging booby-trapped.
"""

from __future__ import annotations

import ast
import builtins
import logging
import os
import random
import socket
import time
from pathlib import Path
from typing import Any

import attrs
import pytest

import zdd

SRC = Path(zdd.__file__).parent
PURE = [
    "_model.py",
    "_plan.py",
    "_project.py",
    "_durations.py",
    "_errors.py",
    "_record.py",
    "_strategies.py",
    "_executor.py",
    "_hooks.py",
    "providers/_fly_config.py",
    "_analysis.py",
    "_status.py",
    *[f"_planning/{p.name}" for p in (SRC / "_planning").glob("*.py")],
]
ALLOWED_STDLIB = {
    "__future__",
    "collections",
    "collections.abc",
    "typing",
    "enum",
    "math",
    "heapq",
    "itertools",
    "json",
    "re",
    "shlex",
    "attrs",
    "typing_extensions",
}
PURE_INTERNAL = {
    "_model",
    "_plan",
    "_project",
    "_durations",
    "_errors",
    "_planning",
    "_record",
    "_strategies",
    "_executor",
    "_hooks",
    "_analysis",
    "_status",
}
FORBIDDEN_NAMES = {"open", "print", "input", "exec", "eval", "__import__", "breakpoint"}


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", node.level))
    return out


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_import_only_the_allowlist(name: str) -> None:
    path = SRC / name
    for module, level in _imports(path):
        if level == 0:
            assert module in ALLOWED_STDLIB, f"{name} imports {module}"
        else:
            head = module.split(".")[0] if module else ""
            assert head == "" or head in PURE_INTERNAL or head.startswith("_"), (
                f"{name} imports .{module}"
            )
            assert head not in {"cli", "providers", "_fleetjson"}, f"{name} imports {module}"


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_call_no_io_builtins(name: str) -> None:
    tree = ast.parse((SRC / name).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in FORBIDDEN_NAMES, f"{name} calls {node.func.id}()"


def test_config_planning_part_uses_io_only_in_load_config() -> None:
    # _config reads fly.toml in load_config and nowhere else
    tree = ast.parse((SRC / "_config.py").read_text())
    readers = [
        fn.name
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef)
        and any(
            isinstance(n, ast.Attribute) and n.attr in {"read_text", "open", "read_bytes"}
            for n in ast.walk(fn)
        )
    ]
    assert readers == ["load_config"]


def _trap(*_: Any, **__: Any) -> Any:
    raise AssertionError("the planning core touched the outside world")


_TRAPS = [
    (time, "time"),
    (time, "monotonic"),
    (time, "perf_counter"),
    (time, "sleep"),
    (random, "random"),
    (random, "randint"),
    (random, "choice"),
    (os, "urandom"),
    (builtins, "open"),
    (builtins, "print"),
    (socket, "socket"),
    (logging.Logger, "_log"),
]


def test_the_executor_core_runs_with_the_world_booby_trapped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The executor's core, event by event, with no clock, randomness, file, socket or
    logging available: it decides from the events alone (the driver owns the world)."""
    from zdd._executor import ActionDone, Begin, FullObserved, MachineSeen, Tick

    state = zdd.FleetState.uniform(2)
    release = zdd.Release(version="v2", checks=[zdd.HealthCheck(type="tcp")])
    core = zdd.ExecutorCore(zdd.Desired.from_fleet(state, release), zdd.Rolling(drain_delay=0))
    for target, attr in _TRAPS:
        monkeypatch.setattr(target, attr, _trap)
    machines = {m.id: m for m in state.machines}
    pending: list[Any] = []
    now = 0.0

    def handle(event: Any) -> Any:
        cmds = core.handle(event)
        pending.extend(cmds.perform)
        return cmds

    cmds = handle(Begin(now, state))
    for _ in range(500):
        if cmds.finished:
            break
        now += 1.0
        if cmds.full_observe and not pending:
            cmds = handle(FullObserved(now, zdd.FleetState(machines=machines.values())))
        elif pending:
            p = pending.pop(0)
            a = p.action
            m = machines.get(a.machine or "")
            if a.kind == "update" and m is not None:
                m = attrs.evolve(m, version=a.version)
            elif a.kind in ("cordon", "uncordon") and m is not None:
                m = attrs.evolve(m, cordoned=a.kind == "cordon")
            if m is not None:
                machines[m.id] = m
            cmds = handle(ActionDone(now, p.ref, m))
        else:
            for mid in sorted(cmds.watched):
                if mid in machines:
                    cmds = handle(MachineSeen(now, mid, machines[mid]))
            cmds = handle(Tick(now))
    assert cmds.finished and cmds.result is not None
    assert cmds.result.outcome == "converged", cmds.result.error


def test_planning_runs_with_the_world_booby_trapped(monkeypatch: pytest.MonkeyPatch) -> None:
    state = zdd.FleetState.uniform(5)
    release = zdd.Release(version="v2", checks=[zdd.HealthCheck(type="tcp")])
    desired = zdd.Desired.from_fleet(state, release)
    strategies: list[zdd.Strategy] = [
        zdd.Immediate(),
        zdd.Rolling(max_surge=1),
        zdd.BlueGreen(),
        zdd.Canary(steps=[zdd.CanaryStep(machines=2, bake=60)]),
    ]
    for target, attr in _TRAPS:
        monkeypatch.setattr(target, attr, _trap)
    for strategy in strategies:
        plan = zdd.plan(state, desired, strategy)
        final = zdd.replay(state, plan)[-1]
        assert not zdd.plan(final, desired, strategy)
