"""``zdd deploy --provider local``: the user's own app on this host behind a real HAProxy.

Every test runs the real CLI in a subprocess (as a user or a CI job would), in its
own temporary directory, with the bundled demo app as "the user's app". The fleet
and HAProxy must outlive each deployer, a later process must adopt them, and the
state directory must never make zdd write through a planted link or signal a
process it did not start.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zdd.providers._haproxy import HAPROXY_MISSING, _find_haproxy
from zdd.providers.local import LocalProvider

try:
    _find_haproxy("haproxy")
except Exception:  # pragma: no cover - CI installs HAProxy
    pytest.skip(HAPROXY_MISSING, allow_module_level=True)

pytestmark = pytest.mark.haproxy

FLY_TOML = """\
app = "hello"
kill_signal = "SIGTERM"
kill_timeout = "5s"

[env]
GREETING = "s3cr3t-greeting"

[processes]
app = "{python} -m zdd.demo.app"

[http_service]
internal_port = 8080

[[http_service.checks]]
interval = "1s"
timeout = "1s"
grace_period = "1s"
method = "GET"
path = "/health"

[deploy]
strategy = "rolling"
max_surge = 1
drain_delay = "0s"
"""


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    """An app directory with a fly.toml; whatever fleet a test leaves there is stopped."""
    (tmp_path / "fly.toml").write_text(FLY_TOML.format(python=sys.executable))
    yield tmp_path
    state = tmp_path / ".zdd" / "local"
    if (state / "state.json").exists() and not (state / "state.json").is_symlink():
        LocalProvider.shutdown(state)


_DEPLOY = (sys.executable, "-m", "zdd", "deploy", "--provider", "local", "--config", "fly.toml")


def zdd(app: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_DEPLOY, *args],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_COLOR": "1"},
    )


def state(app: Path) -> dict[str, object]:
    doc = json.loads((app / ".zdd" / "local" / "state.json").read_text())
    assert isinstance(doc, dict)
    return doc


def get(port: int, path: str = "/") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def port_of(app: Path) -> int:
    hx = state(app)["haproxy"]
    assert isinstance(hx, dict)
    return int(hx["port"])


def fleet_pids(app: Path) -> dict[str, int]:
    machines = state(app)["machines"]
    assert isinstance(machines, dict)
    return {mid: int(m["pid"]) for mid, m in machines.items()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_the_fleet_outlives_the_deployer_and_the_next_deploy_adopts_it(app: Path) -> None:
    first = zdd(app)
    assert first.returncode == 0, first.stderr
    assert "converged" in first.stdout
    port = port_of(app)
    v1 = fleet_pids(app)
    assert len(v1) == 2  # flyctl's first machines: 2 for a serving group
    assert sorted(v1) == ["v1-app-surge-local-1", "v1-app-surge-local-2"]  # the plan's names
    # the deployer is gone: HAProxy and the app still serve
    assert get(port) == (200, "version v1\n")
    assert all(alive(pid) for pid in v1.values())

    # a later process sees the fleet without changing it
    seen = LocalProvider.peek(app / ".zdd" / "local")
    assert seen is not None
    assert sorted(m.id for m in seen.live) == sorted(v1)
    assert {m.health.value for m in seen.live} == {"passing"}
    assert dict(seen.record)["phase"] == "done"

    second = zdd(app)
    assert second.returncode == 0, second.stderr
    assert port_of(app) == port  # the same HAProxy, the same address
    v2 = fleet_pids(app)
    assert len(v2) == 2 and not set(v2) & set(v1)
    assert all(not alive(pid) for pid in v1.values())  # the old ones were stopped
    assert get(port) == (200, "version v2\n")
    # Prometheus' file-based discovery sees the machines, labelled with their versions
    targets = json.loads((app / ".zdd" / "local" / "prometheus_targets.json").read_text())
    assert sorted(t["labels"]["machine"] for t in targets) == sorted(v2)
    assert {t["labels"]["version"] for t in targets} == {"v2"}
    # env values are secrets: never in what zdd prints
    assert "s3cr3t-greeting" not in first.stdout + first.stderr + second.stdout + second.stderr

    # and the fleet stops only when told to
    hx = state(app)["haproxy"]
    assert isinstance(hx, dict)
    assert LocalProvider.shutdown(app / ".zdd" / "local") == 2
    assert not any(alive(pid) for pid in [*v2.values(), int(hx["pid"])])
    assert not (app / ".zdd" / "local" / "state.json").exists()
    with pytest.raises(OSError):
        get(port)


def test_a_deployer_killed_mid_deployment_is_resumed_by_the_next(app: Path) -> None:
    assert zdd(app).returncode == 0
    port = port_of(app)
    proc = subprocess.Popen(
        _DEPLOY,
        cwd=app,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "done   create" in line:
            break  # a v2 machine exists: kill the deployer the hard way
    proc.kill()
    proc.wait(10)
    assert get(port)[0] == 200  # still serving
    doc = state(app)
    record = doc["record"]
    assert isinstance(record, dict) and record["phase"] == "deploying"

    resumed = zdd(app, "--version", "v2")
    assert resumed.returncode == 0, resumed.stderr
    machines = state(app)["machines"]
    assert isinstance(machines, dict)
    assert sorted(m["version"] for m in machines.values()) == ["v2", "v2"]
    assert get(port) == (200, "version v2\n")


def test_a_state_file_naming_a_foreign_process_never_gets_it_signalled(app: Path) -> None:
    assert zdd(app).returncode == 0
    victim = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        start = Path(f"/proc/{victim.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        path = app / ".zdd" / "local" / "state.json"
        doc = state(app)
        machines = doc["machines"]
        assert isinstance(machines, dict)
        mid = sorted(machines)[0]
        # the real pid and start time of a process zdd did not start (a group leader too)
        machines[mid]["pid"] = victim.pid
        machines[mid]["start"] = start
        path.write_text(json.dumps(doc))
        # adopt, deploy (the "machine" is not running: it is replaced), and tear down
        out = zdd(app)
        assert out.returncode == 0, out.stderr
        LocalProvider([sys.executable, "-m", "zdd.demo.app"], state_dir=path.parent).close()
        assert victim.poll() is None, "zdd signalled a process it did not start"
    finally:
        victim.kill()
        victim.wait()


def test_links_planted_in_the_state_directory_are_never_written_through(
    app: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside") / "precious"
    outside.write_text("keep me\n")
    sdir = app / ".zdd" / "local"
    (sdir / "logs").mkdir(parents=True, mode=0o700)
    os.chmod(app / ".zdd", 0o700)
    os.chmod(sdir, 0o700)
    # the first machine's log, and a guessable temporary name, point elsewhere
    (sdir / "logs" / "v1-app-surge-local-1.log").symlink_to(outside)
    (sdir / "haproxy.log").symlink_to(outside)
    out = zdd(app)
    assert out.returncode != 0
    assert outside.read_text() == "keep me\n"
    assert out.stderr.count("\n") >= 1 and "Traceback" not in out.stderr


@pytest.mark.parametrize("case", ["symlinked-dir", "world-writable", "linked-state"])
def test_an_unsafe_state_directory_is_refused(
    app: Path, tmp_path_factory: pytest.TempPathFactory, case: str
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    sdir = app / ".zdd" / "local"
    sdir.parent.mkdir(mode=0o700)
    if case == "symlinked-dir":
        sdir.symlink_to(elsewhere)
    elif case == "world-writable":
        sdir.mkdir(mode=0o700)
        os.chmod(sdir, 0o777)
    else:
        sdir.mkdir(mode=0o700)
        (elsewhere / "state.json").write_text("{}")
        (sdir / "state.json").symlink_to(elsewhere / "state.json")
    out = zdd(app)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zdd: error: state_dir"), out.stderr
    assert list(elsewhere.iterdir()) in ([], [elsewhere / "state.json"])
    if case == "linked-state":
        assert (elsewhere / "state.json").read_text() == "{}"


def test_a_dead_haproxy_is_restarted_and_keeps_serving_what_served(app: Path) -> None:
    assert zdd(app).returncode == 0
    port = port_of(app)
    hx = state(app)["haproxy"]
    assert isinstance(hx, dict)
    os.kill(int(hx["pid"]), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(int(hx["pid"])) and time.monotonic() < deadline:
        time.sleep(0.05)
    provider = LocalProvider(
        [sys.executable, "-m", "zdd.demo.app"],
        state_dir=app / ".zdd" / "local",
        check_interval=30.0,  # no check completes during the test: serving must not wait
    )
    try:
        assert provider.port == port
        # the machines that were serving serve at once, before any check has run
        assert get(port) == (200, "version v1\n")
        # and a HAProxy that dies during a deployment is noticed on the next look
        pid = provider.pids()["haproxy"]
        os.kill(pid, signal.SIGKILL)
        while alive(pid):
            time.sleep(0.05)
        provider.observe()
        assert provider.haproxy_restarts == 1
        assert provider.pids()["haproxy"] != pid
        assert get(port) == (200, "version v1\n")
    finally:
        provider.detach()


def test_sigterm_ends_the_demo_as_cleanly_as_ctrl_c(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path), "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "zdd", "demo", "--machines", "2", "--settle", "1s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "step:" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (1, 143), err
    # nothing left behind: no state directory, no process of the demo's fleet
    assert list(tmp_path.iterdir()) == []
    marker = f"TMPDIR={tmp_path}".encode()
    left = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if marker in environ.split(b"\0") and alive(int(entry)):
                left.append(entry)
    assert left == []


def test_bad_local_input_gets_one_line(app: Path) -> None:
    out = zdd(app, "--image", "registry.fly.io/x:1")
    assert out.returncode == 2 and out.stderr.startswith("zdd: error: --image")
    text = FLY_TOML.format(python=sys.executable)
    start, end = text.index("[[http_service.checks]]"), text.index("[deploy]")
    (app / "fly.toml").write_text(text[:start] + text[end:])
    out = zdd(app)
    assert out.returncode == 2 and "--health-path" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_exit_codes_rolled_back_is_1_and_locked_is_3(app: Path) -> None:
    assert zdd(app).returncode == 0
    port = port_of(app)
    text = FLY_TOML.format(python=sys.executable)
    bad = text.replace('GREETING = "s3cr3t-greeting"', 'ZDD_DEMO_HEALTH = "failing"')
    bad = bad.replace('drain_delay = "0s"', 'drain_delay = "0s"\nwait_timeout = "4s"')
    (app / "fly.toml").write_text(bad)
    out = zdd(app)
    assert out.returncode == 1, out.stderr
    assert "rolled back" in out.stdout
    assert out.stderr.strip().splitlines()[-1].startswith("zdd: error: rolled back")
    assert get(port) == (200, "version v1\n")  # v1 serves on

    # another live deployer of this host holds the fleet: refused, named, exit 3
    me = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]
    lock = {
        "owner": "deploy-by-alice",
        "since": "2026-12-02T00:00:00Z",
        "expires": time.time() + 600,
        "host": os.uname().nodename,
        "pid": os.getpid(),
        "pid_start": me,
    }
    (app / ".zdd" / "local" / "lock.json").write_text(json.dumps(lock))
    (app / "fly.toml").write_text(text)
    out = zdd(app)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "deploy-by-alice" in out.stderr
    (app / ".zdd" / "local" / "lock.json").unlink()


def _deploying(app: Path, *args: str) -> subprocess.Popen[str]:
    """A second deploy, stopped on the way (a slow drain) so a test can act meanwhile."""
    text = FLY_TOML.format(python=sys.executable).replace(
        'drain_delay = "0s"', 'drain_delay = "3s"'
    )
    (app / "fly.toml").write_text(text)
    proc = subprocess.Popen(
        [*_DEPLOY, *args],
        cwd=app,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "start  stop" in line or "start  cordon" in line:
            break
    return proc


def test_sigterm_to_a_deploy_rolls_back_and_leaves_the_fleet_serving(app: Path) -> None:
    assert zdd(app).returncode == 0
    port = port_of(app)
    proc = _deploying(app)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    assert "rolled back" in out
    record = state(app)["record"]
    assert isinstance(record, dict) and record["phase"] == "rolled_back"
    machines = state(app)["machines"]
    assert isinstance(machines, dict)
    assert sorted(m["version"] for m in machines.values()) == ["v1", "v1"]
    assert get(port) == (200, "version v1\n")  # detached, still serving


def test_haproxy_killed_during_a_deploy_is_restarted_and_the_deploy_converges(
    app: Path,
) -> None:
    assert zdd(app).returncode == 0
    port = port_of(app)
    hx = state(app)["haproxy"]
    assert isinstance(hx, dict)
    proc = _deploying(app)
    os.kill(int(hx["pid"]), signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    new = state(app)["haproxy"]
    assert isinstance(new, dict) and new["pid"] != hx["pid"] and new["port"] == port
    assert get(port) == (200, "version v2\n")


def test_the_frontend_address_is_configurable(app: Path) -> None:
    out = zdd(app, "--bind", "127.0.0.2")
    assert out.returncode == 0, out.stderr
    assert "serving at http://127.0.0.2:" in out.stdout
    hx = state(app)["haproxy"]
    assert isinstance(hx, dict) and hx["bind"] == "127.0.0.2"
    conn = http.client.HTTPConnection("127.0.0.2", int(hx["port"]), timeout=5)
    conn.request("GET", "/")
    assert conn.getresponse().status == 200
    conn.close()
    bad = zdd(app, "--bind", "localhost:80")
    assert bad.returncode == 2 and "bind" in bad.stderr
    # the fleet serves where it serves: moving it is refused, not ignored
    moved = zdd(app, "--bind", "127.0.0.1")
    assert moved.returncode == 2 and moved.stderr.startswith("zdd: error: --bind"), moved.stderr
    assert zdd(app, "--bind", "127.0.0.2").returncode == 0


# -- steering a deployment in flight: zdd status / gate / abort / promote -----------

GATED = """
[deploy]
strategy = "canary"
max_surge = 1
drain_delay = "0s"

