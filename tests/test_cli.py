"""The CLI, through ``main()`` and through a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from zdd.cli import main

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "fly.toml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "plan", "--config", str(EXAMPLE), "--machines", "6")
    assert code == 0, err
    assert out.startswith("Plan (rolling): app: 6 -> 6 machines, v1 -> v2")
    assert "release: /app/bin/migrate" in out
    # max_surge = 1 alone in the example: nothing is taken out before its replacement serves
    assert "budget 0" in out and "budget 2" not in out
    assert "(ceiling 7)" in out


def test_plan_json_is_the_documented_format(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "--machines", "3", "--version", "v9", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["strategy"] == "rolling"
    assert set(data) == {"format", "strategy", "summary", "warnings", "steps"}
    assert data["warnings"] == []
    for step in data["steps"]:
        assert set(step) == {"why", "actions", "wait"}
        for action in step["actions"] + step["wait"]:
            assert {"kind", "machine", "group"} <= set(action)
    kinds = {a["kind"] for s in data["steps"] for a in s["actions"]}
    assert {"update", "cordon", "uncordon", "label"} <= kinds
    assert any(a.get("version") == "v9" for s in data["steps"] for a in s["actions"])


def test_flags_override_the_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "plan",
        "--config",
        str(EXAMPLE),
        "--machines",
        "4",
        "--strategy",
        "rolling",
        "--max-unavailable",
        "25%",
        "--max-surge",
        "0",
        "--json",
    )
    assert code == 0, err
    data = json.loads(out)
    assert not any(a["kind"] == "create" for s in data["steps"] for a in s["actions"])
    code, out, err = run(
        capsys, "plan", "--config", str(EXAMPLE), "--machines", "2", "--strategy", "immediate"
    )
    assert code == 0, err
    assert "Plan (immediate)" in out
    assert "/app/bin/migrate" in out  # the release command carries over


def test_fleet_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fleet = tmp_path / "fleet.json"
    fleet.write_text(
        json.dumps(
            {
                "machines": [
                    {"id": "a", "version": "v3", "region": "ams"},
                    {"id": "b", "version": "v3", "state": "stopped", "volume": "vol_b"},
                ]
            }
        )
    )
    code, out, err = run(capsys, "plan", "--fleet", str(fleet))
    assert code == 0, err
    assert "v3 -> v4" in out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["plan"], "--fleet FLEET_JSON or --machines N"),
        (["plan", "--machines", "x"], "not a whole number"),
        (["plan", "--machines", "3", "--strategy", "yolo"], "choose one of"),
        (["plan", "--machines", "3", "--max-unavailable", "0"], "allows no progress"),
        (["plan", "--machines", "3", "--max-unavailable", "-1"], ">= 0"),
        (["plan", "--machines", "3", "--max-surge", "many"], "not a number"),
        (["plan", "--machines", "3", "--strategy", "bluegreen"], "health check"),
        (["plan", "--machines", "3", "--strategy", "immediate", "--max-surge", "1"], "immediate"),
        (["plan", "--config", "/nonexistent/fly.toml", "--machines", "3"], "no such file"),
        (["plan", "--fleet", "/nonexistent.json"], "no such file"),
        (["plan", "--machines", "3", "--fleet", "f.json"], "not allowed with"),
        (["plan", "--machines", "2", "--bogus"], "unrecognized"),
        (["deploy"], "--provider"),
        (["launch"], "invalid choice"),
        (["plan", "--machines", "\u0663"], "ASCII digits"),
        (["plan", "--machines", "10001"], "at most 10000"),
        (["plan", "--machines", "3", "--max-surge", "1e6"], "at most 10000"),
        (["simulate", "--machines", "3", "--capacity", "0"], "above 0"),
        (["simulate", "--machines", "3", "--rps", "nan"], "--rps"),
        (["simulate", "--machines", "3", "--boot-sigma", "5.5"], "at most 5"),
        (["simulate", "--machines", "3", "--connections", "1_000"], "ASCII digits"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("zdd: error: ")
    assert words in err
    assert "Traceback" not in err


def test_bad_fleet_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fleet = tmp_path / "fleet.json"
    for content, words in [
        ("{not json", "not valid JSON"),
        ('{"machines": [{"id": "a"}]}', "machines[0].version"),
        ('{"machines": [{"id": "a", "version": "v1", "state": "runing"}]}', "machines[0].state"),
        ('{"machines": [{"id": "a", "version": "v1"}, {"id": "a", "version": "v1"}]}', "duplicate"),
        ('{"machines": [{"id": "a", "version": "v1", "colour": "red"}]}', "unknown key 'colour'"),
        ('{"machines": [{"id": "a", "version": "release-7"}]}', "--version"),
    ]:
        fleet.write_text(content)
        code, _, err = run(capsys, "plan", "--fleet", str(fleet))
        assert code == 2, content
        assert words in err, (content, err)
        assert err.count("\n") == 1


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("zdd ")


def test_console_script_and_python_m() -> None:
    for cmd in (["zdd"], [sys.executable, "-m", "zdd"]):
        done = subprocess.run(
            [*cmd, "plan", "--machines", "2", "--json"], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["strategy"] == "rolling"
    bad = subprocess.run(
        [sys.executable, "-m", "zdd", "plan", "--machines", "2", "--max-surge", "x"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
