"""Bad input never crashes: the loaders, ``plan`` and ``simulate`` raise only
``ZddError`` on arbitrary JSON-like input (deep nesting, huge numbers and
non-ASCII digits included), and the CLI answers every bad input with exit 2 and
one line naming the field or flag (docs/limits.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zdd
from zdd import cli
from zdd._model import decode_regions, natural_key
from zdd._record import RecordView, is_ascii_digits, parse_ascii_int

# At least 2,000 examples a property (more under the thorough profile); every
# example small: a fleet of at most four machines.
EXAMPLES = int(os.environ.get("ZDD_FUZZ_EXAMPLES", "0")) or max(2000, settings.default.max_examples)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---------------------------------------------------------------------------
# JSON-like values, with the awkward ones weighted in

HUGE_INTS = [2**63 - 1, 2**63, -(2**63) - 1, 10**30]
# ints past str()'s 4,300 digits, built lazily: hypothesis cannot repr one in a strategy
beyond_str = st.sampled_from([5000, -5000]).map(lambda e: (1 if e > 0 else -1) * 10 ** abs(e))
NASTY_TEXT = ["²", "٣", "v²", "m٣", "ord:²", "ord:1000000000", "ord:" + "9" * 5000, "", " "]
DIGITY = st.text(alphabet="0123456789²٣۴:,.=ovrdm-", max_size=8)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(HUGE_INTS),
    beyond_str,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    DIGITY,
    st.sampled_from(NASTY_TEXT),
)


def _nest(value: object, depth: int, kind: str) -> object:
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


# nesting around the limit (64) and far beyond what recursion survives
deep = st.builds(
    _nest,
    scalars,
    st.sampled_from([63, 64, 65, 200, 1200, 3000]),
    st.sampled_from(["list", "dict"]),
)
json_like: st.SearchStrategy[Any] = st.recursive(
    scalars | deep,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


def _mostly(default: object, wild: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The default three times in four (so that whole simulations run), else anything."""
    return st.one_of(st.just(default), st.just(default), st.just(default), wild)


