"""The local provider's process identity rules, on real child processes.

A process zdd adopts from a state file is signalled only once it is proved to
be the one zdd started (pid, start time, group leader, the fleet's variable in
its environment), and "gone" must mean gone: a dying process frees its memory
before it becomes a zombie, and meanwhile ``/proc/<pid>/environ`` fails with
ESRCH while ``/proc/<pid>/stat`` still says it runs. A CI run caught teardown
taking that window for "exited" and returning while the process still ran.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zdd.providers import _supervisor
from zdd.providers._supervisor import FLEET_ENV, _Proc, _start_time, _sweep

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/environ").exists(), reason="identity checks read /proc"
)

MARKER = f"{FLEET_ENV}=test-supervisor-{os.getpid()}"


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A process group leader carrying the marker, as the local provider starts them."""
    name, value = MARKER.split("=", 1)
    popen = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"],
        env={**os.environ, name: value},
        start_new_session=True,
    )
    try:
        yield popen
    finally:
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()


def _state(pid: int) -> str | None:
    info = _supervisor._proc_stat(pid)
    return None if info is None else info[0]


def _adopted(pid: int) -> _Proc:
    return _Proc(pid=pid, start=_start_time(pid), marker=MARKER)


def test_an_adopted_process_stays_ours_while_its_environment_cannot_be_read(
    child: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = _adopted(child.pid)
    assert proc.alive(), "the marker is in its environment: it is ours"
    # the exit window: environ unreadable (ESRCH), stat still "running"
    monkeypatch.setattr(_supervisor, "_environ_has", lambda pid, marker: False)
    assert proc.alive(), "a proved process taken for gone while it still runs"
    assert not proc.wait(0.2), "wait() returned while the process still ran"
    proc.signal_group(signal.SIGKILL)
    child.wait(10)
    assert not proc.alive()
    assert proc.wait(0.0)


def test_an_unproved_process_is_never_signalled(
    child: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_supervisor, "_environ_has", lambda pid, marker: False)
    proc = _adopted(child.pid)
    assert not proc.alive(), "a process without the marker counted as ours"
    proc.signal_group(signal.SIGKILL)
    proc.stop(signal.SIGKILL, 0.0)
    time.sleep(0.05)
    assert child.poll() is None, "zdd signalled a process it could not prove was its own"


def test_a_different_start_time_is_a_different_process(child: subprocess.Popen[bytes]) -> None:
    proc = _Proc(pid=child.pid, start="1", marker=MARKER)
    assert not proc.alive()
    proc.signal_group(signal.SIGKILL)
    time.sleep(0.05)
    assert child.poll() is None


def test_a_sweep_returns_only_once_what_it_killed_is_gone(
    child: subprocess.Popen[bytes],
) -> None:
    fleet = MARKER.split("=", 1)[1]
    _sweep(fleet, keep={child.pid})
    assert _state(child.pid) not in ("Z", "X", None), "a kept process was swept"
    _sweep(fleet, keep=set())
    assert _state(child.pid) in ("Z", "X", None), "the sweep returned before its kill took"
    assert child.wait(10) == -signal.SIGKILL
