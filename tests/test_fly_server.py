"""Tests of the local Fly Machines API server itself (tests/fly_server.py), with plain urllib."""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from fly_server import FlyMachinesServer
from openapi_check import OpenAPIChecker, load_subset

import zdd

TOKEN = "test-token"
BASE = "/v1/apps/hello/machines"
HELD_BY = re.compile(
    r"^aborted: machine ID (\S+) lease currently held by (\S+), "
    r"expires at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"
)


def config(
    version: str = "v2", *, group: str = "app", checks: bool = True, **extra: Any
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "image": f"registry.fly.io/hello:{version}",
        "metadata": {
            "fly_process_group": group,
            "fly_release_version": version,
            "fly_platform_version": "v2",
        },
        "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
    }
    if checks:
        cfg["services"] = [
            {
                "protocol": "tcp",
                "internal_port": 8080,
                "autostop": False,  # the old boolean form, as responses show it
                "ports": [{"port": 443, "handlers": ["tls", "http"]}],
                "checks": [
                    {
                        "type": "http",
                        "port": 8080,
                        "path": "/healthz",
                        "interval": "2s",
                        "timeout": "1s",
                        "grace_period": "1s",
                    }
                ],
            }
        ]
    cfg.update(extra)
    return cfg


class Response:
    def __init__(self, status: int, body: Any, headers: dict[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = headers


def call(
    server: FlyMachinesServer,
    method: str,
    path: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    auth: str | None = f"Bearer {TOKEN}",
    raw: bytes | None = None,
) -> Response:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(server.url + path, data=data, method=method)
    if auth is not None:
        req.add_header("Authorization", auth)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            payload = resp.read()
            status, hdrs = resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        status, hdrs = exc.code, dict(exc.headers)
    return Response(status, json.loads(payload) if payload else None, hdrs)


@pytest.fixture
def server() -> Iterator[FlyMachinesServer]:
    with FlyMachinesServer(zdd.FleetState.uniform(3)) as srv:
        yield srv
        assert srv.violations == []


def create(server: FlyMachinesServer, **body: Any) -> dict[str, Any]:
    body.setdefault("config", config())
    resp = call(server, "POST", BASE, body)
    assert resp.status == 200, resp.body
    machine: dict[str, Any] = resp.body
    return machine


# -- auth -------------------------------------------------------------------------------


def test_auth_requires_the_token_in_bearer_or_flyv1_form(server: FlyMachinesServer) -> None:
    for auth in (None, "Bearer wrong", f"Basic {TOKEN}", TOKEN):
        resp = call(server, "GET", BASE, auth=auth)
        assert resp.status == 401
        assert resp.body == {"error": "Authenticate: token validation error"}
    assert call(server, "GET", BASE, auth=f"Bearer {TOKEN}").status == 200
    assert call(server, "GET", BASE, auth=f"FlyV1 {TOKEN}").status == 200


def test_the_authorization_header_is_never_recorded(server: FlyMachinesServer) -> None:
    call(server, "GET", BASE)
    call(server, "GET", BASE, auth="Bearer not-the-token")
    create(server, name="web-1")
    assert [r.status for r in server.requests] == [200, 401, 200]
    recorded = repr(server.requests) + repr(server.violations)
    assert TOKEN not in recorded
    assert "not-the-token" not in recorded
    assert "Authorization" not in recorded and "Bearer" not in recorded


# -- list -------------------------------------------------------------------------------


def test_list_pages_with_limit_and_the_fly_next_cursor_header() -> None:
    with FlyMachinesServer(zdd.FleetState.uniform(5)) as server:
        seen: list[str] = []
        path = f"{BASE}?limit=2"
        pages = 0
        while True:
            resp = call(server, "GET", path)
            assert resp.status == 200
            assert len(resp.body) <= 2
            seen += [m["id"] for m in resp.body]
            pages += 1
            cursor = resp.headers.get("fly-next-cursor")
            if cursor is None:
                break
            path = f"{BASE}?limit=2&cursor={cursor}"
        assert pages == 3
        assert seen == ["m1", "m2", "m3", "m4", "m5"]
        assert "fly-next-cursor" not in call(server, "GET", BASE).headers  # no limit: all
        assert len(call(server, "GET", BASE).body) == 5
        assert call(server, "GET", f"{BASE}?cursor=abc").status == 400
        assert server.violations == []


def test_list_filters_by_metadata_region_state_and_hides_destroyed(
    server: FlyMachinesServer,
) -> None:
    web = create(server, config=config("v2", group="web"), region="ams")
    mid = web["id"]
    resp = call(server, "GET", f"{BASE}?metadata.fly_process_group=web")
    assert [m["id"] for m in resp.body] == [mid]
    both = f"{BASE}?metadata.fly_process_group=web&metadata.fly_release_version=v1"
    assert call(server, "GET", both).body == []
    assert [m["id"] for m in call(server, "GET", f"{BASE}?region=ams").body] == [mid]
    started = call(server, "GET", f"{BASE}?state=started,stopped").body
    assert {m["id"] for m in started} == {"m1", "m2", "m3"}  # the new one is still starting
    summary = call(server, "GET", f"{BASE}?summary=true").body
    assert all("config" not in m and "events" not in m for m in summary)
    assert call(server, "DELETE", f"{BASE}/{mid}?force=true").status == 200
    assert mid not in [m["id"] for m in call(server, "GET", BASE).body]
    deleted = call(server, "GET", f"{BASE}?include_deleted=true").body
    assert {m["id"]: m["state"] for m in deleted}[mid] == "destroyed"


# -- create, get, update ----------------------------------------------------------------------


def test_create_get_update_and_current_version_conflict(server: FlyMachinesServer) -> None:
    m = create(server, name="web-1", region="ord")
    assert re.fullmatch(r"[0-9a-f]{14}", m["id"])
    assert m["state"] in ("created", "starting")
    assert m["instance_id"] == m["version"] and len(m["version"]) == 26
    assert m["config"]["metadata"]["fly_release_version"] == "v2"
    assert m["host_status"] == "ok" and m["cordoned"] is False and "nonce" not in m

    got = call(server, "GET", f"{BASE}/{m['id']}")
    assert got.status == 200 and got.body["version"] == m["version"]
    assert call(server, "GET", f"{BASE}/nope").body == {"error": "machine not found"}
    dup = call(server, "POST", BASE, {"config": config(), "name": "web-1"})
    assert dup.status == 409 and "unique machine name violation" in dup.body["error"]

    body = {"config": config("v3"), "current_version": m["version"]}
    updated = call(server, "POST", f"{BASE}/{m['id']}", body)
    assert updated.status == 200
    assert updated.body["version"] != m["version"]
    assert updated.body["config"]["image"].endswith(":v3")
    assert updated.body["events"][0]["type"] == "update"

    stale = call(server, "POST", f"{BASE}/{m['id']}", {"config": config("v4"), **body})
    assert stale.status == 409 and "error" in stale.body
    after = call(server, "GET", f"{BASE}/{m['id']}").body
    assert after["version"] == updated.body["version"]
    assert after["config"]["image"].endswith(":v3")
    wait = f"{BASE}/{m['id']}/wait?state=started&version={after['version']}&timeout=60"
    assert call(server, "GET", wait).status == 200
    assert server.fleet.machines[m["id"]].version == "v3"


def test_skip_launch_and_skip_service_registration(server: FlyMachinesServer) -> None:
    m = create(server, skip_launch=True, skip_service_registration=True)
    assert m["state"] == "created" and m["cordoned"] is True
    start = call(server, "POST", f"{BASE}/{m['id']}/start")
    assert start.status == 200 and start.body["previous_state"] == "created"
    assert call(server, "GET", f"{BASE}/{m['id']}/wait?state=started").status == 200
    assert call(server, "POST", f"{BASE}/{m['id']}/uncordon").status == 200
    assert call(server, "GET", f"{BASE}/{m['id']}").body["cordoned"] is False


def test_checks_follow_the_fleet_health_per_image(server: FlyMachinesServer) -> None:
    server.set_image_health("registry.fly.io/hello:bad", "failing")
    bad = create(server, config=config("bad"))
    good = create(server, config=config("v2"))
    plain = create(server, config=config("v5", checks=False))
    for m in (bad, good, plain):
        assert call(server, "GET", f"{BASE}/{m['id']}/wait?state=started").status == 200
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        checks = {
            m["id"]: [c["status"] for c in call(server, "GET", f"{BASE}/{m['id']}").body["checks"]]
            for m in (bad, good, plain)
        }
        if checks[bad["id"]] and checks[good["id"]]:
            break
        time.sleep(0.02)
    assert checks[bad["id"]] == ["critical"]
    assert checks[good["id"]] == ["passing"]
    assert checks[plain["id"]] == []  # no checks configured
    names = call(server, "GET", f"{BASE}/{good['id']}").body["checks"]
    assert names[0]["name"] == "servicecheck-00-http-8080"


def test_stop_start_and_destroy_rules(server: FlyMachinesServer) -> None:
    refused = call(server, "DELETE", f"{BASE}/m1")
    assert refused.status == 412 and "failed_precondition" in refused.body["error"]
    stop = call(server, "POST", f"{BASE}/m1/stop", {"signal": "SIGTERM", "timeout": "1s"})
    assert stop.status == 200 and stop.body == {"ok": True}
    m1 = call(server, "GET", f"{BASE}/m1").body
    stopped = f"{BASE}/m1/wait?state=stopped&version={m1['version']}"
    assert call(server, "GET", stopped).status == 200
    exits = [e for e in call(server, "GET", f"{BASE}/m1/events").body if e["type"] == "exit"]
    assert exits[0]["request"]["exit_event"]["requested_stop"] is True
    assert call(server, "DELETE", f"{BASE}/m1").status == 200
    assert call(server, "DELETE", f"{BASE}/m2?force=true").status == 200
    assert call(server, "DELETE", f"{BASE}/m3?kill=true").status == 200  # fly-go's spelling
    assert call(server, "GET", f"{BASE}/m2").status == 404
    assert call(server, "GET", f"{BASE}/m2/wait?state=destroyed").body["state"] == "destroyed"
    assert server.fleet.observe().live == ()


# -- wait ------------------------------------------------------------------------------------


def test_wait_answers_408_on_timeout_and_200_when_reached(server: FlyMachinesServer) -> None:
    t = time.monotonic()
    resp = call(server, "GET", f"{BASE}/m1/wait?state=stopped&timeout=5")
    assert resp.status == 408 and "error" in resp.body
    assert time.monotonic() - t < 1.5  # 5 virtual seconds at speed 50
    ok = call(server, "GET", f"{BASE}/m1/wait?state=started&timeout=60")
    assert ok.status == 200
    assert set(ok.body) == {"ok", "state", "version", "event_id"} and ok.body["ok"] is True
    settled = call(server, "GET", f"{BASE}/m1/wait?state=settled")
    assert settled.status == 200 and settled.body["state"] == "started"
    assert call(server, "GET", f"{BASE}/m1/wait?timeout=61").status == 400
    assert call(server, "GET", f"{BASE}/nope/wait").status == 404


# -- leases ----------------------------------------------------------------------------------


def test_lease_envelope_refresh_conflict_and_release(server: FlyMachinesServer) -> None:
    got = call(server, "POST", f"{BASE}/m1/lease?ttl=13")  # fly-go: ttl in the query, no body
    assert got.status == 201
    assert got.body["status"] == "success"
    data = got.body["data"]
    assert set(data) == {"nonce", "expires_at", "owner", "description", "version"}
    assert isinstance(data["expires_at"], int) and data["expires_at"] > time.time()
    nonce = data["nonce"]
    lease_path = f"{BASE}/m1/lease"
    again = call(server, "POST", lease_path, headers={"fly-machine-lease-nonce": nonce})
    assert again.status == 201 and again.body["data"]["nonce"] == nonce
    other = call(server, "POST", lease_path, {"ttl": 30, "description": "deploy"})
    assert other.status == 409
    match = HELD_BY.match(other.body["error"])
    assert match and match.group(1) == "m1" and match.group(2) == server.owner
    assert call(server, "GET", lease_path).body["data"]["nonce"] == nonce
    assert call(server, "POST", f"{BASE}/m1/cordon").status == 409  # no nonce
    with_nonce = {"fly-machine-lease-nonce": nonce}
    assert call(server, "POST", f"{BASE}/m1/cordon", headers=with_nonce).status == 200
    released = call(server, "DELETE", lease_path, headers=with_nonce)
    assert released.status == 200 and released.body == {"status": "success", "data": {"ok": True}}
    assert call(server, "GET", lease_path).status == 404
    fresh = call(server, "POST", lease_path, {"ttl": 30, "description": "deploy"})
    assert fresh.status == 201 and fresh.body["data"]["description"] == "deploy"


def test_a_lease_held_by_someone_else_blocks_every_write(server: FlyMachinesServer) -> None:
    nonce = server.hold_lease("m2")
    writes = [
        ("POST", f"{BASE}/m2", {"config": config()}),
        ("POST", f"{BASE}/m2/start", None),
        ("POST", f"{BASE}/m2/stop", None),
        ("POST", f"{BASE}/m2/cordon", None),
        ("POST", f"{BASE}/m2/uncordon", None),
        ("DELETE", f"{BASE}/m2?force=true", None),
        ("PATCH", f"{BASE}/m2/metadata", {"metadata": {"a": "1"}}),
        ("POST", f"{BASE}/m2/lease", {"ttl": 10}),
    ]
    for method, path, body in writes:
        for headers in ({}, {"fly-machine-lease-nonce": "wrong"}):
            resp = call(server, method, path, body, headers=headers)
            assert resp.status == 409, (method, path)
            match = HELD_BY.match(resp.body["error"])
            assert match and match.group(2) == "someone-else@example.com"
    resp = call(server, "POST", f"{BASE}/m2/cordon", headers={"fly-machine-lease-nonce": nonce})
    assert resp.status == 200
    # the per-key metadata endpoints take no nonce (the OpenAPI lists none; fly-go's
    # SetMetadata and DeleteMetadata send none): an operator's instruction gets through
    assert call(server, "POST", f"{BASE}/m2/metadata/a", {"value": "1"}).status == 204
    assert call(server, "DELETE", f"{BASE}/m2/metadata/a").status == 204


def test_create_with_lease_ttl_returns_the_nonce(server: FlyMachinesServer) -> None:
    m = create(server, lease_ttl=30)
    assert re.fullmatch(r"[0-9a-f]{32}", m["nonce"])
    lease = call(server, "GET", f"{BASE}/{m['id']}/lease").body["data"]
    assert lease["nonce"] == m["nonce"]
    assert call(server, "GET", f"{BASE}/{m['id']}").body.get("nonce") is None
    assert call(server, "POST", f"{BASE}/{m['id']}/cordon").status == 409


# -- metadata --------------------------------------------------------------------------------


def test_metadata_patch_sets_and_removes_keys(server: FlyMachinesServer) -> None:
    md = f"{BASE}/m1/metadata"
    assert call(server, "POST", f"{md}/a", {"value": "1"}).status == 204
    assert call(server, "POST", f"{md}/b", {"value": "2"}).status == 204
    assert call(server, "GET", f"{md}/a").body == {"value": "1"}
    patch = {"metadata": {"a": None, "b": "", "c": "3"}}
    resp = call(server, "PATCH", md, patch)
    assert resp.status == 204 and resp.body is None
    got = call(server, "GET", md).body
    assert got == {
        "fly_process_group": "app",
        "fly_release_version": "v1",
        "fly_platform_version": "v2",
        "c": "3",
    }
    assert call(server, "GET", f"{md}/a").status == 404
    version = call(server, "GET", f"{BASE}/m1").body["version"]
    stale = {"metadata": {"d": "4"}, "machine_version": "01HQ0000000000000000000000"}
    assert call(server, "PATCH", md, stale).status == 412
    assert call(server, "PATCH", md, {**stale, "machine_version": version}).status == 204
    assert call(server, "DELETE", f"{md}/c").status == 204
    assert "c" not in call(server, "GET", md).body
    assert server.fleet.machines["m1"].labels == {"d": "4"}


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "fragment"),
    [
        ("POST", BASE, {"config": "registry.fly.io/hello:v2"}, "body.config: expected object"),
        ("POST", BASE, {"config": config(), "regoin": "ord"}, "unknown field 'regoin'"),
        ("POST", BASE, {"config": config(imagee="x")}, "body.config: unknown field 'imagee'"),
        ("POST", BASE, {"config": config(), "lease_ttl": 1.5}, "lease_ttl: expected integer"),
        ("POST", BASE, {"config": config(), "name": None}, "body.name: expected string, got null"),
        ("POST", f"{BASE}/m1/stop", {"signal": "SIGSTOP"}, "body.signal: 'SIGSTOP' is not one of"),
        ("POST", f"{BASE}/m1/stop", {"timeout": 10}, "body.timeout: expected string"),
        ("PATCH", f"{BASE}/m1/metadata", {"metadata": {"a": 1}}, "body.metadata.a"),
        ("GET", f"{BASE}/m1/wait?state=running", None, "query.state: 'running' is not one of"),
        ("GET", f"{BASE}?include_deleted=yes", None, "query.include_deleted: expected a boolean"),
        ("GET", f"{BASE}?limit=ten", None, "query.limit: expected an integer"),
        ("GET", f"{BASE}?page=2", None, "query: unknown parameter 'page'"),
        ("DELETE", f"{BASE}/m1/lease", None, "missing required header 'fly-machine-lease-nonce'"),
        ("POST", f"{BASE}/m1/restart", None, "not an operation this server implements"),
    ],
)
def test_violations_answer_400_and_are_recorded(
    method: str, path: str, body: Any, fragment: str
) -> None:
    with FlyMachinesServer(zdd.FleetState.uniform(1)) as server:
        resp = call(server, method, path, body)
        assert resp.status in (400, 404)
        assert set(resp.body) == {"error"}
        assert len(server.violations) >= 1
        assert any(fragment in v for v in server.violations), server.violations
        assert len(server.fleet.machines) == 1  # nothing was created


