"""``zdd demo``: real processes behind a real HAProxy, under real load.

Each run starts three demo-app processes (v1) behind HAProxy, sends keep-alive
requests and holds streaming connections, deploys v2, and counts what failed.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from zdd.cli import main

pytestmark = pytest.mark.skipif(
    shutil.which("haproxy") is None,
    reason="HAProxy is not installed (apt-get install haproxy); .ci/run installs it",
)

CONFIG = """
[deploy]
  strategy = "{strategy}"
  drain_delay = "1s"
  wait_timeout = "10s"
"""


def config_text(strategy: str, max_unavailable: str, max_surge: str) -> str:
    text = CONFIG.format(strategy=strategy)
    if strategy in ("rolling", "canary"):
        text += f"  max_unavailable = {max_unavailable}\n"
        if max_surge != "0":
            text += f"  max_surge = {max_surge}\n"
    return text


def demo(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    strategy: str,
    *extra: str,
    max_unavailable: str = "1",
    max_surge: str = "0",
    exit_code: int = 0,
) -> dict[str, Any]:
    config = tmp_path / "fly.toml"
    config.write_text(config_text(strategy, max_unavailable, max_surge))
    code = main(["demo", "--config", str(config), "--rps", "400", "--json", *extra])
    out, err = capsys.readouterr()
    assert code == exit_code, out + err
    report: dict[str, Any] = json.loads(out)
    return report


RUN_MARKER = "ZDD_TEST_DEMO_RUN"


@pytest.fixture(autouse=True)
def run_marker(monkeypatch: pytest.MonkeyPatch) -> str:
    """A token in the environment the demo's processes inherit: this test's own."""
    token = uuid.uuid4().hex
    monkeypatch.setenv(RUN_MARKER, token)
    return token


def no_zdd_processes() -> list[str]:
    """Demo-app and HAProxy processes this test started that still run (there must be
    none after a demo). Found by the test's marker in their environment, so that demos
    run by anything else on this host at the same time are not counted."""
    marker = f"{RUN_MARKER}={os.environ[RUN_MARKER]}".encode()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker not in environ or state == "Z":
            continue
        if b"zdd.demo.app" in cmdline or (b"haproxy" in cmdline and b"zdd" in cmdline):
            found.append(cmdline.decode(errors="replace"))
    return found


@pytest.mark.parametrize(
    ("strategy", "max_unavailable", "max_surge"),
    [("bluegreen", "1", "0"), ("rolling", "0", "1"), ("canary", "1", "0")],
    ids=["bluegreen", "rolling-surge", "canary"],
)
def test_zero_failed_requests_and_no_cut_streams(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    strategy: str,
    max_unavailable: str,
    max_surge: str,
) -> None:
    report = demo(
        tmp_path,
        capsys,
        strategy,
        "--settle",
        "3s",
        max_unavailable=max_unavailable,
        max_surge=max_surge,
    )
    assert report["converged"] is True
    assert report["total_requests"] >= 2000
    assert report["failed_requests"] == 0, report["failures_by_kind"]
    assert report["dropped_connections"] == 0
    assert report["streams_opened"] >= 5
    assert set(report["versions_seen"]) == {"v1", "v2"}
    assert no_zdd_processes() == []


def demo_default_config(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    """``zdd demo --json`` with no ``--config``: the library's defaults and ``args`` only."""
    code = main(["demo", "--json", *args])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    report: dict[str, Any] = json.loads(out)
    return report


# One machine, no fly.toml: the defaults (drain_delay 10s, Fly's max_unavailable
# 0.33 unless a surge is set). Before decision 0008 the rolling and canary cases
# took the only machine out before its replacement served (159 failed requests for
# rolling --max-surge 1); now a surge machine is borrowed and serves first.
@pytest.mark.parametrize(
    "flags",
    [
        ("--strategy", "rolling"),
        ("--strategy", "canary"),
        ("--strategy", "rolling", "--max-surge", "1"),
    ],
    ids=["rolling", "canary", "rolling-max-surge-1"],
)
def test_one_machine_with_the_default_config_fails_no_request(
    capsys: pytest.CaptureFixture[str], flags: tuple[str, ...]
) -> None:
    # 300 requests a second for the deployment (10s or more: it drains for 10s) and
    # 2s of settling on each side: about 4,500 requests, at least 2,000 asserted
    report = demo_default_config(
        capsys, *flags, "--machines", "1", "--rps", "300", "--settle", "2s"
    )
    assert report["converged"] is True, report["error"]
    assert report["rolled_back"] is False
    assert report["total_requests"] >= 2000, report
    assert report["failed_requests"] == 0, report["failures_by_kind"]
    assert report["dropped_connections"] == 0
    assert set(report["versions_seen"]) == {"v1", "v2"}
    assert no_zdd_processes() == []


def test_immediate_fails_requests_so_the_harness_can_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # failed requests make the demo exit 1 (--max-failed-requests 0): a CI job fails on them
    report = demo(tmp_path, capsys, "immediate", exit_code=1)
    assert report["failed_requests"] > 0
    assert no_zdd_processes() == []


def test_a_failing_health_check_rolls_back_without_failing_requests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = demo(
        tmp_path,
        capsys,
        "rolling",
        "--target-health",
        "failing",
        max_unavailable="0",
        max_surge="1",
        exit_code=1,  # rolled back: not what was asked (the one exit-code contract)
    )
    assert report["rolled_back"] is True
    assert report["converged"] is False
    assert report["failed_requests"] == 0, report["failures_by_kind"]
    assert report["dropped_connections"] == 0
    assert set(report["versions_seen"]) == {"v1"}
    assert no_zdd_processes() == []


def test_text_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "fly.toml"
    config.write_text(config_text("rolling", "0", "1"))
    code = main(["demo", "--config", str(config), "--machines", "1", "--settle", "0.5s"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "requests failed      0" in out
    assert "finished: converged" in err


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--strategy", "bluegreen", "--max-surge", "1"])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1


def test_the_demo_says_when_it_delivered_less_load_than_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "fly.toml"
    config.write_text(config_text("rolling", "0", "1"))
    # a million requests a second: no two-core machine sends that many
    argv = ["demo", "--config", str(config), "--machines", "1", "--settle", "0.5s"]
    code = main([*argv, "--rps", "1000000"])
    out, _ = capsys.readouterr()
    assert code == 0, out
    assert "of the 1,000,000 asked: this machine could not send more" in out
    code = main([*argv, "--rps", "1000000", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["requested_rps"] == 1000000
    assert 0 < report["delivered_rps"] < 900000
    # and a rate the machine keeps up with gets no such line
    code = main([*argv, "--rps", "20"])
    out, _ = capsys.readouterr()
    assert code == 0 and "could not send more" not in out
