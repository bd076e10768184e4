"""The local provider: real processes behind a real HAProxy.

The app is the bundled demo app (``python -m zdd.demo.app``) when it is there, else a
tiny ``http.server`` script with the same endpoints this file uses (``/``, ``/health``,
``/slow?ms=N``; SIGTERM finishes in-flight requests). Every provider is closed in a
``finally`` block, and the tests check that nothing it started is left running.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import zdd
from zdd.providers import Provider
from zdd.providers.local import FLEET_ENV, LocalProvider
from zdd.testing import RULES, Rule, check_rule, rule_name


def _haproxy_problem() -> str | None:
    """Why the local provider cannot run here, or None."""
    path = shutil.which("haproxy")
    if path is None:
        return "HAProxy is not installed (apt-get install haproxy); CI installs it"
    out = subprocess.run([path, "-v"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"version (\d+)\.(\d+)", out)
    if m is None or (int(m.group(1)), int(m.group(2))) < (2, 5):
        return f"HAProxy 2.5 or later is needed (dynamic servers); found {out.strip()[:40]!r}"
    return None


pytestmark = pytest.mark.skipif(_haproxy_problem() is not None, reason=str(_haproxy_problem()))

INLINE_APP = """
import os, signal, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

VERSION = os.environ.get("ZDD_VERSION", "dev")
FAILING = os.environ.get("ZDD_DEMO_HEALTH") == "failing"
busy = [0]
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        with lock:
            busy[0] += 1
        try:
            url = urlsplit(self.path)
            code, text = 200, f"version {VERSION}\\n"
            if url.path == "/health":
                code, text = (503, "failing\\n") if FAILING else (200, "ok\\n")
            elif url.path == "/slow":
                time.sleep(int(parse_qs(url.query).get("ms", ["100"])[0]) / 1000)
            body = text.encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        finally:
            with lock:
                busy[0] -= 1

    def handle(self):
        try:
            super().handle()
        except ConnectionError:
            pass

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
server.serve_forever(poll_interval=0.05)
server.server_close()
deadline = time.monotonic() + 5
while busy[0] and time.monotonic() < deadline:  # in-flight requests finish
    time.sleep(0.01)
"""


@pytest.fixture
def app_command(tmp_path: Path) -> list[str]:
    if importlib.util.find_spec("zdd.demo.app") is not None:
        return [sys.executable, "-m", "zdd.demo.app"]
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(INLINE_APP))
    return [sys.executable, str(script)]


@pytest.fixture
def providers(app_command: list[str], tmp_path: Path) -> Iterator[Callable[..., LocalProvider]]:
    """Make providers; on teardown close them all and check nothing is left running."""
    made: list[LocalProvider] = []

    def make(**kwargs: object) -> LocalProvider:
        options: dict[str, object] = {
            "check_interval": 0.1,
            "kill_timeout": 3.0,
            "state_dir": tmp_path / f"fleet{len(made)}",
        }
        options.update(kwargs)
        p = LocalProvider(app_command, **options)  # type: ignore[arg-type]
        made.append(p)
        return p

    try:
        yield make
    finally:
        pids: list[int] = []
        fleets = []
        for p in made:
            pids += p.pids().values()
            fleets.append(p.fleet)
            p.close()
        for p in made:
            assert not Path(p.state_dir, "haproxy.sock").exists(), "a stale HAProxy socket"
        assert not [pid for pid in pids if _alive(pid)], "processes outlived close()"
        assert not [pid for f in fleets for pid in _fleet_processes(f)], "orphan processes"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _fleet_processes(fleet: str) -> list[int]:
    """Live processes carrying this fleet's marker in their environment (a /proc scan)."""
    marker = f"{FLEET_ENV}={fleet}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0") and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _get(p: LocalProvider, path: str = "/") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def _release(version: str) -> zdd.Release:
    return zdd.Release(version=version, kill_signal="SIGTERM", kill_timeout=3.0)


