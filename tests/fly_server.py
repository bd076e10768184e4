"""A local Fly Machines API server for tests: real HTTP on 127.0.0.1, stdlib only.

It speaks the subset of Fly's published Machines API that a deploy tool needs
(tests/fly_openapi_subset.json, with the response shapes of Fly's docs and
fly-go where the spec leaves them open; see machines-api-notes.md), and it is
backed by zdd's :class:`~zdd.providers.simulated.SimulatedFleet`, whose virtual
clock runs at ``speed`` times wall time: at every request the fleet's events up
to "now" are run, under one lock.

What the fleet does not model is kept here, per machine: the Fly fields (name,
``version``/``instance_id`` which changes on every update, ``config``, events,
timestamps), metadata and leases. Release-command machines (process group
``fly_app_release_command``, or ``auto_destroy`` with restart policy ``no``)
run outside the fleet: they boot, exit with :attr:`release_exit_code` after
:attr:`release_runtime` virtual seconds, and are destroyed.

Every request body and query parameter is validated against the subset
(:mod:`openapi_check`); a violation answers 400 and is kept in
:attr:`FlyMachinesServer.violations`, which tests assert stays empty.

Usage::

    with FlyMachinesServer(zdd.FleetState.uniform(3)) as server:
        ...  # point a client at server.url with token "test-token"
        assert server.violations == []
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import itertools
import json
import random
import re
import socket
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import attrs
from openapi_check import OpenAPIChecker, query_bool

import zdd
from zdd.providers.simulated import ReleaseBehaviour, SimulatedFleet

__all__ = ["FlyMachinesServer", "RecordedRequest"]

RELEASE_GROUP = "fly_app_release_command"
META_GROUP = "fly_process_group"
META_VERSION = "fly_release_version"
META_PLATFORM = "fly_platform_version"
FLY_KEYS = (META_GROUP, META_VERSION, META_PLATFORM)
NONCE_HEADER = "fly-machine-lease-nonce"

M = "/v1/apps/{app_name}/machines"
_PATH = re.compile(
    r"/v1/apps/(?P<app>[^/]+)/machines"
    r"(?:/(?P<id>[^/]+)"
    r"(?:/(?P<action>start|stop|cordon|uncordon|wait|lease|events|versions|metadata)"
    r"(?:/(?P<key>[^/]+))?)?)?"
)
_WAIT_STATES = ("started", "stopped", "suspended", "destroyed", "failed", "settled")
_SETTLED = frozenset({"created", "started", "stopped", "suspended", "failed", "destroyed"})
_DESTROYABLE = frozenset({"stopped", "suspended", "failed", "created"})
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ADJ = ("quiet", "bold", "misty", "sparkling", "young", "proud", "late", "dry", "wild", "calm")
_NOUN = ("river", "pine", "meadow", "thunder", "sea", "field", "dew", "snow", "moon", "leaf")
HealthMode = Literal["passing", "failing", "flaky"]


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """One request the server received (never its headers: no token is kept).

    ``status`` is ``None`` while it is in flight, and stays ``None`` when the
    connection was dropped on purpose (``drop_rate``).
    """

    method: str
    path: str
    query: dict[str, list[str]]
    status: int | None


@dataclasses.dataclass
class _Lease:
    nonce: str
    owner: str
    description: str
    expires_at: float  # wall clock, unix seconds


@dataclasses.dataclass
class _Rule:
    kind: str  # "drop" or "fail"
    method: str
    path: re.Pattern[str]
    body_contains: str
    left: int


@dataclasses.dataclass
class _Fly:
    """What Fly knows about a machine beyond the simulated fleet's model."""

    id: str
    name: str
    region: str
    config: dict[str, Any]
    version: str  # Fly's 26-char machine version (instance_id)
    created_at: float
    updated_at: float
    seq: int
    sim: Any = None  # the fleet's machine (None: a release-command machine)
    state: str = "created"  # only used when sim is None
    cordoned: bool = False  # only used when sim is None
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # newest first
    lease: _Lease | None = None
    last_state: str = ""
    last_health: str = ""
    health_at: float = 0.0
    gen: int = 0
    private_ip: str = ""
    #: (Fly version id, config) of every config the machine had, oldest first
    history: list[tuple[str, dict[str, Any]]] = dataclasses.field(default_factory=list)

    @property
    def destroyed(self) -> bool:
        if self.sim is not None:
            return bool(self.sim.state is zdd.MachineState.DESTROYED)
        return self.state == "destroyed"


