from __future__ import annotations

from pathlib import Path

import pytest

import zdd
from zdd import BlueGreen, Canary, InvalidConfig, Rolling, parse_config

EXAMPLE = Path(__file__).parent.parent / "examples" / "fly.toml"


def test_example_fly_toml() -> None:
    config = zdd.load_config(EXAMPLE)
    assert config.app == "hello-phoenix"
    assert config.primary_region == "ord"
    assert isinstance(config.strategy, Rolling)
    # max_surge alone: create before destroy (max_unavailable not set means 0)
    assert config.strategy.max_unavailable is None
    assert config.strategy.effective_max_unavailable == 0
    assert config.strategy.unavailable_budget(6) == 0
    assert config.strategy.max_surge == 1
    assert config.strategy.wait_timeout == 300
    assert config.strategy.release_command == "/app/bin/migrate"
    assert config.strategy.release_command_timeout == 600
    assert config.strategy.min_healthy_time == 10
    assert config.kill_signal == "SIGTERM"
    assert config.kill_timeout == 30
    assert config.image.startswith("registry.fly.io/hello-phoenix")
    (check,) = config.checks
    assert (check.type, check.method, check.path, check.port) == ("http", "GET", "/health", 8080)
    assert (check.grace_period, check.interval, check.timeout) == (10, 30, 5)
    release = config.release("v2")
    assert release.checks == (check,)
    assert release.env["PORT"] == "8080"


def test_defaults_are_flys() -> None:
    config = parse_config("")
    assert isinstance(config.strategy, Rolling)
    assert config.strategy.max_unavailable is None  # not set: Fly's 0.33
    assert config.strategy.effective_max_unavailable == 0.33
    assert config.strategy.max_surge == 0
    assert config.strategy.wait_timeout == 300
    assert config.strategy.release_command_timeout == 300
    assert config.processes == ("app",)
    assert config.kill_signal == "SIGINT"
    assert config.kill_timeout == 5


def test_all_check_tables_and_their_units() -> None:
    config = parse_config(
        """
[processes]
  web = "bin/server"
  worker = "bin/worker"

[checks.alive]
  type = "tcp"
  port = 8080
  interval = 15000
  timeout = "2s"
  processes = ["worker"]

[[services]]
  internal_port = 4000
  processes = ["web"]
  [[services.http_checks]]
    interval = "10s"
    grace_period = 5000
    method = "head"
    path = "/up"
    headers = { X-Token = "s3cret" }
  [[services.tcp_checks]]
    interval = "20s"

[http_service]
  internal_port = 8080
  processes = ["web"]
  [[http_service.checks]]
    path = "/health"
    timeout = 3000
"""
    )
    kinds = sorted((c.type, c.processes, c.port) for c in config.checks)
    assert kinds == [
        ("http", ("web",), 4000),
        ("http", ("web",), 8080),
        ("tcp", ("web",), 4000),
        ("tcp", ("worker",), 8080),
    ]
    by_name = {c.name: c for c in config.checks}
    assert by_name["alive"].interval == 15  # bare numbers in check tables are milliseconds
    assert by_name["services[0].http_checks[0]"].grace_period == 5
    assert by_name["services[0].http_checks[0]"].method == "HEAD"
    assert by_name["http_service.checks[0]"].timeout == 3
    assert len(config.release("v2", "web").checks) == 3
    assert len(config.release("v2", "worker").checks) == 1
    assert "s3cret" not in repr(config)


def test_mounts() -> None:
    config = parse_config('[mounts]\nsource = "data"\ndestination = "/data"\n')
    assert [(m.source, m.destination) for m in config.mounts] == [("data", "/data")]
    assert config.release("v2").mounts == config.mounts
    two = parse_config(
        '[[mounts]]\nsource = "a"\ndestination = "/a"\nprocesses = ["app"]\n'
        '[[mounts]]\nsource = "b"\ndestination = "/b"\nprocesses = ["other"]\n'
    )
    assert [m.source for m in two.release("v2", "app").mounts] == ["a"]


