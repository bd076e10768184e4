"""Fly.io Machines: a :class:`~zdd.providers.Provider` over the Machines REST API.

Standard-library HTTP (``urllib``). What it does, from the Machines API notes:

* **observe**: lists the app's machines (paged with ``limit`` and the
  ``fly-next-cursor`` header), maps Fly's states and check statuses to the
  model (``bg_deployments_compat*`` checks ignored); a machine's version is its
  ``fly_release_version`` metadata (else its image), its group is
  ``fly_process_group``. Release-command machines are not part of the fleet.
* **actions**: creates are hidden from the proxy (``skip_service_registration``)
  and carry an idempotency key in metadata (``zdd_key``); before a create is
  retried the key is looked up, so a create is never doubled. Updates send the
  machine's ``current_version`` and the lease nonce. Destroys use
  ``force=true``. The release and post-deploy commands run in a temporary
  machine (no services, no mounts, restart ``no``, ``auto_destroy``), whose exit
  code is read from its ``exit`` event.
* **the deployment record** is a JSON document in every app machine's
  ``zdd_record`` metadata (with a sequence number; the newest wins), so it
  survives any machine being destroyed.
* **the lock** is Fly's leases: one per machine, taken with the owner as the
  description, refreshed, and released at the end; a lease held by someone else
  (409 "lease currently held by ...") is :class:`~zdd.DeploymentLocked`.
* **retries**: 408, 429, 5xx and transport errors, with exponential backoff and
  jitter, honouring ``Retry-After``; requests are paced per action and machine
  to Fly's documented limits (1 per second with a burst of 3; reads 5 per
  second with a burst of 10).
* **security**: the token goes only into the ``Authorization`` header (``Bearer``,
  or a ``FlyV1 ...`` token passed through); it is never in a repr, log line or
  error. ``https`` is required unless the host is loopback; TLS is verified.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shlex
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .._errors import ActionFailed, DeploymentLocked, InvalidConfig, ProviderContractError
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
)
from .._record import parse_target
from . import Capabilities
from ._fly_http import (
    _TRANSIENT,
    DEFAULT_BASE_URL,
    FlyHTTP,
    _q,
    _status,
)

__all__ = ["DEFAULT_BASE_URL", "FlyMachines"]

RELEASE_GROUP = "fly_app_release_command"
RECORD_KEY = "zdd_record"
_STATES = {
    "created": MachineState.CREATED,
    "creating": MachineState.CREATED,
    "starting": MachineState.STARTING,
    "restarting": MachineState.STARTING,
    "started": MachineState.STARTED,
    "stopping": MachineState.STOPPING,
    "suspending": MachineState.STOPPING,
    "stopped": MachineState.STOPPED,
    "suspended": MachineState.SUSPENDED,
    "failed": MachineState.FAILED,
    "launch_failed": MachineState.FAILED,
    "updating": MachineState.UPDATING,
    "replacing": MachineState.REPLACING,
    "destroying": MachineState.DESTROYING,
    "destroyed": MachineState.DESTROYED,
    "replaced": MachineState.DESTROYED,
    "migrated": MachineState.DESTROYED,
}
_LABEL_PREFIX = "zdd_"  # label "zdd.key" <-> metadata "zdd_key"


class FlyMachines:
    """The Fly Machines API as a zdd provider.

    Args:
        app: the Fly app's name.
        token: an API token; default ``FLY_API_TOKEN``. A ``FlyV1 ...`` token is
            sent as is, anything else as ``Bearer``.
        base_url: default ``ZDD_FLY_API_URL``, else ``https://api.machines.dev``.
        releases: the releases the deployment may create or update machines to
            (the actions also carry their release); versions already running are
            learnt from the machines themselves.
        timeout: seconds for one HTTP request.
        retries: attempts for a transient failure before giving up.
        page_size: machines per page when listing.
    """

    def __init__(
        self,
        app: str,
        *,
        token: str | None = None,
        base_url: str | None = None,
        releases: Mapping[str, Release] | None = None,
        timeout: float = 30.0,
        retries: int = 5,
        page_size: int = 100,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not app or not isinstance(app, str):
            raise InvalidConfig(
                "the Fly app name is required (--app, or app in fly.toml)", field="app"
            )
        token = token if token is not None else os.environ.get("FLY_API_TOKEN", "")
        if not token.strip():
            raise InvalidConfig(
                "no API token: set FLY_API_TOKEN (e.g. from `fly tokens deploy`)", field="token"
            )
        self.app = app
        self._http = FlyHTTP(
            app,
            token.strip(),
            base_url or os.environ.get("ZDD_FLY_API_URL") or DEFAULT_BASE_URL,
            timeout=timeout,
            retries=retries,
            rng=rng or random.Random(),
            sleep=sleep,
            clock=clock,
        )
        self.base_url = self._http.base_url
        self.timeout = timeout
        self.retries = retries
        self.page_size = page_size
        self._sleep = sleep
        self._clock = clock
        self._request = self._http.request
        self._request_full = self._http.request_full
        self._scrub = self._http.scrub
        self._backoff = self._http.backoff
        self._releases: dict[str, Release] = dict(releases or {})
        self._configs: dict[tuple[str, str], dict[str, Any]] = {}  # (group, version) -> config
        self._nonces: dict[str, str] = {}
        self._lease_ttl = 30
        self._record_seq = 0
        self._record: dict[str, str] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FlyMachines(app={self.app!r}, base_url={self.base_url!r}, token=<redacted>)"

    def capabilities(self) -> Capabilities:
        return Capabilities(traffic_weights=False, cordon=True, volumes=True)

    # -- observation -----------------------------------------------------------

    def observe(self) -> FleetState:
        raw = self._list()
        machines = []
        best_seq = -1
        record: dict[str, str] = {}
        for item in raw:
            metadata = _metadata(item)
            if metadata.get("fly_process_group") == RELEASE_GROUP:
                continue
            m = self._to_machine(item)
            if m is None or not m.live:
                continue
            machines.append(m)
            doc = metadata.get(RECORD_KEY)
            if doc:
                seq, values = _decode_record(doc)
                if seq > best_seq:
                    best_seq, record = seq, values
        with self._lock:
            self._record_seq = max(self._record_seq, best_seq)
            self._record = dict(record)
        return FleetState(machines=machines, record=record)

    def machine(self, machine_id: str) -> Machine | None:
        try:
            item = self._request(
                "GET", f"/machines/{_q(machine_id)}", action="get", machine=machine_id
            )
        except ActionFailed as exc:
            if _status(exc) == 404:
                return None
            raise
        if not isinstance(item, dict):
            raise ProviderContractError("GET machine did not answer a JSON object")
        m = self._to_machine(item)
        return m if m is not None and m.live else None

    def _list(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(10_000):
            query = {"limit": str(self.page_size)}
            if cursor:
                query["cursor"] = cursor
            body, headers = self._request_full("GET", "/machines", query=query, action="list")
            if not isinstance(body, list):
                raise ProviderContractError("GET machines did not answer a JSON array")
            out.extend(item for item in body if isinstance(item, dict))
            cursor = headers.get("fly-next-cursor") or None
            if not cursor or not body:
                return out
        raise ProviderContractError("GET machines kept answering more pages")

    def _to_machine(self, item: dict[str, Any]) -> Machine | None:
        mid = item.get("id")
        if not isinstance(mid, str) or not mid:
            raise ProviderContractError("a machine without an id")
        config = item.get("config") if isinstance(item.get("config"), dict) else {}
        assert isinstance(config, dict)
        metadata = _metadata(item)
        image = str(config.get("image") or "")
        version = metadata.get("fly_release_version") or image or "unknown"
        group = metadata.get("fly_process_group") or "app"
        state = _STATES.get(str(item.get("state", "")), MachineState.REPLACING)
        mounts = config.get("mounts") or []
        volume = None
        if mounts and isinstance(mounts[0], dict):
            volume = mounts[0].get("volume") or mounts[0].get("name") or None
        labels = {
            "zdd." + k[len(_LABEL_PREFIX) :]: v
            for k, v in metadata.items()
            if k.startswith(_LABEL_PREFIX) and k != RECORD_KEY
        }
        with self._lock:
            self._configs[(group, version)] = config
        return Machine(
            id=mid,
            version=version,
            group=group,
            region=str(item.get("region") or "unknown"),
            state=state,
            health=_health(item, config, state),
            cordoned=bool(item.get("cordoned", False)),
            volume=str(volume) if volume else None,
            labels=labels,
        )

    # -- the lock (leases) -----------------------------------------------------

    def acquire_lock(self, owner: str, ttl: float) -> None:
        self._lease_ttl = max(1, round(ttl))
        taken: list[str] = []
        for item in self._list():
            if _metadata(item).get("fly_process_group") == RELEASE_GROUP:
                continue
            if str(item.get("state")) in ("destroyed", "destroying"):
                continue
            mid = str(item["id"])
            fresh = mid not in self._nonces
            try:
                self._lease(mid, owner)
            except DeploymentLocked:
                for other in taken:
                    self._release_lease(other)
                raise
            except ActionFailed as exc:
                if _status(exc) != 404:
                    raise
                # destroyed since the list (by this very deployment, often): nothing to hold
                with self._lock:
                    self._nonces.pop(mid, None)
                continue
            if fresh:
                taken.append(mid)

    def release_lock(self, owner: str) -> None:
        for mid in list(self._nonces):
            self._release_lease(mid)

    def _lease(self, mid: str, owner: str) -> None:
        headers = {}
        nonce = self._nonces.get(mid)
        if nonce:
            headers["fly-machine-lease-nonce"] = nonce
        body = self._request(
            "POST",
            f"/machines/{_q(mid)}/lease",
            body={"ttl": self._lease_ttl, "description": owner},
            headers=headers,
            action="lease",
            machine=mid,
        )
        data = body.get("data", body) if isinstance(body, dict) else {}
        new_nonce = data.get("nonce") if isinstance(data, dict) else None
        if not isinstance(new_nonce, str) or not new_nonce:
            raise ProviderContractError(f"the lease on {mid} came back without a nonce")
        with self._lock:
            self._nonces[mid] = new_nonce

    def _release_lease(self, mid: str) -> None:
        nonce = self._nonces.pop(mid, None)
        if not nonce:
            return
        # gone, expired or taken: then there is nothing left to release
        with contextlib.suppress(ActionFailed, DeploymentLocked):
            self._request(
                "DELETE",
                f"/machines/{_q(mid)}/lease",
                headers={"fly-machine-lease-nonce": nonce},
                action="lease",
                machine=mid,
            )

    # -- actions ---------------------------------------------------------------

    def perform(self, action: Action) -> Machine | None:
        if isinstance(action, Create):
            return self._create(action)
        if isinstance(action, Label):
            return self._label(action)
        if isinstance(action, RunCommand):
            self._run_command(action)
            return None
        mid = action.machine or ""
        path = f"/machines/{_q(mid)}"
        if isinstance(action, Update):
            return self._update(action)
        if isinstance(action, Start):
            self._mutate("POST", f"{path}/start", mid, action="start")
        elif isinstance(action, Stop):
            body = {"signal": action.signal, "timeout": f"{action.timeout:g}s"}
            self._mutate("POST", f"{path}/stop", mid, action="stop", body=body)
        elif isinstance(action, Cordon):
            self._mutate("POST", f"{path}/cordon", mid, action="cordon")
        elif isinstance(action, Uncordon):
            self._mutate("POST", f"{path}/uncordon", mid, action="uncordon")
        elif isinstance(action, Destroy):
            try:
                self._mutate("DELETE", path, mid, action="destroy", query={"force": "true"})
            except ActionFailed as exc:
                # a destroy carried out whose answer was lost: its retry finds nothing,
                # which is what a destroy asks for
                if _status(exc) != 404:
                    raise
            with self._lock:
                self._nonces.pop(mid, None)
            return None
        else:
            raise ProviderContractError(f"the Fly provider cannot perform {action.kind}")
        return self.machine(mid)

    def _mutate(
        self,
        method: str,
        path: str,
        mid: str,
        *,
        action: str,
        body: Any = None,
        query: dict[str, str] | None = None,
    ) -> Any:
        headers = {}
        nonce = self._nonces.get(mid)
        if nonce:
            headers["fly-machine-lease-nonce"] = nonce
        return self._request(
            method, path, body=body, query=query, headers=headers, action=action, machine=mid
        )

    def _release_config(
        self,
        group: str,
        version: str,
        base: dict[str, Any] | None,
        release: Release | None = None,
    ) -> dict[str, Any]:
        """The machine config of ``version`` for ``group`` (``release``: what the action
        says a machine of that version looks like)."""
        with self._lock:
            known = self._configs.get((group, version))
            any_of_group = next((c for (g, _), c in self._configs.items() if g == group), None)
        release = release or self._releases.get(version)
        config: dict[str, Any] = json.loads(json.dumps(known or base or any_of_group or {}))
        if release is not None:
            if release.image:
                config["image"] = release.image
            if release.env:
                config.setdefault("env", {}).update(dict(release.env))
            if (
                release.checks
                and not config.get("checks")
                and not any(
                    s.get("checks") for s in config.get("services", []) if isinstance(s, dict)
                )
            ):
                config["checks"] = {
                    (c.name or f"zdd{i}"): _check_config(c) for i, c in enumerate(release.checks)
                }
        if not config.get("image"):
            raise ActionFailed(
                f"no image known for version {version!r} of group {group!r}; pass --image "
                f"(or register the release)"
            )
        metadata = config.setdefault("metadata", {})
        for key in [k for k in metadata if k.startswith(_LABEL_PREFIX)]:
            del metadata[key]  # another machine's labels and record copy are not this one's
        metadata["fly_release_version"] = version
        metadata["fly_process_group"] = group
        metadata.setdefault("fly_platform_version", "v2")
        return config

    def _create(self, action: Create) -> Machine:
        existing = self._find_key(action.key)
        if existing is not None:
            return existing
        config = self._release_config(action.group, action.version, None, action.release)
        config["metadata"][_LABEL_PREFIX + "key"] = action.key
        config["metadata"][_LABEL_PREFIX + "role"] = action.role
        with self._lock:
            record = dict(self._record)
            seq = self._record_seq
        if record:
            config["metadata"][RECORD_KEY] = _encode_record(seq, record)
        config.pop("mounts", None)  # a new machine never takes another's volume
        body = {
            "config": config,
            "region": action.region,
            "skip_service_registration": action.hidden,
            "lease_ttl": self._lease_ttl,
        }
        try:
            item = self._request(
                "POST", "/machines", body=body, action="create", machine="", retry=False
            )
        except ActionFailed as exc:
            if not exc.transient:
                raise
            # the create may have happened: look for the key before trying again
            for attempt in range(self.retries):
                self._sleep(self._backoff(attempt, None))
                found = self._find_key(action.key)
                if found is not None:
                    return found
                try:
                    item = self._request(
                        "POST", "/machines", body=body, action="create", machine="", retry=False
                    )
                    break
                except ActionFailed as again:
                    if not again.transient:
                        raise
            else:
                raise
        if not isinstance(item, dict):
            raise ProviderContractError("create did not answer a machine")
        nonce = item.get("nonce")
        if isinstance(nonce, str) and nonce:
            with self._lock:
                self._nonces[str(item["id"])] = nonce
        m = self._to_machine(item)
        if m is None:
            raise ProviderContractError("create answered a machine without an id")
        return m

    def _find_key(self, key: str) -> Machine | None:
        body, _ = self._request_full(
            "GET", "/machines", query={f"metadata.{_LABEL_PREFIX}key": key}, action="list"
        )
        if not isinstance(body, list):
            raise ProviderContractError("GET machines did not answer a JSON array")
        for item in body:
            if isinstance(item, dict) and _metadata(item).get(_LABEL_PREFIX + "key") == key:
                m = self._to_machine(item)
                if m is not None and m.live:
                    return m
        return None

    def _update(self, action: Update) -> Machine | None:
        mid = action.machine or ""
        current = self._request("GET", f"/machines/{_q(mid)}", action="get", machine=mid)
        if not isinstance(current, dict):
            raise ProviderContractError("GET machine did not answer a JSON object")
        base = current.get("config") if isinstance(current.get("config"), dict) else {}
        group = _metadata(current).get("fly_process_group") or action.group
        config = self._release_config(group, action.version, None, action.release)
        # keep what belongs to this machine: its mounts, its labels, the record
        if isinstance(base, dict):
            if base.get("mounts"):
                config["mounts"] = base["mounts"]
            for k, v in (base.get("metadata") or {}).items():
                if k.startswith(_LABEL_PREFIX):
                    config["metadata"][k] = v
        body = {
            "config": config,
            "current_version": current.get("version") or current.get("instance_id"),
        }
        item = self._mutate("POST", f"/machines/{_q(mid)}", mid, action="update", body=body)
        return self._to_machine(item) if isinstance(item, dict) else self.machine(mid)

    def _label(self, action: Label) -> Machine | None:
        if action.machine is not None:
            patch: dict[str, str | None] = {
                _LABEL_PREFIX + k.removeprefix("zdd."): v for k, v in action.values.items()
            }
            self._mutate(
                "PATCH",
                f"/machines/{_q(action.machine)}/metadata",
                action.machine,
                action="metadata",
                body={"metadata": patch},
            )
            return self.machine(action.machine)
        with self._lock:
            record = {} if action.replace else dict(self._record)
            record.update(action.values)
            self._record_seq += 1
            doc = _encode_record(self._record_seq, record)
            self._record = record
        for item in self._list():
            if _metadata(item).get("fly_process_group") == RELEASE_GROUP:
                continue
            if str(item.get("state")) in ("destroyed", "destroying"):
                continue
            mid = str(item["id"])
            self._mutate(
                "PATCH",
                f"/machines/{_q(mid)}/metadata",
                mid,
                action="metadata",
                body={"metadata": {RECORD_KEY: doc}},
            )
        return None

    def _run_command(self, action: RunCommand) -> None:
        try:
            argv = shlex.split(action.command)
        except ValueError as exc:
            raise ActionFailed(f"{action.phase} command cannot be split: {exc}") from None
        version = _first_version(action.target)
        group = _first_group(action.target)
        config = self._release_config(group, version, None, action.release)
        for key in ("services", "mounts", "checks", "standbys"):
            config.pop(key, None)
        config["init"] = {**(config.get("init") or {}), "cmd": argv}
        config["restart"] = {"policy": "no"}
        config["auto_destroy"] = True
        config["metadata"] = {
            "fly_platform_version": "v2",
            "fly_process_group": RELEASE_GROUP,
            "fly_release_version": version,
        }
        item = self._request(
            "POST",
            "/machines",
            body={"config": config, "skip_service_registration": True},
            action="create",
            machine="",
        )
        if not isinstance(item, dict) or "id" not in item:
            raise ProviderContractError("create did not answer a machine")
        mid = str(item["id"])
        deadline = self._clock() + max(action.timeout, 1.0)
        code = None
        while self._clock() < deadline:
            code = self._exit_code(mid)
            if code is not None:
                break
            self._wait(mid, "destroyed", min(60.0, max(1.0, deadline - self._clock())))
        if code is None:
            code = self._exit_code(mid)
        if code is None:
            raise ActionFailed(
                f"{action.phase} command did not finish within {action.timeout:g}s "
                f"(machine {mid}); raise its timeout",
            )
        if code != 0:
            raise ActionFailed(
                f"{action.phase} command exited with status {code} on machine {mid}; "
                f"its log: `fly logs -a {self.app} --machine {mid}`"
            )

    def _exit_code(self, mid: str) -> int | None:
        try:
            events = self._request("GET", f"/machines/{_q(mid)}/events", action="get", machine=mid)
        except ActionFailed as exc:
            if _status(exc) == 404:
                return None
            raise
        if not isinstance(events, list):
            return None
        for event in events:
            if isinstance(event, dict) and event.get("type") == "exit":
                request = event.get("request") or {}
                exit_event = request.get("exit_event") or {} if isinstance(request, dict) else {}
                code = exit_event.get("exit_code") if isinstance(exit_event, dict) else None
                if isinstance(code, int):
                    return code
        return None

    def _wait(self, mid: str, state: str, timeout: float) -> bool:
        """``GET /wait`` (at most 60 s a call); False on 408 (not there yet)."""
        try:
            self._request(
                "GET",
                f"/machines/{_q(mid)}/wait",
                query={"state": state, "timeout": str(int(min(60, max(1, timeout))))},
                action="wait",
                machine=mid,
                retry_statuses=frozenset(_TRANSIENT - {408}),
                timeout=min(60, max(1, timeout)) + self.timeout,
            )
        except ActionFailed as exc:
            if _status(exc) in (408, 404):
                return _status(exc) == 404
            raise
        return True

    # -- HTTP ------------------------------------------------------------------


def _metadata(item: Mapping[str, Any]) -> dict[str, str]:
    config = item.get("config")
    metadata = config.get("metadata") if isinstance(config, dict) else None
    if not isinstance(metadata, dict):
        return {}
    return {str(k): str(v) for k, v in metadata.items() if v is not None}


def _health(item: Mapping[str, Any], config: Mapping[str, Any], state: MachineState) -> Health:
    configured = len(config.get("checks") or {}) + sum(
        len(s.get("checks") or []) for s in config.get("services") or [] if isinstance(s, dict)
    )
    if state is not MachineState.STARTED:
        return Health.UNKNOWN
    if configured == 0:
        return Health.PASSING  # no checks: started is healthy, as flyctl has it
    statuses = [
        str(c.get("status", ""))
        for c in item.get("checks") or []
        if isinstance(c, dict) and not str(c.get("name", "")).startswith("bg_deployments_compat")
    ]
    if not statuses:
        return Health.UNKNOWN
    if "critical" in statuses:
        return Health.CRITICAL
    if "warning" in statuses:
        return Health.WARNING
    if all(s == "passing" for s in statuses):
        return Health.PASSING
    return Health.UNKNOWN


def _check_config(check: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": check.type,
        "interval": f"{check.interval:g}s",
        "timeout": f"{check.timeout:g}s",
        "grace_period": f"{check.grace_period:g}s",
    }
    if check.port is not None:
        out["port"] = check.port
    if check.type == "http":
        out["method"] = check.method
        out["path"] = check.path
    return out


def _encode_record(seq: int, record: Mapping[str, str]) -> str:
    return json.dumps({"seq": seq, "record": dict(record)}, sort_keys=True, separators=(",", ":"))


def _decode_record(doc: str) -> tuple[int, dict[str, str]]:
    try:
        data = json.loads(doc)
        seq = int(data["seq"])
        record = {str(k): str(v) for k, v in dict(data["record"]).items()}
    except (ValueError, KeyError, TypeError):
        return -1, {}
    return seq, record


def _first_group(target: str) -> str:
    return next(iter(parse_target(target)), "app")


def _first_version(target: str) -> str:
    return next(iter(parse_target(target).values()), target)
