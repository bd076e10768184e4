"""The Fly provider under what real Fly does: lost answers, killed and stalled
deployers, leases taken by others, many machines, and transient faults.

Everything runs against the local Machines API server (tests/fly_server.py, every
request validated against Fly's OpenAPI description). A deployer that must be killed
or paused is a real ``zdd deploy`` process; the server kills or stops it from inside
the request that must have been carried out first (``after_answer``), so the kill
lands at the same point on any machine, however loaded.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fly_server import FlyMachinesServer, RecordedRequest
from test_fly_deploy import NEW, TOKEN, app_machines, deploy, write_config

import zdd
from zdd.providers.fly import FlyMachines

OLD = "registry.fly.io/hello:v1"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FlyMachinesServer]:
    monkeypatch.setenv("FLY_API_TOKEN", TOKEN)
    monkeypatch.delenv("ZDD_FLY_API_URL", raising=False)
    fleet = zdd.FleetState(
        machines=[
            zdd.Machine(id=f"m{i}", version="v1", region=r)
            for i, r in enumerate(["ord", "ord", "ams"], 1)
        ]
    )
    with FlyMachinesServer(fleet, token=TOKEN, speed=50.0) as srv:
        yield srv
        assert srv.violations == []


def spawn(server: FlyMachinesServer, config: Path, *extra: str) -> subprocess.Popen[str]:
    """``zdd deploy`` as its own process (what a user runs, and what can be killed)."""
    env = {**os.environ, "FLY_API_TOKEN": TOKEN}
    env.pop("ZDD_FLY_API_URL", None)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zdd",
            "deploy",
            "--provider",
            "fly",
            "--config",
            str(config),
            "--api-url",
            server.url,
            "--poll-interval",
            "0.05",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def when(
    server: FlyMachinesServer,
    method: str,
    match: Callable[[str], bool],
    then: Callable[[], None],
    *,
    body: str = "",
    nth: int = 1,
) -> threading.Event:
    """Run ``then`` (once) inside the ``nth`` successful request matching, after it was
    carried out and before its answer leaves."""
    fired = threading.Event()
    seen = [0]

    def hook(request: RecordedRequest, raw: bytes) -> None:
        if fired.is_set() or request.method != method or not match(request.path):
            return
        if request.status is None or request.status >= 300 or body.encode() not in raw:
            return
        seen[0] += 1
        if seen[0] == nth:
            fired.set()
            then()

    server.after_answer = hook
    return fired


def error_line(err: str) -> str:
    """The one error line among the progress on stderr."""
    errors = [line for line in err.splitlines() if line.startswith("zdd: error:")]
    assert len(errors) == 1, err
    return errors[0]


def is_machine(path: str) -> bool:
    return path.count("/") == 5  # /v1/apps/{app}/machines/{id}


ACTIONS: dict[str, tuple[str, Callable[[str], bool], str]] = {
    "create": ("POST", lambda p: p.endswith("/machines"), '"fly_process_group": "app"'),
    "release-command": ("POST", lambda p: p.endswith("/machines"), "fly_app_release_command"),
    "record": ("PATCH", lambda p: p.endswith("/metadata"), "zdd_record"),
    "cordon": ("POST", lambda p: p.endswith("/cordon"), ""),
    "uncordon": ("POST", lambda p: p.endswith("/uncordon"), ""),
    "stop": ("POST", lambda p: p.endswith("/stop"), ""),
    "update": ("POST", is_machine, ""),
    "destroy": ("DELETE", is_machine, ""),
    "lease": ("POST", lambda p: p.endswith("/lease"), ""),
}


def assert_clean(server: FlyMachinesServer, *, image: str, version: str) -> None:
    """One release everywhere, serving; no duplicate, no lease, nothing left behind."""
    live = app_machines(server)
    assert len(live) == 3, [(m["id"], m["config"]["image"]) for m in live]
    assert Counter(m["region"] for m in live) == {"ord": 2, "ams": 1}
    for m in live:
        assert m["config"]["image"] == image, m["id"]
        assert m["config"]["metadata"]["fly_release_version"] == version, m["id"]
        assert m["state"] == "started", m["id"]
        assert not m["cordoned"], m["id"]
    keys = Counter(m["config"]["metadata"].get("zdd_key") for m in live)
    assert all(n == 1 for k, n in keys.items() if k), keys
    assert server.leases() == {}
    assert server.destroyed_with_volume == []


# -- lost answers --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bluegreen", "rolling-surge", "canary"])
def test_lost_create_answers_make_no_duplicates_and_no_lock(
    server: FlyMachinesServer, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # every app machine's create lands and its answer is lost (its lease's nonce too)
    server.drop_answers("POST", r"/machines$", 3, body_contains='"fly_process_group": "app"')
    code = deploy(server, write_config(tmp_path, name))
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "locked" not in out + err
    assert_clean(server, image=NEW, version="v2")
    assert server.release_command_runs() == 1


def test_a_lost_release_command_answer_runs_the_migration_once(
    server: FlyMachinesServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.drop_answers("POST", r"/machines$", 1, body_contains="fly_app_release_command")
    code = deploy(server, write_config(tmp_path, "rolling"))
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert server.release_command_runs() == 1
    assert_clean(server, image=NEW, version="v2")


def test_lost_update_answers_are_recognised(
    server: FlyMachinesServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.drop_answers("POST", r"/machines/m\d$", 3)
    code = deploy(server, write_config(tmp_path, "rolling"))
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert_clean(server, image=NEW, version="v2")
    updates = [r for r in server.requests if r.method == "POST" and is_machine(r.path)]
    assert len(updates) == 3  # no update sent twice: each retry saw its update had landed


def test_each_machine_keeps_its_own_volume(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLY_API_TOKEN", TOKEN)
    fleet = zdd.FleetState(
        machines=[
            zdd.Machine(id="m1", version="v1", volume="vol_1"),
            zdd.Machine(id="m2", version="v1"),
            zdd.Machine(id="m3", version="v1", volume="vol_3"),
        ]
    )
    with FlyMachinesServer(fleet, token=TOKEN, speed=50.0) as srv:
        code = deploy(srv, write_config(tmp_path, "rolling"))
        out, err = capsys.readouterr()
        assert code == 0, out + err
        mounts = {m["id"]: m["config"].get("mounts") for m in app_machines(srv)}
        assert srv.violations == []
    assert [m["volume"] for m in mounts["m1"]] == ["vol_1"]
    assert not mounts["m2"]
    assert [m["volume"] for m in mounts["m3"]] == ["vol_3"]


# -- killed deployers ------------------------------------------------------------------

KILLS = [
    ("rolling", "release-command"),
    ("rolling", "record"),
    ("rolling", "cordon"),
    ("bluegreen", "stop"),
    ("rolling", "update"),
    ("rolling-surge", "create"),
    ("rolling-surge", "destroy"),
    ("bluegreen", "create"),
    ("bluegreen", "uncordon"),
    ("bluegreen", "lease"),
    ("canary", "create"),
]


@pytest.mark.parametrize(("name", "action"), KILLS, ids=[f"{n}-{a}" for n, a in KILLS])
def test_kill_9_then_rerun_converges_with_nothing_left_behind(
    server: FlyMachinesServer,
    tmp_path: Path,
    name: str,
    action: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, name)
    method, match, body = ACTIONS[action]
    proc: list[subprocess.Popen[str]] = []
    fired = when(server, method, match, lambda: proc[0].kill(), body=body)
    proc.append(spawn(server, config))
    proc[0].communicate(timeout=120)
    server.after_answer = None
    assert fired.is_set(), f"the deployment never sent a {action}"
    assert proc[0].returncode == -signal.SIGKILL
    code = deploy(server, config)  # the same command again
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert_clean(server, image=NEW, version="v2")
    assert server.release_command_runs() <= 2


def test_a_killed_in_place_update_rolls_back_to_the_real_previous_image(
    server: FlyMachinesServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.set_image_health(NEW, "failing")
    config = write_config(tmp_path, "rolling")
    config.write_text(config.read_text().replace('wait_timeout = "60s"', 'wait_timeout = "3s"'))
    proc: list[subprocess.Popen[str]] = []
    method, match, _ = ACTIONS["update"]
    fired = when(server, method, match, lambda: proc[0].kill())
    proc.append(spawn(server, config))
    proc[0].communicate(timeout=120)
    server.after_answer = None
    assert fired.is_set()
    # the new process has never seen a v1 machine's config: it reads the machine's history
    code = deploy(server, config)
    out, err = capsys.readouterr()
    assert code == 1, out + err
    assert "finished: rolled_back" in err
    assert_clean(server, image=OLD, version="v1")


# -- two deployers, a stalled one, someone else's lease --------------------------------


def test_two_deployers_at_once_never_both_change_the_fleet(
    server: FlyMachinesServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path, "bluegreen")
    first, second = spawn(server, config), spawn(server, config)
    results = [p.communicate(timeout=120) for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))
    assert codes in ([0, 3], [3, 3]), results
    for (_out, err), proc in zip(results, (first, second), strict=True):
        if proc.returncode == 3:
            assert "locked" in error_line(err), err
    if codes == [0, 3]:
        assert_clean(server, image=NEW, version="v2")
    else:  # both found the other's leases part-way: neither changed anything
        assert {m["config"]["image"] for m in app_machines(server)} == {OLD}
        assert server.leases() == {}


def test_a_stalled_deployer_resumed_after_another_finished_changes_nothing(
    server: FlyMachinesServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "bluegreen")
    proc: list[subprocess.Popen[str]] = []
    # A stops (a laptop lid, a paused CI job) right after it recorded its deployment
    method, match, body = ACTIONS["record"]
    fired = when(server, method, match, lambda: proc[0].send_signal(signal.SIGSTOP), body=body)
    proc.append(spawn(server, config, "--lock-ttl", "2s"))
    try:
        deadline = time.monotonic() + 60
        while not fired.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fired.is_set()
        server.after_answer = None
        time.sleep(2.5)  # A's leases lapse (wall time, as Fly's do)
        # B deploys another release over it, and finishes
        v3 = tmp_path / "v3.toml"
        v3.write_text(config.read_text().replace("hello:v2", "hello:v3"))
        code = deploy(server, v3)
        out, err = capsys.readouterr()
        assert code == 0, out + err
        after_b = {m["id"]: (m["version"], m["config"]["image"]) for m in app_machines(server)}
        assert {image for _, image in after_b.values()} == {"registry.fly.io/hello:v3"}
        seen_before = len(server.requests)
    finally:
        proc[0].send_signal(signal.SIGCONT)
    out, err = proc[0].communicate(timeout=120)
    assert proc[0].returncode == 3, out + err
    assert "lapsed" in error_line(err)
    after_a = {m["id"]: (m["version"], m["config"]["image"]) for m in app_machines(server)}
    assert after_a == after_b
    # A changed nothing after it resumed (a write it had on the wire before it stopped
    # may arrive: it meets B's fleet and fails)
    later = [
        r
        for r in server.requests[seen_before:]
        if r.method != "GET" and not r.path.endswith("/lease") and (r.status or 500) < 300
    ]
    assert later == []
    assert server.leases() == {}


def test_someone_else_taking_a_lease_mid_deploy_stops_in_a_stated_way(
    server: FlyMachinesServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "bluegreen")
    # right after the first green is created, someone takes blue m1's lease
    method, match, body = ACTIONS["create"]
    when(
        server,
        method,
        match,
        lambda: (server.clear_lease("m1"), server.hold_lease("m1", owner="alice@example.com")),
        body=body,
    )
    code = deploy(server, config)
    out, err = capsys.readouterr()
    server.after_answer = None
    assert code == 3, out + err
    line = error_line(err)
    assert "alice@example.com" in line and "run the same deploy again" in line
    assert "ROLLING BACK" not in err
    # once alice is done, the same command resumes the deployment (not a rollback)
    server.clear_lease("m1")
    code = deploy(server, config)
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "ROLLING BACK" not in err
    assert_clean(server, image=NEW, version="v2")


# -- the lock itself -------------------------------------------------------------------


def provider(server: FlyMachinesServer) -> FlyMachines:
    return FlyMachines("hello", base_url=server.url)


def test_a_second_deployer_is_refused_naming_the_first(server: FlyMachinesServer) -> None:
    a, b = provider(server), provider(server)
    a.acquire_lock("zdd@host-a:1:1", 30)
    with pytest.raises(zdd.DeploymentLocked) as exc:
        b.acquire_lock("zdd@host-b:2:2", 30)
    assert "zdd@host-a:1:1" in str(exc.value) and exc.value.holder == "zdd@host-a:1:1"
    assert set(server.leases().values()) == {"zdd@host-a:1:1"}  # b gave back what it took
    a.release_lock("zdd@host-a:1:1")
    assert server.leases() == {}


def test_a_first_acquisition_failing_part_way_gives_back_what_it_took(
    server: FlyMachinesServer,
) -> None:
    server.hold_lease("m3", owner="alice@example.com")
    p = provider(server)
    with pytest.raises(zdd.DeploymentLocked, match=r"alice@example\.com"):
        p.acquire_lock("zdd-test", 30)
    assert server.leases() == {"m3": "held by a test"}
    # a transient failure part-way gives back too
    server.clear_lease("m3")
    server.fail_requests("POST", r"/m2/lease$", 100)
    with pytest.raises(zdd.ActionFailed):
        p.acquire_lock("zdd-test", 30)
    assert server.leases() == {}


def test_a_refresh_tolerates_destroyed_machines_and_transient_faults(
    server: FlyMachinesServer,
) -> None:
    p = provider(server)
    p.acquire_lock("zdd-test", 30)
    p.perform(zdd.Destroy(group="app", machine="m2"))
    server.fail_requests("POST", r"/lease$", 2)  # retried: a lease refresh is idempotent
    p.acquire_lock("zdd-test", 30)
    assert set(server.leases()) == {"m1", "m3"}
    p.release_lock("zdd-test")
    assert server.leases() == {}


def test_its_own_lease_after_a_lost_refresh_answer_is_adopted(server: FlyMachinesServer) -> None:
    p = provider(server)
    server.drop_answers("POST", r"/m1/lease$", 1)  # the lease is taken, its nonce lost
    p.acquire_lock("zdd-test", 30)
    assert server.leases() == {"m1": "zdd-test", "m2": "zdd-test", "m3": "zdd-test"}
    p.perform(zdd.Cordon(group="app", machine="m1"))  # the adopted nonce works
    p.release_lock("zdd-test")
    assert server.leases() == {}


def test_a_dead_deployer_of_this_host_is_taken_over_at_once(server: FlyMachinesServer) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    owner = f"zdd@{__import__('socket').gethostname()}:{dead.pid}:1"
    provider(server).acquire_lock(owner, 600)  # and then the process is gone
    p = provider(server)
    p.acquire_lock("zdd-next", 30)
    assert set(server.leases().values()) == {"zdd-next"}
    # a live deployer is never taken over
    live = f"zdd@{__import__('socket').gethostname()}:{os.getpid()}:1"
    p.release_lock("zdd-next")
    provider(server).acquire_lock(live, 600)
    with pytest.raises(zdd.DeploymentLocked):
        provider(server).acquire_lock("zdd-other", 30)


def test_the_executor_survives_a_refresh_that_keeps_failing(server: FlyMachinesServer) -> None:
    class Flaky(FlyMachines):
        refreshes = 0

        def acquire_lock(self, owner: str, ttl: float) -> None:
            Flaky.refreshes += 1
            if Flaky.refreshes > 1:
                raise zdd.ActionFailed("lease refresh: HTTP 503", transient=True)
            super().acquire_lock(owner, ttl)

    p = Flaky("hello", base_url=server.url)
    state = p.observe()
    check = zdd.HealthCheck(type="http", path="/healthz", port=8080)
    desired = zdd.Desired.from_fleet(state, zdd.Release(version="v2", image=NEW, checks=(check,)))
    result = zdd.execute(
        p, desired, zdd.BlueGreen(wait_timeout=30.0), lock_ttl=2.0, poll_interval=0.05
    )
    # stopped in a stated way, not escaped: the record says where, the message how
    assert result.outcome in ("failed", "converged"), result
    if result.outcome == "failed":
        assert "could not be refreshed" in (result.error or "")
        assert "run the same deploy again" in (result.error or "")


# -- many machines and many faults -----------------------------------------------------


def big_fleet(n: int) -> zdd.FleetState:
    regions = ["ord", "ams", "syd"]
    return zdd.FleetState(
        machines=[zdd.Machine(id=f"m{i}", version="v1", region=regions[i % 3]) for i in range(n)]
    )


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.6])
@pytest.mark.parametrize("name", ["rolling", "bluegreen"])
def test_transient_faults_end_in_a_stated_state(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    name: str,
    rate: float,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FLY_API_TOKEN", TOKEN)
    with FlyMachinesServer(big_fleet(3), token=TOKEN, speed=50.0, seed=int(rate * 10)) as srv:
        srv.fault_rate = rate
        srv.drop_rate = rate / 10
        code = deploy(srv, write_config(tmp_path, name))
        out, err = capsys.readouterr()
        srv.fault_rate = srv.drop_rate = 0.0
        assert code in (0, 1, 3), out + err
        if code != 0:
            # stated: one line saying what happened and how to go on
            line = error_line(err)
            assert "rolled back" in line or "run the same deploy again" in line, out + err
        live = app_machines(srv)
        keys = Counter(m["config"]["metadata"].get("zdd_key") for m in live)
        assert all(n == 1 for k, n in keys.items() if k), keys
        assert srv.release_command_runs() <= 1 + code  # never twice in one run
        # whatever state it stopped in, the same command then finishes the job
        code = deploy(srv, write_config(tmp_path, name))
        out, err = capsys.readouterr()
        assert code == 0, out + err
        assert srv.violations == []
    versions = {m["config"]["metadata"]["fly_release_version"] for m in live}
    assert versions <= {"v1", "v2"}


def test_300_machines_bluegreen_converges(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLY_API_TOKEN", TOKEN)
    with FlyMachinesServer(big_fleet(300), token=TOKEN, speed=50.0) as srv:
        p = FlyMachines("hello", base_url=srv.url, rate_scale=20.0)
        state = p.observe()
        assert len(state.machines) == 300  # three pages of 100
        check = zdd.HealthCheck(type="http", path="/healthz", port=8080)
        desired = zdd.Desired.from_fleet(
            state, zdd.Release(version="v2", image=NEW, checks=(check,))
        )
        log = io.StringIO()
        result = zdd.execute(
            p,
            desired,
            zdd.BlueGreen(wait_timeout=120.0, drain_delay=0.0),
            options=zdd.ExecuteOptions(concurrency=16),
            reporter=zdd.reporters.TextReporter(log),
            poll_interval=0.2,
        )
        assert result.converged, [
            line for line in log.getvalue().splitlines() if "FAILED" in line or "ROLL" in line
        ][:5]
        live = app_machines(srv)
        assert len(live) == 300
        assert {m["config"]["image"] for m in live} == {NEW}
        assert not any(m["cordoned"] for m in live)
        assert srv.leases() == {}
        lists = [r for r in srv.requests if r.method == "GET" and r.path.endswith("/machines")]
        creates = [r for r in srv.requests if r.method == "POST" and r.path.endswith("/machines")]
        assert len(creates) == 300
        assert len(lists) < len(creates)  # no list before every create
        assert srv.violations == []


# -- pins: each fails on a one-line change of the rule it names ------------------------


def test_no_check_result_yet_is_unknown_not_passing(server: FlyMachinesServer) -> None:
    p = provider(server)
    item = server.machine("m1")
    item["checks"] = []  # started, checks configured, none has answered yet
    from zdd.providers.fly import _health

    config = item["config"]
    assert config.get("services") or config.get("checks")
    assert _health(item, config, zdd.MachineState.STARTED) is zdd.Health.UNKNOWN
    assert p.machine("m1") is not None


def test_the_newest_record_copy_wins_and_every_machine_gets_it(server: FlyMachinesServer) -> None:
    p = provider(server)
    p.acquire_lock("zdd-test", 30)
    p.perform(zdd.Label(group="*", values={"phase": "deploying", "target": "app=v2"}))
    p.perform(zdd.Label(group="*", values={"phase": "done"}))
    copies = {m["id"]: m["config"]["metadata"].get("zdd_record") for m in app_machines(server)}
    assert len(set(copies.values())) == 1 and None not in copies.values(), copies
    # a fresh reader where one machine still holds an older copy reads the newest
    old = provider(server)
    server.clear_lease("m1")
    old_doc = '{"record":{"phase":"deploying","target":"app=v1"},"seq":0}'
    with server._lock:
        fm = server._machines["m1"]
        fm.config = {**fm.config, "metadata": {**fm.config["metadata"], "zdd_record": old_doc}}
    assert old.observe().record["phase"] == "done"
    p.release_lock("zdd-test")


def test_updates_send_current_version_and_refreshes_their_nonce(
    server: FlyMachinesServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bodies: list[bytes] = []

    def hook(request: RecordedRequest, raw: bytes) -> None:
        if request.method == "POST" and is_machine(request.path):
            bodies.append(raw)

    server.after_answer = hook
    assert deploy(server, write_config(tmp_path, "rolling"), "--lock-ttl", "3s") == 0, (
        capsys.readouterr()
    )
    server.after_answer = None
    assert len(bodies) == 3 and all(b'"current_version"' in b for b in bodies)
    # a refresh carries its nonce: answered at once, no 409 to adopt
    p = provider(server)
    p.acquire_lock("zdd-test", 30)
    seen = len(server.requests)
    p.acquire_lock("zdd-test", 30)
    refresh = [r for r in server.requests[seen:] if r.path.endswith("/lease")]
    assert [r.status for r in refresh] == [201, 201, 201], refresh
    p.release_lock("zdd-test")


def test_an_operator_answers_a_gate_while_the_deployer_holds_the_leases(
    server: FlyMachinesServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``zdd gate`` writes its instruction to machine metadata, which takes no lease."""
    config = write_config(tmp_path, "canary")
    text = config.read_text().replace(
        "[http_service]",
        '  [[deploy.canary_steps]]\n    machines = 1\n    gate = "canary-ok"\n\n[http_service]',
    )
    config.write_text(text)
    proc = spawn(server, config)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "wait   gate canary-ok" in line:
            break
    where = ["--provider", "fly", "--config", str(config), "--api-url", server.url]
    assert zdd.cli.main(["status", *where]) == 4
    assert "deploying (canary)" in capsys.readouterr().out
    assert zdd.cli.main(["gate", "canary-ok", "pass", *where]) == 0
    capsys.readouterr()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert "gate   canary-ok: pass" in err
    assert_clean(server, image=NEW, version="v2")
    assert zdd.cli.main(["status", *where]) == 0


def test_an_answer_given_while_the_fly_deployer_was_dead_is_picked_up(
    server: FlyMachinesServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "canary")
    config.write_text(
        config.read_text().replace(
            "[http_service]",
            '  [[deploy.canary_steps]]\n    machines = 1\n    gate = "canary-ok"\n\n[http_service]',
        )
    )
    proc = spawn(server, config)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "wait   gate canary-ok" in line:
            break
    proc.kill()
    proc.wait(10)
    where = ["--provider", "fly", "--config", str(config), "--api-url", server.url]
    assert zdd.cli.main(["gate", "canary-ok", "pass", *where]) == 0
    capsys.readouterr()
    code = deploy(server, config)  # the same command again: resumes, the answer waits
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "gate   canary-ok: pass" in err
    assert_clean(server, image=NEW, version="v2")