def _maybe(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a plausible value (to get past the first check), sometimes anything."""
    return st.one_of(plausible, plausible, plausible, json_like)


# ---------------------------------------------------------------------------
# fleets: fleet JSON objects of at most four machines, records included

RECORD_KEYS = [
    "phase",
    "target",
    "strategy",
    "rollback_of",
    "desired.app",
    "start.app",
    "from.app",
    "canary.app",
    "bluegreen.app",
    "pause.bake",
    "desired.worker",
]
RECORD_VALUES = [
    "deploying",
    "rolling_back",
    "done",
    "app=v2",
    "app=v1",
    "ord:2",
    "ord:1,ams:1",
    "ord:20000",
    "0",
    "1",
    "7",
    "passed",
    "switched",
    "1e400",
    "nan",
    "١٢",
    "9" * 5000,
    *NASTY_TEXT,
]
machine = st.fixed_dictionaries(
    {
        "id": _maybe(st.sampled_from(["m1", "m2", "m10", "m²", "m٣", "m" + "9" * 5000])),
        "version": _maybe(st.sampled_from(["v1", "v2", "v²", "v٣", "v" + "9" * 30])),
    },
    optional={
        "group": _maybe(st.sampled_from(["app", "worker"])),
        "region": _maybe(st.sampled_from(["ord", "ams"])),
        "state": _maybe(st.sampled_from(["started", "stopped", "destroyed", "created"])),
        "health": _maybe(st.sampled_from(["passing", "critical", "unknown"])),
        "cordoned": _maybe(st.booleans()),
        "labels": _maybe(
            st.dictionaries(
                st.sampled_from(["zdd.role", "zdd.weight", "zdd.key"]),
                st.sampled_from(["canary", "50", "²", "٣", "9" * 5000, "k1"]),
                max_size=2,
            )
        ),
    },
)
SHAPES = ["ord:2", "ord:1", "ord:²", "ord:" + "9" * 5000, "ord:1000000000", "ord:20000", "x"]
# a record of a deployment in progress (so that the planner reads it), with damage
_random_record = st.dictionaries(
    st.sampled_from(RECORD_KEYS), st.sampled_from(RECORD_VALUES), max_size=5
)
progress_record = st.fixed_dictionaries(
    {
        "phase": st.sampled_from(["deploying", "deploying", "deploying", "rolling_back"]),
        "target": st.sampled_from(["app=v2", "app=v2", "app=v2", "app=v1"]),
        "canary.app": st.sampled_from(["0", "9" * 5000, "²", "passed"]),
    },
    optional={
        "desired.app": st.sampled_from(SHAPES),
        "start.app": st.sampled_from(SHAPES),
        "from.app": st.sampled_from(["v1", "v²", ""]),
        "pause.bake": st.sampled_from(["5", "1e400", "nan", "\u0661\u0662"]),
        "rollback_of": st.sampled_from(["app=v2", "app=v1"]),
        "strategy": st.sampled_from(["canary", "rolling", "x"]),
    },
)
record_obj = st.one_of(_random_record, progress_record)
fleet_obj = st.one_of(
    st.fixed_dictionaries(
        {"machines": st.lists(machine, max_size=4)},
        optional={"record": _maybe(record_obj)},
    ),
    json_like,
)


def _deep_text(depth: int, opener: str) -> str:
    closer = {"[": "]", "{": "}"}[opener]
    if opener == "{":
        return '{"a": ' * depth + "1" + closer * depth
    return opener * depth + closer * depth


def _dumps(value: object) -> str:
    try:
        return json.dumps(value)
    except (ValueError, RecursionError):  # a huge int, or too deep for json itself
        return "[" * 3000 + "]" * 3000


fleet_text = st.one_of(
    fleet_obj.map(_dumps),
    st.builds(
        lambda d, o: '{"machines": ' + _deep_text(d, o) + "}",
        st.sampled_from([64, 65, 1000, 20_000]),
        st.sampled_from(["[", "{"]),
    ),
    st.sampled_from(
        [
            '{"machines": [], "x": ' + "9" * 5000 + "}",
            '{"machines": [{"id": "m1", "version": "v1"}], "record": {"a": NaN}}',
            '{"machines": [{"id": "m1", "version": "v1", "cordoned": -Infinity}]}',
            '{"machines": [{"id": "\\ud800", "version": "v1"}]}',
            '{"machines": 1e999}',
        ]
    ),
    st.text(max_size=20),
)

# ---------------------------------------------------------------------------
# fly.toml: mappings shaped like one, and TOML text written from them

deploy_table = st.dictionaries(
    st.sampled_from(
        [
            "strategy",
            "max_unavailable",
            "max_surge",
            "wait_timeout",
            "release_command",
            "drain_delay",
            "auto_rollback",
            "region_waves",
            "canary_steps",
            "min_healthy_time",
            "bogus",
        ]
    ),
    _maybe(
        st.one_of(
            st.sampled_from(["rolling", "canary", "bluegreen", "immediate", "5s", "1m", False]),
            st.integers(min_value=0, max_value=3),
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "machines": _maybe(st.sampled_from([1, 2, 10_001, 1_000_000, 2**63 - 1])),
                        "weight": _maybe(st.integers(min_value=0, max_value=101)),
                        "bake": _maybe(st.sampled_from(["1s", "0"])),
                    },
                ),
                max_size=2,
            ),
        )
    ),
    max_size=4,
)
fly_obj = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "app": _maybe(st.just("demo")),
            "primary_region": _maybe(st.just("ord")),
            "kill_signal": _maybe(st.sampled_from(["SIGTERM", "SIGINT", "SIGFOO", "sigterm"])),
            "kill_timeout": _maybe(st.sampled_from([5, "5s", 2**63])),
            "deploy": _maybe(
                st.one_of(
                    deploy_table,
                    st.sampled_from(
                        [
                            {"strategy": "canary", "canary_steps": [{"machines": 1}, {}]},
                            {"strategy": "canary"},
                            {"strategy": "rolling", "max_surge": 1},
                        ]
                    ),
                )
            ),
            "env": _maybe(st.dictionaries(st.sampled_from(["A", "B"]), st.text(max_size=4))),
            "http_service": _maybe(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "internal_port": _maybe(st.sampled_from([8080, -5, 0, 65536, 2**63 - 1])),
                        "checks": _maybe(
                            st.lists(
                                st.fixed_dictionaries(
                                    {}, optional={"path": _maybe(st.just("/health"))}
                                ),
                                max_size=1,
                            )
                        ),
                    },
                )
            ),
            "checks": _maybe(
                st.dictionaries(
                    st.just("alive"),
                    st.fixed_dictionaries(
                        {"type": _maybe(st.sampled_from(["tcp", "http"]))},
                        optional={"port": _maybe(st.sampled_from([8080, -5, 2**63 - 1]))},
                    ),
                    max_size=1,
                )
            ),
        },
    ),
    json_like,
)


def _toml_value(value: object, depth: int = 0) -> str:
    if depth > 6000:
        raise RecursionError
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        # huge ints too: write their digits without str() (which refuses > 4300)
        return str(value) if abs(value) < 10**4000 else ("-" if value < 0 else "") + "9" * 5000
    if isinstance(value, float):
        return repr(value).replace("inf", "inf").replace("nan", "nan")
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v, depth + 1) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(
            f"{json.dumps(k)} = {_toml_value(v, depth + 1)}" for k, v in value.items()
        )
        return "{" + inner + "}"
    return '""'  # None has no TOML form


def _toml(value: object) -> str:
    if not isinstance(value, dict):
        return f"x = {_toml_value(value)}\n"
    lines = []
    for k, v in value.items():
        if v is None:
            continue
        lines.append(f"{json.dumps(k)} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def _safe_toml(value: object) -> str:
    try:
        return _toml(value)
    except RecursionError:
        return "x = " + "[" * 500 + "]" * 500 + "\n"


fly_text = st.one_of(
    fly_obj.map(_safe_toml),
    st.builds(lambda d: "x = " + "[" * d + "]" * d + "\n", st.sampled_from([64, 65, 500, 20_000])),
    st.builds(lambda d: "x = " + "{a = " * d + "1" + "}" * d + "\n", st.sampled_from([65, 600])),
    st.sampled_from(
        [
            "[deploy]\nmax_surge = " + "9" * 5000 + "\n",
            "[deploy]\nmax_surge = 9223372036854775808\n",
            "kill_timeout = 1e999\n",
            "[deploy]\nstrategy = false\n",
        ]
    ),
    st.text(max_size=20),
)


def _only_zdd_errors(fn: Callable[[], object]) -> None:
    """Run ``fn``; a ZddError is a clean refusal, anything else is the bug we hunt."""
    try:
        fn()
    except zdd.ZddError as exc:
        text = str(exc)
        assert text.strip() and "\n" not in text.strip(), text[:500]


# ---------------------------------------------------------------------------
# the properties

_TMP = tempfile.TemporaryDirectory(prefix="zdd-bad-input-")  # removed at exit
_FLEET_FILE = Path(_TMP.name) / "fleet.json"


@FUZZ
@given(text=fleet_text, obj=fleet_obj)
def test_fleet_loader_raises_only_zdd_errors(text: str, obj: object) -> None:
    _FLEET_FILE.write_text(
        text.encode("utf-8", "surrogatepass").decode("utf-8", "replace"), encoding="utf-8"
    )
    _only_zdd_errors(lambda: zdd.load_fleet(_FLEET_FILE))
    _only_zdd_errors(lambda: zdd.fleet_from_json(obj))


@FUZZ
@given(text=fly_text, obj=fly_obj)
def test_config_loader_raises_only_zdd_errors(text: str, obj: object) -> None:
    _only_zdd_errors(lambda: zdd.parse_config(text.encode("utf-8", "replace").decode()))
    _only_zdd_errors(lambda: zdd.parse_config(obj))  # type: ignore[arg-type]


@FUZZ
@given(
    record=st.dictionaries(
        st.sampled_from(RECORD_KEYS), st.sampled_from(RECORD_VALUES) | DIGITY, max_size=6
    ),
    shape=st.sampled_from(RECORD_VALUES) | DIGITY,
    label=st.sampled_from(RECORD_VALUES) | DIGITY,
)
def test_record_decoding_raises_only_zdd_errors(
    record: dict[str, str], shape: str, label: str
) -> None:
    view = RecordView(record)
    view.target_versions()
    view.desired_groups()
    pause = view.pause_started("bake")
    assert pause is None or pause == pause  # finite or absent, never NaN
    natural_key(label)
    value = parse_ascii_int(label)
    assert value is None or (is_ascii_digits(label) and 0 <= value < 10**18)
    _only_zdd_errors(lambda: decode_regions(shape, "desired.app"))
    state = zdd.FleetState(machines=[zdd.Machine(id="m1", version="v1")], record=record)
    _only_zdd_errors(lambda: zdd.Desired.from_fleet(state, zdd.Release(version="v2")))


FLY_EXAMPLES: list[dict[str, Any]] = [
    {},
    {"deploy": {"strategy": "canary", "canary_steps": [{"machines": 1}, {"weight": 50}]}},
    {"deploy": {"strategy": "canary", "canary_steps": [{"machines": 2}]}},
    {"deploy": {"strategy": "canary"}},
    {"deploy": {"strategy": "bluegreen"}, "checks": {"alive": {"type": "tcp", "port": 8080}}},
    {"deploy": {"strategy": "rolling", "max_surge": 1}},
]


def _pipeline(
    fleet: object, fly: object, version: str, new_groups: bool, count: int | None
) -> tuple[zdd.FleetState, zdd.Desired, zdd.Strategy]:
    state = zdd.fleet_from_json(fleet)
    config = zdd.parse_config(fly)  # type: ignore[arg-type]
    if count is not None:
        return state, zdd.Desired.single(config.release(version), count), config.strategy
    return state, config.desired(state, version, new_groups=new_groups), config.strategy


versions = st.sampled_from(["v2", "v1", "v²", "v٣", " ", ""]) | DIGITY
counts = (
    st.none() | st.integers(0, 4) | st.sampled_from([1001, 10_001, 10**6, 10**30, -1]) | beyond_str
)


@FUZZ
@given(
    fleet=st.deferred(lambda: tiny_fleet),
    fly=st.one_of(st.sampled_from(FLY_EXAMPLES), st.sampled_from(FLY_EXAMPLES), fly_obj),
    version=_mostly("v2", versions),
    new_groups=st.booleans(),
    count=_mostly(None, counts),
)
def test_plan_raises_only_zdd_errors(
    fleet: object, fly: object, version: str, new_groups: bool, count: int | None
) -> None:
    def run() -> None:
        zdd.plan(*_pipeline(fleet, fly, version, new_groups, count))

    _only_zdd_errors(run)


_tiny = st.builds(
    lambda n, v, r, labels: {
        "machines": [{"id": f"m{i}", "version": v, "labels": labels} for i in range(1, n + 1)],
        "record": r,
    },
    st.integers(1, 3),
    st.sampled_from(["v1", "v1", "v2", "v²"]),
    st.one_of(progress_record, progress_record, record_obj),
    st.sampled_from([{}, {}, {"zdd.role": "canary", "zdd.weight": "²"}]),
)
tiny_fleet = st.one_of(_tiny, _tiny, _tiny, fleet_obj)
sim_numbers = st.one_of(
    st.floats(min_value=0, max_value=30),
    st.floats(min_value=0, max_value=1e4),
    st.sampled_from([0, 1, 5, 5.1, 1000, 1e308, -1, float("inf"), float("nan")]),
    beyond_str,
    st.text(max_size=2),
    st.none(),
)


@FUZZ
@given(
    fleet=tiny_fleet,
    fly=_mostly({}, fly_obj),
    version=_mostly("v2", versions),
    count=_mostly(None, counts),
    boot_time=_mostly(1.0, sim_numbers),
    boot_sigma=_mostly(0.0, sim_numbers),
    rps=_mostly(10.0, sim_numbers),
    capacity=_mostly(None, sim_numbers),
    connections=_mostly(
        1, st.integers(-1, 5) | st.sampled_from([10**7]) | beyond_str | sim_numbers
    ),
    seed=st.integers(-1, 3) | beyond_str,
)
def test_simulate_raises_only_zdd_errors(
    fleet: object,
    fly: object,
    version: str,
    count: int | None,
    boot_time: Any,
    boot_sigma: Any,
    rps: Any,
    capacity: Any,
    connections: Any,
    seed: Any,
) -> None:
    def run() -> None:
        state, desired, strategy = _pipeline(fleet, fly, version, False, count)
        zdd.simulate(
            state,
            desired,
            strategy,
            seed=seed,
            boot_time=boot_time if boot_time is not None else 1.0,
            boot_sigma=boot_sigma if boot_sigma is not None else 0.0,
            rps=rps if rps is not None else 10.0,
            capacity=capacity,
            connections=connections if connections is not None else 1,
            max_time=3600.0,
        )

    _only_zdd_errors(run)


# ---------------------------------------------------------------------------
# the CLI: every case of the issue, exit 2 and one line naming the field or flag

SECRET = "hunter2-s3cret"


def _cli_cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    def file(name: str, text: str) -> str:
        p = tmp / name
        p.write_text(text, encoding="utf-8")
        return str(p)

    def fleet(obj: object) -> str:
        return file(f"fleet{len(list(tmp.glob('fleet*.json')))}.json", json.dumps(obj))

    one = [{"id": "m1", "version": "v1"}]
    return {
        "deep fleet JSON": (
            ["plan", "--fleet", file("deep.json", '{"machines": ' + "[" * 1000 + "]" * 1000 + "}")],
            "--fleet",
        ),
        "deep fly.toml": (
            [
                "plan",
                "--machines",
                "2",
                "--config",
                file("deep.toml", "x = " + "[" * 500 + "]" * 500),
            ],
            "--config",
        ),
        "huge int in fly.toml": (
            [
                "plan",
                "--machines",
                "2",
                "--config",
                file("huge.toml", "[deploy]\nmax_surge = " + "9" * 5000 + "\n"),
            ],
            "--config",
        ),
        "huge int in fleet JSON": (
            ["plan", "--fleet", file("huge.json", '{"machines": ' + "9" * 5000 + "}")],
            "--fleet",
        ),
        "non-ASCII digit in a version": (
            ["plan", "--fleet", fleet({"machines": [{"id": "m1", "version": "v²"}]})],
            "--version",
        ),
        "non-ASCII digit in the record": (
            [
                "plan",
                "--fleet",
                fleet(
                    {
                        "machines": one,
                        "record": {
                            "phase": "deploying",
                            "target": "app=v2",
                            "desired.app": "ord:²",
                        },
                    }
                ),
            ],
            "record.desired.app",
        ),
        "non-ASCII digit in --machines": (["plan", "--machines", "٣"], "--machines"),
        "canary machines = 1000000": (
            [
                "plan",
                "--machines",
                "2",
                "--config",
                file(
                    "canary.toml",
                    '[deploy]\nstrategy = "canary"\n[[deploy.canary_steps]]\nmachines = 1000000\n',
                ),
            ],
            "deploy.canary_steps[0].machines",
        ),
        "record desired.app = ord:1000000000": (
            [
                "plan",
                "--fleet",
                fleet(
                    {
                        "machines": one,
                        "record": {
                            "phase": "deploying",
                            "target": "app=v2",
                            "desired.app": "ord:1000000000",
                        },
                    }
                ),
            ],
            "record.desired.app",
        ),
        "rollback to start.app = ord:1000000000": (
            [
                "plan",
                "--version",
                "v2",
                "--fleet",
                fleet(
                    {
                        "machines": one,
                        "record": {
                            "phase": "rolling_back",
                            "target": "app=v1",
                            "rollback_of": "app=v2",
                            "from.app": "v1",
                            "start.app": "ord:1000000000",
                        },
                    }
                ),
            ],
            "record.start.app",
        ),
        "--machines 1000000": (["plan", "--machines", "1000000"], "--machines"),
        "--boot-sigma 1000": (
            ["simulate", "--machines", "2", "--boot-sigma", "1000"],
            "--boot-sigma",
        ),
        "--rps 1e308": (["simulate", "--machines", "2", "--rps", "1e308"], "--rps"),
        "--rps inf": (["simulate", "--machines", "2", "--rps", "inf"], "--rps"),
        "--capacity 0": (["simulate", "--machines", "2", "--capacity", "0"], "--capacity"),
        "--boot-time 1000h": (
            ["simulate", "--machines", "2", "--boot-time", "1000h"],
            "--boot-time",
        ),
        "--seed ²": (["simulate", "--machines", "2", "--seed", "²"], "--seed"),
        "strategy = false": (
            ["plan", "--machines", "2", "--config", file("s.toml", "[deploy]\nstrategy = false\n")],
            "deploy.strategy",
        ),
        "port -5": (
            [
                "plan",
                "--machines",
                "2",
                "--config",
                file(
                    "p.toml",
                    '[[services]]\ninternal_port = -5\n[[services.http_checks]]\npath = "/"\n',
                ),
            ],
            "services[0].internal_port",
        ),
        "port 2**63-1": (
            [
                "plan",
                "--machines",
                "2",
                "--config",
                file("q.toml", f'[checks.alive]\ntype = "tcp"\nport = {2**63 - 1}\n'),
            ],
            "checks.alive.port",
        ),
        "kill_signal SIGFOO": (
            ["plan", "--machines", "2", "--config", file("k.toml", 'kill_signal = "SIGFOO"\n')],
            "kill_signal",
        ),
        "non-string release_command with a password": (
            [
                "plan",
                "--machines",
                "2",
                "--config",
                file(
                    "r.toml",
                    f'[deploy]\nrelease_command = ["psql", "postgres://u:{SECRET}@db/app"]\n',
                ),
            ],
            "deploy.release_command",
        ),
        "non-string env value": (
            ["plan", "--machines", "2", "--config", file("e.toml", f'[env]\nDB = ["{SECRET}"]\n')],
            "env.DB",
        ),
        "missing fly.toml": (
            ["plan", "--machines", "2", "--config", str(tmp / "nope.toml")],
            "--config",
        ),
        "unknown strategy flag": (["plan", "--machines", "2", "--strategy", "yolo"], "--strategy"),
    }


CASE_NAMES = list(_cli_cases(Path(tempfile.gettempdir())))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_cli_bad_input_is_exit_2_and_one_line(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, named = _cli_cases(tmp_path)[name]
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (code, err)
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("zdd: error: "), err
    assert named in err, err
    assert SECRET not in err
    assert "Traceback" not in err


def test_cli_deep_nesting_in_a_subprocess(tmp_path: Path) -> None:
    """Far deeper than the recursion limit, in a fresh interpreter: exit 2, one line."""
    deep = tmp_path / "deep.json"
    deep.write_text('{"machines": ' + "[" * 200_000 + "]" * 200_000 + "}", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "zdd", "plan", "--fleet", str(deep)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr[-500:]
    assert proc.stderr.count("\n") == 1 and "--fleet" in proc.stderr


def test_library_errors_name_fields_not_flags(tmp_path: Path) -> None:
    with pytest.raises(zdd.InvalidConfig) as missing:
        zdd.load_config(tmp_path / "nope.toml")
    assert missing.value.field == "config" and "--" not in str(missing.value)
    with pytest.raises(zdd.InvalidFleetState) as bad:
        zdd.fleet_from_json({"machines": [{"id": "m1"}]})
    assert str(bad.value).startswith("fleet JSON: machines[0].version: ")


def test_natural_key_is_ascii_only_and_orders_numbers() -> None:
    ids = ["m10", "m2", "m²", "m٣", "m" + "9" * 5000, "m1"]
    ordered = sorted(ids, key=natural_key)
    assert ordered[:3] == ["m1", "m2", "m10"]
    assert ordered[3] == "m" + "9" * 5000