def test_malformed_json_is_a_violation(server: FlyMachinesServer) -> None:
    resp = call(server, "POST", BASE, raw=b"{not json")
    assert resp.status == 400
    assert [v for v in server.violations if "not valid JSON" in v]
    server.violations.clear()


# -- faults -----------------------------------------------------------------------------------


def test_drop_rate_closes_the_connection_after_creating(server: FlyMachinesServer) -> None:
    server.drop_rate = 1.0
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
        call(server, "POST", BASE, {"config": config(), "name": "dropped-1"})
    server.drop_rate = 0.0
    names = [m["name"] for m in call(server, "GET", BASE).body]
    assert "dropped-1" in names  # created: the client must not create it twice
    assert server.requests[0].status is None and server.requests[0].method == "POST"


def test_fault_rate_answers_500_or_429_with_retry_after(server: FlyMachinesServer) -> None:
    server.fault_rate = 1.0
    seen = set()
    for _ in range(12):
        resp = call(server, "POST", BASE, {"config": config()})
        seen.add(resp.status)
        assert resp.status in (500, 429) and "error" in resp.body
        if resp.status == 429:
            assert resp.headers["Retry-After"] in ("0", "1")
    assert seen == {500, 429}
    server.fault_rate = 0.0
    assert len(call(server, "GET", BASE).body) == 3  # nothing was created


