"""The local provider's process supervisor: start, signal and reap the processes that
are its machines, find free ports, read their logs, and recognise (by pid and start
time) a process it started, so that an adopted state can never make it signal
another one."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from .._errors import (
    ActionFailed,
    InvalidConfig,
)
from .._plan import (
    redact_command,
)

#: The environment variable that marks every process of one local fleet.
FLEET_ENV = "ZDD_LOCAL_FLEET"


def _proc_stat(pid: int) -> tuple[str, int, str] | None:
    """(state, pgid, start time) of ``pid`` from /proc, or None where there is no /proc."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return ("X", 0, "") if Path("/proc/self/stat").exists() else None
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[0], int(fields[2]), fields[19]


def _start_time(pid: int) -> str | None:
    info = _proc_stat(pid)
    return info[2] if info is not None and info[0] != "X" else None


@attrs.define(eq=False)
class _Proc:
    """A process group leader we started (``popen``) or adopted from a state file."""

    pid: int
    start: str | None
    popen: subprocess.Popen[bytes] | None = None

    @classmethod
    def spawn(
        cls, argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None, log: Path
    ) -> _Proc:
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        return cls(pid=popen.pid, start=_start_time(popen.pid), popen=popen)

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False  # someone else's process now: not ours
        info = _proc_stat(self.pid)
        if info is None:
            return True  # no /proc (macOS): trust the pid
        state, _, start = info
        if state in ("Z", "X"):
            return False
        return self.start is None or start == self.start

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the leader to exit; true if it has."""
        if self.popen is not None:
            try:
                self.popen.wait(timeout=max(0.0, timeout))
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def stop(self, sig: int, timeout: float) -> None:
        """``sig`` to the group, wait ``timeout``, then SIGKILL whatever is left of it."""
        if not self.alive():
            return
        self.signal_group(sig)
        self.wait(timeout)
        self.signal_group(signal.SIGKILL)
        self.wait(5.0)


def _signal(name: str) -> int:
    text = name.strip().upper()
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return int(signal.Signals[text])
    except KeyError:
        raise InvalidConfig(
            f"unknown signal {name!r}; use a name such as SIGTERM or SIGINT", field="kill_signal"
        ) from None


def _pick_port(bind: str, avoid: set[int]) -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET) as s:
            s.bind((bind, 0))
            port = int(s.getsockname()[1])
        if port not in avoid:
            return port
    raise ActionFailed("no free port found", transient=True)


def _port_free(bind: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((bind, port))
        except OSError:
            return False
    return True


def _tail(data: str, lines: int = 12) -> str:
    kept = [line.rstrip() for line in data.strip().splitlines()[-lines:]]
    return "\n".join(redact_command(line) for line in kept)


def _read_tail(path: Path, lines: int = 12) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            return _tail(f.read().decode("utf-8", "replace"), lines)
    except OSError:
        return ""


def _output(out: bytes | None) -> str:
    text = _tail((out or b"").decode("utf-8", "replace"))
    return f"; its last output:\n{text}" if text else " (no output)"


def _pid_exists(pid: object, start: object) -> bool:
    if not isinstance(pid, int):
        return True  # unknown: assume it may still hold the lock
    return _Proc(pid=pid, start=start if isinstance(start, str) else None).alive()


def _sweep(fleet: str, keep: set[int]) -> None:
    """SIGKILL processes of this fleet that nobody records (Linux: /proc environ)."""
    if not sys.platform.startswith("linux"):
        return
    marker = f"{FLEET_ENV}={fleet}".encode()
    me = os.getpid()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    for entry in entries:
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if marker not in environ.split(b"\0"):
            continue
        info = _proc_stat(pid)
        if info is None or info[0] in ("Z", "X"):
            continue
        if pid in keep or info[1] in keep:
            continue  # a recorded machine, or a process of its group
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
