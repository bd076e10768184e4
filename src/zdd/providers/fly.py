"""Fly.io Machines: a :class:`~zdd.providers.Provider` over the Machines REST API.

Standard-library HTTP (one keep-alive ``http.client`` pool, see ``_fly_http``).
What it does, from the Machines API notes:

* **observe**: lists the app's machines (paged with ``limit`` and the
  ``fly-next-cursor`` header), maps Fly's states and check statuses to the
  model (``bg_deployments_compat*`` checks ignored); a machine's version is its
  ``fly_release_version`` metadata (else its image), its group is
  ``fly_process_group``. Release-command machines are not part of the fleet.
* **actions**: creates are hidden from the proxy (``skip_service_registration``)
  and carry an idempotency key in metadata (``zdd_key``); a create is sent once,
  and its retry (the executor's) looks the key up first, so a create is never
  doubled. Updates send the machine's ``current_version`` and the lease nonce;
  an update that landed is recognised on its retry. Destroys use ``force=true``.
  Machine configs are built from the release's fly.toml as flyctl builds them
  (``_fly_config``), keeping what is the machine's own (its volume, its labels).
  The release and post-deploy commands run exactly once in a temporary machine
  (keyed; no services, no mounts, restart ``no``, ``auto_destroy``), whose exit
  code is read from its ``exit`` event.
* **the deployment record** is a JSON document in every app machine's
  ``zdd_record`` metadata (with a sequence number; the newest wins), so it
  survives any machine being destroyed.
* **the lock** is Fly's leases: one per machine, described with the deployment's
  id, refreshed in parallel, and released at the end. A 409 for a lease of this
  deployment's own (a lost answer) or of a dead deployer of this host adopts it;
  anyone else's is :class:`~zdd.DeploymentLocked`; a deployer whose leases
  lapsed stops (:class:`~zdd.DeploymentSuperseded`) if another deployment ran.
* **retries**: one owner per request. Idempotent requests are retried by the HTTP
  layer (408, 429, 5xx, transport errors; backoff with jitter, ``Retry-After``);
  creates and updates are retried by the executor. Requests are paced per action
  and machine to Fly's documented limits (1 per second with a burst of 3; reads
  5 per second with a burst of 10).
* **security**: the token goes only into the ``Authorization`` header (``Bearer``,
  or a ``FlyV1 ...`` token passed through); it is never in a repr, log line or
  error. ``https`` is required unless the host is loopback; TLS is verified;
  redirects are never followed; only ``https_proxy`` is honoured.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from .._errors import (
    ActionFailed,
    DeploymentLocked,
    DeploymentSuperseded,
    InvalidConfig,
    ProviderContractError,
    ZddError,
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
)
from .._record import DEPLOYMENT, RecordView, image_key, parse_target
from . import Capabilities
from ._fly_config import VM_PRESETS, machine_config, release_command_config, split_command
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
#: Operators' instructions (``zdd gate/abort/promote``): a JSON object of ``op.*`` keys
#: in this metadata key of one app machine, written without a lease (the Machines
#: API's metadata keys take no lease nonce; docs/decisions/0012)
OP_KEY = "zdd_op"
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
        retries: attempts of an idempotent request (reads, cordons, stops, leases,
            metadata) on a transient failure; creates and updates are tried once and
            their retries are the executor's (each create carries a key, an update
            that landed is recognised).
        page_size: machines per page when listing.
        parallel: requests in flight at once for the lease refresh and record writes
            (Fly paces per machine, so they parallelise).
        rate_scale: multiplies Fly's documented request rates (1: Fly's); only for a
            local stand-in of the API, such as the tests' server.
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
        parallel: int = 32,
        rate_scale: float = 1.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not app or not isinstance(app, str):
            raise InvalidConfig("the Fly app name is required (app in fly.toml)", field="app")
        token = token if token is not None else os.environ.get("FLY_API_TOKEN", "")
        if not token.strip():
            raise InvalidConfig(
                "no API token: set FLY_API_TOKEN (e.g. from `fly tokens deploy`)", field="token"
            )
        self.app = app
        if base_url is None:
            base_url = os.environ.get("ZDD_FLY_API_URL") or DEFAULT_BASE_URL
        self._http = FlyHTTP(
            app,
            token.strip(),
            base_url,
            timeout=timeout,
            retries=retries,
            max_idle=max(32, parallel),
            rate_scale=rate_scale,
            rng=rng or random.Random(),
            sleep=sleep,
            clock=clock,
        )
        self.base_url = self._http.base_url
        self.timeout = timeout
        self.retries = retries
        self.page_size = page_size
        self.parallel = max(1, parallel)
        self._sleep = sleep
        self._clock = clock
        self._request = self._http.request
        self._request_full = self._http.request_full
        self._scrub = self._http.scrub
        self._backoff = self._http.backoff
        self._releases: dict[str, Release] = dict(releases or {})
        # (group, version) -> the config of a live machine last seen at that version: a
        # base for creates and rollbacks, never copied with its mounts or labels
        self._seen: dict[tuple[str, str], dict[str, Any]] = {}
        self._nonces: dict[str, str] = {}
        self._holder: str | None = None  # the deployment holding the leases
        self._renewed_at: float | None = None  # when the last full renewal began
        self._renewing = threading.RLock()
        self._attempted: set[str] = set()  # create keys sent (their answers may be lost)
        self._lease_ttl = 30
        self._record_seq = 0
        self._record: dict[str, str] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FlyMachines(app={self.app!r}, base_url={self.base_url!r}, token=<redacted>)"

    def close(self) -> None:
        """Close the idle connections of the pool (the provider stays usable)."""
        self._http.close()

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
        ops = _instructions(raw)
        with self._lock:
            if not self._lapsed():
                # while the leases may have lapsed, a newer record is another
                # deployment's until the next write's check says otherwise
                self._record_seq = max(self._record_seq, best_seq)
                self._record = dict(record)
        return FleetState(machines=machines, record={**record, **ops})

    def instruct(self, values: Mapping[str, str]) -> None:
        """Leave an operator's instruction (``op.*`` keys) for the deployer: in the
        ``zdd_op`` metadata of one app machine, merged with what is there. Needs no
        lease; the deployer reads it at its next look at the fleet."""
        for key in values:
            if not key.startswith("op."):
                raise ProviderContractError(f"an instruction is an op.* key, not {key!r}")
        raw = self._list()
        apps = sorted(
            (item for item in raw if isinstance(item, dict)),
            key=lambda item: str(item.get("id")),
        )
        apps = [
            item
            for item in apps
            if _metadata(item).get("fly_process_group") != RELEASE_GROUP
            and str(item.get("state")) not in ("destroyed", "destroying")
        ]
        if not apps:
            raise ActionFailed("the app has no machine to leave an instruction on")
        doc = {**_instructions(raw), **{str(k): str(v) for k, v in values.items()}}
        mid = str(apps[0]["id"])
        self._request(
            "POST",
            f"/machines/{_q(mid)}/metadata/{OP_KEY}",
            action="metadata",
            machine=mid,
            body={"value": json.dumps(doc, sort_keys=True)},
        )

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

    def _list(self, *, include_leases: bool = False) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(10_000):
            query = {"limit": str(self.page_size)}
            if include_leases:
                query["include_leases"] = "true"
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
        if state not in (MachineState.DESTROYED, MachineState.DESTROYING) and config.get("image"):
            with self._lock:
                self._seen[(group, version)] = config
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
        """Lease every app machine for ``owner`` (or refresh the leases it holds).

        The leases are described with ``owner``, the deployment's id, which the record
        also names (``deployment``): a lease zdd finds described so is its own, never
        someone else's lock. A first acquisition that fails part-way gives back what
        it took. A deployer whose leases lapsed (paused past them) re-reads the fleet
        first and raises :class:`~zdd.DeploymentSuperseded` when another deployment
        has leased it or written its record since.
        """
        with self._renewing:
            with self._lock:
                holder = self._holder
            if holder is not None and holder != owner:
                if not self._lapsed():
                    raise DeploymentLocked(
                        f"the app is locked by deployment {holder}; wait for it to finish",
                        holder=holder,
                    )
                with self._lock:  # its leases expired: a new deployment takes the fleet
                    self._holder, self._renewed_at = None, None
                    self._nonces.clear()
            self._renew(owner, max(1, round(ttl)))

    def _renew(self, owner: str, ttl: int) -> None:
        started = self._clock()
        first = self._renewed_at is None
        if not first and self._lapsed():
            self._check_not_superseded(owner)
        with self._lock:
            self._holder = owner
            self._lease_ttl = ttl
        ids = [
            str(item["id"])
            for item in self._list()
            if _metadata(item).get("fly_process_group") != RELEASE_GROUP
            and str(item.get("state")) not in ("destroyed", "destroying")
        ]
        with self._lock:
            held_before = set(self._nonces)
        errors: list[ZddError] = []
        for mid, error in zip(ids, self._map(self._hold, ids), strict=True):
            if error is None:
                continue
            if isinstance(error, ActionFailed) and _status(error) == 404:
                with self._lock:  # destroyed since the list (often by this deployment)
                    self._nonces.pop(mid, None)
                continue
            errors.append(error)
        if errors:
            locked = [e for e in errors if isinstance(e, DeploymentLocked)]
            if first:
                with self._lock:
                    taken = [m for m in self._nonces if m not in held_before]
                self._map(self._release_lease, taken)
                with self._lock:
                    self._holder = None
            raise (locked or errors)[0]
        with self._lock:
            self._renewed_at = started

    def _lapsed(self) -> bool:
        """The leases may have expired: the last renewal began a lease TTL ago."""
        return self._renewed_at is not None and self._clock() - self._renewed_at >= self._lease_ttl

    def _check_not_superseded(self, owner: str) -> None:
        """After a lapse: stop if another deployment leased the fleet or wrote its record."""
        items = self._list(include_leases=True)
        now = time.time()
        best_seq, record = -1, {}
        for item in items:
            lease = item.get("lease")
            if isinstance(lease, dict):
                description = str(lease.get("description") or "")
                expires = lease.get("expires_at")
                live = not isinstance(expires, int | float) or expires > now
                if live and description and description != owner:
                    raise DeploymentSuperseded(
                        f"this deployment's leases lapsed (its deployer was paused longer "
                        f"than the {self._lease_ttl} s lease) and {_who(lease)} holds the "
                        f"fleet now; stopped without touching it",
                        holder=description,
                    )
            doc = _metadata(item).get(RECORD_KEY)
            if doc:
                seq, values = _decode_record(doc)
                if seq > best_seq:
                    best_seq, record = seq, values
        view = RecordView(record)
        with self._lock:
            known = self._record_seq
        if best_seq > known and view.deployment not in (None, owner):
            raise DeploymentSuperseded(
                f"this deployment's leases lapsed (its deployer was paused longer than the "
                f"{self._lease_ttl} s lease) and deployment {view.deployment} has run since "
                f"(the record says {view.phase or 'nothing'} for {view.target or 'no target'}); "
                f"stopped without touching the fleet: look at it before deploying again",
                holder=view.deployment or "",
            )

    def _hold(self, mid: str) -> ZddError | None:
        """Take or refresh the lease on ``mid``; the error, if any, as a value. A lease
        request is idempotent (a lost answer is adopted): a transient failure gets
        three rounds of the HTTP layer's retries before it counts."""
        error: ZddError | None = None
        for _ in range(3):
            error = self._hold_once(mid)
            if not (isinstance(error, ActionFailed) and error.transient):
                return error
        return error

    def _hold_once(self, mid: str) -> ZddError | None:
        try:
            self._lease(mid)
        except DeploymentLocked as exc:
            try:
                nonce = self._adopt(mid, exc)
            except ZddError as again:
                return again
            with self._lock:
                self._nonces[mid] = nonce
            try:
                self._lease(mid)
            except ZddError as again:
                return again
        except ZddError as exc:
            return exc
        return None

    def _lease(self, mid: str) -> None:
        with self._lock:
            nonce = self._nonces.get(mid)
            owner = self._holder or ""
            ttl = self._lease_ttl
        headers = {"fly-machine-lease-nonce": nonce} if nonce else {}
        body = self._request(
            "POST",
            f"/machines/{_q(mid)}/lease",
            body={"ttl": ttl, "description": owner},
            headers=headers,
            action="lease",
            machine=mid,
        )
        new_nonce = _lease_data(body).get("nonce")
        if not isinstance(new_nonce, str) or not new_nonce:
            raise ProviderContractError(f"the lease on {mid} came back without a nonce")
        with self._lock:
            self._nonces[mid] = new_nonce

    def _adopt(self, mid: str, refused: DeploymentLocked) -> str:
        """The nonce of the lease on ``mid`` when it is this deployment's own (taken with
        a create whose answer was lost, or by a refresh whose answer was), or a dead
        deployer's of this host; otherwise ``refused``, naming the lease's deployment."""
        try:
            body = self._request("GET", f"/machines/{_q(mid)}/lease", action="get", machine=mid)
        except ActionFailed as exc:
            if _status(exc) == 404:
                return ""  # the lease expired meanwhile: take a new one
            raise
        lease = _lease_data(body)
        nonce = lease.get("nonce")
        description = str(lease.get("description") or "")
        with self._lock:
            owner = self._holder
            attempted = bool(self._attempted)
        ours = description == owner and owner is not None
        if not ours and not description and attempted:
            # a lease taken by a create of ours whose answer was lost carries no description
            item = self._request("GET", f"/machines/{_q(mid)}", action="get", machine=mid)
            key = _metadata(item).get(_LABEL_PREFIX + "key") if isinstance(item, dict) else None
            with self._lock:
                ours = key is not None and key in self._attempted
        if (ours or _dead_local_deployer(description)) and isinstance(nonce, str) and nonce:
            return nonce
        raise DeploymentLocked(
            f"the app is locked: machine {mid} is leased by {_who(lease)}"
            + (f" until {_when(lease)}" if _when(lease) else "")
            + "; wait for it to finish or expire (if its deployer is gone: "
            f"`fly machine leases clear {mid}`)",
            holder=description or refused.holder,
        ) from None

    def release_lock(self, owner: str) -> None:
        with self._lock:
            if self._holder not in (None, owner):
                return
            mids = list(self._nonces)
        self._map(self._release_lease, mids)
        with self._lock:
            self._holder = None
            self._renewed_at = None

    def _release_lease(self, mid: str) -> None:
        with self._lock:
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

    def _map(self, fn: Callable[[str], _T], ids: list[str]) -> list[_T]:
        """``fn`` over ``ids`` on up to ``parallel`` threads (Fly paces per machine)."""
        if len(ids) <= 1:
            return [fn(i) for i in ids]
        with ThreadPoolExecutor(max_workers=min(self.parallel, len(ids))) as pool:
            return list(pool.map(fn, ids))

    def _guard(self) -> None:
        """Before a write: renew leases that may have lapsed (stopping if superseded)."""
        if self._renewed_at is None or not self._lapsed():
            return
        with self._renewing:
            if self._lapsed() and self._holder is not None:
                self._renew(self._holder, self._lease_ttl)

    # -- actions ---------------------------------------------------------------

    def perform(self, action: Action) -> Machine | None:
        self._guard()
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
            self._write("POST", f"{path}/start", mid, action="start")
        elif isinstance(action, Stop):
            body = {"signal": action.signal, "timeout": f"{action.timeout:g}s"}
            self._write("POST", f"{path}/stop", mid, action="stop", body=body)
        elif isinstance(action, Cordon):
            self._write("POST", f"{path}/cordon", mid, action="cordon")
        elif isinstance(action, Uncordon):
            self._write("POST", f"{path}/uncordon", mid, action="uncordon")
        elif isinstance(action, Destroy):
            try:
                self._write("DELETE", path, mid, action="destroy", query={"force": "true"})
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

    def _write(
        self,
        method: str,
        path: str,
        mid: str,
        *,
        action: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        retry: bool = True,
    ) -> Any:
        """A write to machine ``mid`` with its lease nonce; a 409 for a lease that turns
        out to be this deployment's own is answered by adopting it. ``retry``: the
        request is idempotent (cordon, stop, metadata...), so a lost answer may be
        retried here; creates and updates are not, their retries are the executor's."""
        for _ in range(2):
            self._guard()  # also each of a record write's many: a stall may fall between
            with self._lock:
                nonce = self._nonces.get(mid)
            headers = {"fly-machine-lease-nonce": nonce} if nonce else {}
            try:
                return self._request(
                    method,
                    path,
                    body=body,
                    query=query,
                    headers=headers,
                    action=action,
                    machine=mid,
                    retry=retry,
                )
            except DeploymentLocked as exc:
                adopted = self._adopt(mid, exc)
                with self._lock:
                    if adopted:
                        self._nonces[mid] = adopted
                    else:
                        self._nonces.pop(mid, None)
        raise ActionFailed(f"{method} {path}: the lease kept changing", transient=True)

    def _machine_config(
        self,
        group: str,
        version: str,
        release: Release | None,
        own: dict[str, Any] | None,
        mid: str = "",
    ) -> dict[str, Any]:
        """The config of a machine of ``group`` at ``version``.

        With the release's image: built from its fly.toml as flyctl does, else from
        the machine's own config (an update) or a machine of the group (a create) with
        the image swapped. Without one (a rollback): the machine's own config of that
        version from its history, else a live machine's of that version, else the image
        the record says the version ran. Never another machine's mounts or labels.
        """
        release = release if release is not None else self._releases.get(version)
        config: dict[str, Any] | None = None
        if release is not None and release.image:
            if release.app_config is not None:
                config = machine_config(
                    release.app_config,
                    group=group,
                    image=release.image,
                    version=version,
                    env=release.env,
                )
                # what fly.toml does not manage stays the machine's (its size without a
                # [[vm]], its schedule, standbys, dns), as flyctl keeps it; a new machine
                # takes its group's size, else flyctl's default
                base = own if own is not None else self._seen_config(group) or {}
                for key in _UNMANAGED:
                    if key not in config and base.get(key) is not None:
                        config[key] = _copy({"v": base[key]})["v"]
                if "guest" not in config:
                    config["guest"] = dict(VM_PRESETS["shared-cpu-1x"])
            else:
                config = _copy(own or self._seen_config(group, version) or self._seen_config(group))
                config["image"] = release.image
                if release.env:
                    config.setdefault("env", {}).update(dict(release.env))
                if release.checks and not _has_checks(config):
                    config["checks"] = {
                        (c.name or f"zdd{i}"): _check_config(c)
                        for i, c in enumerate(release.checks)
                    }
        else:
            history = self._history_config(mid, version) if mid else None
            config = _copy(history or self._seen_config(group, version))
            if not config.get("image"):
                with self._lock:
                    image = RecordView(self._record).image(group, version)
                if image:
                    config = _copy(own or self._seen_config(group))
                    config["image"] = image
        if not config.get("image"):
            raise ActionFailed(
                f"no image known for version {version!r} of group {group!r}: no machine runs "
                f"it and the deployment record does not name it; deploy it with its image given",
                transient=False,
            )
        config.pop("mounts", None)
        metadata = config.setdefault("metadata", {})
        for key in [k for k in metadata if k.startswith(_LABEL_PREFIX)]:
            del metadata[key]  # another machine's labels and record copy are not this one's
        metadata["fly_release_version"] = version
        metadata["fly_process_group"] = group
        metadata.setdefault("fly_platform_version", "v2")
        if own is not None:
            # what belongs to this machine: its own volume, its labels, the record
            if own.get("mounts"):
                config["mounts"] = _copy_list(own["mounts"])
            for k, v in (own.get("metadata") or {}).items():
                if k.startswith(_LABEL_PREFIX):
                    metadata[k] = v
        return config

    def _largest_guest(self, group: str) -> dict[str, Any] | None:
        """The guest of the group's largest machine: what flyctl gives a release command
        machine when machines exist."""
        with self._lock:
            guests = [
                c["guest"]
                for (g, _), c in sorted(self._seen.items())
                if g == group and isinstance(c.get("guest"), dict)
            ]
        return _copy(max(guests, key=lambda g: int(g.get("memory_mb") or 0))) if guests else None

    def _seen_config(self, group: str, version: str | None = None) -> dict[str, Any] | None:
        with self._lock:
            if version is not None:
                return self._seen.get((group, version))
            return next((c for (g, _), c in sorted(self._seen.items()) if g == group), None)

    def _history_config(self, mid: str, version: str) -> dict[str, Any] | None:
        """The newest config of ``version`` in the machine's own history
        (``GET /machines/{id}/versions``): what a rollback of it restores."""
        try:
            versions = self._request(
                "GET", f"/machines/{_q(mid)}/versions", action="get", machine=mid
            )
        except ActionFailed as exc:
            if _status(exc) in (404, 405, 501):
                return None
            raise
        best: tuple[str, dict[str, Any]] | None = None
        for entry in versions if isinstance(versions, list) else ():
            if not isinstance(entry, dict):
                continue
            config = entry.get("user_config")
            if not isinstance(config, dict) or not config.get("image"):
                continue
            metadata = config.get("metadata") or {}
            if isinstance(metadata, dict) and metadata.get("fly_release_version") == version:
                key = str(entry.get("version") or "")
                if best is None or key > best[0]:
                    best = (key, config)
        return best[1] if best else None

    def _create(self, action: Create) -> Machine:
        with self._lock:
            retried = action.key in self._attempted
        if retried:
            # the create may have happened (its answer lost): look for the key first
            existing = self._find_key(action.key)
            if existing is not None:
                m = self._to_machine(existing)
                assert m is not None
                self._lease_new(m.id)
                return m
        group_mounts = action.release.mounts if action.release is not None else ()
        if group_mounts:
            raise ActionFailed(
                f"cannot create a machine of group {action.group!r}: it mounts "
                f"{group_mounts[0].source!r}, and zdd does not create volumes; create one "
                f"with `fly volumes create {group_mounts[0].source} -r {action.region}` and "
                f"deploy again",
                transient=False,
            )
        config = self._machine_config(action.group, action.version, action.release, None)
        config["metadata"][_LABEL_PREFIX + "key"] = action.key
        config["metadata"][_LABEL_PREFIX + "role"] = action.role
        with self._lock:
            record = dict(self._record)
            seq = self._record_seq
            self._attempted.add(action.key)
        if record:
            config["metadata"][RECORD_KEY] = _encode_record(seq, record)
        body = {
            "config": config,
            "region": action.region,
            "skip_service_registration": action.hidden,
        }
        # not idempotent: one attempt; a retry (the executor's) looks the key up first
        item = self._request("POST", "/machines", body=body, action="create", retry=False)
        if not isinstance(item, dict):
            raise ProviderContractError("create did not answer a machine")
        m = self._to_machine(item)
        if m is None:
            raise ProviderContractError("create answered a machine without an id")
        self._lease_new(m.id)
        return m

    def _lease_new(self, mid: str) -> None:
        """Lease a machine this deployment just created, described as its own (not at
        create: a create's lease carries no description, so a rerun after a crash could
        not tell it from a stranger's). A failure is left to the next refresh."""
        with self._lock:
            holding = self._holder is not None
        if holding:
            self._hold(mid)

    def _find_key(self, key: str, *, include_deleted: bool = False) -> dict[str, Any] | None:
        """The machine created with idempotency key ``key`` (the newest, when several)."""
        query = {f"metadata.{_LABEL_PREFIX}key": key}
        if include_deleted:
            query["include_deleted"] = "true"
        body, _ = self._request_full("GET", "/machines", query=query, action="list")
        if not isinstance(body, list):
            raise ProviderContractError("GET machines did not answer a JSON array")
        found = [
            item
            for item in body
            if isinstance(item, dict)
            and _metadata(item).get(_LABEL_PREFIX + "key") == key
            and (include_deleted or str(item.get("state")) not in ("destroyed", "destroying"))
        ]
        return max(found, key=lambda i: str(i.get("created_at") or ""), default=None)

    def _update(self, action: Update) -> Machine | None:
        mid = action.machine or ""
        current = self._request("GET", f"/machines/{_q(mid)}", action="get", machine=mid)
        if not isinstance(current, dict):
            raise ProviderContractError("GET machine did not answer a JSON object")
        own = current.get("config") if isinstance(current.get("config"), dict) else {}
        assert isinstance(own, dict)
        group = _metadata(current).get("fly_process_group") or action.group
        config = self._machine_config(group, action.version, action.release, own, mid)
        if _same_release(own, config):
            # an update carried out whose answer was lost: this retry has nothing to do
            return self._to_machine(current)
        body = {
            "config": config,
            "current_version": current.get("version") or current.get("instance_id"),
        }
        # not idempotent (current_version): one attempt; the executor retries it
        item = self._write(
            "POST", f"/machines/{_q(mid)}", mid, action="update", body=body, retry=False
        )
        return self._to_machine(item) if isinstance(item, dict) else self.machine(mid)

    def _label(self, action: Label) -> Machine | None:
        if action.machine is not None:
            patch: dict[str, str | None] = {
                _LABEL_PREFIX + k.removeprefix("zdd."): v for k, v in action.values.items()
            }
            self._write(
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
            if action.replace:
                # what each version runs now: a resumed rollback restores these images
                for (group, version), config in sorted(self._seen.items()):
                    if config.get("image"):
                        record[image_key(group, version)] = str(config["image"])
            if self._holder:
                record[DEPLOYMENT] = self._holder
            self._record_seq += 1
            doc = _encode_record(self._record_seq, record)
            self._record = record
        ids = [
            str(item["id"])
            for item in self._list()
            if _metadata(item).get("fly_process_group") != RELEASE_GROUP
            and str(item.get("state")) not in ("destroyed", "destroying")
        ]
        replace = action.replace

        def write(mid: str) -> ZddError | None:
            try:
                self._write(
                    "PATCH",
                    f"/machines/{_q(mid)}/metadata",
                    mid,
                    action="metadata",
                    # a new deployment: operators' instructions were for an earlier one
                    body={"metadata": {RECORD_KEY: doc, **({OP_KEY: None} if replace else {})}},
                )
            except ActionFailed as exc:
                if _status(exc) == 404:
                    return None  # destroyed meanwhile: it needs no copy
                return exc
            except ZddError as exc:
                return exc
            return None

        errors = [e for e in self._map(write, ids) if e is not None]
        if errors:
            raise errors[0]
        return None

    def _run_command(self, action: RunCommand) -> None:
        """Run the release (or post-deploy) command in a temporary machine, exactly once:
        its create carries a key, a retry finds the machine the first try made, and a
        release machine of the same deployment that is still running (a deployer killed
        mid-command) is waited on instead of starting a second one."""
        try:
            argv = split_command(action.command, field=f"deploy.{action.phase}_command")
        except InvalidConfig as exc:
            raise ActionFailed(f"{action.phase} command: {exc}", transient=False) from None
        version = _first_version(action.target)
        group = _first_group(action.target)
        with self._lock:
            key = f"{action.phase}:{action.target}:{self._holder or ''}"
            retried = key in self._attempted
        found = self._find_key(key, include_deleted=True) if retried else None
        if found is None:
            found = self._running_command(action)
        if found is not None:
            mid = str(found["id"])
        else:
            release = action.release if action.release is not None else self._releases.get(version)
            if release is not None and release.image and release.app_config is not None:
                config = release_command_config(
                    release.app_config,
                    image=release.image,
                    version=version,
                    command_argv=argv,
                    env=release.env,
                    guest=self._largest_guest(group),
                )
            else:
                config = self._machine_config(group, version, action.release, None)
                for k in ("services", "mounts", "checks", "standbys"):
                    config.pop(k, None)
                config["init"] = {**(config.get("init") or {}), "cmd": argv}
                config["restart"] = {"policy": "no"}
                config["auto_destroy"] = True
            config["metadata"] = {
                **{
                    k: v
                    for k, v in (config.get("metadata") or {}).items()
                    if not k.startswith(_LABEL_PREFIX)
                },
                "fly_platform_version": "v2",
                "fly_process_group": RELEASE_GROUP,
                "fly_release_version": version,
                _LABEL_PREFIX + "key": key,
            }
            with self._lock:
                self._attempted.add(key)
            item = self._request(
                "POST",
                "/machines",
                body={"config": config, "skip_service_registration": True},
                action="create",
                retry=False,
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
                transient=False,
            )
        if code != 0:
            raise ActionFailed(
                f"{action.phase} command exited with status {code} on machine {mid}; "
                f"its log: `fly logs -a {self.app} --machine {mid}`",
                transient=False,
            )

    def _running_command(self, action: RunCommand) -> dict[str, Any] | None:
        """A command machine of the same deployment (phase and target) still running."""
        body, _ = self._request_full(
            "GET",
            "/machines",
            query={"metadata.fly_process_group": RELEASE_GROUP},
            action="list",
        )
        prefix = f"{action.phase}:{action.target}:"
        for item in body if isinstance(body, list) else ():
            if not isinstance(item, dict):
                continue
            key = _metadata(item).get(_LABEL_PREFIX + "key") or ""
            if key.startswith(prefix) and str(item.get("state")) not in (
                "destroyed",
                "destroying",
                "stopped",
                "failed",
            ):
                return item
        return None

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


def _instructions(raw: Sequence[Any]) -> dict[str, str]:
    """Operators' instructions in the machines' ``zdd_op`` metadata (``op.*`` only)."""
    out: dict[str, str] = {}
    for item in raw:
        text = _metadata(item).get(OP_KEY) if isinstance(item, dict) else None
        if not text or len(text) > 100_000:
            continue
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            continue
        if isinstance(doc, dict):
            out.update(
                {
                    k: v
                    for k, v in doc.items()
                    if isinstance(k, str) and k.startswith("op.") and isinstance(v, str)
                }
            )
    return out


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


_T = TypeVar("_T")

#: Machine config fields fly.toml does not manage: a machine keeps its own.
_UNMANAGED = ("guest", "schedule", "standbys", "dns")


def _copy(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """A deep copy of a JSON config (never shared between machines)."""
    out = json.loads(json.dumps(dict(config or {})))
    assert isinstance(out, dict)
    return out


def _copy_list(value: Any) -> list[Any]:
    out = json.loads(json.dumps(list(value)))
    assert isinstance(out, list)
    return out


def _has_checks(config: Mapping[str, Any]) -> bool:
    return bool(config.get("checks")) or any(
        s.get("checks") for s in config.get("services") or [] if isinstance(s, dict)
    )


def _same_release(own: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    """The machine already runs ``config``'s image as its version (an update landed)."""
    mine = own.get("metadata") if isinstance(own.get("metadata"), dict) else {}
    theirs = config.get("metadata") or {}
    assert isinstance(mine, dict)
    return (
        own.get("image") == config.get("image")
        and mine.get("fly_release_version") == theirs.get("fly_release_version")
        and own.get("services") == config.get("services")
        and own.get("env") == config.get("env")
    )


def _lease_data(body: Any) -> dict[str, Any]:
    """A lease answer: Fly's envelope (``{"status", "data": {...}}``) or the flat form."""
    data = body.get("data", body) if isinstance(body, dict) else {}
    return data if isinstance(data, dict) else {}


def _who(lease: Mapping[str, Any]) -> str:
    description = str(lease.get("description") or "")
    owner = str(lease.get("owner") or "")
    if description.startswith("zdd"):
        return f"deployment {description}" + (f" ({owner})" if owner else "")
    if description and owner:
        return f"{owner} ({description})"
    return owner or description or "someone"


def _when(lease: Mapping[str, Any]) -> str:
    expires = lease.get("expires_at")
    if isinstance(expires, int | float) and not isinstance(expires, bool):
        try:
            return datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        except (OverflowError, OSError, ValueError):
            return ""
    return ""


def _dead_local_deployer(description: str) -> bool:
    """``description`` names a zdd deployer of this host (``zdd@host:pid:...``, the
    default owner) whose process is gone: its leases may be taken over at once."""
    match = re.fullmatch(r"zdd@([^:]+):([0-9]{1,9}):.*", description)
    if match is None or match.group(1) != socket.gethostname():
        return False
    pid = int(match.group(2))
    if pid == os.getpid() or pid <= 1:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        return False
    return False