def test_slow_rate_delays_answers(server: FlyMachinesServer) -> None:
    server.slow_rate, server.slow_seconds = 1.0, 0.2
    t = time.monotonic()
    assert call(server, "GET", f"{BASE}/m1").status == 200
    assert time.monotonic() - t >= 0.2


# -- release command ----------------------------------------------------------------------------


@pytest.mark.parametrize("exit_code", [0, 3])
def test_release_command_machine_exits_with_the_configured_code(exit_code: int) -> None:
    with FlyMachinesServer(zdd.FleetState.uniform(2)) as server:
        server.release_exit_code = exit_code
        cfg = config(
            "v2",
            group="fly_app_release_command",
            checks=False,
            auto_destroy=True,
            restart={"policy": "no"},
            init={"cmd": ["bin/migrate"]},
        )
        m = create(server, config=cfg, skip_launch=True)
        mid = m["id"]
        assert call(server, "GET", f"{BASE}/{mid}/wait?state=stopped").status == 200
        assert call(server, "POST", f"{BASE}/{mid}/start").status == 200
        assert call(server, "GET", f"{BASE}/{mid}/wait?state=started").status in (200, 404)
        done = call(server, "GET", f"{BASE}/{mid}/wait?state=destroyed&timeout=60")
        assert done.status == 200
        assert call(server, "GET", f"{BASE}/{mid}").status == 404
        events = call(server, "GET", f"{BASE}/{mid}/events").body
        assert [e["type"] for e in events][:2] == ["destroy", "exit"]
        exit_event = next(e for e in events if e["type"] == "exit")
        assert exit_event["request"]["exit_event"]["exit_code"] == exit_code
        assert mid not in server.fleet.machines  # not an app machine
        assert len(server.fleet.observe().live) == 2
        assert server.violations == []