[[deploy.canary_steps]]
machines = 1
gate = "canary-ok"
"""


def steer(app: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zdd", *args],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )


def _gated(app: Path) -> subprocess.Popen[str]:
    text = FLY_TOML.format(python=sys.executable)
    start = text.index("[deploy]")
    (app / "fly.toml").write_text(text[:start] + GATED)
    proc = subprocess.Popen(
        [*_DEPLOY],
        cwd=app,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "wait   gate canary-ok" in line:
            break
    return proc


def test_status_and_gate_steer_a_waiting_canary(app: Path) -> None:
    assert zdd(app).returncode == 0
    # nothing in flight: one line, exit 2
    out = steer(app, "gate", "canary-ok", "pass")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "nothing to gate: the last deployment is done" in out.stderr
    proc = _gated(app)
    status = steer(app, "status")
    assert status.returncode == 4, status.stdout + status.stderr  # in progress
    assert "deployment: deploying (canary): app -> v2" in status.stdout
    doc = json.loads(steer(app, "status", "--json").stdout)
    assert doc["in_progress"] is True and doc["target"] == {"app": "v2"}
    answered = steer(app, "gate", "canary-ok", "pass")
    assert answered.returncode == 0, answered.stderr
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert "gate   canary-ok: pass" in err
    assert steer(app, "status").returncode == 0
    assert get(port_of(app)) == (200, "version v2\n")


def test_an_answer_given_while_the_deployer_was_dead_is_picked_up(app: Path) -> None:
    assert zdd(app).returncode == 0
    proc = _gated(app)
    proc.kill()
    proc.wait(10)
    assert steer(app, "gate", "canary-ok", "pass").returncode == 0
    resumed = zdd(app, "--version", "v2")
    assert resumed.returncode == 0, resumed.stderr
    assert "gate   canary-ok: pass" in resumed.stderr
    assert get(port_of(app)) == (200, "version v2\n")


def test_abort_rolls_back_and_promote_needs_a_canary(app: Path) -> None:
    assert zdd(app).returncode == 0
    proc = _gated(app)
    assert steer(app, "abort").returncode == 0
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    assert "aborted by an operator (zdd abort)" in err
    status = steer(app, "status")
    assert status.returncode == 1 and "rolled back" in status.stdout
    assert get(port_of(app)) == (200, "version v1\n")
    out2 = steer(app, "abort")
    assert out2.returncode == 2 and "nothing to abort" in out2.stderr
    # promote skips the gate
    proc = _gated(app)
    assert steer(app, "promote").returncode == 0
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert get(port_of(app)) == (200, "version v2\n")