class _Load:
    """Sequential keep-alive requests through HAProxy until stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ok: Counter[str] = Counter()
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self._stop.is_set():
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read().decode()
                if resp.status == 200:
                    self.ok[body.strip()] += 1
                else:
                    self.failed.append(f"{resp.status} {body.strip()}")
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
            except (OSError, http.client.HTTPException) as exc:
                self.failed.append(repr(exc))
                conn.close()
            time.sleep(0.002)
        conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


# -- the contract ---------------------------------------------------------------


@pytest.mark.parametrize("rule", RULES, ids=rule_name)
def test_the_local_provider_keeps_the_contract(
    providers: Callable[..., LocalProvider], rule: Rule
) -> None:
    """The provider contract (zdd.testing), one test per rule, on real processes
    behind a real HAProxy."""

    def make(state: zdd.FleetState) -> Provider:
        p = providers()
        for m in state.live:
            p.launch(m.version, group=m.group, region=m.region)
        p.wait_healthy(30.0)
        return p

    check_rule(rule, make, timeout=30.0)


def test_it_is_a_provider_with_weights_and_cordons(
    providers: Callable[..., LocalProvider],
) -> None:
    p = providers()
    assert isinstance(p, Provider)
    assert p.capabilities() == zdd.providers.Capabilities(
        traffic_weights=True, cordon=True, volumes=False
    )
    assert p.url == f"http://127.0.0.1:{p.port}"


# -- deployments ------------------------------------------------------------------


def test_a_rolling_deployment_with_surge_converges_without_failed_requests(
    providers: Callable[..., LocalProvider],
) -> None:
    p = providers()
    p.launch("v1", 2)
    p.wait_healthy(10)
    assert _get(p) == (200, "version v1\n")
    load = _Load(p.port)
    try:
        result = zdd.execute(
            p,
            zdd.Desired.single(_release("v2"), 2, region="local"),
            zdd.Rolling(max_unavailable=0, max_surge=1, drain_delay=0.3, wait_timeout=20),
            poll_interval=0.05,
        )
    finally:
        load.stop()
    assert result.converged, result.error
    state = p.observe()
    assert [(m.version, m.serving) for m in state.machines] == [("v2", True), ("v2", True)]
    assert {m.id for m in state.machines}.isdisjoint({"local-1", "local-2"})
    assert state.record.get("phase") == "done"
    for _ in range(4):
        assert _get(p) == (200, "version v2\n")
    assert load.failed == [], load.failed[:5]
    assert load.ok["version v1"] > 0 and load.ok["version v2"] > 0
    assert len(p.pids()) == 3  # HAProxy and two machines: the old processes are gone


def test_a_failing_release_rolls_back(providers: Callable[..., LocalProvider]) -> None:
    p = providers(versions={"v2": {"ZDD_DEMO_HEALTH": "failing"}})
    p.launch("v1", 1)
    p.wait_healthy(10)
    result = zdd.execute(
        p,
        zdd.Desired.single(_release("v2"), 1, region="local"),
        zdd.Rolling(max_unavailable=0, max_surge=1, drain_delay=0, wait_timeout=1.5),
        poll_interval=0.05,
    )
    assert result.rolled_back, result
    assert [(m.version, m.serving) for m in p.observe().machines] == [("v1", True)]
    assert _get(p) == (200, "version v1\n")


def test_canary_weights_split_the_traffic(providers: Callable[..., LocalProvider]) -> None:
    p = providers()
    p.launch("v1", 2)
    canary = p.perform(
        zdd.Create(group="app", region="local", version="v2", key="c1", role="canary")
    )
    assert canary is not None and canary.cordoned
    p.wait_healthy(10)
    assert all(_get(p)[1] == "version v1\n" for _ in range(6)), "a hidden canary took traffic"
    p.perform(zdd.Uncordon(group="app", machine=canary.id, weight=20))
    weights = {
        row.split()[3]: int(row.split()[7])
        for row in p.runtime("show servers state app").splitlines()[2:]
        if row.strip()
    }
    # 20% for the one canary, 40% for each of the two others
    assert weights[canary.id] * 2 == weights["local-1"] == weights["local-2"]
    seen = Counter(_get(p)[1] for _ in range(100))
    assert 12 <= seen["version v2\n"] <= 28, seen
    p.perform(zdd.Uncordon(group="app", machine=canary.id))  # back to an even share
    seen = Counter(_get(p)[1] for _ in range(90))
    assert 20 <= seen["version v2\n"] <= 40, seen
    assert "zdd.weight" not in (p.machine(canary.id) or canary).labels


# -- machines ---------------------------------------------------------------------


def test_cordon_drains_a_request_in_progress(providers: Callable[..., LocalProvider]) -> None:
    p = providers()
    blue, green = p.launch("blue")[0], p.launch("green")[0]
    p.wait_healthy(10)
    p.perform(zdd.Cordon(group="app", machine=green.id))
    assert all(_get(p)[1] == "version blue\n" for _ in range(4))

    slow: list[tuple[int, str]] = []
    thread = threading.Thread(target=lambda: slow.append(_get(p, "/slow?ms=800")))
    thread.start()
    try:
        time.sleep(0.2)  # the slow request is on blue now
        p.perform(zdd.Uncordon(group="app", machine=green.id))
        cordoned = p.perform(zdd.Cordon(group="app", machine=blue.id))
        assert cordoned is not None and cordoned.cordoned and cordoned.state.value == "started"
        assert all(_get(p)[1] == "version green\n" for _ in range(6)), "blue took new requests"
        # stopping blue now still lets its request in progress finish
        p.perform(zdd.Stop(group="app", machine=blue.id, signal="SIGTERM", timeout=5))
    finally:
        thread.join(10)
    assert slow == [(200, "version blue\n")]
    stopped = p.machine(blue.id)
    assert stopped is not None and stopped.state is zdd.MachineState.STOPPED


def test_update_stop_start_and_destroy(providers: Callable[..., LocalProvider]) -> None:
    p = providers()
    (m,) = p.launch("v1")
    p.wait_healthy(10)
    first_pid = p.pids()[m.id]
    updated = p.perform(zdd.Update(group="app", machine=m.id, version="v2", from_version="v1"))
    assert updated is not None and updated.version == "v2"
    assert not _alive(first_pid), "the old process outlived the update"
    p.wait_healthy(10)
    assert _get(p) == (200, "version v2\n")

    p.perform(zdd.Stop(group="app", machine=m.id, signal="SIGTERM", timeout=3))
    stopped = p.machine(m.id)
    assert stopped is not None and stopped.state is zdd.MachineState.STOPPED
    assert m.id not in p.pids()
    p.perform(zdd.Start(group="app", machine=m.id))
    p.wait_healthy(10)
    assert _get(p) == (200, "version v2\n")

    pid = p.pids()[m.id]
    os.kill(pid, signal.SIGKILL)  # it dies on its own: failed
    deadline = time.monotonic() + 5
    while (got := p.machine(m.id)) is not None and got.state is not zdd.MachineState.FAILED:
        assert time.monotonic() < deadline, got
        time.sleep(0.02)
    assert p.perform(zdd.Destroy(group="app", machine=m.id)) is None
    assert p.machine(m.id) is None
    assert "local" not in p.runtime("show servers state app").split("\n", 2)[2]


def test_release_commands_run_with_the_release_env_and_redact_failures(
    providers: Callable[..., LocalProvider], tmp_path: Path
) -> None:
    p = providers(env={"SHARED": "yes"}, workdir=tmp_path)
    ok = (
        f"{sys.executable} -c \"import os; open('out.txt', 'w')"
        f".write(os.environ['ZDD_VERSION'] + os.environ['SHARED'])\""
    )
    p.perform(zdd.RunCommand(group="*", phase="release", command=ok, target="app=v7"))
    assert (tmp_path / "out.txt").read_text() == "v7yes"
    bad = (
        f"{sys.executable} -c \"print('connecting with password=hunter2'); "
        f'raise SystemExit(3)" --token hunter2'
    )
    with pytest.raises(zdd.ActionFailed) as info:
        p.perform(zdd.RunCommand(group="*", phase="release", command=bad, target="app=v7"))
    message = str(info.value)
    assert "exited with status 3" in message and "password=<redacted>" in message
    assert "hunter2" not in message
    with pytest.raises(zdd.ActionFailed, match="did not finish within"):
        p.perform(
            zdd.RunCommand(
                group="*",
                phase="release",
                command=f'{sys.executable} -c "import time; time.sleep(30)"',
                target="app=v7",
                timeout=0.3,
            )
        )


def test_an_expired_lock_is_taken_over(providers: Callable[..., LocalProvider]) -> None:
    p = providers()
    p.acquire_lock("first", 0.2)
    with pytest.raises(zdd.DeploymentLocked, match="locked by first"):
        p.acquire_lock("second", 10)
    time.sleep(0.3)
    p.acquire_lock("second", 10)
    p.release_lock("first")  # not the holder: nothing happens
    with pytest.raises(zdd.DeploymentLocked):
        p.acquire_lock("third", 10)


# -- resume and cleanup -----------------------------------------------------------


def test_a_new_provider_adopts_a_detached_fleet(
    providers: Callable[..., LocalProvider], tmp_path: Path
) -> None:
    first = providers(state_dir=tmp_path / "shared")
    first.launch("v1", 2)
    first.wait_healthy(10)
    first.perform(zdd.Label(group="*", values={"phase": "deploying"}))
    pids = first.pids()
    first.detach()
    second = providers(state_dir=tmp_path / "shared")
    assert second.pids() == pids, "adoption started new processes"
    assert second.port == first.port
    state = second.wait_healthy(10)
    assert [m.id for m in state.machines] == ["local-1", "local-2"]
    assert state.record == {"phase": "deploying"}
    assert _get(second) == (200, "version v1\n")
    (third,) = second.launch("v1")
    assert third.id == "local-3"


def test_adoption_restarts_a_dead_haproxy_and_reports_dead_machines(
    providers: Callable[..., LocalProvider], tmp_path: Path
) -> None:
    first = providers(state_dir=tmp_path / "shared")
    first.launch("v1", 2)
    first.wait_healthy(10)
    pids = first.pids()
    first.detach()
    os.kill(pids["haproxy"], signal.SIGKILL)
    os.kill(pids["local-1"], signal.SIGKILL)
    while _alive(pids["haproxy"]) or _alive(pids["local-1"]):
        time.sleep(0.01)
    second = providers(state_dir=tmp_path / "shared")
    assert second.port == first.port
    assert second.pids()["local-2"] == pids["local-2"]
    assert second.pids()["haproxy"] != pids["haproxy"]
    states = {m.id: (m.state, m.health) for m in second.observe().machines}
    assert states["local-1"] == (zdd.MachineState.FAILED, zdd.Health.CRITICAL)
    deadline = time.monotonic() + 10
    while (m2 := second.machine("local-2")) is not None and not m2.serving:
        assert time.monotonic() < deadline, m2
        time.sleep(0.02)
    assert _get(second) == (200, "version v1\n")
    second.perform(zdd.Start(group="app", machine="local-1"))
    assert [m.serving for m in second.wait_healthy(10).machines] == [True, True]


class _ActionLog(zdd.reporters.Reporter):
    """The executor's actions in order, and when (monotonic) the first one started."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str | None, str | None]] = []
        self.waits: list[str] = []
        self.first_action_at: float | None = None
        self._mu = threading.Lock()

    def action_started(self, elapsed: float, action: zdd.Action) -> None:
        with self._mu:
            if self.first_action_at is None:
                self.first_action_at = time.monotonic()
            self.events.append(("started", action.kind, action.machine, None))

    def action_finished(self, elapsed: float, action: zdd.Action, error: str | None) -> None:
        with self._mu:
            self.events.append(("finished", action.kind, action.machine, error))

    def waiting(self, elapsed: float, what: str) -> None:
        with self._mu:
            self.waits.append(what)