# -- shapes ---------------------------------------------------------------------------------------


def test_machine_json_matches_the_spec_machine_schema(server: FlyMachinesServer) -> None:
    checker = OpenAPIChecker()
    schema = {"$ref": "#/components/schemas/Machine"}
    create(server, lease_ttl=10, skip_service_registration=True)
    machines = call(server, "GET", f"{BASE}?include_leases=true").body
    assert len(machines) == 4
    for m in machines:
        assert checker.validate(m, schema, "machine") == []
    events = call(server, "GET", f"{BASE}/m1/events?limit=5").body
    event_schema = {"type": "array", "items": {"$ref": "#/components/schemas/MachineEvent"}}
    assert checker.validate(events, event_schema, "events") == []


def test_the_subset_records_its_provenance() -> None:
    subset = load_subset()
    prov = subset["x-provenance"]
    assert re.fullmatch(r"[0-9a-f]{64}", prov["source_sha256"])
    assert re.fullmatch(r"[0-9a-f]{40}", prov["upstream"]["commit"])
    assert prov["removed"]["operations"] and prov["changed"] and prov["copied_on"]
    assert set(subset["paths"]) == {
        p.split(" ")[1] for p in prov["kept_operations"]
    }  # nothing else slipped in


# -- robustness -----------------------------------------------------------------------------------


