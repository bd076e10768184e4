"""Local processes behind HAProxy: a :class:`~zdd.providers.Provider` for your own host.

A *machine* is a local process (its whole process group) running the user's
``command`` with ``PORT`` (a free port) and ``ZDD_VERSION`` (the release
version) in its environment, plus ``env`` and the per-version extras given as
``versions``. The provider starts one HAProxy, bound to ``bind`` (127.0.0.1 by
default), in front of them, and drives it over its runtime API socket.

**HAProxy.** The generated configuration (see :func:`haproxy_config`) has one
frontend and one backend, ``app``, with HTTP health checks (``GET
health_path``, expect 200, every ``check_interval``, ``fall 2 rise 1``),
keep-alive on both sides, and retries with redispatch for connection failures
and empty responses. Servers are dynamic, one per machine process, named after
the machine (``local-1``; ``local-1_2`` for its second process after an update
or a restart):

* ``add server app/<name> 127.0.0.1:<port> check inter .. fall 2 rise 1 weight W``,
  ``enable health``, ``set server .. state drain``, ``set server .. health down``
  (a new server takes no traffic before its first passing check), then
  ``set server .. state ready`` unless the machine is cordoned;
* ``set server .. state drain`` (cordon: no new requests, those in progress
  finish), ``state ready`` (uncordon), ``set server .. weight N`` (canary shares);
* to retire a process: ``state maint``, its kill signal, then
  ``shutdown sessions server`` and ``del server``;
* ``show servers state app`` is read on every observation.

HAProxy's own checks are the health the executor sees: a server whose check
has not completed yet is ``unknown``, a server HAProxy holds UP is
``passing``, DOWN is ``critical``. A hidden machine (``Create(hidden=True)``)
and a cordoned one are servers in ``drain``, not ``maint``: HAProxy stops
checking servers in maintenance, and the executor must see a hidden machine
become healthy before it releases it. Only the process group named ``group``
(``app`` by default) is put behind HAProxy; machines of other groups have no
checks and are healthy once running.

**Machine states** come from the processes: ``started`` while the process
runs, ``stopped`` after a ``Stop``, ``failed`` when it exited on its own. The
version, labels, cordon and the deployment record are kept by the provider,
in memory and in ``state.json`` in ``state_dir``.

**Resume.** A new :class:`LocalProvider` over an existing ``state_dir``
*adopts* the fleet described there instead of starting a new one: it checks
that each recorded process (pid and, on Linux, its start time) still runs,
that the recorded HAProxy still answers on its socket (if not, it starts a new
one on the same port and adds the running processes back), deletes HAProxy
servers it has no record of, and kills processes of the fleet it has no record
of (a crash between starting a process and recording it; found by the
``ZDD_LOCAL_FLEET`` variable in their environment, on Linux). So after an
executor crash, ``LocalProvider(command, state_dir=same_dir)`` and the same
``zdd.execute(...)`` finish the deployment.

**The lock** is ``lock.json`` in ``state_dir`` (``owner``, ``since``,
``expires``, and the holder's host and pid), updated under ``flock``: an
expired lock is taken over, and so is one whose holder was a process of this
host that no longer exists (an executor killed with SIGKILL).

**Identity and the state directory.** An adopted process is signalled only once
it is proved to be the one started: the recorded pid runs with the recorded start
time, leads its own process group, and has this fleet's ``ZDD_LOCAL_FLEET`` token
in its environment (HAProxy: ``ZDD_LOCAL_HAPROXY``). ``state_dir`` must be a real
directory of this user that others cannot write to; every file in it is opened
with ``O_NOFOLLOW`` (state files are replaced by rename), so a planted link is
never written through. Files are mode 0600 (``state.json`` holds ``[env]``).

**HAProxy dies.** Every observation and action first checks that HAProxy runs;
a dead one is replaced on the same address and the machines whose last check
passed are marked up at once, so they serve without waiting for a first check.

**Outliving the deployer.** :meth:`LocalProvider.detach` leaves the fleet serving
(``zdd deploy --provider local`` does so after every deploy);
:meth:`LocalProvider.peek` reads it from another process without changing it;
:meth:`LocalProvider.shutdown` stops it for good.

**Cleanup.** :meth:`LocalProvider.close` (also on leaving a ``with`` block,
and at interpreter exit) sends every machine its kill signal, waits
``kill_timeout``, SIGKILLs what is left of each process group, stops HAProxy and
removes its socket, the state and the lock (and ``state_dir`` itself when the
provider made it). Processes run in their own sessions, so a Ctrl-C in the
terminal reaches the executor (which rolls back) and not the fleet; the fleet
is stopped when the provider is closed. :meth:`LocalProvider.detach` leaves
the fleet running for another provider to adopt.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import ipaddress
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from .._errors import (
    ActionFailed,
    DeploymentLocked,
    DeployTimeout,
    InvalidConfig,
    ProviderContractError,
)
from .._model import FleetState, Health, Machine, MachineState, Release
from .._plan import (
    Action,
    Cordon,
    Create,
    Destroy,
    Label,
    RunCommand,
    Start,
    Stop,
    Uncordon,
    Update,
    redact_command,
)
from .._record import parse_target
from . import Capabilities
from ._haproxy import (
    _SAFE_PATH,
    _SERVER_NAME,
    BACKEND,
    DEFAULT_WEIGHT,
    HAPROXY_MISSING,
    MAX_WEIGHT,
    HAProxyRuntime,
    _check_text,
    _find_haproxy,
    _health,
    _ms,
    haproxy_config,
)
from ._supervisor import (
    FLEET_ENV,
    HAPROXY_ENV,
    _output,
    _pick_port,
    _pid_exists,
    _port_free,
    _Proc,
    _read_tail,
    _signal,
    _start_time,
    _sweep,
    check_private_dir,
    open_private,
    read_private,
    write_private,
)

__all__ = ["HAPROXY_MISSING", "LocalProvider", "haproxy_config"]

_STATE = "state.json"
_LOCK = "lock.json"
_LOCK_GUARD = ".lock.guard"
_SOCKET = "haproxy.sock"
_CONFIG = "haproxy.cfg"
_HAPROXY_LOG = "haproxy.log"
_FORMAT = 1
#: Prometheus file-based service discovery: every machine process, labelled with its
#: version, group and machine id (``file_sd_configs``)
TARGETS = "prometheus_targets.json"
#: Operators' instructions (``zdd gate/abort/promote``), written by other processes:
#: a file of their own, since the deployer rewrites ``state.json`` from memory
_INSTRUCTIONS = "instructions.json"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
#: a machine id (and its log file's name): a plan's name or local-N
_MACHINE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")


# -- processes -------------------------------------------------------------------


# -- the machine record ------------------------------------------------------------


@attrs.define(eq=False)
class _Rec:
    """A machine as the provider keeps it (mutable; :meth:`LocalProvider._freeze`)."""

    id: str
    group: str
    region: str
    version: str
    labels: dict[str, str] = attrs.Factory(dict)
    cordoned: bool = False
    stop_requested: bool = False
    gen: int = 0
    port: int | None = None
    server: str | None = None
    proc: _Proc | None = None
    phase: str | None = None  # creating, updating, stopping, destroying (not saved)
    weight: int | None = None  # the weight last set in HAProxy (not saved)
    passing: bool = False  # its check passed when last observed (a restarted HAProxy serves it)

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "region": self.region,
            "version": self.version,
            "labels": dict(self.labels),
            "cordoned": self.cordoned,
            "stop_requested": self.stop_requested,
            "gen": self.gen,
            "port": self.port,
            "server": self.server,
            "pid": self.proc.pid if self.proc is not None else None,
            "start": self.proc.start if self.proc is not None else None,
            "passing": self.passing,
        }

    @classmethod
    def from_json(cls, mid: str, doc: Mapping[str, Any], marker: str) -> _Rec:
        pid = doc.get("pid")
        start = doc.get("start")
        proc = (
            _Proc(pid=pid, start=start if isinstance(start, str) else None, marker=marker)
            if isinstance(pid, int) and not isinstance(pid, bool)
            else None
        )
        return cls(
            id=mid,
            group=str(doc["group"]),
            region=str(doc["region"]),
            version=str(doc["version"]),
            labels={str(k): str(v) for k, v in dict(doc.get("labels") or {}).items()},
            cordoned=bool(doc.get("cordoned", False)),
            stop_requested=bool(doc.get("stop_requested", False)),
            gen=int(doc.get("gen") or 0),
            port=doc.get("port") if isinstance(doc.get("port"), int) else None,
            server=str(doc["server"]) if doc.get("server") else None,
            proc=proc,
            passing=doc.get("passing") is True,
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def server_name(self) -> str:
        return self.id if self.gen <= 1 else f"{self.id}_{self.gen}"


# -- the provider ----------------------------------------------------------------


class LocalProvider:
    """Local processes behind HAProxy, as a zdd provider (see the module docstring).

    Args:
        command: the app's command line (a list of arguments; a string is split
            with :func:`shlex.split`). It must listen on ``127.0.0.1:$PORT`` and
            answer ``GET health_path`` with 200 when healthy.
        workdir: the working directory of the app and of release commands.
        env: extra environment for every machine (over this process's own).
        bind: the address HAProxy's frontend listens on.
        port: the frontend's port; 0 picks a free one (see :attr:`url`).
        health_path: the path HAProxy checks.
        check_interval: seconds between HAProxy's checks of each server.
        group: the process group that HAProxy serves (other groups' machines
            are processes without checks or traffic).
        region: the region of machines started with :meth:`launch`.
        haproxy: the HAProxy executable (a name on ``PATH`` or a path).
        kill_signal: the signal that stops a process where the action does not
            name one (an update's old process, a destroy, :meth:`close`).
            ``Stop`` actions use their own signal and timeout (the release's).
        kill_timeout: seconds to wait after ``kill_signal`` before SIGKILL.
        versions: extra environment per release version, e.g.
            ``{"v2": {"ZDD_DEMO_HEALTH": "failing"}}``.
        commands: a command line per process group (fly.toml's ``[processes]``),
            over ``command``; see also :meth:`prepare_release`.
        port_env: the environment variable that tells a process its port.
        state_dir: where the socket, logs, state and lock live; default a new
            temporary directory (removed by :meth:`close`). An existing
            ``state_dir`` with a fleet in it is adopted (see the module docstring).

    Attributes:
        url: the frontend's URL; ``port``: its port.
        state_dir: the state directory (socket, ``state.json``, ``lock.json``,
            ``haproxy.cfg``, ``haproxy.log``, ``logs/<machine>.log``).
        fleet: this fleet's token (``ZDD_LOCAL_FLEET`` in every machine's environment).

    Raises:
        InvalidConfig: HAProxy missing or too old, bad arguments, or HAProxy
            could not start (the port is taken, ...).
    """

    def __init__(
        self,
        command: Sequence[str] | str,
        *,
        workdir: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        bind: str = "127.0.0.1",
        port: int = 0,
        health_path: str = "/health",
        check_interval: float = 0.5,
        group: str = "app",
        region: str = "local",
        haproxy: str = "haproxy",
        kill_signal: str = "SIGTERM",
        kill_timeout: float = 5.0,
        versions: Mapping[str, Mapping[str, str]] | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        commands: Mapping[str, Sequence[str] | str] | None = None,
        port_env: str = "PORT",
    ) -> None:
        self.command = _command(command)
        self.commands = {str(g): _command(c) for g, c in (commands or {}).items()}
        if not (isinstance(port_env, str) and _ENV_NAME.match(port_env)):
            raise InvalidConfig(
                "must be an environment variable name such as PORT", field="port_env"
            )
        self.port_env = port_env
        self.workdir = os.fspath(workdir) if workdir is not None else None
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.bind = _check_bind(bind)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidConfig(f"must be a port number (0 picks one), got {port!r}", field="port")
        if not isinstance(health_path, str) or not _SAFE_PATH.match(health_path):
            raise InvalidConfig(
                f"must be a URL path starting with / (no spaces), got {health_path!r}",
                field="health_path",
            )
        self.health_path = health_path
        if not (isinstance(check_interval, int | float) and 0.01 <= check_interval <= 3600):
            raise InvalidConfig(
                f"must be seconds between 0.01 and 3600, got {check_interval!r}",
                field="check_interval",
            )
        self.check_interval = float(check_interval)
        self.group = group
        self.region = region
        self.kill_signal = kill_signal
        self._kill_signal = _signal(kill_signal)
        if not (isinstance(kill_timeout, int | float) and 0 <= kill_timeout < math.inf):
            raise InvalidConfig(f"must be seconds >= 0, got {kill_timeout!r}", field="kill_timeout")
        self.kill_timeout = float(kill_timeout)
        self.versions = {
            str(v): {str(k): str(x) for k, x in e.items()} for v, e in (versions or {}).items()
        }
        #: how processes of each version run: commands, workdir, env, kill (state.json)
        self._specs: dict[str, dict[str, Any]] = {}
        self._haproxy_bin = _find_haproxy(haproxy)
        self._haproxy_mu = threading.Lock()
        #: how many times a dead HAProxy was restarted by this provider
        self.haproxy_restarts = 0

        self._own_dir = state_dir is None
        if state_dir is None:
            self.state_dir = Path(tempfile.mkdtemp(prefix="zdd-local-"))
        else:
            self.state_dir = Path(state_dir).absolute()
            if not self.state_dir.is_symlink():
                self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        check_private_dir(self.state_dir, "state_dir")
        self._socket_path = str(self.state_dir / _SOCKET)
        if len(os.fsencode(self._socket_path)) > 100:
            raise InvalidConfig(
                f"{self.state_dir} is too long a path for HAProxy's socket; use a shorter one",
                field="state_dir",
            )
        logs = self.state_dir / "logs"
        if not logs.is_symlink():
            logs.mkdir(exist_ok=True, mode=0o700)
        check_private_dir(logs, "state_dir")

        self._mu = threading.RLock()
        self._weights_mu = threading.Lock()
        self._machine_locks: dict[str, threading.Lock] = {}
        self._recs: dict[str, _Rec] = {}
        self._record: dict[str, str] = {}
        self._next_id = 1
        self._reserved: set[int] = set()
        self._pending_deletes: set[str] = set()
        self._targets: list[dict[str, Any]] | None = None
        self._haproxy: _Proc | None = None
        self.port = port
        self.fleet = uuid.uuid4().hex
        self._closed = False
        adopting = (self.state_dir / _STATE).exists()
        try:
            if adopting:
                self._adopt()
            else:
                self._start_haproxy(port)
                self._save()
        except BaseException:
            if not adopting:
                self._teardown()
            elif self._haproxy is not None and self._haproxy.popen is not None:
                self._haproxy.stop(signal.SIGKILL, 0)  # only what this attempt started
            raise
        atexit.register(self.close)

    def __repr__(self) -> str:
        return (
            f"LocalProvider(command={self.command!r}, url={self.url!r}, "
            f"state_dir={str(self.state_dir)!r}, machines={len(self._recs)})"
        )

    # -- public helpers ----------------------------------------------------------

    @staticmethod
    def shutdown(state_dir: str | os.PathLike[str]) -> int:
        """Stop the fleet in ``state_dir`` for good: every machine (its version's kill
        signal, SIGKILL after its timeout; only processes proved to be the fleet's)
        and HAProxy; then remove the state, lock, config and socket (logs stay).
        Returns how many machine processes were stopped; 0 when there is no fleet."""
        path = Path(state_dir).absolute()
        if not (path / _STATE).exists():
            return 0
        doc = _fleet_doc(path)
        try:
            fleet = str(doc["fleet"])
            specs = _specs(doc.get("releases"))
            marker = f"{FLEET_ENV}={fleet}"
            recs = [_Rec.from_json(str(mid), m, marker) for mid, m in dict(doc["machines"]).items()]
            hx = dict(doc["haproxy"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidConfig(
                f"{path / _STATE} is damaged ({type(exc).__name__}); remove it to start afresh",
                field="state_dir",
            ) from None
        stopped = 0
        running = [r for r in recs if r.proc is not None and r.proc.alive()]
        for rec in running:
            assert rec.proc is not None
            spec = specs.get(rec.version, {})
            sig = signal.SIGTERM
            timeout = 5.0
            with contextlib.suppress(InvalidConfig, KeyError, TypeError, ValueError):
                sig = signal.Signals(_signal(str(spec["kill_signal"])))
                timeout = float(spec["kill_timeout"])
            rec.proc.signal_group(sig)
            rec.proc.wait(timeout)
            rec.proc.signal_group(signal.SIGKILL)
            stopped += 1
        pid, start = hx.get("pid"), hx.get("start")
        if isinstance(pid, int) and not isinstance(pid, bool):
            haproxy = _Proc(
                pid=pid,
                start=start if isinstance(start, str) else None,
                marker=f"{HAPROXY_ENV}={fleet}",
            )
            haproxy.stop(signal.SIGTERM, 2.0)
        _sweep(fleet, keep=set())
        for name in (_SOCKET, _STATE, _LOCK, _LOCK_GUARD, _CONFIG, TARGETS, _INSTRUCTIONS):
            with contextlib.suppress(OSError):
                (path / name).unlink()
        return stopped

    @staticmethod
    def instruct(state_dir: str | os.PathLike[str], values: Mapping[str, str]) -> None:
        """Leave an operator's instruction (``op.*`` keys) for the fleet in ``state_dir``:
        its deployer reads it at its next look at the fleet. Needs no lock."""
        path = Path(state_dir).absolute()
        if not (path / _STATE).exists():
            raise InvalidConfig(f"{path} holds no local fleet", field="state_dir")
        check_private_dir(path, "state_dir")
        for key in values:
            if not key.startswith("op."):
                raise ProviderContractError(f"an instruction is an op.* key, not {key!r}")
        doc = _instructions(path)
        doc.update({str(k): str(v) for k, v in values.items()})
        write_private(path / _INSTRUCTIONS, json.dumps(doc, indent=1, sort_keys=True))

    @staticmethod
    def peek(state_dir: str | os.PathLike[str]) -> FleetState | None:
        """The fleet in ``state_dir`` as a later process sees it, changing nothing
        (no HAProxy started, no process signalled): each machine's state from its
        process (proved to be the one started), its health from HAProxy's checks,
        and the deployment record. ``None`` when ``state_dir`` holds no fleet."""
        path = Path(state_dir).absolute()
        if not (path / _STATE).exists() and not (path / _STATE).is_symlink():
            return None
        doc = _fleet_doc(path)
        try:
            fleet = str(doc["fleet"])
            record = {str(k): str(v) for k, v in dict(doc["record"]).items()}
            marker = f"{FLEET_ENV}={fleet}"
            recs = [_Rec.from_json(str(mid), m, marker) for mid, m in dict(doc["machines"]).items()]
            socket_path = str(dict(doc["haproxy"]).get("socket") or path / _SOCKET)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidConfig(
                f"{path / _STATE} is damaged ({type(exc).__name__}); remove it to start afresh",
                field="state_dir",
            ) from None
        rows: dict[str, dict[str, str]] = {}
        with contextlib.suppress(ActionFailed, OSError):
            rows = HAProxyRuntime(socket_path).servers()
        group = str(doc.get("group") or "app")
        machines = []
        for rec in recs:
            state = LocalProvider._state(rec)
            health = Health.CRITICAL if state is MachineState.FAILED else Health.UNKNOWN
            if state is MachineState.STARTED:
                if rec.group != group:
                    health = Health.PASSING
                elif rec.server is not None and rec.server in rows:
                    health = _health(rows[rec.server])
            machines.append(
                Machine(
                    id=rec.id,
                    version=rec.version,
                    group=rec.group,
                    region=rec.region,
                    state=state,
                    health=health,
                    cordoned=rec.cordoned,
                    labels=rec.labels,
                )
            )
        record.update(_instructions(path))
        return FleetState(machines=machines, record=record)

    @property
    def url(self) -> str:
        """The HAProxy frontend: ``http://127.0.0.1:<port>``."""
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.port}"

    def __enter__(self) -> LocalProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def prepare_release(
        self,
        version: str,
        *,
        commands: Mapping[str, Sequence[str] | str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
    ) -> None:
        """Say how processes of ``version`` run: a command line per group and the
        working directory (default: the provider's ``command``, ``commands`` and
        ``workdir``). Kept in ``state.json``, so a later provider over the same
        ``state_dir`` (a rollback, a resumed deployment) starts ``version``'s
        processes from the same code, not from whatever is current."""
        spec: dict[str, Any] = {
            "commands": {str(g): list(_command(c)) for g, c in (commands or {}).items()},
        }
        if workdir is not None:
            spec["workdir"] = os.fspath(Path(workdir).absolute())
        with self._mu:
            self._specs.setdefault(str(version), {}).update(spec)
            self._save()

    def _register_release(self, release: Release) -> None:
        """Give machines of ``release.version`` its environment (``versions`` still wins)
        and its kill signal and timeout (kept in ``state.json`` for a later provider)."""
        spec: dict[str, Any] = {"env": dict(release.env)}
        with contextlib.suppress(InvalidConfig):
            _signal(release.kill_signal)
            spec["kill_signal"] = release.kill_signal
            spec["kill_timeout"] = release.kill_timeout
        with self._mu:
            old = self._specs.get(release.version, {})
            if all(old.get(k) == v for k, v in spec.items()):
                return
            self._specs.setdefault(release.version, {}).update(spec)
            self._save()

    def _kill_of(self, version: str) -> tuple[int, float]:
        """How a process of ``version`` is stopped: its release's signal and timeout,
        else the provider's."""
        spec = self._specs.get(version, {})
        if "kill_signal" in spec:
            with contextlib.suppress(InvalidConfig, TypeError, ValueError):
                return _signal(str(spec["kill_signal"])), float(spec["kill_timeout"])
        return self._kill_signal, self.kill_timeout

    def _command_of(self, version: str, group: str) -> tuple[tuple[str, ...], str | None]:
        """The command line and working directory of ``group``'s processes of ``version``."""
        spec = self._specs.get(version, {})
        commands = spec.get("commands") or {}
        argv = commands.get(group)
        command = tuple(argv) if argv else self.commands.get(group, self.command)
        workdir = spec.get("workdir") or self.workdir
        return command, workdir

    def launch(
        self,
        version: str,
        count: int = 1,
        *,
        group: str | None = None,
        region: str | None = None,
    ) -> list[Machine]:
        """Start ``count`` machines of ``version`` that take traffic (the fleet to deploy to)."""
        return [
            self._create(group or self.group, region or self.region, version, None, None, False)
            for _ in range(count)
        ]

    def wait_healthy(self, timeout: float = 30.0) -> FleetState:
        """Wait until every machine is started and passing; :class:`~zdd.DeployTimeout` if not."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.observe()
            bad = [
                m
                for m in state.machines
                if not (m.state is MachineState.STARTED and m.health is Health.PASSING)
            ]
            if not bad:
                return state
            if time.monotonic() >= deadline:
                checks: dict[str, str] = {}
                with contextlib.suppress(ActionFailed):
                    checks = {r["svname"]: _check_text(r) for r in self.stats()}
                with self._mu:
                    servers = {r.id: r.server for r in self._recs.values()}
                what = ", ".join(
                    f"{m.id} ({m.state.value}, {m.health.value}"
                    + (f": {checks[s]}" if (s := servers.get(m.id)) and checks.get(s) else "")
                    + ")"
                    for m in bad
                )
                raise DeployTimeout(f"not healthy within {timeout:g}s: {what}")
            time.sleep(min(0.05, self.check_interval / 4))

    def pids(self) -> dict[str, int]:
        """The running processes: ``{"haproxy": pid, machine id: pid, ...}``."""
        out: dict[str, int] = {}
        with self._mu:
            if self._haproxy is not None and self._haproxy.alive():
                out["haproxy"] = self._haproxy.pid
            for rec in self._recs.values():
                if rec.proc is not None and rec.proc.alive():
                    out[rec.id] = rec.proc.pid
        return out

    def runtime(self, command: str) -> str:
        """Send one command to HAProxy's runtime API and return its answer (for debugging)."""
        if "\n" in command or ";" in command:
            raise InvalidConfig("one runtime API command at a time", field="command")
        return self._cli(command)

    def log_path(self, machine_id: str) -> Path:
        """Where a machine's output goes (every process it ran, appended)."""
        return self.state_dir / "logs" / f"{machine_id}.log"

    # -- the Provider protocol ---------------------------------------------------

    def capabilities(self) -> Capabilities:
        return Capabilities(traffic_weights=True, cordon=True, volumes=False)

    def observe(self) -> FleetState:
        self._check_open()
        self._ensure_haproxy()
        rows = self._servers()
        with self._mu:
            recs = list(self._recs.values())
            record = dict(self._record)
        record.update(_instructions(self.state_dir))
        return FleetState(
            machines=[self._freeze(r, rows) for r in recs if r.phase != "destroying"],
            record=record,
        )

    def machine(self, machine_id: str) -> Machine | None:
        self._check_open()
        self._ensure_haproxy()
        with self._mu:
            rec = self._recs.get(machine_id)
        if rec is None or rec.phase == "destroying":
            return None
        return self._freeze(rec, self._servers())

    def perform(self, action: Action) -> Machine | None:
        self._check_open()
        self._ensure_haproxy()
        self._retry_deletes()
        release = getattr(action, "release", None)
        if isinstance(release, Release):
            # what a machine of this version looks like comes with the action
            self._register_release(release)
        if isinstance(action, Create):
            return self._create(
                action.group, action.region, action.version, action.key, action.role, action.hidden
            )
        if isinstance(action, Label) and action.machine is None:
            with self._mu:
                if action.replace:
                    self._record.clear()
                    # a new deployment: operators' instructions were for an earlier one
                    with contextlib.suppress(OSError):
                        (self.state_dir / _INSTRUCTIONS).unlink()
                self._record.update(action.values)
                self._save()
            return None
        if isinstance(action, RunCommand):
            self._run_command(action)
            return None
        mid = action.machine or ""
        with self._machine_lock(mid):
            rec = self._get(mid)
            if isinstance(action, Update):
                self._update(rec, action.version)
            elif isinstance(action, Start):
                if not rec.running:
                    self._restart(rec)
            elif isinstance(action, Stop):
                self._stop(rec, _signal(action.signal), action.timeout)
            elif isinstance(action, Destroy):
                self._destroy(rec)
                return None
            elif isinstance(action, Cordon):
                self._set_cordon(rec, True)
            elif isinstance(action, Uncordon):
                with self._mu:
                    if action.weight is not None:
                        rec.labels["zdd.weight"] = str(action.weight)
                    else:
                        rec.labels.pop("zdd.weight", None)
                self._set_cordon(rec, False)
            elif isinstance(action, Label):
                with self._mu:
                    rec.labels.update(action.values)
                    self._save()
                self._apply_weights(rec.group)
            else:
                raise ProviderContractError(f"the local provider cannot perform {action.kind}")
        return self._freeze(rec, self._servers())

    def acquire_lock(self, owner: str, ttl: float) -> None:
        now = time.time()
        with self._lock_file() as path:
            held = _read_json(path)
            if held:
                holder = str(held.get("owner", "someone"))
                since = str(held.get("since", ""))
                try:
                    expires = float(held.get("expires", 0))
                except (TypeError, ValueError):
                    expires = 0.0  # a damaged lock holds nothing
                gone = held.get("host") == socket.gethostname() and not _pid_exists(
                    held.get("pid"), held.get("pid_start")
                )
                if holder != owner and now < expires and not gone:
                    raise DeploymentLocked(
                        f"the local fleet in {self.state_dir} is locked by {holder} since {since} "
                        f"(expires in {expires - now:.0f}s unless renewed)",
                        holder=holder,
                        since=since or None,
                    )
                if holder != owner:
                    held = {}
            _write_json(
                path,
                {
                    "owner": owner,
                    "since": held.get("since") or _iso(now),
                    "expires": now + ttl,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "pid_start": _start_time(os.getpid()),
                },
            )

    def release_lock(self, owner: str) -> None:
        with self._lock_file() as path:
            held = _read_json(path)
            if held and held.get("owner") == owner:
                path.unlink(missing_ok=True)

    # -- cleanup ---------------------------------------------------------------

    def close(self) -> None:
        """Stop every machine process and HAProxy; remove the socket, state and lock.

        Safe to call more than once, and from a ``finally`` during Ctrl-C: a
        second interrupt while waiting for processes SIGKILLs them at once.
        """
        if self._closed:
            return
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        self._teardown()
        self._closed = True

    def detach(self) -> None:
        """Forget the fleet without stopping it: a new provider over ``state_dir`` adopts it."""
        if self._closed:
            return
        with self._mu:
            self._save()
            self._closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)

    def _teardown(self) -> None:
        with self._mu:
            procs = [r.proc for r in self._recs.values() if r.proc is not None and r.proc.alive()]
            haproxy = self._haproxy
        try:
            for p in procs:
                p.signal_group(self._kill_signal)
            deadline = time.monotonic() + self.kill_timeout
            for p in procs:
                p.wait(max(0.0, deadline - time.monotonic()))
        finally:
            # also on a second Ctrl-C: nothing is left behind
            for p in procs:
                p.signal_group(signal.SIGKILL)
            if haproxy is not None and haproxy.alive():
                haproxy.signal_group(signal.SIGTERM)
                if not haproxy.wait(2.0):
                    haproxy.signal_group(signal.SIGKILL)
                    haproxy.wait(2.0)
            for p in procs:
                p.wait(2.0)
            _sweep(self.fleet, keep=set())
            for name in (_SOCKET, _STATE, _LOCK, _LOCK_GUARD, _CONFIG, TARGETS, _INSTRUCTIONS):
                with contextlib.suppress(OSError):
                    (self.state_dir / name).unlink()
            if self._own_dir:
                shutil.rmtree(self.state_dir, ignore_errors=True)

    # -- machines --------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ActionFailed("the local provider is closed")

    @contextlib.contextmanager
    def _machine_lock(self, mid: str) -> Iterator[None]:
        with self._mu:
            lock = self._machine_locks.setdefault(mid, threading.Lock())
        with lock:
            yield

    def _get(self, mid: str) -> _Rec:
        with self._mu:
            rec = self._recs.get(mid)
        if rec is None or rec.phase == "destroying":
            raise ActionFailed(f"machine {mid} not found")
        return rec

    def _create(
        self,
        group: str,
        region: str,
        version: str,
        key: str | None,
        role: str | None,
        hidden: bool,
    ) -> Machine:
        with self._mu:
            if key is not None:
                for rec in self._recs.values():
                    if rec.labels.get("zdd.key") == key and rec.phase != "destroying":
                        return self._freeze(rec, self._servers())  # idempotent on the key
            if key is not None and _MACHINE_ID.match(key) and key not in self._recs:
                mid = key  # the plan's name for it: the same in plan, progress and report
            else:
                mid = f"local-{self._next_id}"
                self._next_id += 1
            labels = {}
            if key is not None:
                labels["zdd.key"] = key
            if role is not None:
                labels["zdd.role"] = role
            rec = _Rec(
                id=mid,
                group=group,
                region=region,
                version=version,
                labels=labels,
                cordoned=hidden,
                phase="creating",
            )
            self._recs[mid] = rec
            self._save()
        with self._machine_lock(mid):
            try:
                self._start_process(rec)
            except BaseException:
                with self._mu:
                    self._recs.pop(mid, None)
                    self._save()
                if rec.proc is not None:
                    rec.proc.stop(signal.SIGKILL, 0)
                if rec.server is not None:
                    with contextlib.suppress(ActionFailed):
                        self._drop_server(rec.server, wait=0.5)
                raise
            finally:
                rec.phase = None
        return self._freeze(rec, self._servers())

    def _environment(self, version: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        env.update(self._specs.get(version, {}).get("env") or {})
        env.update(self.versions.get(version, {}))
        env["ZDD_VERSION"] = version
        return env

    def _start_process(self, rec: _Rec, version: str | None = None) -> None:
        """Start a new process for ``rec`` (a new generation, of ``version`` if given) and
        put it behind HAProxy."""
        version = version or rec.version
        with self._mu:
            port = _pick_port("127.0.0.1", self._used_ports())
            self._reserved.add(port)
        try:
            env = self._environment(version)
            env["PORT"] = str(port)
            env[self.port_env] = str(port)
            env[FLEET_ENV] = self.fleet
            command, workdir = self._command_of(version, rec.group)
            try:
                proc = _Proc.spawn(
                    command,
                    env=env,
                    cwd=workdir,
                    log=self.log_path(rec.id),
                    marker=f"{FLEET_ENV}={self.fleet}",
                )
            except OSError as exc:
                raise ActionFailed(
                    f"cannot start {rec.id}: {redact_command(shlex.join(command))}: "
                    f"{exc.strerror or exc}"
                ) from None
            with self._mu:
                rec.version = version
                rec.proc = proc
                rec.port = port
                rec.gen += 1
                rec.stop_requested = False
                rec.server = None
                self._save()
        finally:
            with self._mu:
                self._reserved.discard(port)
        if rec.group == self.group:
            self._add_server(rec)
            self._apply_weights(rec.group)

    def _update(self, rec: _Rec, version: str) -> None:
        old_proc, old_server, old_version = rec.proc, rec.server, rec.version
        with self._mu:
            rec.phase = "updating"
        try:
            self._start_process(rec, version)
            if old_server is not None:
                self._server_cmd(f"set server {BACKEND}/{old_server} state maint", missing_ok=True)
            if old_proc is not None:
                old_proc.stop(*self._kill_of(old_version))
            if old_server is not None:
                self._drop_server(old_server)
        finally:
            with self._mu:
                rec.phase = None
                self._save()

    def _restart(self, rec: _Rec) -> None:
        if rec.server is not None:
            self._drop_server(rec.server)
            with self._mu:
                rec.server = None
        with self._mu:
            rec.phase = "starting"
        try:
            self._start_process(rec)
        finally:
            rec.phase = None

    def _stop(self, rec: _Rec, sig: int, timeout: float) -> None:
        with self._mu:
            rec.stop_requested = True
            rec.phase = "stopping"
            self._save()
        try:
            if rec.server is not None:
                self._server_cmd(f"set server {BACKEND}/{rec.server} state maint", missing_ok=True)
            if rec.proc is not None:
                rec.proc.stop(sig, timeout)
            if rec.server is not None:
                self._drop_server(rec.server)
                with self._mu:
                    rec.server = None
        finally:
            with self._mu:
                rec.phase = None
                self._save()
        self._apply_weights(rec.group)

    def _destroy(self, rec: _Rec) -> None:
        if rec.running:
            self._stop(rec, *self._kill_of(rec.version))
        with self._mu:
            rec.phase = "destroying"
        if rec.server is not None:
            self._server_cmd(f"set server {BACKEND}/{rec.server} state maint", missing_ok=True)
            self._drop_server(rec.server)
        with self._mu:
            self._recs.pop(rec.id, None)
            self._save()
        self._apply_weights(rec.group)

    def _set_cordon(self, rec: _Rec, cordoned: bool) -> None:
        with self._mu:
            rec.cordoned = cordoned
            self._save()
        if rec.server is not None and rec.running:
            state = "drain" if cordoned else "ready"
            self._server_cmd(f"set server {BACKEND}/{rec.server} state {state}")
        self._apply_weights(rec.group)

    def _freeze(self, rec: _Rec, rows: Mapping[str, Mapping[str, str]]) -> Machine:
        with self._mu:
            state = self._state(rec)
            health = Health.CRITICAL if state is MachineState.FAILED else Health.UNKNOWN
            if state is MachineState.STARTED:
                if rec.group != self.group:
                    health = Health.PASSING  # no checks: started is healthy
                elif rec.server is not None and rec.server in rows:
                    health = _health(rows[rec.server])
            rec.passing = health is Health.PASSING and rec.group == self.group
            return Machine(
                id=rec.id,
                version=rec.version,
                group=rec.group,
                region=rec.region,
                state=state,
                health=health,
                cordoned=rec.cordoned,
                labels=rec.labels,
            )

    @staticmethod
    def _state(rec: _Rec) -> MachineState:
        if rec.phase == "updating":
            return MachineState.UPDATING
        if rec.phase == "destroying":
            return MachineState.DESTROYING
        if rec.proc is None:
            return MachineState.CREATED
        if rec.proc.alive():
            if rec.phase == "stopping":
                return MachineState.STOPPING
            return MachineState.STARTED
        if rec.phase == "starting":
            return MachineState.STARTING
        return MachineState.STOPPED if rec.stop_requested else MachineState.FAILED

    def _used_ports(self) -> set[int]:
        used = {r.port for r in self._recs.values() if r.port is not None and r.running}
        return used | self._reserved | {self.port}

    # -- release commands ------------------------------------------------------

    def _run_command(self, action: RunCommand) -> None:
        try:
            argv = shlex.split(action.command)
        except ValueError as exc:
            raise ActionFailed(f"{action.phase} command cannot be split: {exc}") from None
        if not argv:
            raise ActionFailed(f"{action.phase} command is empty")
        version = _target_version(action.target)
        shown = redact_command(action.command)
        try:
            popen = subprocess.Popen(
                argv,
                cwd=self._command_of(version, self.group)[1],
                env=self._environment(version),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise ActionFailed(
                f"{action.phase} command `{shown}` could not start: {exc.strerror or exc}"
            ) from None
        try:
            out, _ = popen.communicate(timeout=action.timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
            out, _ = popen.communicate()
            raise ActionFailed(
                f"{action.phase} command `{shown}` did not finish within {action.timeout:g}s"
                + _output(out)
            ) from None
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
            raise
        if popen.returncode != 0:
            raise ActionFailed(
                f"{action.phase} command `{shown}` exited with status {popen.returncode}"
                + _output(out)
            )

    # -- HAProxy -----------------------------------------------------------------

    def _start_haproxy(self, port: int) -> None:
        attempts = 3 if port == 0 else 1
        for attempt in range(attempts):
            chosen = port or _pick_port(self.bind, set())
            self.port = chosen
            config = haproxy_config(
                socket_path=self._socket_path,
                bind=self.bind,
                port=chosen,
                health_path=self.health_path,
                check_interval=self.check_interval,
            )
            cfg = self.state_dir / _CONFIG
            write_private(cfg, config)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._socket_path)
            log = self.state_dir / _HAPROXY_LOG
            try:
                proc = _Proc.spawn(
                    [self._haproxy_bin, "-f", str(cfg), "-db"],
                    env={**os.environ, HAPROXY_ENV: self.fleet},
                    cwd=str(self.state_dir),
                    log=log,
                    marker=f"{HAPROXY_ENV}={self.fleet}",
                )
            except OSError as exc:
                raise InvalidConfig(f"{HAPROXY_MISSING} ({exc.strerror or exc})") from None
            self._haproxy = proc
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline:
                if not proc.alive():
                    break
                with contextlib.suppress(ActionFailed):
                    if "Name: HAProxy" in self._cli("show info", timeout=1.0):
                        return
                time.sleep(0.02)
            proc.stop(signal.SIGKILL, 0)
            self._haproxy = None
            why = _read_tail(log)
            if attempt + 1 < attempts and "cannot bind" in why:
                continue  # the free port was taken meanwhile: pick another
            raise InvalidConfig(
                f"HAProxy did not start on {self.bind}:{chosen}: {why or 'no output'}",
                field="port" if "bind" in why else None,
            )

    def _ensure_haproxy(self) -> None:
        """Notice a dead HAProxy and start a new one on the same address, serving at once
        the machines that were serving (their last check passed) and checking the rest.
        If it cannot start, the deployment stops: :class:`~zdd.ActionFailed` says so."""
        haproxy = self._haproxy
        if haproxy is None or haproxy.alive():
            return
        with self._haproxy_mu:
            if self._haproxy is not haproxy:
                return  # another thread restarted it
            # let it finish dying: its listening socket is only closed once every
            # thread of it has exited
            haproxy.wait(5.0)
            try:
                self._start_haproxy(self.port)
            except InvalidConfig as exc:
                raise ActionFailed(
                    f"HAProxy (pid {haproxy.pid}) died and could not be restarted on "
                    f"{self.bind}:{self.port}: {exc}; the app's processes still run "
                    f"(state in {self.state_dir})"
                ) from None
            self.haproxy_restarts += 1
            with self._mu:
                recs = [r for r in self._recs.values() if r.group == self.group]
            for rec in recs:
                rec.server = None
                rec.weight = None
                if rec.running and rec.phase != "destroying":
                    rec.gen += 1
                    self._add_server(rec, up=rec.passing)
            self._apply_weights(self.group)
            self._save()

    def _cli(self, command: str, *, timeout: float = 5.0) -> str:
        return HAProxyRuntime(str(self._socket_path)).cli(command, timeout=timeout)

    def _server_cmd(self, command: str, *, missing_ok: bool = False) -> None:
        HAProxyRuntime(str(self._socket_path)).command(command, missing_ok=missing_ok)

    def _servers(self) -> dict[str, dict[str, str]]:
        """``show servers state app``: one row per server name. An HAProxy that dies
        under the question is waited for (a second), restarted, and asked again."""
        try:
            return HAProxyRuntime(str(self._socket_path)).servers()
        except ActionFailed:
            haproxy = self._haproxy
            if haproxy is None or not haproxy.wait(1.0):
                raise  # it runs: the failure is something else
        self._ensure_haproxy()
        return HAProxyRuntime(str(self._socket_path)).servers()

    def stats(self) -> list[dict[str, str]]:
        """``show stat`` for the backend's servers (status, check_status, scur, weight, ...)."""
        answer = self._cli("show stat").lstrip("# ")
        lines = [line for line in answer.splitlines() if line.strip()]
        if not lines:
            return []
        header = lines[0].split(",")
        out = []
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == BACKEND and row.get("svname") not in ("BACKEND", None):
                out.append(row)
        return out

    def _add_server(self, rec: _Rec, *, up: bool = False) -> None:
        """Put ``rec``'s process behind HAProxy: held down until its first passing check,
        or (``up``: it was serving before HAProxy restarted) serving at once."""
        name = rec.server_name()
        if not _SERVER_NAME.match(name):
            raise ProviderContractError(f"cannot name an HAProxy server {name!r}")
        with self._mu:
            weight = self._weights(rec.group).get(rec.id, DEFAULT_WEIGHT)
        inter = _ms(self.check_interval)
        add = (
            f"add server {BACKEND}/{name} 127.0.0.1:{rec.port} "
            f"check inter {inter} fall 2 rise 1 weight {weight}"
        )
        answer = self._cli(add).strip()
        if answer.startswith("Already exists"):
            self._server_cmd(f"set server {BACKEND}/{name} state maint", missing_ok=True)
            self._drop_server(name)
            answer = self._cli(add).strip()
        if not answer.startswith("New server registered"):
            raise ActionFailed(f"HAProxy refused `add server {BACKEND}/{name}`: {answer}")
        with self._mu:
            rec.server = name
            rec.weight = weight
            self._save()
        self._server_cmd(f"enable health {BACKEND}/{name}")
        # out of maintenance into drain, held down until its first passing check
        self._server_cmd(f"set server {BACKEND}/{name} state drain")
        self._server_cmd(f"set server {BACKEND}/{name} health {'up' if up else 'down'}")
        if not rec.cordoned:
            self._server_cmd(f"set server {BACKEND}/{name} state ready")

    def _drop_server(self, name: str, wait: float = 3.0) -> None:
        """Delete a server (in maintenance by now), closing what is left of its sessions."""
        deadline = time.monotonic() + wait
        shut = False
        while True:
            self._server_cmd(f"set server {BACKEND}/{name} state maint", missing_ok=True)
            answer = self._cli(f"del server {BACKEND}/{name}").strip()
            if answer.startswith(("Server deleted", "No such server")):
                with self._mu:
                    self._pending_deletes.discard(name)
                return
            if not shut:
                self._cli(f"shutdown sessions server {BACKEND}/{name}")
                shut = True
            if time.monotonic() >= deadline:
                with self._mu:
                    self._pending_deletes.add(name)
                    self._save()
                return
            time.sleep(0.05)

    def _retry_deletes(self) -> None:
        with self._mu:
            pending = list(self._pending_deletes)
        for name in pending:
            self._drop_server(name, wait=0.0)

    def _weights(self, group: str) -> dict[str, int]:
        """HAProxy weights so that the canaries (``zdd.weight`` label) share their percent."""
        recs = [r for r in self._recs.values() if r.group == group and r.phase != "destroying"]
        serving = [r for r in recs if not r.cordoned and r.running]
        canaries = [r for r in serving if _digits(r.labels.get("zdd.weight", ""))]
        others = [r for r in serving if r not in canaries]
        if not canaries or not others:
            return {r.id: DEFAULT_WEIGHT for r in recs}
        percent = min(100, int(canaries[0].labels["zdd.weight"]))
        a = percent / len(canaries)
        b = (100 - percent) / len(others)
        scale = MAX_WEIGHT / max(a, b)
        wc = max(1, round(a * scale)) if a > 0 else 0
        wo = max(1, round(b * scale)) if b > 0 else 0
        return {r.id: wc if _digits(r.labels.get("zdd.weight", "")) else wo for r in recs}

    def _apply_weights(self, group: str) -> None:
        if group != self.group:
            return
        with self._weights_mu:
            with self._mu:
                wanted = self._weights(group)
                todo = [
                    (r, wanted[r.id])
                    for r in self._recs.values()
                    if r.id in wanted and r.server is not None and r.weight != wanted[r.id]
                ]
            for rec, weight in todo:
                with contextlib.suppress(ActionFailed):
                    server = rec.server
                    if server is not None:
                        self._server_cmd(
                            f"set server {BACKEND}/{server} weight {weight}", missing_ok=True
                        )
                        rec.weight = weight

    # -- state and adoption ----------------------------------------------------

    def _save(self) -> None:
        with self._mu:
            doc = {
                "format": _FORMAT,
                "fleet": self.fleet,
                "command": list(self.command),
                "haproxy": {
                    "pid": self._haproxy.pid if self._haproxy else None,
                    "start": self._haproxy.start if self._haproxy else None,
                    "bind": self.bind,
                    "port": self.port,
                    "socket": self._socket_path,
                },
                "group": self.group,
                "next_id": self._next_id,
                "releases": self._specs,
                "record": dict(self._record),
                "machines": {mid: r.to_json() for mid, r in self._recs.items()},
                "pending_deletes": sorted(self._pending_deletes),
            }
            _write_json(self.state_dir / _STATE, doc)
            targets = [
                {
                    "targets": [f"127.0.0.1:{r.port}"],
                    "labels": {"version": r.version, "group": r.group, "machine": r.id},
                }
                for r in sorted(self._recs.values(), key=lambda r: r.id)
                if r.port is not None
                and r.proc is not None
                and not r.stop_requested
                and r.phase != "destroying"
            ]
            if targets != self._targets:
                write_private(self.state_dir / TARGETS, json.dumps(targets, indent=1))
                self._targets = targets

    def _adopt(self) -> None:
        doc = _read_json(self.state_dir / _STATE)
        if not doc or doc.get("format") != _FORMAT:
            raise InvalidConfig(
                f"{self.state_dir / _STATE} is not a zdd local fleet state; "
                "use another state_dir or remove it",
                field="state_dir",
            )
        try:
            self.fleet = str(doc["fleet"])
            self._next_id = int(doc["next_id"])
            self._record = {str(k): str(v) for k, v in dict(doc["record"]).items()}
            marker = f"{FLEET_ENV}={self.fleet}"
            for mid, m in dict(doc["machines"]).items():
                if not _MACHINE_ID.match(str(mid)):
                    raise ValueError(f"machine id {str(mid)[:40]!r}")
                rec = _Rec.from_json(str(mid), m, marker)
                self._recs[rec.id] = rec
            self._specs = _specs(doc.get("releases"))
            self._pending_deletes = set(doc.get("pending_deletes") or [])
            hx = dict(doc["haproxy"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidConfig(
                f"{self.state_dir / _STATE} is damaged ({exc}); remove it to start afresh",
                field="state_dir",
            ) from None
        self.bind = str(hx.get("bind") or self.bind)
        pid = hx.get("pid")
        start = hx.get("start")
        haproxy = (
            _Proc(
                pid=pid,
                start=start if isinstance(start, str) else None,
                marker=f"{HAPROXY_ENV}={self.fleet}",
            )
            if isinstance(pid, int) and not isinstance(pid, bool)
            else None
        )
        answering = False
        if haproxy is not None and haproxy.alive():
            with contextlib.suppress(ActionFailed):
                answering = "Name: HAProxy" in self._cli("show info", timeout=2.0)
        if answering:
            assert haproxy is not None
            self._haproxy = haproxy
            self.port = int(hx["port"])
        else:
            if haproxy is not None:
                haproxy.stop(signal.SIGKILL, 0)
            old = int(hx.get("port") or 0)
            self._start_haproxy(old if old and _port_free(self.bind, old) else 0)
        # reconcile HAProxy's servers with the records
        rows = self._servers()
        known = {r.server for r in self._recs.values() if r.server}
        for name in rows:
            if name not in known:
                self._server_cmd(f"set server {BACKEND}/{name} state maint", missing_ok=True)
                self._drop_server(name)
        for rec in self._recs.values():
            if rec.group != self.group:
                continue
            if rec.running and (rec.server is None or rec.server not in rows):
                if rec.server is not None:
                    rec.gen += 1  # a fresh name: the old one may linger in a dead HAProxy
                rec.server = None
                self._add_server(rec, up=rec.passing)
            elif rec.server in rows and rec.stop_requested and not rec.running:
                assert rec.server is not None
                self._drop_server(rec.server)
                rec.server = None
        self._retry_deletes()
        keep = {r.proc.pid for r in self._recs.values() if r.proc is not None and r.running}
        _sweep(self.fleet, keep=keep)
        for rec in self._recs.values():
            rec.weight = None
        self._apply_weights(self.group)
        self._save()

    @contextlib.contextmanager
    def _lock_file(self) -> Iterator[Path]:
        guard = self.state_dir / _LOCK_GUARD
        with os.fdopen(open_private(guard, os.O_RDWR | os.O_CREAT), "r+b") as g:
            fcntl.flock(g.fileno(), fcntl.LOCK_EX)
            try:
                yield self.state_dir / _LOCK
            finally:
                fcntl.flock(g.fileno(), fcntl.LOCK_UN)


# -- helpers ----------------------------------------------------------------------


def _command(command: Sequence[str] | str) -> tuple[str, ...]:
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if not argv or not all(isinstance(a, str) for a in argv):
        raise InvalidConfig(
            'must be the app\'s command line, e.g. ["python", "-m", "myapp"]', field="command"
        )
    return tuple(argv)


def _check_bind(bind: str) -> str:
    try:
        return str(ipaddress.ip_address(bind))
    except ValueError:
        raise InvalidConfig(
            f"must be an IP address such as 127.0.0.1, got {bind!r}", field="bind"
        ) from None


def _target_version(target: str) -> str:
    return next(iter(parse_target(target).values()), target)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; ``{}`` when missing, damaged or a planted link."""
    try:
        doc = json.loads(read_private(path))
    except (OSError, ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _write_json(path: Path, doc: Mapping[str, Any]) -> None:
    write_private(path, json.dumps(doc, indent=1, sort_keys=True))


def _fleet_doc(path: Path) -> dict[str, Any]:
    """``path``'s ``state.json`` for a later process (peek, shutdown): the directory
    checked as it is for a provider, the document refused unless it is a fleet's."""
    check_private_dir(path, "state_dir")
    doc = _read_json(path / _STATE)
    if not doc or doc.get("format") != _FORMAT:
        raise InvalidConfig(
            f"{path / _STATE} is not a zdd local fleet state (damaged, or a link)",
            field="state_dir",
        )
    return doc


def _instructions(state_dir: Path) -> dict[str, str]:
    """The operators' instructions left in ``state_dir`` (``op.*`` keys only)."""
    doc = _read_json(state_dir / _INSTRUCTIONS)
    return {
        str(k): str(v)
        for k, v in doc.items()
        if isinstance(k, str) and k.startswith("op.") and isinstance(v, str) and len(v) < 10_000
    }


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 6


def _specs(doc: object) -> dict[str, dict[str, Any]]:
    """The per-version specs of a state file, checked (a damaged one is a ValueError)."""
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValueError("releases")
    out: dict[str, dict[str, Any]] = {}
    for version, spec in doc.items():
        if not isinstance(spec, dict):
            raise ValueError(f"releases.{str(version)[:40]}")
        clean: dict[str, Any] = {}
        commands = spec.get("commands") or {}
        if not isinstance(commands, dict):
            raise ValueError(f"releases.{str(version)[:40]}.commands")
        clean["commands"] = {str(g): list(_command(c)) for g, c in commands.items()}
        if isinstance(spec.get("workdir"), str):
            clean["workdir"] = spec["workdir"]
        env = spec.get("env") or {}
        if isinstance(env, dict):
            clean["env"] = {str(k): str(v) for k, v in env.items()}
        if isinstance(spec.get("kill_signal"), str) and isinstance(
            spec.get("kill_timeout"), int | float
        ):
            clean["kill_signal"] = spec["kill_signal"]
            clean["kill_timeout"] = float(spec["kill_timeout"])
        out[str(version)] = clean
    return out