def test_strategies_and_extensions() -> None:
    bg = parse_config(
        '[deploy]\nstrategy = "bluegreen"\nmax_unavailable = 2\nswitch_gate = "qa"\n'
        'keep_blue_for = "15m"\ndrain_delay = "30s"\n'
    ).strategy
    assert isinstance(bg, BlueGreen)
    assert (bg.switch_gate, bg.keep_blue_for, bg.drain_delay) == ("qa", 900, 30)
    canary = parse_config(
        """
[deploy]
  strategy = "canary"
  max_unavailable = 1
  post_deploy_command = "bin/contract"
  region_waves = ["ams", "ord"]
  [[deploy.canary_steps]]
    machines = 1
    bake = "5m"
  [[deploy.canary_steps]]
    machines = 2
    weight = 50
    gate = "metrics"
"""
    ).strategy
    assert isinstance(canary, Canary)
    assert canary.then.max_unavailable == 1
    assert canary.post_deploy_command == "bin/contract"
    assert canary.region_waves == ("ams", "ord")
    assert [(s.machines, s.weight, s.bake, s.gate) for s in canary.steps] == [
        (1, None, 300, None),
        (2, 50, 0, "metrics"),
    ]


def test_region_waves_true_puts_the_primary_first() -> None:
    config = parse_config('primary_region = "syd"\n[deploy]\nregion_waves = true\n')
    assert config.strategy.region_waves == ("syd",)