def test_keep_alive_connections_carry_several_requests(server: FlyMachinesServer) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    try:
        for method, path, body, status in [
            ("POST", f"{BASE}/m1/metadata/k", b'{"value": "v"}', 204),
            ("GET", f"{BASE}/m1/metadata/k", None, 200),
            ("PATCH", f"{BASE}/m1/metadata", b'{"metadata": {"k": null}}', 204),
            ("GET", f"{BASE}/m1", None, 200),
        ]:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == status
            assert resp.getheader("fly-request-id")
    finally:
        conn.close()


def test_concurrent_clients_with_faults_leave_no_server_errors() -> None:
    import threading

    with FlyMachinesServer(zdd.FleetState.uniform(2), seed=3) as server:
        server.fault_rate = 0.2
        errors: list[BaseException] = []

        def worker(n: int) -> None:
            try:
                for i in range(3):
                    resp = call(server, "POST", BASE, {"config": config(), "name": f"w{n}-{i}"})
                    if resp.status != 200:
                        continue
                    mid = resp.body["id"]
                    call(server, "GET", f"{BASE}/{mid}/wait?state=started&timeout=10")
                    call(server, "GET", f"{BASE}?metadata.fly_process_group=app&limit=3")
                    call(server, "DELETE", f"{BASE}/{mid}?force=true")
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        assert errors == []
        assert server.violations == []
        assert {r.status for r in server.requests} <= {200, 404, 408, 429, 500}
        assert len(server.requests) >= 24