class _ServingPoller:
    """Counts the machines HAProxy serves (``observe()``) every ``interval`` seconds in a
    thread, for at most ``limit`` seconds."""

    def __init__(self, p: LocalProvider, interval: float = 0.1, limit: float = 120.0) -> None:
        self.p = p
        self.interval = interval
        self.limit = limit
        self.samples: list[tuple[float, int]] = []  # (monotonic time before observe, count)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            t = time.monotonic()
            try:
                serving = sum(m.serving for m in self.p.observe().machines if m.group == "app")
            except zdd.ZddError as exc:
                self.errors.append(repr(exc))
            else:
                self.samples.append((t, serving))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def since(self, t: float) -> list[int]:
        """Counts from observations that began at or after ``t``."""
        return [n for at, n in self.samples if at >= t]


def _restart_haproxy(
    providers: Callable[..., LocalProvider], p: LocalProvider, **kwargs: object
) -> LocalProvider:
    """Restart ``p``'s HAProxy the way the provider supports it: leave the machines
    running (``detach``), stop HAProxy, and adopt the fleet with a new provider, which
    starts a new HAProxy on the same port and adds the running machines back."""
    pids = p.pids()
    haproxy = pids.pop("haproxy")
    p.detach()
    try:
        os.kill(haproxy, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _alive(haproxy):
            assert time.monotonic() < deadline, "HAProxy did not stop on SIGTERM"
            time.sleep(0.01)
        adopted = providers(**kwargs, state_dir=p.state_dir)
    except BaseException:
        for pid in [haproxy, *pids.values()]:  # nobody owns the fleet now: end it
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        raise
    assert adopted.pids()["haproxy"] != haproxy
    assert {m: adopted.pids().get(m) for m in pids} == pids, "the machines were restarted"
    return adopted


def _machine_logs(p: LocalProvider) -> dict[str, str]:
    """The last lines each machine process wrote (why it exited, when it did)."""
    logs = sorted((p.state_dir / "logs").glob("*.log"))
    return {f.stem: "".join(f.read_text(errors="replace").splitlines(True)[-5:]) for f in logs}


@pytest.mark.parametrize(
    ("strategy", "floor"),
    [
        (zdd.Rolling(max_unavailable=0, max_surge=1, drain_delay=1.0, wait_timeout=30), 3),
        # the default budget: Fly's max_unavailable 0.33 of 3 is 1, in place
        (zdd.Rolling(drain_delay=1.0, wait_timeout=30), 2),
    ],
    ids=["max-unavailable-0-surge-1", "default-budget"],
)
def test_a_rolling_deployment_right_after_a_haproxy_restart_cordons_and_holds_the_floor(
    providers: Callable[..., LocalProvider], strategy: zdd.Rolling, floor: int
) -> None:
    # A restarted HAProxy has no check result for any server ("unknown"). This once
    # made a rolling deployment stop and destroy all three machines at once, without
    # cordon or drain, with max_unavailable 0. Unknown is not down: the executor waits
    # for a first result, then cordons before every take-out and holds the floor.
    # Checks every 1.5s: HAProxy's first check of a re-added server comes about one
    # interval later, so the deployment starts while every machine is still unknown.
    p = providers(check_interval=1.5)
    p.launch("v1", 3)
    p.wait_healthy(20)
    originals = {m.id for m in p.observe().machines}
    for _ in range(3):  # in case the first checks already ran (a very slow adoption)
        p = _restart_haproxy(providers, p, check_interval=1.5)
        before = p.observe()
        if all(m.health is zdd.Health.UNKNOWN for m in before.machines):
            break
    else:
        pytest.fail(f"HAProxy checked every server before the deployment started: {before}")
    assert [(m.state, m.serving) for m in before.machines] == [
        (zdd.MachineState.STARTED, False)
    ] * 3

    log = _ActionLog()
    poller = _ServingPoller(p)
    try:
        result = zdd.execute(
            p,
            zdd.Desired.single(_release("v2"), 3, region="local"),
            strategy,
            reporter=log,
            poll_interval=0.1,
        )
    finally:
        poller.stop()
    assert result.converged, (result.error, log.events, _machine_logs(p))
    assert any("unknown" in w for w in log.waits), log.waits  # it did wait for a result

    # every stop, update and destroy is of a machine cordoned (and not released since)
    cordoned: set[str] = set()
    taken_out: list[str] = []
    for event, kind, machine, error in log.events:
        if machine is None:
            continue  # the deployment record, a create
        if event == "finished" and kind == "cordon" and error is None:
            cordoned.add(machine)
        elif event == "started" and kind == "uncordon":
            cordoned.discard(machine)
        elif event == "started" and kind in ("stop", "update", "destroy"):
            assert machine in cordoned, f"{kind} {machine} before it was cordoned: {log.events}"
            taken_out.append(machine)
    assert set(taken_out) == originals, log.events
    if strategy.max_surge:  # create before destroy: each old machine stopped, destroyed
        assert sorted(taken_out) == sorted(2 * list(originals)), log.events

    assert log.first_action_at is not None
    counted = poller.since(log.first_action_at)
    assert poller.errors == []
    assert counted, "no observation while the deployment ran"
    assert min(counted) >= floor, poller.samples
    after = p.observe().machines
    assert [(m.version, m.serving) for m in after] == [("v2", True)] * 3
    assert _get(p) == (200, "version v2\n")


def test_a_machine_that_never_gets_healthy_times_out_with_the_check_result(
    providers: Callable[..., LocalProvider],
) -> None:
    p = providers(versions={"bad": {"ZDD_DEMO_HEALTH": "failing"}})
    p.launch("bad")
    # HAProxy's text for the failed check: "Layer7 wrong status, HTTP 503" (or "HTTP 0"
    # when the check lands while the app is still starting)
    with pytest.raises(
        zdd.DeployTimeout, match=r"local-1 \(started, critical: Layer7 wrong status"
    ):
        p.wait_healthy(1.0)


CRASHING_EXECUTOR = """
import sys
import zdd
from zdd.providers.local import LocalProvider

class Crash(zdd.reporters.Reporter):
    def action_finished(self, elapsed, action, error):
        if action.kind == "uncordon":
            print("crash now", flush=True)
            import time; time.sleep(60)

p = LocalProvider({command!r}, state_dir=sys.argv[1], check_interval=0.1, kill_timeout=3)
p.launch("v1", 2)
p.wait_healthy(10)
zdd.execute(
    p,
    zdd.Desired.single(zdd.Release(version="v2", kill_signal="SIGTERM"), 2, region="local"),
    zdd.Rolling(max_unavailable=0, max_surge=1, drain_delay=0),
    reporter=Crash(),
    poll_interval=0.05,
)
"""


def test_an_executor_killed_mid_deployment_is_resumed(
    providers: Callable[..., LocalProvider], app_command: list[str], tmp_path: Path
) -> None:
    state_dir = tmp_path / "crashed"
    script = tmp_path / "executor.py"
    script.write_text(CRASHING_EXECUTOR.format(command=app_command))
    child = subprocess.Popen(
        [sys.executable, str(script), str(state_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == "crash now\n", child.stderr.read() if child.stderr else line
    finally:
        child.kill()  # SIGKILL: no atexit, no cleanup, the lock still held
        child.wait()
    resumed = providers(state_dir=state_dir)
    before = resumed.observe()
    assert len(before.machines) == 3  # two v1 and the surge machine it had released
    assert before.record.get("phase") == "deploying"
    result = zdd.execute(
        resumed,
        zdd.Desired.single(_release("v2"), 2, region="local"),
        zdd.Rolling(max_unavailable=0, max_surge=1, drain_delay=0),
        poll_interval=0.05,
    )
    assert result.converged, result.error
    after = resumed.observe().machines
    assert [(m.version, m.serving) for m in after] == [("v2", True), ("v2", True)]
    assert before.machines[-1].id in {m.id for m in after}, "the surge machine was doubled"
    assert _get(resumed) == (200, "version v2\n")


def test_close_leaves_no_process_socket_or_port(app_command: list[str], tmp_path: Path) -> None:
    p = LocalProvider(app_command, check_interval=0.1, state_dir=tmp_path / "fleet")
    try:
        p.launch("v1", 2)
        p.wait_healthy(10)
        pids = list(p.pids().values())
        port = p.port
        assert len(pids) == 3
    finally:
        p.close()
    assert not [pid for pid in pids if _alive(pid)]
    assert not _fleet_processes(p.fleet)
    assert not (tmp_path / "fleet" / "haproxy.sock").exists()
    assert not (tmp_path / "fleet" / "state.json").exists()
    with pytest.raises(ConnectionRefusedError):
        http.client.HTTPConnection("127.0.0.1", port, timeout=2).connect()
    p.close()  # twice is fine
    with pytest.raises(zdd.ActionFailed, match="closed"):
        p.observe()


def test_a_temporary_state_dir_is_removed(app_command: list[str]) -> None:
    with LocalProvider(app_command, check_interval=0.1) as p:
        p.launch("v1")
        state_dir = p.state_dir
        assert (state_dir / "haproxy.sock").exists()
    assert not state_dir.exists()


def test_missing_haproxy_is_a_clear_error(app_command: list[str], tmp_path: Path) -> None:
    with pytest.raises(zdd.InvalidConfig) as info:
        LocalProvider(app_command, haproxy="/nonexistent/haproxy", state_dir=tmp_path / "x")
    assert str(info.value).startswith(
        "HAProxy is not installed: apt-get install haproxy (Debian/Ubuntu) or brew install haproxy"
    )
    assert not (tmp_path / "x").exists()


def test_bad_arguments_are_invalid_config(app_command: list[str]) -> None:
    with pytest.raises(zdd.InvalidConfig, match="command"):
        LocalProvider([])
    with pytest.raises(zdd.InvalidConfig, match="health_path"):
        LocalProvider(app_command, health_path="/health\n    server evil 1.2.3.4:80")
    with pytest.raises(zdd.InvalidConfig, match="bind"):
        LocalProvider(app_command, bind="localhost; rm")
    with pytest.raises(zdd.InvalidConfig, match="kill_signal"):
        LocalProvider(app_command, kill_signal="SIGNOPE")