def test_unknown_fly_keys_are_ignored() -> None:
    config = parse_config(
        """
app = "x"
swap_size_mb = 512
console_command = "/app/bin/remote"
[experimental]
  auto_rollback = true
[deploy]
  release_command_vm = { size = "performance-1x" }
  seed_command = "bin/seed"
[[statics]]
  guest_path = "/app/public"
  url_prefix = "/"
"""
    )
    assert config.app == "x"


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("[deploy]\nmax_surg = 1\n", "deploy.max_surg", "did you mean 'max_surge'"),
        ('[deploy]\nstrategy = "blue-green"\n', "deploy.strategy", "bluegreen"),
        (
            '[deploy]\nstrategy = "rolling"\nmax_unavailable = -1\n',
            "deploy.max_unavailable",
            "negative",
        ),
        ("[deploy]\nmax_unavailable = 0\n", "deploy.max_unavailable", "max_surge"),
        ("[deploy]\nmax_surge = -0.5\n", "deploy.max_surge", "negative"),
        ('[deploy]\nmax_unavailable = "lots"\n', "deploy.max_unavailable", "number"),
        ("[deploy]\nwait_timeout = 300\n", "deploy.wait_timeout", '"300s"'),
        ('[deploy]\nwait_timeout = "5 minutes"\n', "deploy.wait_timeout", "duration"),
        ('[deploy]\nwait_timeout = "-5m"\n', "deploy.wait_timeout", "negative"),
        ('[deploy]\nrelease_command = "bin/migrate \'unclosed"\n', "release_command", "shell"),
        ('[deploy]\nstrategy = "bluegreen"\nmax_surge = 1\n', "deploy.max_surge", "bluegreen"),
        ("[[deploy.canary_steps]]\nmachines = 0\n", "deploy.canary_steps[0].machines", ">= 1"),
        ("[[deploy.canary_steps]]\nweight = 200\n", "deploy.canary_steps[0].weight", "100"),
        ('[[deploy.canary_steps]]\nbaek = "1m"\n', "deploy.canary_steps[0].baek", "unknown"),
        ("[deploy]\nregion_waves = 3\n", "deploy.region_waves", "list"),
        ('[checks.web]\ntype = "grpc"\n', "checks.web.type", "http"),
        ('[checks.web]\ntype = "http"\ninterval = "fast"\n', "checks.web.interval", "duration"),
        ('[checks.web]\ntype = "http"\nprocesses = ["nope"]\n', "checks.web.processes", "nope"),
        ('[mounts]\ndestination = "/data"\n', "mounts[0].source", "volume name"),
        ("kill_timeout = -3\n", "kill_timeout", "negative"),
        ("[deploy]\nstrategy = 3\n", "deploy.strategy", "string"),
        ("[deploy]\nstrategy = false\n", "deploy.strategy", "string"),
        ('kill_signal = "SIGFOO"\n', "kill_signal", "SIGTERM"),
        ("[http_service]\ninternal_port = -5\n", "http_service.internal_port", "1 to 65535"),
        ("[http_service]\ninternal_port = 65536\n", "http_service.internal_port", "1 to 65535"),
        (
            f'[checks.web]\ntype = "tcp"\nport = {2**63 - 1}\n',
            "checks.web.port",
            "1 to 65535",
        ),
        ("[[services]]\ninternal_port = 0\n", "services[0].internal_port", "1 to 65535"),
        ("[[deploy.canary_steps]]\nmachines = 10001\n", "deploy.canary_steps[0].machines", "10000"),
        ("[deploy]\nmax_surge = 1e6\n", "deploy.max_surge", "10000"),
        ('[deploy]\nwait_timeout = "100000h"\n', "deploy.wait_timeout", "ten years"),
        ("[deploy]\nmax_surge = 9223372036854775808\n", "deploy.max_surge", "64 bits"),
        ("x = " + "[" * 65 + "]" * 65 + "\n", "x" + "[0]" * 63, "64 levels"),
        ("x = " + "[" * 500 + "]" * 500 + "\n", "config", "64 levels"),
        ("[deploy]\nmax_surge = " + "9" * 5000 + "\n", "config", "64 bits"),
    ],
)
def test_errors_name_the_field(text: str, field: str, words: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        parse_config(text)
    assert field in str(info.value)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig, match="not valid TOML"):
        parse_config("[deploy\n")
    with pytest.raises(InvalidConfig, match="no such file") as missing:
        zdd.load_config(tmp_path / "fly.toml")
    # a field, not a flag: the CLI says --config
    assert missing.value.field == "config" and "--" not in str(missing.value)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[deploy]\nrelease_command = ["psql", "postgres://u:hunter2@db"]\n', "release_command"),
        ('[deploy]\npost_deploy_command = {pw = "hunter2"}\n', "post_deploy_command"),
        ('[env]\nDB_PASSWORD = ["hunter2"]\n', "env.DB_PASSWORD"),
        ('[build]\nimage = ["hunter2"]\n', "build.image"),
    ],
)
def test_errors_never_echo_a_value_that_may_be_a_secret(text: str, field: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        parse_config(text)
    assert field in str(info.value)
    assert "hunter2" not in str(info.value)
    assert "must be a string" in str(info.value)


def test_strategy_from_name() -> None:
    assert isinstance(zdd.strategy_from_name("BlueGreen"), BlueGreen)
    assert zdd.strategy_from_name("canary", max_surge=1).then.max_surge == 1
    # Fly's max_unavailable is ignored where it does not apply, as flyctl does
    assert isinstance(zdd.strategy_from_name("immediate", max_unavailable=0.5), zdd.Immediate)
    with pytest.raises(InvalidConfig, match="choose one of"):
        zdd.strategy_from_name("yolo")


@pytest.mark.parametrize(
    ("value", "n", "budget"),
    [
        (0.33, 3, 1),
        (0.33, 4, 2),
        (0.33, 10, 4),
        (0.5, 1, 1),
        (0.01, 3, 1),
        (2.9, 10, 2),
        (1, 5, 1),
        (1.5, 5, 1),
        (10, 3, 10),
    ],
)
def test_max_unavailable_arithmetic(value: float, n: int, budget: int) -> None:
    assert Rolling(max_unavailable=value).unavailable_budget(n) == budget


@pytest.mark.parametrize(
    ("value", "n", "budget"), [(0, 10, 0), (0.25, 10, 3), (0.25, 1, 1), (1, 10, 1), (2.5, 10, 2)]
)
def test_max_surge_arithmetic(value: float, n: int, budget: int) -> None:
    assert Rolling(max_surge=value).surge_budget(n) == budget