def test_the_validator_keywords() -> None:
    spec = {
        "paths": {},
        "components": {
            "schemas": {
                "A": {"type": "object", "properties": {"a": {"type": "integer"}}},
                "B": {"type": "object", "properties": {"b": {"type": ["string", "null"]}}},
            }
        },
    }
    checker = OpenAPIChecker(spec)
    both = {"allOf": [{"$ref": "#/components/schemas/A"}, {"$ref": "#/components/schemas/B"}]}
    assert checker.validate({"a": 1, "b": None}, both) == []
    assert checker.validate({"a": 1, "c": 2}, both) == ["body: unknown field 'c'"]
    assert checker.validate({"a": True}, both) == ["body.a: expected integer, got boolean"]
    nullable = {"type": "string", "nullable": True, "enum": ["x"]}
    assert checker.validate(None, nullable) == []
    assert checker.validate("y", nullable) == ["body: 'y' is not one of ['x']"]
    assert checker.validate(1, {"enum": [True]}) == ["body: 1 is not one of [True]"]
    closed = {"type": "object", "additionalProperties": False}
    assert checker.validate({"z": 1}, closed) == ["body: unknown field 'z'"]
    free = {"type": "object"}
    assert checker.validate({"z": 1}, free) == []
    required = {"type": "object", "properties": {"n": {"type": "string"}}, "required": ["n"]}
    assert checker.validate({}, required) == ["body: missing required field 'n'"]
    with pytest.raises(ValueError, match="does not check"):
        OpenAPIChecker({"paths": {}, "components": {"schemas": {"X": {"oneOf": []}}}})
