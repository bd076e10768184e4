"""End to end: ``zdd deploy --provider fly`` against the local Machines API server.

Real HTTP on 127.0.0.1 (tests/fly_server.py), every request validated against
Fly's published OpenAPI description; the fleet behind it is zdd's simulator,
running 50 virtual seconds per wall second.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pytest
from fly_server import FlyMachinesServer

import zdd
from zdd.cli import main

TOKEN = "fm2_lJPECAAAAAAAAMeTxBBk9YWZrZS1zZWNyZXQtdG9rZW4tZm9yLXRlc3Rz"
NEW = "registry.fly.io/hello:v2"

FLY_TOML = """
app = "hello"
primary_region = "ord"
kill_signal = "SIGTERM"
kill_timeout = "5s"

[build]
  image = "registry.fly.io/hello:v2"

[env]
  DATABASE_URL = "postgres://app:hunter2@db.internal/app"

[deploy]
  strategy = "{strategy}"
  wait_timeout = "60s"
  drain_delay = "0s"
  release_command = "bin/migrate --password hunter2"
{extra}

[http_service]
  internal_port = 8080
  [[http_service.checks]]
    interval = "2s"
    grace_period = "1s"
    timeout = "1s"
    path = "/health"
"""

STRATEGIES = {
    "rolling": ("rolling", ""),
    "rolling-surge": ("rolling", "  max_unavailable = 0\n  max_surge = 1\n"),
    "bluegreen": ("bluegreen", ""),
    "canary": ("canary", ""),
    "canary-steps": (
        "canary",
        '  [[deploy.canary_steps]]\n    machines = 1\n    bake = "1s"\n',
    ),
    "immediate": ("immediate", ""),
}


def write_config(tmp_path: Path, name: str) -> Path:
    strategy, extra = STRATEGIES[name]
    path = tmp_path / "fly.toml"
    path.write_text(FLY_TOML.format(strategy=strategy, extra=extra))
    return path


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FlyMachinesServer:
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


def deploy(server: FlyMachinesServer, config: Path, *extra: str) -> int:
    return main(
        [
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
        ]
    )


def app_machines(server: FlyMachinesServer) -> list[dict]:
    out = []
    for mid in sorted(server._machines):
        m = server.machine(mid)
        if m["state"] == "destroyed":
            continue
        if m["config"]["metadata"].get("fly_process_group") == "fly_app_release_command":
            continue
        out.append(m)
    return out


def assert_converged(server: FlyMachinesServer, *, immediate: bool = False) -> None:
    live = app_machines(server)
    assert len(live) == 3, [m["id"] for m in live]
    assert Counter(m["region"] for m in live) == {"ord": 2, "ams": 1}
    for m in live:
        assert m["config"]["image"] == NEW
        assert m["config"]["metadata"]["fly_release_version"] == "v2"
        if not immediate:
            assert m["state"] == "started"
            assert not m["cordoned"]
    keys = Counter(m["config"]["metadata"].get("zdd_key") for m in live)
    assert all(n == 1 for k, n in keys.items() if k), keys  # no duplicate creates
    assert server.destroyed_with_volume == []


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_converges(
    server: FlyMachinesServer, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = deploy(server, write_config(tmp_path, name))
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "finished: converged" in err
    assert_converged(server, immediate=name == "immediate")
    # every lease the deployment took was given back
    assert all(
        fm.lease is None or fm.lease.owner != server.owner for fm in server._machines.values()
    )


def test_transient_failures_still_converge_without_duplicates(
    server: FlyMachinesServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.fault_rate = 0.2
    server.drop_rate = 0.03
    code = deploy(server, write_config(tmp_path, "rolling-surge"))
    out, err = capsys.readouterr()
    server.fault_rate = server.drop_rate = 0.0
    assert code == 0, out + err
    assert_converged(server)
    failed = [r for r in server.requests if r.status is None or r.status >= 429]
    assert len(failed) >= 5  # the faults did happen
    # nothing orphaned: every machine ever created is either live and desired or destroyed
    created = [m for m in server._machines.values() if not m.id.startswith("m")]
    live_created = [m for m in created if server.machine(m.id)["state"] != "destroyed"]
    assert len(live_created) == 3


def test_a_lease_held_elsewhere_exits_3_and_changes_nothing(
    server: FlyMachinesServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.hold_lease("m2", owner="alice@example.com")
    before = {m["id"]: (m["version"], m["state"], m["cordoned"]) for m in app_machines(server)}
    code = deploy(server, write_config(tmp_path, "rolling"))
    _, err = capsys.readouterr()
    assert code == 3
    assert err.count("\n") == 1 and "alice@example.com" in err
    after = {m["id"]: (m["version"], m["state"], m["cordoned"]) for m in app_machines(server)}
    assert after == before
    writes = [
        r
        for r in server.requests
        if r.method != "GET" and not r.path.endswith("/lease") and r.status and r.status < 300
    ]
    assert writes == []
    # the leases it did take were released
    held = [
        fm.id for fm in server._machines.values() if fm.lease and fm.lease.owner == server.owner
    ]
    assert held == []


@pytest.mark.parametrize("name", ["rolling", "bluegreen", "canary-steps"])
def test_a_failing_health_check_rolls_back(
    server: FlyMachinesServer, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server.set_image_health(NEW, "failing")
    config = write_config(tmp_path, name)
    config.write_text(config.read_text().replace('wait_timeout = "60s"', 'wait_timeout = "3s"'))
    code = deploy(server, config)
    out, err = capsys.readouterr()
    assert code == 1, out + err
    assert "ROLLING BACK" in err
    assert "finished: rolled_back" in err
    live = app_machines(server)
    assert len(live) == 3
    assert {m["config"]["metadata"].get("fly_release_version") for m in live} == {"v1"}
    assert all(m["state"] == "started" and not m["cordoned"] for m in live)


def test_a_failing_release_command_touches_nothing(
    server: FlyMachinesServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.release_exit_code = 3
    before = {m["id"]: m["version"] for m in app_machines(server)}
    code = deploy(server, write_config(tmp_path, "rolling"))
    _, err = capsys.readouterr()
    assert code == 1
    assert "exited with status 3" in err and "nothing was changed" in err
    assert {m["id"]: m["version"] for m in app_machines(server)} == before


def test_dry_run_prints_the_plan_and_changes_nothing(
    server: FlyMachinesServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = deploy(server, write_config(tmp_path, "bluegreen"), "--dry-run", "--json")
    out, _ = capsys.readouterr()
    assert code == 0
    assert json.loads(out)["strategy"] == "bluegreen"
    assert all(r.method == "GET" for r in server.requests)


def test_dry_run_warns_before_a_plan_that_may_reach_zero(
    server: FlyMachinesServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Strategy immediate may take the app to zero serving machines: the dry run's plan
    starts with the warning; a real run prints it on stderr before anything changes;
    --allow-downtime silences both."""
    config = write_config(tmp_path, "immediate")
    code = deploy(server, config, "--dry-run")
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("warning: group 'app': strategy immediate restarts every machine")
    code = deploy(server, config, "--dry-run", "--allow-downtime")
    out, _ = capsys.readouterr()
    assert code == 0 and "warning" not in out
    assert all(r.method == "GET" for r in server.requests)
    code = deploy(server, config)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err.startswith("zdd: warning: group 'app': strategy immediate")


