"""One exit-code contract for every command (docs/exit-codes.md).

0 converged (or nothing to do), 1 failed or rolled back (or more failed requests
than ``--max-failed-requests``), 2 bad input, 3 locked. Results go to stdout,
progress and errors to stderr; under ``--json`` stdout is one JSON document and
an error is one JSON object on stderr. (``zdd demo`` and ``zdd deploy`` have
their real-process cases in test_demo.py, test_local_deploy.py and the Fly tests.)
"""

from __future__ import annotations

import json

import pytest

from zdd.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_is_0_or_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "plan", "--machines", "3")
    assert code == 0 and out.startswith("Plan (rolling)") and err == ""
    code, out, err = run(capsys, "plan", "--machines", "3", "--strategy", "nope")
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("zdd: error: ")
    code, out, err = run(capsys, "plan", "--machines", "3", "--strategy", "nope", "--json")
    assert code == 2 and out == ""
    assert list(json.loads(err)) == ["error"]


def test_simulate_converged_is_0_with_progress_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "simulate", "--machines", "3", "--progress")
    assert code == 0, err
    assert "converged" in out
    assert "finished: converged" in err and "finished:" not in out


def test_simulate_rolled_back_is_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "simulate", "--machines", "3", "--target-health", "failing")
    assert code == 1
    assert "rolled back" in out.lower() or "rolled_back" in out


def test_simulate_failed_requests_over_the_limit_are_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # immediate takes every machine out at once: requests fail
    code, _out, err = run(capsys, "simulate", "--machines", "3", "--strategy", "immediate")
    assert code == 1
    assert "more than --max-failed-requests 0" in err
    assert err.strip().splitlines()[-1].startswith("zdd: error: ")
    # a CI job that accepts some downtime says how much
    code, _, err = run(
        capsys,
        "simulate",
        "--machines",
        "3",
        "--strategy",
        "immediate",
        "--max-failed-requests",
        "100000",
    )
    assert code == 0, err


def test_simulate_json_is_one_document_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "simulate", "--machines", "2", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["converged"] is True
    code, out, err = run(capsys, "simulate", "--machines", "2", "--rps", "-1", "--json")
    assert code == 2 and out == ""
    assert list(json.loads(err)) == ["error"]


@pytest.mark.parametrize("command", ["plan", "simulate", "demo", "deploy"])
def test_bad_flags_are_2_with_one_line(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out, err = run(capsys, command, "--no-such-flag")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    code, out, err = run(capsys, command, "--no-such-flag", "--json")
    assert code == 2
    assert list(json.loads(err)) == ["error"]


def test_no_command_is_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(capsys)
    assert code == 2
