"""The local provider's process supervisor: start, signal and reap the processes that
are its machines, find free ports, read their logs, and recognise (by pid and start
time) a process it started, so that an adopted state can never make it signal
another one."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
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
#: The one that marks its HAProxy (not swept with the machines).
HAPROXY_ENV = "ZDD_LOCAL_HAPROXY"


def open_private(path: Path, flags: int, mode: int = 0o600) -> int:
    """``os.open`` that never follows a symbolic link planted at ``path`` (``O_NOFOLLOW``):
    a link there is refused with ``OSError`` (ELOOP) instead of written through."""
    return os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)


def write_private(path: Path, data: str) -> None:
    """Write ``data`` to ``path`` atomically, mode 0600, through no symbolic link: a new
    file (``O_EXCL``, random name) renamed over ``path`` (a rename replaces a link
    planted at ``path`` instead of following it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_private(path: Path) -> str:
    """Read ``path`` without following a symbolic link (``OSError`` if one is planted)."""
    fd = open_private(path, os.O_RDONLY)
    with os.fdopen(fd, "r", encoding="utf-8") as f:
        return f.read()


def check_private_dir(path: Path, field: str) -> None:
    """Refuse a directory zdd would write in that is a symbolic link, is not this user's,
    or that others can write to (they could plant links or files in it)."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise InvalidConfig(f"{path}: {exc.strerror or exc}", field=field) from None
    if stat.S_ISLNK(st.st_mode):
        raise InvalidConfig(f"{path} is a symbolic link; give the real directory", field=field)
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidConfig(f"{path} is not a directory", field=field)
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise InvalidConfig(
            f"{path} belongs to another user; use a directory of your own", field=field
        )
    if st.st_mode & 0o022:
        raise InvalidConfig(
            f"{path} can be written by other users; chmod go-w it or use another one",
            field=field,
        )


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


def _environ_has(pid: int, marker: str) -> bool | None:
    """Whether ``pid``'s environment holds ``marker`` (``NAME=value``); None without /proc."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except FileNotFoundError:
        return False if Path("/proc/self/environ").exists() else None
    except OSError:
        return False  # not ours to read: not ours
    return marker.encode() in environ.split(b"\0")


@attrs.define(eq=False)
class _Proc:
    """A process group leader we started (``popen``) or adopted from a state file.

    An adopted process (no ``popen``) is only ever signalled once it is proved to be
    the one that was started: same pid, same start time, still its group's leader,
    and (``marker``) the fleet's variable in its environment. A state file naming
    any other process, by accident or by design, makes zdd leave it alone.
    """

    pid: int
    start: str | None
    popen: subprocess.Popen[bytes] | None = None
    marker: str | None = None  # NAME=value that the process's environment must hold
    # the marker was seen in this (pid, start time)'s environment: that pair names one
    # process for as long as it exists, so the proof holds until it is gone. It must:
    # an exiting process frees its memory before it becomes a zombie, and meanwhile
    # /proc/<pid>/environ fails with ESRCH while /proc/<pid>/stat still says running
    _proved: bool = attrs.field(default=False, init=False, repr=False)

    @classmethod
    def spawn(
        cls,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | None,
        log: Path,
        marker: str | None = None,
    ) -> _Proc:
        fd = open_private(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        with os.fdopen(fd, "ab") as out:
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
        return cls(pid=popen.pid, start=_start_time(popen.pid), popen=popen, marker=marker)

    def alive(self) -> bool:
        """Running, and (adopted) provably the process that was started."""
        if self.popen is not None:
            if self.popen.poll() is not None:
                return False  # our child: its pid cannot be reused until this reaps it
            # a killed multi-threaded process: its leader is a zombie while the other
            # threads exit, and waitpid() does not report it until they have
            info = _proc_stat(self.pid)
            return info is None or info[0] not in ("Z", "X")
        if isinstance(self.pid, bool) or not isinstance(self.pid, int) or self.pid <= 1:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False  # someone else's process now: not ours
        info = _proc_stat(self.pid)
        if info is None:
            return True  # no /proc (macOS): trust the pid
        state, pgid, start = info
        if state in ("Z", "X") or self.start is None or start != self.start:
            return False
        if pgid != self.pid:
            return False  # not the leader of its own group: never ours
        if self.marker is None or self._proved:
            return True
        found = _environ_has(self.pid, self.marker)
        self._proved = found is True
        return found is not False

    def signal_group(self, sig: int) -> None:
        """Signal the process group, only when it is proved to be ours (:meth:`alive`)."""
        if self.popen is None and not self.alive():
            return
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
    """Whether the process ``pid`` started at ``start`` (a lock holder) still runs."""
    if isinstance(pid, bool) or not isinstance(pid, int):
        return True  # unknown: assume it may still hold the lock
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user: it may hold the lock
    info = _proc_stat(pid)
    if info is None or not isinstance(start, str):
        return True
    return info[0] not in ("Z", "X") and info[2] == start


def _sweep(fleet: str, keep: set[int], wait: float = 2.0) -> None:
    """SIGKILL processes of this fleet that nobody records (Linux: /proc environ).

    Waits up to ``wait`` seconds for them to be gone (or zombies), so that what
    follows a sweep, a teardown's end or a restart on the same port, never meets them.
    """
    if not sys.platform.startswith("linux"):
        return
    killed: dict[int, str] = {}
    marker = f"{FLEET_ENV}={fleet}".encode()
    me = os.getpid()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    for entry in entries:
        if not (entry.isascii() and entry.isdigit()):
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
            killed[pid] = info[2]
    deadline = time.monotonic() + wait
    while killed and time.monotonic() < deadline:
        for pid, start in list(killed.items()):
            info = _proc_stat(pid)
            if info is None or info[0] in ("Z", "X") or info[2] != start:
                del killed[pid]
        if killed:
            time.sleep(0.01)