def test_json_progress_lines(
    server: FlyMachinesServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = deploy(server, write_config(tmp_path, "rolling"), "--json")
    out, err = capsys.readouterr()
    assert code == 0
    # progress: JSON lines on stderr; the result: one JSON object on stdout
    events = [json.loads(line) for line in err.splitlines()]
    assert events[0]["event"] == "deployment_started"
    assert events[-1]["event"] == "finished" and events[-1]["outcome"] == "converged"
    assert json.loads(out)["outcome"] == "converged"


def test_under_json_an_error_is_one_json_object(
    server: FlyMachinesServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.hold_lease("m2", owner="alice@example.com")
    code = deploy(server, write_config(tmp_path, "rolling"), "--json")
    _, err = capsys.readouterr()
    assert code == 3
    (line,) = err.splitlines()
    assert "alice@example.com" in json.loads(line)["error"]


def test_the_token_never_appears_in_output_or_logs(
    server: FlyMachinesServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server.fault_rate = 0.2  # errors are where tokens leak
    config = write_config(tmp_path, "rolling")
    deploy(server, config)
    deploy(server, config, "--dry-run")
    server.hold_lease("m1", owner="bob@example.com")
    deploy(server, config)
    out, err = capsys.readouterr()
    text = out + err + caplog.text + repr(server.requests)
    provider = zdd.providers.fly.FlyMachines("hello", base_url=server.url)
    text += repr(provider) + str(vars(provider).get("_releases"))
    assert TOKEN not in text
    assert TOKEN[8:40] not in text
    # nor the secrets of the config
    assert "hunter2" not in out + err


def test_bad_input_exits_2(
    server: FlyMachinesServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "rolling")
    for argv in (
        ["deploy", "--provider", "fly", "--config", str(config), "--api-url", "http://example.com"],
        ["deploy", "--provider", "fly", "--app", "x", "--api-url", server.url],
        [
            "deploy",
            "--provider",
            "fly",
            "--config",
            str(config),
            "--api-url",
            server.url,
            "--max-surge",
            "-1",
        ],
    ):
        code = main(argv)
        _, err = capsys.readouterr()
        assert code == 2, argv
        assert err.count("\n") == 1


class _CtrlC(zdd.reporters.Reporter):
    """Presses Ctrl-C once, when the executor starts its n-th update."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.rolled_back = False

    def action_started(self, elapsed: float, action: zdd.Action) -> None:
        if action.kind == "update" and action.version == "v2":
            self.n -= 1
            if self.n == 0:
                raise KeyboardInterrupt

    def rollback_started(self, elapsed: float, reason: str) -> None:
        self.rolled_back = True


def test_ctrl_c_rolls_back_and_releases_every_lease(
    server: FlyMachinesServer, tmp_path: Path
) -> None:
    from zdd.providers.fly import FlyMachines

    config = zdd.load_config(write_config(tmp_path, "rolling"))
    provider = FlyMachines("hello", base_url=server.url)
    state = provider.observe()
    desired = config.desired(state, "v2")  # each create and update carries its release
    reporter = _CtrlC(2)
    result = zdd.execute(provider, desired, config.strategy, reporter=reporter, poll_interval=0.05)
    assert reporter.rolled_back
    assert result.outcome == "rolled_back", result
    live = app_machines(server)
    assert {m["config"]["metadata"]["fly_release_version"] for m in live} == {"v1"}
    held = [fm.id for fm in server._machines.values() if fm.lease and fm.lease.owner != "x"]
    assert [h for h in held if server._machines[h].lease.expires > 0] == []


def test_machines_get_what_fly_toml_says_and_a_config_change_is_a_deployment(
    server: FlyMachinesServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "rolling")
    assert deploy(server, config) == 0, capsys.readouterr()
    for m in app_machines(server):
        services = m["config"]["services"]
        assert [s["internal_port"] for s in services] == [8080]
        assert m["config"]["env"]["DATABASE_URL"].startswith("postgres://")
        assert m["config"]["stop_config"]["signal"] == "SIGTERM"
    # the same image, only the config changes: a deployment all the same
    config.write_text(config.read_text().replace("internal_port = 8080", "internal_port = 9090"))
    code = deploy(server, config, "--version", "v2-port")
    out, err = capsys.readouterr()
    assert code == 0, out + err
    live = app_machines(server)
    assert {m["config"]["image"] for m in live} == {NEW}
    assert {m["config"]["metadata"]["fly_release_version"] for m in live} == {"v2-port"}
    assert {s["internal_port"] for m in live for s in m["config"]["services"]} == {9090}


def test_an_app_with_no_machines_gets_flyctls_first_machines(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLY_API_TOKEN", TOKEN)
    with FlyMachinesServer(zdd.FleetState(machines=[]), token=TOKEN, speed=50.0) as srv:
        code = deploy(srv, write_config(tmp_path, "rolling"))
        out, err = capsys.readouterr()
        assert code == 0, out + err
        live = app_machines(srv)
        assert srv.violations == []
    # two for a group that serves (flyctl's --ha), in primary_region
    assert [m["region"] for m in live] == ["ord", "ord"]
    assert all(m["state"] == "started" and not m["cordoned"] for m in live)
    assert {m["config"]["image"] for m in live} == {NEW}


def test_on_fly_a_canary_weight_is_previewed_as_the_machine_count_it_becomes(
    server: FlyMachinesServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "canary")
    config.write_text(
        config.read_text().replace(
            '  release_command = "bin/migrate --password hunter2"\n',
            '  release_command = "bin/migrate --password hunter2"\n'
            "  [[deploy.canary_steps]]\n    machines = 1\n    weight = 50\n",
        )
    )
    assert deploy(server, config, "--dry-run") == 0
    out, _ = capsys.readouterr()
    assert "50% as 3 canaries beside 3: the provider has no traffic weights" in out
    assert "(50%)" not in out and "weight" not in out.replace("traffic weights", "")


def test_zdd_status_reads_a_fly_deployment_and_steering_says_it_is_not_there_yet(
    server: FlyMachinesServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "rolling")
    where = ["--provider", "fly", "--config", str(config), "--api-url", server.url]
    assert deploy(server, config) == 0
    capsys.readouterr()
    assert main(["status", *where]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("deployment: done (rolling): app -> ")
    assert main(["status", *where, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["in_progress"] is False
    # nothing in flight: exit 2, one line
    assert main(["abort", *where]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing to abort" in err