class _Reply:
    def __init__(
        self, status: int, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> None:
        self.status = status
        self.payload = b"" if status == 204 else json.dumps(body).encode()
        self.headers = dict(headers or {})


class _Error(Exception):
    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.reply = _Reply(status, {"error": message}, headers)


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _noop() -> None:
    pass


class FlyMachinesServer:
    """A Fly Machines API for one app, on 127.0.0.1, backed by a simulated fleet.

    Args:
        state: the fleet to start from (destroyed machines are left out).
        app: the app name in the URL.
        token: the API token (``Authorization: Bearer <token>`` or ``FlyV1 <token>``).
        speed: virtual seconds per wall second.
        seed: seeds the fleet, ids and fault draws.
        releases: fleet behaviour per release version (boot time, health...);
            checks, grace period and interval come from each machine's config.

    Settable at any time: :attr:`fault_rate`, :attr:`drop_rate`,
    :attr:`slow_rate`, :attr:`slow_seconds`, :attr:`release_exit_code`,
    :attr:`release_runtime`, :attr:`max_wait_seconds`; see also
    :meth:`hold_lease` and :meth:`set_image_health`.
    """

    def __init__(
        self,
        state: zdd.FleetState,
        *,
        app: str = "hello",
        token: str = "test-token",
        speed: float = 50.0,
        seed: int = 0,
        releases: Mapping[str, ReleaseBehaviour] | None = None,
    ) -> None:
        self.app = app
        self._token = token
        self.speed = float(speed)
        #: owner of the leases this API's caller takes
        self.owner = "zdd-tests@example.com"
        #: fraction of requests answered 500 or 429 (with Retry-After 0 or 1)
        self.fault_rate = 0.0
        #: fraction of requests whose connection is closed without an answer,
        #: after the request was carried out (a create did create its machine)
        self.drop_rate = 0.0
        #: fraction of requests delayed by slow_seconds (wall) before handling
        self.slow_rate = 0.0
        self.slow_seconds = 0.5
        #: exit code of release-command machines
        self.release_exit_code = 0
        #: virtual seconds a release command runs, and boots
        self.release_runtime = 5.0
        self.release_boot_time = 1.0
        #: a wait answers 408 after min(timeout / speed, max_wait_seconds) wall seconds
        self.max_wait_seconds = 2.0
        self.requests: list[RecordedRequest] = []
        #: called with each answered request (and its body) before the answer is sent:
        #: a test kills or stops the deployer here, the request carried out
        self.after_answer: Callable[[RecordedRequest, bytes], None] | None = None
        self._rules: list[_Rule] = []
        self.violations: list[str] = []
        #: machines destroyed while holding a volume (Fly allows it; zdd must not)
        self.destroyed_with_volume: list[str] = []
        self.checker = OpenAPIChecker()

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._rng = random.Random(seed)
        self._ids = random.Random(seed + 7919)
        self._seq = itertools.count()
        self._request_ids = itertools.count(1)
        self._user_releases = dict(releases or {})
        self._image_health: dict[str, HealthMode] = {}
        self._machines: dict[str, _Fly] = {}
        self._quiet = False
        self._t0 = time.monotonic()
        self._wall0 = time.time()
        self.fleet = SimulatedFleet(state, releases=self._user_releases, seed=seed, api_latency=0.0)
        self.fleet.listener = self._on_fleet_change
        regions = [m.region for m in state.machines]
        self.default_region = max(set(regions), key=regions.count) if regions else "ord"
        for m in state.machines:
            sim = self.fleet.machines.get(m.id)
            if sim is not None:
                self._adopt(m, sim)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> FlyMachinesServer:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True
        httpd.block_on_close = False
        httpd.fly = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FlyMachinesServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # -- test controls ---------------------------------------------------------------

    def hold_lease(
        self, machine_id: str, owner: str = "someone-else@example.com", ttl: float = 600
    ) -> str:
        """Someone else takes a lease on ``machine_id``; returns its nonce."""
        with self._lock:
            fm = self._machines[machine_id]
            fm.lease = _Lease(self._nonce(), owner, "held by a test", time.time() + ttl)
            return fm.lease.nonce

    def set_image_health(self, image: str, health: HealthMode) -> None:
        """Health of machines running ``image`` from their next boot on:
        ``passing``, ``failing`` (checks never pass) or ``flaky``."""
        if health not in ("passing", "failing", "flaky"):
            raise ValueError(f"health must be passing, failing or flaky, not {health!r}")
        with self._lock:
            self._image_health[image] = health
            for fm in self._machines.values():
                if fm.sim is not None and fm.config.get("image") == image:
                    self._register_behaviour(fm.sim.version, fm.config)

    def machine(self, machine_id: str) -> dict[str, Any]:
        """The machine as GET would show it (also when destroyed)."""
        with self._lock:
            self._sync()
            return self._machine_json(self._machines[machine_id])

    def virtual_now(self) -> float:
        with self._lock:
            self._sync()
            return float(self.fleet.now)

    # -- clocks and ids ------------------------------------------------------------------

    def _vnow(self) -> float:
        return (time.monotonic() - self._t0) * self.speed

    def _wall(self, vt: float | None = None) -> float:
        """Wall-clock time of virtual time ``vt`` (default: the fleet's now)."""
        return self._wall0 + (self.fleet.now if vt is None else vt) / self.speed

    def _sync(self) -> None:
        """Run the fleet's events up to the virtual present (lock held)."""
        vnow = self._vnow()
        if vnow > self.fleet.now:
            self.fleet.schedule(vnow, _noop)
        while (t := self.fleet.next_event_at) is not None and t <= vnow:
            self.fleet.step()

    def _ulid(self) -> str:
        n = (int(self._wall() * 1000) << 80) | self._ids.getrandbits(80)
        return "".join(_CROCKFORD[(n >> (5 * i)) & 31] for i in range(25, -1, -1))

    def _nonce(self) -> str:
        return f"{self._ids.getrandbits(128):032x}"

    def _new_machine_id(self) -> str:
        while True:
            mid = f"{self._ids.getrandbits(56):014x}"
            if mid not in self._machines and mid not in self.fleet.machines:
                return mid

    def _new_name(self) -> str:
        """A generated name no machine of the app has (Fly's own are unique too: the
        uniqueness check below is for names the client chose)."""
        r = self._ids
        taken = {m.name for m in self._machines.values() if not m.destroyed}
        while True:
            name = f"{r.choice(_ADJ)}-{r.choice(_NOUN)}-{r.randrange(10000):04d}"
            if name not in taken:
                return name

    # -- machines --------------------------------------------------------------------

    def _adopt(self, m: zdd.Machine, sim: Any) -> None:
        """Give a machine of the starting fleet a Fly record and config."""
        b = self._user_releases.get(m.version, self.fleet.default)
        metadata = {k: v for k, v in m.labels.items()}
        metadata.update({META_GROUP: m.group, META_VERSION: m.version, META_PLATFORM: "v2"})
        config: dict[str, Any] = {
            "image": f"registry.fly.io/{self.app}:{m.version}",
            "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
            "metadata": metadata,
            "restart": {"policy": "on-failure", "max_retries": 10},
        }
        if b.has_checks:
            config["services"] = [
                {
                    "protocol": "tcp",
                    "internal_port": 8080,
                    "ports": [
                        {"port": 80, "handlers": ["http"], "force_https": True},
                        {"port": 443, "handlers": ["tls", "http"]},
                    ],
                    "checks": [
                        {
                            "type": "http",
                            "port": 8080,
                            "method": "GET",
                            "path": "/healthz",
                            "interval": zdd.format_duration(b.check_interval),
                            "timeout": "2s",
                            "grace_period": zdd.format_duration(b.grace_period),
                        }
                    ],
                }
            ]
        if m.volume:
            config["mounts"] = [{"volume": m.volume, "path": "/data"}]
        now = self._wall()
        fm = _Fly(
            id=m.id,
            name=self._new_name(),
            region=m.region,
            config=config,
            version=self._ulid(),
            created_at=now,
            updated_at=now,
            seq=next(self._seq),
            sim=sim,
            last_state=sim.state.value,
            last_health=sim.health.value,
            health_at=now,
        )
        fm.private_ip = self._private_ip()
        fm.history.append((fm.version, config))
        self._event(fm, "launch", "created", "user")
        if sim.state is zdd.MachineState.STARTED:
            self._event(fm, "start", "started", "flyd")
        self._machines[m.id] = fm

    def _private_ip(self) -> str:
        r = self._ids
        return f"fdaa:0:{r.getrandbits(16):x}:a7b:{r.getrandbits(16):x}:{r.getrandbits(32):x}:2"

    def _event(
        self,
        fm: _Fly,
        type_: str,
        status: str,
        source: str,
        request: dict[str, Any] | None = None,
    ) -> None:
        ev: dict[str, Any] = {
            "id": self._ulid(),
            "type": type_,
            "status": status,
            "source": source,
            "timestamp": int(self._wall() * 1000),
        }
        if request is not None:
            ev["request"] = request
        fm.events.insert(0, ev)
        fm.updated_at = self._wall()

    def _exit_event(self, fm: _Fly, code: int, *, requested: bool) -> None:
        self._event(
            fm,
            "exit",
            "stopped",
            "flyd",
            {
                "exit_event": {
                    "exit_code": code,
                    "guest_exit_code": code,
                    "guest_signal": -1,
                    "oom_killed": False,
                    "requested_stop": requested,
                    "restarting": False,
                    "signal": -1,
                    "exited_at": _rfc3339(self._wall()),
                },
                "restart_count": 0,
            },
        )

    def _on_fleet_change(self, mid: str) -> None:
        """The fleet changed a machine: record Fly's events (lock held)."""
        if self._quiet:
            return
        fm = self._machines.get(mid)
        if fm is None or fm.sim is None or self.fleet.machines.get(mid) is not fm.sim:
            return
        sim = fm.sim
        if sim.health.value != fm.last_health:
            fm.last_health = sim.health.value
            fm.health_at = self._wall()
        state = sim.state.value
        if state != fm.last_state:
            fm.last_state = state
            fm.updated_at = self._wall()
            if state == "started":
                self._event(fm, "start", "started", "flyd")
            elif state == "stopped":
                self._exit_event(fm, 0, requested=True)
            elif state == "failed":
                self._exit_event(fm, 1, requested=False)
        self._cond.notify_all()

    def _state(self, fm: _Fly) -> str:
        return str(fm.sim.state.value) if fm.sim is not None else fm.state

    def _cordoned(self, fm: _Fly) -> bool:
        return bool(fm.sim.cordoned) if fm.sim is not None else fm.cordoned

    @staticmethod
    def _metadata(config: Mapping[str, Any]) -> dict[str, str]:
        md = config.get("metadata")
        return md if isinstance(md, dict) else {}

    def _zdd_view(self, config: Mapping[str, Any]) -> tuple[str, str, str | None, dict[str, str]]:
        """(version, group, volume, labels) of a config, as zdd reads a machine."""
        md = self._metadata(config)
        version = md.get(META_VERSION) or str(config.get("image") or "")
        group = md.get(META_GROUP) or "app"
        mounts = config.get("mounts") or []
        volume = mounts[0].get("volume") if mounts and isinstance(mounts[0], dict) else None
        labels = {k: v for k, v in md.items() if k not in FLY_KEYS}
        return version, group, volume or None, labels

    @staticmethod
    def _is_release_command(config: Mapping[str, Any]) -> bool:
        md = config.get("metadata") or {}
        if isinstance(md, dict) and md.get(META_GROUP) == RELEASE_GROUP:
            return True
        restart = config.get("restart") or {}
        return config.get("auto_destroy") is True and restart.get("policy") == "no"

    @staticmethod
    def _all_checks(config: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """(name, check) for every configured check, named as Fly names them."""
        out: list[tuple[str, dict[str, Any]]] = []
        for name, check in sorted((config.get("checks") or {}).items()):
            out.append((name, check))
        n = 0
        for service in config.get("services") or []:
            for check in service.get("checks") or []:
                port = check.get("port") or service.get("internal_port") or 0
                out.append((f"servicecheck-{n:02d}-{check.get('type') or 'tcp'}-{port}", check))
                n += 1
        return out

    def _behaviour(self, config: Mapping[str, Any], version: str) -> ReleaseBehaviour:
        base = self._user_releases.get(version, self.fleet.default)
        checks = [c for _, c in self._all_checks(config)]
        changes: dict[str, Any] = {"has_checks": bool(checks)}
        graces = [
            self._duration(c["grace_period"], "grace_period") for c in checks if "grace_period" in c
        ]
        intervals = [self._duration(c["interval"], "interval") for c in checks if "interval" in c]
        if graces:
            changes["grace_period"] = max(graces)
        if intervals:
            changes["check_interval"] = max(min(intervals), 0.1)
        image = config.get("image")
        if isinstance(image, str) and image in self._image_health:
            changes["health"] = self._image_health[image]
        return attrs.evolve(base, **changes)

    def _register_behaviour(self, version: str, config: Mapping[str, Any]) -> None:
        self.fleet.releases[version] = self._behaviour(config, version)

    @staticmethod
    def _duration(value: Any, field: str) -> float:
        try:
            return zdd.parse_duration(value, field=field)
        except zdd.InvalidConfig as exc:
            raise _Error(400, f"invalid_argument: {field}: {exc}") from None

    def _active_lease(self, fm: _Fly) -> _Lease | None:
        if fm.lease is not None and fm.lease.expires_at <= time.time():
            fm.lease = None
        return fm.lease

    def _held_by(self, fm: _Fly, lease: _Lease) -> _Error:
        return _Error(
            409,
            f"aborted: machine ID {fm.id} lease currently held by {lease.owner}, "
            f"expires at {_rfc3339(lease.expires_at)}",
        )

    def _check_lease(self, fm: _Fly, headers: Mapping[str, str]) -> None:
        lease = self._active_lease(fm)
        if lease is not None and headers.get(NONCE_HEADER) != lease.nonce:
            raise self._held_by(fm, lease)

    def _get(self, mid: str, *, allow_destroyed: bool = False) -> _Fly:
        fm = self._machines.get(mid)
        if fm is None or (fm.destroyed and not allow_destroyed):
            raise _Error(404, "machine not found")
        return fm

    def _machine_json(
        self, fm: _Fly, *, summary: bool = False, include_lease: bool = False
    ) -> dict[str, Any]:
        state = self._state(fm)
        out: dict[str, Any] = {
            "id": fm.id,
            "name": fm.name,
            "state": state,
            "region": fm.region,
            "instance_id": fm.version,
            "version": fm.version,
            "private_ip": fm.private_ip,
            "created_at": _rfc3339(fm.created_at),
            "updated_at": _rfc3339(fm.updated_at),
            "image_ref": self._image_ref(str(fm.config.get("image") or "")),
            "cordoned": self._cordoned(fm),
        }
        if not summary:
            out["config"] = fm.config
            out["events"] = fm.events[:10]
            out["checks"] = self._checks_json(fm, state)
            out["host_status"] = "ok"
        lease = self._active_lease(fm)
        if include_lease and lease is not None:
            out["lease"] = {
                "owner": lease.owner,
                "expires_at": int(lease.expires_at),
                "description": lease.description,
            }
        return out

    @staticmethod
    def _image_ref(image: str) -> dict[str, Any]:
        first, sep, rest = image.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, rest
        else:
            registry, path = "docker.io", image
        path = path.partition("@")[0]
        repository, _, tag = path.partition(":")
        return {
            "registry": registry,
            "repository": repository,
            "tag": tag or "latest",
            "digest": "sha256:" + hashlib.sha256(image.encode()).hexdigest(),
            "labels": {},
        }

    def _checks_json(self, fm: _Fly, state: str) -> list[dict[str, Any]]:
        names = [n for n, _ in self._all_checks(fm.config)]
        if not names or state != "started" or fm.sim is None:
            return []
        health = fm.sim.health.value
        if health == "unknown":
            return []  # no result yet: flyctl reads an empty list as "not yet"
        output = {"passing": "Success", "warning": "Warning"}.get(health, "connection refused")
        return [
            {"name": n, "status": health, "output": output, "updated_at": _rfc3339(fm.health_at)}
            for n in names
        ]

    # -- release-command machines (outside the fleet) ---------------------------------

    def _detached_set(self, fm: _Fly, state: str) -> None:
        fm.state = state
        fm.last_state = state
        fm.updated_at = self._wall()
        self._cond.notify_all()

    def _detached_boot(self, fm: _Fly) -> None:
        fm.gen += 1
        gen = fm.gen
        self._detached_set(fm, "starting")

        def booted() -> None:
            if fm.gen != gen or fm.state != "starting":
                return
            self._detached_set(fm, "started")
            self._event(fm, "start", "started", "flyd")
            self.fleet.schedule(self.fleet.now + self.release_runtime, exited)

        def exited() -> None:
            if fm.gen != gen or fm.state != "started":
                return
            self._exit_event(fm, int(self.release_exit_code), requested=False)
            self._detached_set(fm, "stopped")
            self._detached_stopped(fm)

        self.fleet.schedule(self.fleet.now + self.release_boot_time, booted)

    def _detached_stopped(self, fm: _Fly) -> None:
        if fm.config.get("auto_destroy"):
            self._event(fm, "destroy", "destroyed", "flyd")
            self._detached_set(fm, "destroyed")
            fm.lease = None

    # -- HTTP ---------------------------------------------------------------------------

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        value = headers.get("Authorization") or ""
        scheme, _, credential = value.partition(" ")
        if scheme.lower() not in ("bearer", "flyv1"):
            return False
        return hmac.compare_digest(credential.strip().encode(), self._token.encode())

    def serve(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> _Reply | None:
        """Answer one request (``None``: drop the connection without answering)."""
        url = urlsplit(raw_path)
        query = parse_qs(url.query, keep_blank_values=True)
        with self._lock:
            index = len(self.requests)
            self.requests.append(RecordedRequest(method, url.path, query, None))
        drop = False
        try:
            if not self._authorized(headers):
                reply = _Reply(401, {"error": "Authenticate: token validation error"})
            else:
                with self._lock:
                    fault = self._rng.random() < self.fault_rate
                    code = self._rng.choice((500, 429))
                    retry_after = self._rng.choice(("0", "1"))
                    slow = self._rng.random() < self.slow_rate
                    drop = self._rng.random() < self.drop_rate and not fault
                    rule = self._match_rule(method, url.path, body)
                    if rule is not None:
                        fault, drop, code = rule.kind == "fail", rule.kind == "drop", 500
                if fault:
                    reply = (
                        _Reply(429, {"error": "rate limit exceeded"}, {"Retry-After": retry_after})
                        if code == 429
                        else _Reply(500, {"error": "internal server error"})
                    )
                else:
                    if slow:
                        time.sleep(self.slow_seconds)
                    reply = self._route(method, url.path, query, headers, body)
        except _Error as exc:
            reply = exc.reply
        except Exception:
            with self._lock:
                self.violations.append(f"server error: {traceback.format_exc()}")
            reply = _Reply(500, {"error": "internal server error (test server bug)"})
        with self._lock:
            reply.headers.setdefault("fly-request-id", f"{next(self._request_ids):016x}-ord")
            if not drop:
                self.requests[index] = dataclasses.replace(
                    self.requests[index], status=reply.status
                )
            hook = self.after_answer
        if hook is not None:
            hook(dataclasses.replace(self.requests[index], status=reply.status), body)
        return None if drop else reply

    def drop_answers(
        self, method: str, path: str, count: int = 1, *, body_contains: str = ""
    ) -> None:
        """Carry out the next ``count`` requests matching ``method`` and the regular
        expression ``path`` (searched in the URL path; ``body_contains``: in the body),
        and drop their connections without answering: a lost answer."""
        with self._lock:
            self._rules.append(_Rule("drop", method, re.compile(path), body_contains, count))

    def fail_requests(
        self, method: str, path: str, count: int = 1, *, body_contains: str = ""
    ) -> None:
        """Answer the next ``count`` matching requests 500 without carrying them out."""
        with self._lock:
            self._rules.append(_Rule("fail", method, re.compile(path), body_contains, count))

    def _match_rule(self, method: str, path: str, body: bytes) -> _Rule | None:
        for rule in self._rules:
            if (
                rule.left > 0
                and rule.method == method
                and rule.path.search(path)
                and rule.body_contains.encode() in body
            ):
                rule.left -= 1
                return rule
        return None

    def leases(self) -> dict[str, str]:
        """Machine id -> the description of its active lease."""
        with self._lock:
            return {
                mid: lease.description
                for mid, fm in self._machines.items()
                if not fm.destroyed and (lease := self._active_lease(fm)) is not None
            }

    def clear_lease(self, machine_id: str) -> None:
        """The lease on ``machine_id`` is gone (released by its holder)."""
        with self._lock:
            self._machines[machine_id].lease = None

    def live_machines(self, *, release_commands: bool = False) -> list[dict[str, Any]]:
        """Every machine not destroyed, as GET shows it."""
        with self._lock:
            self._sync()
            return [
                self._machine_json(fm)
                for fm in self._machines.values()
                if not fm.destroyed and (release_commands or fm.sim is not None)
            ]

    def release_command_runs(self) -> int:
        """How many release-command machines were ever created."""
        with self._lock:
            return sum(1 for fm in self._machines.values() if fm.sim is None)

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: Mapping[str, str],
        body: bytes,
    ) -> _Reply:
        match = _PATH.fullmatch(path)
        if match is None or (match["key"] is not None and match["action"] != "metadata"):
            return self._not_implemented(method, path)
        template = M
        if match["id"] is not None:
            template += "/{machine_id}"
        if match["action"] is not None:
            template += "/" + match["action"]
        if match["key"] is not None:
            template += "/{key}"
        if method.lower() not in self.checker.spec["paths"].get(template, {}):
            return self._not_implemented(method, path)
        check = self.checker.check_request(template, method, query, headers, body)
        if check.errors:
            with self._lock:
                self.violations.extend(f"{method} {template}: {e}" for e in check.errors)
            return _Reply(400, {"error": "invalid request: " + "; ".join(check.errors)})
        if unquote(match["app"]) != self.app:
            raise _Error(404, "app not found")
        mid = unquote(match["id"]) if match["id"] else None
        key = unquote(match["key"]) if match["key"] else None
        req = _Request(method, query, headers, check.body if check.body is not None else {})
        if match["action"] == "wait":
            assert mid is not None
            return self._wait(mid, req)
        handler = self._handlers()[(method, template)]
        with self._lock:
            self._sync()
            return handler(mid, key, req)

    def _not_implemented(self, method: str, path: str) -> _Reply:
        with self._lock:
            self.violations.append(f"{method} {path}: not an operation this server implements")
        return _Reply(404, {"error": "not found"})

    def _handlers(self) -> dict[tuple[str, str], Callable[[Any, Any, _Request], _Reply]]:
        mid = M + "/{machine_id}"
        return {
            ("GET", M): lambda _i, _k, r: self._list(r),
            ("POST", M): lambda _i, _k, r: self._create(r),
            ("GET", mid): lambda i, _k, r: self._show(i, r),
            ("POST", mid): lambda i, _k, r: self._update(i, r),
            ("DELETE", mid): lambda i, _k, r: self._destroy(i, r),
            ("POST", mid + "/start"): lambda i, _k, r: self._start(i, r),
            ("POST", mid + "/stop"): lambda i, _k, r: self._stop(i, r),
            ("POST", mid + "/cordon"): lambda i, _k, r: self._cordon(i, r, True),
            ("POST", mid + "/uncordon"): lambda i, _k, r: self._cordon(i, r, False),
            ("GET", mid + "/lease"): lambda i, _k, r: self._lease_get(i),
            ("POST", mid + "/lease"): lambda i, _k, r: self._lease_post(i, r),
            ("DELETE", mid + "/lease"): lambda i, _k, r: self._lease_delete(i, r),
            ("GET", mid + "/events"): lambda i, _k, r: self._events(i, r),
            ("GET", mid + "/versions"): lambda i, _k, r: self._versions(i),
            ("GET", mid + "/metadata"): lambda i, _k, r: self._metadata_get(i),
            ("PATCH", mid + "/metadata"): lambda i, _k, r: self._metadata_patch(i, r),
            ("GET", mid + "/metadata/{key}"): lambda i, k, r: self._metadata_key_get(i, k),
            ("POST", mid + "/metadata/{key}"): lambda i, k, r: self._metadata_key_set(i, k, r),
            ("DELETE", mid + "/metadata/{key}"): lambda i, k, r: self._metadata_key_del(i, k, r),
        }

    # -- endpoints (lock held, fleet synced) ---------------------------------------------

    def _list(self, r: _Request) -> _Reply:
        include_deleted = r.flag("include_deleted")
        region = r.last("region")
        states = {s for v in r.query.get("state", ()) for s in v.split(",") if s}
        meta = {
            k[len("metadata.") :]: v[-1] for k, v in r.query.items() if k.startswith("metadata.")
        }
        rows = []
        for fm in sorted(self._machines.values(), key=lambda f: f.seq):
            if fm.destroyed and not include_deleted:
                continue
            if region and fm.region != region:
                continue
            if states and self._state(fm) not in states:
                continue
            md = self._metadata(fm.config)
            if any(md.get(k) != v for k, v in meta.items()):
                continue
            rows.append(fm)
        headers: dict[str, str] = {}
        limit_text, cursor = r.last("limit"), r.last("cursor")
        if cursor is not None and limit_text is None:
            raise _Error(400, "invalid_argument: cursor requires limit")
        if limit_text is not None:
            limit = int(limit_text)
            if not 1 <= limit <= 1000:
                raise _Error(400, "invalid_argument: limit must be between 1 and 1000")
            after = -1
            if cursor:
                try:
                    after = int(base64.urlsafe_b64decode(cursor.encode()).decode())
                except ValueError:
                    raise _Error(400, "invalid_argument: invalid cursor") from None
            rows = [fm for fm in rows if fm.seq > after]
            if len(rows) > limit:
                rows = rows[:limit]
                last = str(rows[-1].seq).encode()
                headers["fly-next-cursor"] = base64.urlsafe_b64encode(last).decode()
        body = [
            self._machine_json(
                fm, summary=r.flag("summary"), include_lease=r.flag("include_leases")
            )
            for fm in rows
        ]
        return _Reply(200, body, headers)

    def _create(self, r: _Request) -> _Reply:
        body = r.body
        config = body.get("config")
        if not isinstance(config, dict) or not config.get("image"):
            raise _Error(400, "invalid_argument: config.image is required")
        name = body.get("name") or self._new_name()
        for other in self._machines.values():
            if other.name == name and not other.destroyed:
                raise _Error(
                    409,
                    f"already_exists: unique machine name violation, machine ID {other.id} "
                    f'already exists with name "{name}"',
                )
        version, group, volume, labels = self._zdd_view(config)
        behaviour = self._behaviour(config, version)  # refuses bad durations up front
        mid = self._new_machine_id()
        now = self._wall()
        fm = _Fly(
            id=mid,
            name=name,
            region=body.get("region") or self.default_region,
            config=config,
            version=self._ulid(),
            created_at=now,
            updated_at=now,
            seq=next(self._seq),
            health_at=now,
        )
        fm.private_ip = self._private_ip()
        fm.history.append((fm.version, config))
        self._event(fm, "launch", "created", "user")
        skip_launch = bool(body.get("skip_launch"))
        if self._is_release_command(config):
            self._machines[mid] = fm
            fm.cordoned = bool(body.get("skip_service_registration"))
            self._detached_set(fm, "created")
            if not skip_launch:
                self._detached_boot(fm)
        else:
            self.fleet.releases[version] = behaviour
            self._quiet = True
            try:
                created = self.fleet._apply(
                    zdd.Create(
                        group=group,
                        region=fm.region,
                        version=version,
                        key=f"fly:{mid}",
                        hidden=bool(body.get("skip_service_registration")),
                    )
                )
                assert created is not None
                sim = self.fleet.machines.pop(created.id)
                clobbered = self._machines.get(created.id)
                if clobbered is not None and clobbered.sim is not None:
                    self.fleet.machines[created.id] = clobbered.sim
                sim.id = mid
                sim.volume = volume
                sim.labels = labels
                self.fleet.machines[mid] = sim
                fm.sim = sim
                if skip_launch:
                    self.fleet._set(sim, state=zdd.MachineState.CREATED)
            finally:
                self._quiet = False
            fm.last_state = sim.state.value
            fm.last_health = sim.health.value
            self._machines[mid] = fm
        out = self._machine_json(fm)
        ttl = body.get("lease_ttl")
        if ttl:
            fm.lease = _Lease(self._nonce(), self.owner, "", time.time() + int(ttl))
            out["nonce"] = fm.lease.nonce
        return _Reply(200, out)

    def _show(self, mid: str, r: _Request) -> _Reply:
        fm = self._get(mid)
        version = r.last("version")
        if version and version != fm.version:
            raise _Error(404, f"machine version {version} not found")
        return _Reply(200, self._machine_json(fm, include_lease=r.flag("include_leases")))

    def _update(self, mid: str, r: _Request) -> _Reply:
        fm = self._get(mid)
        self._check_lease(fm, r.headers)
        body = r.body
        current = body.get("current_version")
        if current and current != fm.version:
            raise _Error(
                409,
                f"aborted: current_version {current} does not match the machine's version "
                f"{fm.version}",
            )
        config = body.get("config")
        if not isinstance(config, dict) or not config.get("image"):
            raise _Error(400, "invalid_argument: config.image is required")
        version, group, volume, labels = self._zdd_view(config)
        behaviour = self._behaviour(config, version)
        if bool(fm.sim is None) != self._is_release_command(config):
            raise _Error(
                400, "invalid_argument: cannot turn a machine into or out of a release command"
            )
        fm.config = config
        fm.version = self._ulid()
        fm.history.append((fm.version, config))
        if body.get("name"):
            fm.name = body["name"]
        self._event(fm, "update", "replacing", "user")
        skip_launch = bool(body.get("skip_launch"))
        if fm.sim is None:
            if fm.state == "started" or not skip_launch:
                self._detached_boot(fm)
            return _Reply(200, self._machine_json(fm))
        sim = fm.sim
        self.fleet.releases[version] = behaviour
        sim.volume = volume
        sim.labels = labels
        if sim.group != group:
            self.fleet._set(sim, group=group)
        if body.get("skip_service_registration") and not sim.cordoned:
            self.fleet._apply(zdd.Cordon(group=group, machine=mid))
        if skip_launch:
            running = sim.state not in (
                zdd.MachineState.STOPPED,
                zdd.MachineState.CREATED,
                zdd.MachineState.SUSPENDED,
                zdd.MachineState.FAILED,
            )
            if running:
                self.fleet._set(
                    sim, state=zdd.MachineState.STOPPED, health=zdd.Health.UNKNOWN, version=version
                )
            elif sim.version != version:
                self.fleet._set(sim, version=version)
        else:
            self.fleet._apply(
                zdd.Update(group=group, machine=mid, version=version, from_version=sim.version)
            )
        return _Reply(200, self._machine_json(fm))

    def _start(self, mid: str, r: _Request) -> _Reply:
        fm = self._get(mid)
        self._check_lease(fm, r.headers)
        previous = self._state(fm)
        self._event(fm, "start", "starting", "user")
        if fm.sim is None:
            if fm.state in ("created", "stopped", "failed"):
                self._detached_boot(fm)
        else:
            self.fleet._apply(zdd.Start(group=fm.sim.group, machine=mid))
        return _Reply(200, {"previous_state": previous, "migrated": False, "new_host": ""})

    def _stop(self, mid: str, r: _Request) -> _Reply:
        fm = self._get(mid)
        self._check_lease(fm, r.headers)
        stop_config = fm.config.get("stop_config") or {}
        signal = r.body.get("signal") or stop_config.get("signal") or "SIGINT"
        timeout_text = r.body.get("timeout") or stop_config.get("timeout")
        timeout = self._duration(timeout_text, "timeout") if timeout_text else 5.0
        self._event(fm, "stop", "stopping", "user", {"signal": signal})
        if fm.sim is None:
            if fm.state in ("starting", "started"):
                fm.gen += 1
                self._exit_event(fm, 0, requested=True)
                self._detached_set(fm, "stopped")
                self._detached_stopped(fm)
        else:
            self.fleet._apply(
                zdd.Stop(group=fm.sim.group, machine=mid, signal=signal, timeout=timeout)
            )
        return _Reply(200, {"ok": True})

    def _cordon(self, mid: str, r: _Request, cordon: bool) -> _Reply:
        fm = self._get(mid)
        self._check_lease(fm, r.headers)
        if fm.sim is None:
            fm.cordoned = cordon
        elif cordon:
            self.fleet._apply(zdd.Cordon(group=fm.sim.group, machine=mid))
        else:
            self.fleet._apply(zdd.Uncordon(group=fm.sim.group, machine=mid))
        fm.updated_at = self._wall()
        return _Reply(200, {"ok": True})

    def _destroy(self, mid: str, r: _Request) -> _Reply:
        fm = self._get(mid)
        self._check_lease(fm, r.headers)
        force = r.flag("force") or r.flag("kill")
        state = self._state(fm)
        if not force and state not in _DESTROYABLE:
            raise _Error(
                412,
                "failed_precondition: unable to destroy machine, not currently stopped, "
                "suspended, failed or created",
            )
        self._event(fm, "destroy", "destroyed", "user")
        if fm.sim is None:
            fm.gen += 1
            self._detached_set(fm, "destroyed")
        else:
            if fm.sim.volume:
                self.destroyed_with_volume.append(mid)
                fm.sim.volume = None
            self.fleet._apply(zdd.Destroy(group=fm.sim.group, machine=mid))
        fm.lease = None
        return _Reply(200, {"ok": True})

    def _wait(self, mid: str, r: _Request) -> _Reply:
        wanted = [s for v in r.query.get("state", ["started"]) for s in v.split(",") if s]
        timeout = int(r.last("timeout") or 60)
        if not 1 <= timeout <= 60:
            raise _Error(400, "invalid_argument: timeout must be between 1 and 60 seconds")
        version = r.last("version") or r.last("instance_id")
        deadline = time.monotonic() + min(timeout / self.speed, self.max_wait_seconds)
        with self._cond:
            while True:
                self._sync()
                fm = self._get(mid, allow_destroyed=True)
                state = self._state(fm)
                if fm.destroyed and "destroyed" not in wanted and "settled" not in wanted:
                    raise _Error(404, "machine not found")
                if version and version != fm.version and not fm.destroyed:
                    raise _Error(
                        400,
                        f"failed_precondition: machine version {version} is not current "
                        f"(replaced by {fm.version})",
                    )
                if self._reached(state, wanted):
                    return _Reply(
                        200,
                        {
                            "ok": True,
                            "state": state,
                            "version": fm.version,
                            "event_id": fm.events[0]["id"] if fm.events else "",
                        },
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _Error(
                        408,
                        f"deadline_exceeded: machine {mid} did not reach state "
                        f"{','.join(wanted)} within {timeout}s (currently {state})",
                    )
                self._cond.wait(min(remaining, 0.01))

    @staticmethod
    def _reached(state: str, wanted: list[str]) -> bool:
        for w in wanted:
            if w == state or (w == "settled" and state in _SETTLED):
                return True
            if w == "stopped" and state == "created":
                return True  # a skip_launch machine: flyctl waits for "stopped" here
        return False

    def _lease_json(self, fm: _Fly, lease: _Lease) -> dict[str, Any]:
        return {
            "status": "success",
            "data": {
                "nonce": lease.nonce,
                "expires_at": int(lease.expires_at),
                "owner": lease.owner,
                "description": lease.description,
                "version": fm.version,
            },
        }

    def _lease_get(self, mid: str) -> _Reply:
        fm = self._get(mid)
        lease = self._active_lease(fm)
        if lease is None:
            raise _Error(404, "lease not found")
        return _Reply(200, self._lease_json(fm, lease))

    def _lease_post(self, mid: str, r: _Request) -> _Reply:
        fm = self._get(mid)
        ttl = r.body.get("ttl")
        if ttl is None and r.last("ttl") is not None:
            ttl = int(r.last("ttl") or 0)
        ttl = 30 if ttl is None else ttl
        if ttl < 1:
            raise _Error(400, "invalid_argument: ttl must be at least 1 second")
        description = r.body.get("description") or ""
        nonce = r.headers.get(NONCE_HEADER) or ""
        lease = self._active_lease(fm)
        if lease is not None:
            if nonce != lease.nonce:
                raise self._held_by(fm, lease)
            lease.expires_at = time.time() + ttl
            if description:
                lease.description = description
        else:
            lease = fm.lease = _Lease(self._nonce(), self.owner, description, time.time() + ttl)
        return _Reply(201, self._lease_json(fm, lease))

    def _lease_delete(self, mid: str, r: _Request) -> _Reply:
        fm = self._get(mid)
        lease = self._active_lease(fm)
        if lease is None:
            raise _Error(404, "lease not found")
        if r.headers.get(NONCE_HEADER) != lease.nonce:
            raise self._held_by(fm, lease)
        fm.lease = None
        return _Reply(200, {"status": "success", "data": {"ok": True}})

    def _versions(self, mid: str) -> _Reply:
        fm = self._get(mid)
        return _Reply(200, [{"version": v, "user_config": c} for v, c in reversed(fm.history)])

    def _events(self, mid: str, r: _Request) -> _Reply:
        fm = self._get(mid, allow_destroyed=True)  # a release command's exit code stays readable
        limit = min(max(int(r.last("limit") or 20), 1), 50)
        return _Reply(200, fm.events[:limit])

    def _metadata_get(self, mid: str) -> _Reply:
        return _Reply(200, self._metadata(self._get(mid).config))

    def _metadata_key_get(self, mid: str, key: str) -> _Reply:
        md = self._metadata(self._get(mid).config)
        if key not in md:
            raise _Error(404, f"metadata key {key!r} not found")
        return _Reply(200, {"value": md[key]})

    def _write_metadata(self, fm: _Fly, changes: Mapping[str, str | None]) -> None:
        md = dict(self._metadata(fm.config))
        for k, v in changes.items():
            if v is None or v == "":
                md.pop(k, None)
            else:
                md[k] = v
        fm.config = {**fm.config, "metadata": md}
        fm.updated_at = self._wall()
        if fm.sim is not None:
            version, group, _volume, labels = self._zdd_view(fm.config)
            fm.sim.labels = labels
            if version != fm.sim.version or group != fm.sim.group:
                if version not in self.fleet.releases:
                    self.fleet.releases[version] = self._behaviour(fm.config, version)
                self.fleet._set(fm.sim, version=version, group=group)

    def _metadata_patch(self, mid: str, r: _Request) -> _Reply:
        fm = self._get(mid)
        self._check_lease(fm, r.headers)
        expected = r.body.get("machine_version")
        if expected and expected != fm.version:
            raise _Error(
                412,
                f"failed_precondition: machine_version {expected} does not match {fm.version}",
            )
        self._write_metadata(fm, r.body.get("metadata") or {})
        return _Reply(204)

    # The per-key metadata endpoints take no lease nonce: the OpenAPI description
    # lists no fly-machine-lease-nonce parameter for them, and fly-go's SetMetadata and
    # DeleteMetadata send none (flaps/flaps_machines.go). So another process (an
    # operator's `zdd gate`) can write one while a deployer holds the machine's lease.
    def _metadata_key_set(self, mid: str, key: str, r: _Request) -> _Reply:
        fm = self._get(mid)
        if "value" not in r.body:
            raise _Error(400, "invalid_argument: value is required")
        self._write_metadata(fm, {key: r.body["value"]})
        return _Reply(204)

    def _metadata_key_del(self, mid: str, key: str, r: _Request) -> _Reply:
        fm = self._get(mid)
        self._write_metadata(fm, {key: None})
        return _Reply(204)


class _Request:
    """A validated request: query, headers, JSON body (``{}`` when absent)."""

    def __init__(
        self, method: str, query: dict[str, list[str]], headers: Mapping[str, str], body: Any
    ) -> None:
        self.method = method
        self.query = query
        self.headers = headers
        self.body: dict[str, Any] = body if isinstance(body, dict) else {}

    def last(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def flag(self, name: str) -> bool:
        value = self.last(name)
        return value is not None and query_bool(value)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "zdd-fly-test"

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: nothing about a request (nor its token) is ever printed."""

    def _serve(self) -> None:
        fly: FlyMachinesServer = self.server.fly  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if len(body) < length:  # the client died mid-request (a killed deployer)
            self.close_connection = True
            return
        reply = fly.serve(self.command, self.path, self.headers, body)
        if reply is None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(reply.status)
        for k, v in reply.headers.items():
            self.send_header(k, v)
        if reply.status != 204:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply.payload)))
        self.end_headers()
        if reply.payload:
            self.wfile.write(reply.payload)

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _serve
