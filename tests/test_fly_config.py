"""Fly machine configs built from fly.toml (``zdd.providers._fly_config``).

The golden files in ``tests/golden/fly_configs/`` are the spec: ``<name>.toml``, and
next to it ``<name>.<group>.json`` for each process group and ``<name>.release.json``
for the release-command machine. Each JSON was reviewed by hand against flyctl's
``ToMachineConfig`` / ``ToReleaseMachineConfig`` (see
``docs/providers/fly-machine-config.md``). Regenerate after an intended change with
``ZDD_REGEN_GOLDEN=1 pytest tests/test_fly_config.py`` (the convention of
``test_golden.py``; ``ZDD_UPDATE_GOLDEN=1`` works too) and read the diff: it is the
review of the change.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openapi_check import OpenAPIChecker
from test_purity import _TRAPS, ALLOWED_STDLIB, FORBIDDEN_NAMES, _imports, _trap

from zdd import InvalidConfig
from zdd.providers import _fly_config
from zdd.providers._fly_config import (
    DEFAULT_RELEASE_GUEST,
    RELEASE_COMMAND_GROUP,
    VM_PRESETS,
    go_duration,
    machine_config,
    release_command_config,
    split_command,
)

GOLDEN = Path(__file__).parent / "golden" / "fly_configs"
IMAGE = "registry.fly.io/golden:deployment-01J9ZKQ8"
VERSION = "v2"
REGEN = bool(os.environ.get("ZDD_REGEN_GOLDEN") or os.environ.get("ZDD_UPDATE_GOLDEN"))


def _load(name: str) -> dict[str, Any]:
    with (GOLDEN / f"{name}.toml").open("rb") as f:
        return tomllib.load(f)


def _golden_cases() -> list[tuple[str, str]]:
    cases = []
    for path in sorted(GOLDEN.glob("*.toml")):
        data = _load(path.stem)
        for group in sorted(data.get("processes") or {"app": ""}):
            cases.append((path.stem, group))
        if (data.get("deploy") or {}).get("release_command"):
            cases.append((path.stem, "release"))
    return cases


CASES = _golden_cases()


def _build(name: str, group: str) -> dict[str, Any]:
    data = _load(name)
    if group == "release":
        argv = split_command(data["deploy"]["release_command"])
        return release_command_config(data, image=IMAGE, version=VERSION, command_argv=argv)
    return machine_config(data, group=group, image=IMAGE, version=VERSION)


def _dump(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@pytest.mark.parametrize(("name", "group"), CASES, ids=[f"{n}.{g}" for n, g in CASES])
def test_golden_machine_config(name: str, group: str) -> None:
    text = _dump(_build(name, group))
    path = GOLDEN / f"{name}.{group}.json"
    if REGEN:
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def test_every_golden_json_has_a_case() -> None:
    expected = {f"{n}.{g}.json" for n, g in CASES}
    assert {p.name for p in GOLDEN.glob("*.json")} == expected
    assert len(CASES) >= 6


# -- the API schema -------------------------------------------------------------------

CHECKER = OpenAPIChecker()
MACHINE_CONFIG = {"$ref": "#/components/schemas/fly.MachineConfig"}


def _valid(config: dict[str, Any]) -> dict[str, Any]:
    assert CHECKER.validate(config, MACHINE_CONFIG, "config") == []
    json.dumps(config)  # JSON-ready
    return config


@pytest.mark.parametrize(("name", "group"), CASES, ids=[f"{n}.{g}" for n, g in CASES])
def test_golden_configs_match_the_machines_api_schema(name: str, group: str) -> None:
    _valid(_build(name, group))


# -- helpers for the unit tests -------------------------------------------------------


def build(toml: str, group: str = "app", *, schema: bool = True, **kwargs: Any) -> dict[str, Any]:
    config = machine_config(
        tomllib.loads(toml), group=group, image=IMAGE, version=VERSION, **kwargs
    )
    return _valid(config) if schema else config


def release(toml: str, argv: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
    return _valid(
        release_command_config(
            tomllib.loads(toml),
            image=IMAGE,
            version=VERSION,
            command_argv=argv or ["bin/migrate"],
            **kwargs,
        )
    )


def refused(toml: str, field: str, group: str = "app", match: str | None = None) -> InvalidConfig:
    with pytest.raises(InvalidConfig) as info:
        machine_config(tomllib.loads(toml), group=group, image=IMAGE, version=VERSION)
    assert info.value.field == field, str(info.value)
    if match is not None:
        assert match in info.value.reason, info.value.reason
    return info.value


TWO_GROUPS = """
[processes]
web = "bin/web"
worker = "bin/worker"
"""


# -- the basics -----------------------------------------------------------------------


def test_minimal_config() -> None:
    assert build("") == {
        "image": IMAGE,
        "env": {"FLY_PROCESS_GROUP": "app"},
        "init": {},
        "auto_destroy": False,
        "metadata": {
            "fly_platform_version": "v2",
            "fly_process_group": "app",
            "fly_release_version": VERSION,
        },
    }


def test_input_is_not_changed_and_output_is_fresh() -> None:
    data = _load("multi")
    before = copy.deepcopy(data)
    a = machine_config(data, group="web", image=IMAGE, version=VERSION)
    b = machine_config(data, group="web", image=IMAGE, version=VERSION)
    assert data == before
    assert a == b
    a["services"][0]["ports"].clear()
    a["statics"][0]["url_prefix"] = "/x"
    assert machine_config(data, group="web", image=IMAGE, version=VERSION) == b


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"image": ""}, "image"),
        ({"image": 3}, "image"),
        ({"version": ""}, "version"),
        ({"group": ""}, "group"),
        ({"group": None}, "group"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"group": "app", "image": IMAGE, "version": VERSION, **kwargs}
    with pytest.raises(InvalidConfig) as info:
        machine_config({}, **args)
    assert info.value.field == field


def test_app_config_must_be_a_mapping() -> None:
    with pytest.raises(InvalidConfig):
        machine_config([], group="app", image=IMAGE, version=VERSION)  # type: ignore[arg-type]


# -- env ------------------------------------------------------------------------------


def test_env_adds_the_group_and_the_primary_region() -> None:
    config = build('primary_region = "ams"\n[env]\nA = "1"\nFLY_PROCESS_GROUP = "mine"')
    assert config["env"] == {"A": "1", "FLY_PROCESS_GROUP": "app", "PRIMARY_REGION": "ams"}
    assert "PRIMARY_REGION" not in build('[env]\nA = "1"')["env"]


def test_extra_env_overrides_env_but_not_flys_own() -> None:
    config = build(
        'primary_region = "ams"\n[env]\nA = "1"\nB = "2"',
        env={"B": "override", "C": "3", "PRIMARY_REGION": "x", "FLY_PROCESS_GROUP": "x"},
    )
    assert config["env"] == {
        "A": "1",
        "B": "override",
        "C": "3",
        "FLY_PROCESS_GROUP": "app",
        "PRIMARY_REGION": "ams",
    }


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("8080", "8080"),
        ("8080", "8080"),
        ("true", "true"),
        ("false", "false"),
        ("1.5", "1.5"),
        ("100.0", "100"),
        ("1e6", "1e+06"),
        ("123456789.0", "1.23456789e+08"),
        ("0.0001", "0.0001"),
        ("0.00001", "1e-05"),
        ("-2.5", "-2.5"),
        ("inf", "+Inf"),
        ("nan", "NaN"),
    ],
)
def test_env_scalars_become_text_as_flyctl_writes_them(value: str, text: str) -> None:
    assert build(f"[env]\nV = {value}")["env"]["V"] == text


def test_env_array_of_tables_is_merged() -> None:
    config = build('[[env]]\nA = "1"\nB = "1"\n[[env]]\nB = "2"')
    assert config["env"]["A"] == "1" and config["env"]["B"] == "2"


@pytest.mark.parametrize("value", ['["s3cr3t-value"]', '{ k = "s3cr3t-value" }', "1979-05-27"])
def test_env_values_that_are_not_scalars_are_refused_without_printing_them(value: str) -> None:
    err = refused(f"[env]\nTOKEN = {value}", "env.TOKEN")
    assert "s3cr3t" not in str(err) and "1979" not in str(err)


def test_bad_extra_env_is_refused_without_printing_it() -> None:
    with pytest.raises(InvalidConfig) as info:
        machine_config({}, group="app", image=IMAGE, version=VERSION, env={"K": 5})  # type: ignore[dict-item]
    assert info.value.field == "env"
    assert "5" not in str(info.value)


def test_env_must_be_a_table() -> None:
    refused('env = "A=1"', "env")


# -- processes and init ---------------------------------------------------------------


def test_processes_give_each_group_its_command() -> None:
    assert build(TWO_GROUPS, "web")["init"] == {"cmd": ["bin/web"]}
    assert build(TWO_GROUPS, "worker")["init"] == {"cmd": ["bin/worker"]}


def test_no_processes_no_cmd() -> None:
    assert "cmd" not in build("")["init"]
    assert "cmd" not in build('[processes]\napp = ""')["init"]


def test_processes_in_the_array_form() -> None:
    toml = '[[processes]]\nname = "web"\ncommand = "bin/web -p 80"\n[[processes]]\nname = "jobs"'
    assert build(toml, "web")["init"]["cmd"] == ["bin/web", "-p", "80"]
    assert "cmd" not in build(toml, "jobs")["init"]


def test_group_must_exist() -> None:
    refused(TWO_GROUPS, "processes", group="app", match="'web', 'worker'")
    refused("", "processes", group="web", match="only group is 'app'")


def test_unsplittable_command_is_refused() -> None:
    refused('[processes]\napp = "bin/web \\"unclosed"', "processes.app", match="quote")


def test_command_must_be_text() -> None:
    refused("[processes]\napp = 5", "processes.app")


def test_swap_and_experimental_init() -> None:
    toml = """
swap_size_mb = 256
[experimental]
cmd = ["/call", "me"]
entrypoint = "/entry"
exec = ["/bin/sh", "-c", "x"]
"""
    assert build(toml)["init"] == {
        "cmd": ["/call", "me"],
        "entrypoint": ["/entry"],
        "exec": ["/bin/sh", "-c", "x"],
        "swap_size_mb": 256,
    }
    # [processes] wins over [experimental] cmd
    assert build(toml + '[processes]\napp = "bin/app"')["init"]["cmd"] == ["bin/app"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a b  c", ["a", "b", "c"]),
        ("a\tb\nc\rd", ["a", "b", "c", "d"]),
        ("'a b' \"c d\"", ["a b", "c d"]),
        ('x"y z"w', ["xy zw"]),
        ("a\\ b", ["a b"]),
        ('"a\\"b"', ['a"b']),
        ('"a\\$b"', ["a$b"]),  # google/shlex: a backslash in "..." escapes anything
        ("'a\\b'", ["a\\b"]),
        ("''", [""]),
        ("a#b", ["a#b"]),  # not a comment mid-word
        ("a #b c\nd", ["a", "d"]),  # a comment to the end of the line
        ("", []),
        ("   ", []),
        ("sh -c 'echo $HOME && ls'", ["sh", "-c", "echo $HOME && ls"]),
    ],
)
def test_split_command_as_google_shlex(text: str, words: list[str]) -> None:
    assert split_command(text) == words


@pytest.mark.parametrize("text", ["'open", '"open', "trailing\\", '"esc\\'])
def test_split_command_refuses_what_google_shlex_refuses(text: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        split_command(text, field="deploy.release_command")
    assert info.value.field == "deploy.release_command"


# -- durations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (999, "999ns"),
        (1500, "1.5µs"),
        (1_000_000, "1ms"),
        (500_000_000, "500ms"),
        (1_500_000, "1.5ms"),
        (1_000_000_000, "1s"),
        (1_500_000_000, "1.5s"),
        (60_000_000_000, "1m0s"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (3_723_500_000_000, "1h2m3.5s"),
        (-5_000_000_000, "-5s"),
        (1_000_000_001, "1.000000001s"),
    ],
)
def test_go_duration(ns: int, text: str) -> None:
    assert go_duration(ns) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ('"10s"', "10s"),
        ('"90s"', "1m30s"),
        ('"1h"', "1h0m0s"),
        ('"1m30s"', "1m30s"),
        ('"1.5s"', "1.5s"),
        ('"0"', "0s"),
        ("30", "30s"),  # seconds
        ("1.9", "1s"),  # Go drops the fraction of a bare float before scaling it
    ],
)
def test_kill_timeout(value: str, text: str) -> None:
    assert build(f"kill_timeout = {value}")["stop_config"] == {"timeout": text}


@pytest.mark.parametrize(
    ("value", "text"),
    [("5000", "5s"), ("1500", "1.5s"), ("500", "500ms"), ('"5s"', "5s"), ("1500.9", "1.5s")],
)
def test_check_bare_numbers_are_milliseconds(value: str, text: str) -> None:
    toml = f"[checks.a]\ntype = 'tcp'\nport = 1\ntimeout = {value}"
    assert build(toml)["checks"]["a"]["timeout"] == text
    svc = f"[[services]]\ninternal_port = 1\n[[services.tcp_checks]]\ninterval = {value}"
    assert build(svc)["services"][0]["checks"][0]["interval"] == text
    http = f"[http_service]\ninternal_port = 1\n[[http_service.checks]]\ngrace_period = {value}"
    assert build(http)["services"][0]["checks"][0]["grace_period"] == text


def test_empty_duration_is_unset() -> None:
    assert "stop_config" not in build('kill_timeout = ""')


@pytest.mark.parametrize(
    ("value", "match"),
    [('"10"', "missing a unit"), ('"-5s"', "negative"), ("-5", "negative"), ("true", "")],
)
def test_bad_durations(value: str, match: str) -> None:
    refused(f"kill_timeout = {value}", "kill_timeout", match=match)
    refused(f"[checks.a]\ntype = 'tcp'\nport = 1\ninterval = {value}", "checks.a.interval")


def test_experimental_kill_timeout_when_no_top_level_one() -> None:
    assert build("[experimental]\nkill_timeout = 12")["stop_config"] == {"timeout": "12s"}
    toml = "kill_timeout = 3\n[experimental]\nkill_timeout = 12"
    assert build(toml)["stop_config"] == {"timeout": "3s"}


def test_stop_config() -> None:
    assert "stop_config" not in build("")
    assert build('kill_signal = "SIGUSR1"')["stop_config"] == {"signal": "SIGUSR1"}
    refused("kill_signal = 15", "kill_signal")


# -- http_service ---------------------------------------------------------------------


def test_http_service_ports() -> None:
    toml = """
[http_service]
internal_port = 4000
[http_service.tls_options]
alpn = ["h2"]
[http_service.http_options]
h2_backend = true
[http_service.http_options.response]
pristine = true
headers = { X-Frame-Options = "DENY" }
"""
    # not checked against the schema: the OpenAPI document types a response header's
    # value as an object (Go's map[string]any), where Fly reads the text fly.toml gives
    (service,) = build(toml, schema=False)["services"]
    http = {"h2_backend": True, "response": {"pristine": True}}
    http["response"]["headers"] = {"X-Frame-Options": "DENY"}  # type: ignore[index]
    assert service == {
        "protocol": "tcp",
        "internal_port": 4000,
        "ports": [
            {"port": 80, "handlers": ["http"], "http_options": http},
            {
                "port": 443,
                "handlers": ["http", "tls"],
                "http_options": http,
                "tls_options": {"alpn": ["h2"]},
            },
        ],
    }


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        ("true", True),
        ("false", False),
        ('"off"', False),
        ('"stop"', True),
        ('"suspend"', "suspend"),
    ],
)
def test_auto_stop_machines(value: str, sent: bool | str) -> None:
    config = build(f"[http_service]\ninternal_port = 1\nauto_stop_machines = {value}")
    assert config["services"][0]["autostop"] == sent


def test_bad_auto_stop_machines() -> None:
    refused(
        '[http_service]\ninternal_port = 1\nauto_stop_machines = "sometimes"',
        "http_service.auto_stop_machines",
    )


def test_scaling_zero_values_are_sent() -> None:
    toml = (
        "[http_service]\ninternal_port = 1\nauto_start_machines = false\nmin_machines_running = 0"
    )
    service = build(toml)["services"][0]
    assert service["autostart"] is False and service["min_machines_running"] == 0


@pytest.mark.parametrize(
    ("toml", "match"),
    [
        ("[http_service]\nforce_https = true", "required"),
        ('[http_service]\ninternal_port = "8080"', "integer"),
        ("[http_service]\ninternal_port = 8080.0", "integer"),
        ("[http_service]\ninternal_port = true", "integer"),
        ("[http_service]\ninternal_port = 70000", "65535"),
    ],
)
def test_bad_http_service_internal_port(toml: str, match: str) -> None:
    refused(toml, "http_service.internal_port", match=match)


def test_http_service_must_be_a_table() -> None:
    refused("http_service = 8080", "http_service")


def test_http_service_follows_processes() -> None:
    toml = TWO_GROUPS + '[http_service]\ninternal_port = 1\nprocesses = ["web"]'
    assert "services" in build(toml, "web")
    assert "services" not in build(toml, "worker")


def test_service_without_processes_is_refused_when_processes_are_defined() -> None:
    refused(TWO_GROUPS + "[http_service]\ninternal_port = 1", "http_service.processes", "web")
    refused(TWO_GROUPS + "[[services]]\ninternal_port = 1", "services[0].processes", "worker")


def test_service_naming_an_unknown_group_is_refused() -> None:
    toml = TWO_GROUPS + '[[services]]\ninternal_port = 1\nprocesses = ["web", "wrker"]'
    refused(toml, "services[0].processes", group="web", match="'wrker'")


# -- services -------------------------------------------------------------------------


def test_services_follow_processes_and_keep_their_order() -> None:
    toml = """
[processes]
app = "a"
vpn = "v"
[http_service]
internal_port = 8080
processes = ["app"]
[[services]]
internal_port = 9999
protocol = "udp"
processes = ["vpn"]
[[services]]
internal_port = 1111
protocol = "tcp"
processes = ["vpn", "app"]
"""
    ports = [s["internal_port"] for s in build(toml, "app")["services"]]
    assert ports == [8080, 1111]
    ports = [s["internal_port"] for s in build(toml, "vpn")["services"]]
    assert ports == [9999, 1111]


def test_services_as_a_single_table_and_text_ports() -> None:
    toml = '[services]\nprotocol = "tcp"\ninternal_port = "8080"\nports = [{ port = "443" }]'
    assert build(toml)["services"] == [
        {"protocol": "tcp", "internal_port": 8080, "ports": [{"port": 443}]}
    ]


def test_empty_services_are_dropped() -> None:
    assert "services" not in build("[[services]]")


def test_port_ranges_and_options() -> None:
    toml = """
[[services]]
internal_port = 1
[[services.ports]]
start_port = 100
end_port = 200
handlers = ["proxy_proto"]
force_https = false
proxy_proto_options = { version = "v2" }
"""
    assert build(toml)["services"][0]["ports"] == [
        {
            "start_port": 100,
            "end_port": 200,
            "handlers": ["proxy_proto"],
            "proxy_proto_options": {"version": "v2"},
        }
    ]


SVC = "[[services]]\ninternal_port = 1\n"


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        (SVC + "[[services.ports]]\nhandlers = ['http']", "services[0].ports[0]"),
        (SVC + "ports = [{ port = 1.5 }]", "services[0].ports[0].port"),
        (SVC + "ports = [{ port = 1, handlers = 'tls' }]", "services[0].ports[0].handlers"),
        (SVC + "ports = [1]", "services[0].ports[0]"),
        ("[[services]]\ninternal_port = [1]", "services[0].internal_port"),
        ("[[services]]\nprotocol = 6", "services[0].protocol"),
        ("services = 5", "services"),
        (SVC + "concurrency = 5", "services[0].concurrency"),
        (SVC + "concurrency = 'lots'", "services[0].concurrency"),
        (SVC + "concurrency = { hard_limit = '5' }", "services[0].concurrency.hard_limit"),
        (SVC + "min_machines_running = -1", "services[0].min_machines_running"),
        (
            SVC + "ports = [{ port = 1, tls_options = { alpn = 'h2' } }]",
            "services[0].ports[0].tls_options.alpn",
        ),
        (
            SVC + "ports = [{ port = 1, http_options = { compress = 1 } }]",
            "services[0].ports[0].http_options.compress",
        ),
    ],
)
def test_bad_services(toml: str, field: str) -> None:
    refused(toml, field)


def test_concurrency_old_text_form() -> None:
    toml = '[[services]]\ninternal_port = 1\nconcurrency = "20,25"'
    assert build(toml)["services"][0]["concurrency"] == {
        "type": "requests",
        "soft_limit": 20,
        "hard_limit": 25,
    }


def test_service_checks() -> None:
    toml = """
[[services]]
internal_port = 8080
[[services.http_checks]]
port = 9999
method = "head"
path = "/up"
protocol = "https"
tls_server_name = "example.com"
tls_skip_verify = true
headers = [{ name = "X-A", value = "1" }, { name = "X-B", value = 2 }]
[[services.tcp_checks]]
port = 9999
grace_period = "1s"
"""
    checks = build(toml)["services"][0]["checks"]
    # tcp before http, as flyctl appends them; no port (flyctl does not send one);
    # the method is sent as written
    assert checks == [
        {"type": "tcp", "grace_period": "1s"},
        {
            "type": "http",
            "method": "head",
            "path": "/up",
            "protocol": "https",
            "tls_server_name": "example.com",
            "tls_skip_verify": True,
            "headers": [{"name": "X-A", "values": ["1"]}, {"name": "X-B", "values": ["2"]}],
        },
    ]


def test_bad_check_headers_do_not_print_values() -> None:
    toml = SVC + "[[services.http_checks]]\nheaders = { Authorization = ['Bearer s3cr3t'] }"
    err = refused(toml, "services[0].http_checks[0].headers.Authorization")
    assert "s3cr3t" not in str(err)


# -- top-level checks -----------------------------------------------------------------


def test_top_level_check() -> None:
    toml = """
[checks.status]
type = "http"
port = 8080
method = "post"
path = "/status"
protocol = "https"
tls_skip_verify = false
interval = "10s"
headers = { X-A = "1" }
"""
    assert build(toml)["checks"] == {
        "status": {
            "type": "http",
            "port": 8080,
            "method": "POST",
            "path": "/status",
            "protocol": "https",
            "tls_skip_verify": False,
            "interval": "10s",
            "headers": [{"name": "X-A", "values": ["1"]}],
        }
    }


def test_top_level_check_port_from_http_service() -> None:
    toml = "[http_service]\ninternal_port = 4000\n[checks.a]\ntype = 'tcp'"
    assert build(toml)["checks"]["a"]["port"] == 4000
    refused("[checks.a]\ntype = 'tcp'", "checks.a.port", match="http_service")


def test_top_level_check_port_only_from_the_groups_http_service() -> None:
    toml = TWO_GROUPS + (
        '[http_service]\ninternal_port = 4000\nprocesses = ["web"]\n'
        '[checks.a]\ntype = "tcp"\nprocesses = ["web", "worker"]'
    )
    assert build(toml, "web")["checks"]["a"]["port"] == 4000
    refused(toml, "checks.a.port", group="worker")


def test_top_level_checks_without_processes_are_for_the_default_group_only() -> None:
    toml = TWO_GROUPS + "[checks.a]\ntype = 'tcp'\nport = 1"
    assert "a" in build(toml, "web")["checks"]  # no "app": the first name is the default
    assert "checks" not in build(toml, "worker")
    with_app = '[processes]\napp = "a"\nbg = "b"\n[checks.a]\ntype = "tcp"\nport = 1'
    assert "checks" in build(with_app, "app")
    assert "checks" not in build(with_app, "bg")


def test_top_level_checks_as_an_array() -> None:
    toml = '[[checks]]\nname = "a"\ntype = "tcp"\nport = 1'
    assert build(toml)["checks"] == {"a": {"type": "tcp", "port": 1}}
    refused('[[checks]]\ntype = "tcp"', "checks[0].name")


@pytest.mark.parametrize("kind", ["", "'grpc'", "5"])
def test_top_level_check_type(kind: str) -> None:
    line = f"type = {kind}\n" if kind else ""
    refused(f"[checks.a]\n{line}port = 1", "checks.a.type")


# -- guest ----------------------------------------------------------------------------


def test_no_vm_no_guest() -> None:
    assert "guest" not in build("")


@pytest.mark.parametrize("size", sorted(VM_PRESETS))
def test_presets(size: str) -> None:
    assert build(f"[[vm]]\nsize = '{size}'")["guest"] == VM_PRESETS[size]


def test_preset_table() -> None:
    assert VM_PRESETS["shared-cpu-1x"] == {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256}
    assert VM_PRESETS["shared-cpu-8x"]["memory_mb"] == 2048
    assert VM_PRESETS["performance-4x"] == {
        "cpu_kind": "performance",
        "cpus": 4,
        "memory_mb": 8192,
    }
    assert VM_PRESETS["a100-40gb"]["gpu_kind"] == "a100-pcie-40gb"
    assert dict(DEFAULT_RELEASE_GUEST) == {"cpu_kind": "shared", "cpus": 2, "memory_mb": 512}


@pytest.mark.parametrize(
    ("memory", "mb"),
    [
        ('"512"', 512),
        ("512", 512),
        ("2048.0", 2048),
        ('"1gb"', 1024),
        ('"1GB"', 1024),
        ('"1g"', 1024),
        ('"1GiB"', 1024),
        ('"1 gb"', 1024),
        ('"1.5gb"', 1536),
        ('"512mb"', 512),
        ('"2097152k"', 2048),
    ],
)
def test_vm_memory(memory: str, mb: int) -> None:
    guest = build(f"[[vm]]\nmemory = {memory}")["guest"]
    assert guest == {"cpu_kind": "shared", "cpus": 1, "memory_mb": mb}


@pytest.mark.parametrize(
    "memory", ['"0"', "0", '"1kb"', '"lots"', '"1xb"', '"1gbb"', "1.5", "true", '"-1gb"']
)
def test_bad_vm_memory(memory: str) -> None:
    refused(f"[[vm]]\nmemory = {memory}", "vm[0].memory")


def test_vm_fields_override_the_preset() -> None:
    toml = """
[[vm]]
size = "performance-1x"
memory = "4gb"
cpus = 2
memory_mb = 3072
kernel_args = ["quiet"]
"""
    assert build(toml)["guest"] == {
        "cpu_kind": "performance",
        "cpus": 2,
        "memory_mb": 3072,
        "kernel_args": ["quiet"],
    }


def test_vm_gpu_kind_defaults_to_performance_8x() -> None:
    guest = build('[[vm]]\ngpu_kind = "a100-sxm4-80gb"')["guest"]
    assert guest == {**VM_PRESETS["performance-8x"], "gpu_kind": "a100-sxm4-80gb"}


def test_bad_vm_size_lists_the_sizes() -> None:
    err = refused('[[vm]]\nsize = "shared-cpu-3x"', "vm[0].size")
    assert "shared-cpu-2x" in err.reason and "performance-2x" not in err.reason
    err = refused('[[vm]]\nsize = "huge"', "vm[0].size")
    assert "a100-40gb" in err.reason


def test_vm_per_group() -> None:
    toml = (
        TWO_GROUPS
        + """
[[vm]]
size = "shared-cpu-2x"
[[vm]]
size = "performance-1x"
processes = ["worker"]
"""
    )
    assert build(toml, "web")["guest"] == VM_PRESETS["shared-cpu-2x"]
    assert build(toml, "worker")["guest"] == VM_PRESETS["performance-1x"]
    only = TWO_GROUPS + '[[vm]]\nsize = "shared-cpu-4x"\nprocesses = ["worker"]'
    assert "guest" not in build(only, "web")


def test_vm_the_last_naming_the_group_wins() -> None:
    toml = (
        TWO_GROUPS
        + """
[[vm]]
size = "shared-cpu-2x"
processes = ["web"]
[[vm]]
size = "shared-cpu-4x"
[[vm]]
size = "shared-cpu-8x"
processes = ["web"]
"""
    )
    assert build(toml, "web")["guest"]["cpus"] == 8
    assert build(toml, "worker")["guest"]["cpus"] == 4


def test_host_dedication_id() -> None:
    assert (
        build('host_dedication_id = "h1"\n[[vm]]\nsize = "performance-1x"')["guest"][
            "host_dedication_id"
        ]
        == "h1"
    )
    toml = 'host_dedication_id = "top"\n[[vm]]\nhost_dedication_id = "vm"'
    assert build(toml)["guest"]["host_dedication_id"] == "top"
    assert build('[[vm]]\nhost_dedication_id = "vm"')["guest"]["host_dedication_id"] == "vm"
    assert "guest" not in build('host_dedication_id = "h1"')


def test_vm_aliases() -> None:
    assert build('[compute]\nsize = "shared-cpu-2x"')["guest"] == VM_PRESETS["shared-cpu-2x"]


# -- mounts ---------------------------------------------------------------------------


def test_mounts_table_or_array() -> None:
    expected = [{"path": "/data", "name": "data"}]
    assert build('[mounts]\nsource = "data"\ndestination = "/data"')["mounts"] == expected
    assert build('[[mounts]]\nsource = "data"\ndestination = "/data"')["mounts"] == expected


def test_mounts_extend_sizes() -> None:
    toml = """
[mounts]
source = "data"
destination = "/data"
auto_extend_size_threshold = 90
auto_extend_size_increment = "2000MB"
auto_extend_size_limit = 20
"""
    assert build(toml)["mounts"] == [
        {
            "path": "/data",
            "name": "data",
            "extend_threshold_percent": 90,
            "add_size_gb": 2,
            "size_gb_limit": 20,
        }
    ]


def test_mounts_follow_processes() -> None:
    toml = (
        TWO_GROUPS
        + """
[[mounts]]
source = "web_data"
destination = "/data"
processes = ["web"]
[[mounts]]
source = "jobs"
destination = "/jobs"
processes = ["worker"]
"""
    )
    assert build(toml, "web")["mounts"] == [{"path": "/data", "name": "web_data"}]
    assert build(toml, "worker")["mounts"] == [{"path": "/jobs", "name": "jobs"}]
    no_processes = TWO_GROUPS + '[mounts]\nsource = "d"\ndestination = "/d"'
    assert "mounts" in build(no_processes, "web")  # the default group only
    assert "mounts" not in build(no_processes, "worker")


def test_two_mounts_for_one_group_are_refused() -> None:
    toml = (
        '[[mounts]]\nsource = "a"\ndestination = "/a"\n[[mounts]]\nsource = "b"\ndestination = "/b"'
    )
    refused(toml, "mounts[1]", match="more than one mount")


MOUNT = '[mounts]\nsource = "d"\ndestination = "/d"\n'


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ('[mounts]\ndestination = "/data"', "mounts.source"),
        ('[mounts]\nsource = "d"', "mounts.destination"),
        ('[mounts]\nsource = 1\ndestination = "/d"', "mounts.source"),
        (MOUNT + 'auto_extend_size_increment = "x"', "mounts.auto_extend_size_increment"),
        (MOUNT + 'auto_extend_size_limit = "100MB"', "mounts.auto_extend_size_limit"),
        (MOUNT + "processes = 5", "mounts.processes"),
        ("mounts = 5", "mounts"),
    ],
)
def test_bad_mounts(toml: str, field: str) -> None:
    refused(toml, field)


# -- metrics, statics, restart --------------------------------------------------------


def test_metrics() -> None:
    assert build("[metrics]\nport = 9091\npath = '/m'\nhttps = true")["metrics"] == {
        "port": 9091,
        "path": "/m",
        "https": True,
    }
    toml = (
        TWO_GROUPS
        + """
[[metrics]]
port = 1
processes = ["worker"]
[[metrics]]
port = 2
processes = ["worker", "web"]
[[metrics]]
port = 3
processes = ["web"]
"""
    )
    assert build(toml, "worker")["metrics"] == {"port": 1}  # the first for the group
    assert build(toml, "web")["metrics"] == {"port": 2}
    assert "metrics" not in build("[metrics]\nprocesses = ['app']")
    refused("[metrics]\nport = '9091'", "metrics.port")


def test_metrics_from_experimental() -> None:
    toml = "[experimental]\nmetrics_port = 9100\nmetrics_path = '/x'"
    assert build(toml)["metrics"] == {"port": 9100, "path": "/x"}


def test_statics_are_for_every_group() -> None:
    toml = TWO_GROUPS + "[[statics]]\nguest_path = '/app/public'\nurl_prefix = '/'"
    expected = [
        {"guest_path": "/app/public", "url_prefix": "/", "tigris_bucket": "", "index_document": ""}
    ]
    assert build(toml, "web")["statics"] == expected
    assert build(toml, "worker")["statics"] == expected
    refused("[[statics]]\nguest_path = '/p'", "statics[0].url_prefix")
    refused(
        "[[statics]]\nguest_path = '/p'\nurl_prefix = '/'\ntigris_bucket = 1",
        "statics[0].tigris_bucket",
    )


@pytest.mark.parametrize(
    ("policy", "sent"), [("always", "always"), ("on-failure", "on-failure"), ("never", "no")]
)
def test_restart_policies(policy: str, sent: str) -> None:
    assert build(f"[[restart]]\npolicy = '{policy}'")["restart"] == {"policy": sent}


def test_restart() -> None:
    toml = (
        TWO_GROUPS
        + """
[[restart]]
policy = "always"
processes = ["web"]
[[restart]]
policy = "on-failure"
retries = 10
processes = ["worker", "web"]
"""
    )
    assert build(toml, "web")["restart"] == {"policy": "on-failure", "max_retries": 10}
    assert "restart" not in build("")
    refused("[[restart]]\npolicy = 'no'", "restart[0].policy", match="never")
    refused("[[restart]]\npolicy = 'always'\nprocesses = ['web']", "restart[0].processes")
    refused("[[restart]]\npolicy = 'always'\nretries = 'x'", "restart[0].retries")


# -- release command ------------------------------------------------------------------


def test_release_command_config() -> None:
    toml = """
primary_region = "ams"
kill_signal = "SIGTERM"
[env]
A = "1"
[processes]
web = "bin/web"
[[services]]
internal_port = 1
processes = ["web"]
[checks.a]
type = "tcp"
port = 1
[mounts]
source = "d"
destination = "/d"
[metrics]
port = 1
[[statics]]
guest_path = "/p"
url_prefix = "/"
[[restart]]
policy = "always"
[[vm]]
size = "performance-8x"
"""
    assert release(toml, ["bin/rails", "db:migrate"], env={"B": "2"}) == {
        "image": IMAGE,
        "env": {
            "A": "1",
            "B": "2",
            "RELEASE_COMMAND": "1",
            "FLY_PROCESS_GROUP": RELEASE_COMMAND_GROUP,
            "PRIMARY_REGION": "ams",
        },
        "init": {"cmd": ["bin/rails", "db:migrate"]},
        "guest": dict(DEFAULT_RELEASE_GUEST),
        "stop_config": {"signal": "SIGTERM"},
        "restart": {"policy": "no"},
        "auto_destroy": True,
        "dns": {"skip_registration": True},
        "metadata": {
            "fly_platform_version": "v2",
            "fly_process_group": "fly_app_release_command",
            "fly_release_version": VERSION,
        },
    }


def test_release_command_guest() -> None:
    vm = '[deploy.release_command_vm]\nsize = "performance-1x"\nmemory = 4096'
    assert release(vm)["guest"] == {"cpu_kind": "performance", "cpus": 1, "memory_mb": 4096}
    mine = {"cpu_kind": "shared", "cpus": 4, "memory_mb": 4096}
    assert release("", guest=mine)["guest"] == mine
    assert release(vm, guest=mine)["guest"]["cpus"] == 1  # release_command_vm wins
    assert release('host_dedication_id = "h"', guest=mine)["guest"]["host_dedication_id"] == "h"
    assert "host_dedication_id" not in mine


def test_release_command_init() -> None:
    toml = "swap_size_mb = 128\n[experimental]\nentrypoint = ['/e']\nexec = ['/x']\ncmd = ['/c']"
    assert release(toml)["init"] == {
        "cmd": ["bin/migrate"],
        "entrypoint": ["/e"],
        "swap_size_mb": 128,
    }


@pytest.mark.parametrize("argv", [[], "bin/migrate", [1], None])
def test_release_command_argv_is_checked(argv: Any) -> None:
    with pytest.raises(InvalidConfig) as info:
        release_command_config({}, image=IMAGE, version=VERSION, command_argv=argv)
    assert info.value.field == "deploy.release_command"


def test_release_command_bad_vm() -> None:
    with pytest.raises(InvalidConfig) as info:
        release_command_config(
            {"deploy": {"release_command_vm": {"size": "tiny"}}},
            image=IMAGE,
            version=VERSION,
            command_argv=["x"],
        )
    assert info.value.field == "deploy.release_command_vm.size"


# -- purity -----------------------------------------------------------------------------

MODULE = Path(_fly_config.__file__)


def test_module_imports_only_what_pure_modules_may() -> None:
    for module, level in _imports(MODULE):
        if level == 0:
            assert module in ALLOWED_STDLIB, module
        else:
            assert module.split(".")[0].startswith("_"), module


def test_module_calls_no_io_builtins() -> None:
    tree = ast.parse(MODULE.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in FORBIDDEN_NAMES, node.func.id


def test_builds_with_the_world_booby_trapped(monkeypatch: pytest.MonkeyPatch) -> None:
    data = {name: _load(name) for name in ("phoenix", "volumes", "multi")}
    for target, attr in _TRAPS:
        monkeypatch.setattr(target, attr, _trap)
    for name, group in CASES:
        if group == "release":
            argv = split_command(data[name]["deploy"]["release_command"])
            release_command_config(data[name], image=IMAGE, version=VERSION, command_argv=argv)
        else:
            machine_config(data[name], group=group, image=IMAGE, version=VERSION)
    with pytest.raises(InvalidConfig):
        machine_config({"env": {"A": []}}, group="app", image=IMAGE, version=VERSION)


# -- any fly.toml-shaped input: a dict or InvalidConfig, never another exception ------

SECRET = "s3cr3t-"

_scalars = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.dates(),
    st.datetimes(),
    st.times(),
    st.sampled_from(
        [
            "10s",
            "1m30s",
            "1gb",
            "512",
            "http",
            "tcp",
            "app",
            "web",
            "never",
            "always",
            "suspend",
            "stop",
            "shared-cpu-2x",
            "a100-40gb",
            "1.5gb",
            "bin/x 'y",
            "",
        ]
    ),
    st.integers(min_value=0, max_value=70000),
)
_KEYS = st.sampled_from(
    [
        "port",
        "internal_port",
        "type",
        "processes",
        "interval",
        "timeout",
        "grace_period",
        "headers",
        "method",
        "path",
        "protocol",
        "tls_skip_verify",
        "ports",
        "handlers",
        "start_port",
        "end_port",
        "concurrency",
        "hard_limit",
        "soft_limit",
        "auto_stop_machines",
        "auto_start_machines",
        "min_machines_running",
        "http_options",
        "tls_options",
        "response",
        "replay_cache",
        "tcp_checks",
        "http_checks",
        "checks",
        "size",
        "memory",
        "cpus",
        "cpu_kind",
        "memory_mb",
        "gpu_kind",
        "kernel_args",
        "persist_rootfs",
        "source",
        "destination",
        "auto_extend_size_increment",
        "auto_extend_size_limit",
        "auto_extend_size_threshold",
        "policy",
        "retries",
        "guest_path",
        "url_prefix",
        "tigris_bucket",
        "https",
        "name",
        "value",
        "alpn",
        "compress",
        "idle_timeout",
        "proxy_proto_options",
        "version",
        "force_https",
        "command",
    ]
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(_KEYS, st.text(max_size=5)), inner, max_size=5),
    ),
    max_leaves=12,
)
_TOP = [
    "primary_region",
    "kill_signal",
    "kill_timeout",
    "swap_size_mb",
    "host_dedication_id",
    "env",
    "processes",
    "http_service",
    "services",
    "checks",
    "vm",
    "compute",
    "mounts",
    "metrics",
    "statics",
    "restart",
    "experimental",
    "deploy",
]
_fly_toml = st.dictionaries(st.sampled_from(_TOP), _values, max_size=8)


def _with_secret_env(data: dict[str, Any], env: dict[str, Any]) -> dict[str, Any]:
    if env:
        data = {**data, "env": env}
    return data


_secret_env = st.dictionaries(
    st.sampled_from(["TOKEN", "KEY", "DB_URL"]),
    st.one_of(
        st.builds(lambda n: f"{SECRET}{n}", st.integers()),
        st.lists(st.builds(lambda n: f"{SECRET}{n}", st.integers()), max_size=2),
        st.dictionaries(
            st.just("k"), st.builds(lambda n: f"{SECRET}{n}", st.integers()), max_size=1
        ),
    ),
    max_size=2,
)


def _check_outcome(call: Any) -> None:
    try:
        config = call()
    except InvalidConfig as exc:
        assert SECRET not in str(exc)
        assert exc.field
        return
    assert isinstance(config, dict)
    json.dumps(config)
    assert config["image"] == IMAGE


@given(_fly_toml, _secret_env, st.sampled_from(["app", "web", "worker", "x"]))
def test_any_fly_toml_gives_a_config_or_invalid_config(
    data: dict[str, Any], env: dict[str, Any], group: str
) -> None:
    data = _with_secret_env(data, env)
    if isinstance(data.get("processes"), dict) and data["processes"] and group == "x":
        group = sorted(data["processes"])[0]
    _check_outcome(lambda: machine_config(data, group=group, image=IMAGE, version=VERSION))
    _check_outcome(
        lambda: release_command_config(data, image=IMAGE, version=VERSION, command_argv=["x"])
    )


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "processes": st.just({"web": "bin/web", "worker": "bin/worker"}),
            "http_service": st.dictionaries(_KEYS, _values, max_size=6),
            "services": st.lists(st.dictionaries(_KEYS, _values, max_size=6), max_size=2),
            "checks": st.dictionaries(
                st.text(max_size=3), st.dictionaries(_KEYS, _values, max_size=6), max_size=2
            ),
            "vm": st.lists(st.dictionaries(_KEYS, _values, max_size=5), max_size=2),
            "mounts": st.dictionaries(_KEYS, _values, max_size=5),
            "restart": st.lists(st.dictionaries(_KEYS, _values, max_size=3), max_size=2),
            "statics": st.lists(st.dictionaries(_KEYS, _values, max_size=3), max_size=2),
            "kill_timeout": _scalars,
        },
    ),
    st.sampled_from(["web", "worker"]),
)
def test_sections_of_random_shape_give_a_config_or_invalid_config(
    data: dict[str, Any], group: str
) -> None:
    if "processes" not in data:
        group = "app"
    _check_outcome(lambda: machine_config(data, group=group, image=IMAGE, version=VERSION))


def test_split_command_never_fails_otherwise() -> None:
    @given(st.text(alphabet=st.sampled_from(list(" \t\n'\"\\#ab$")), max_size=20))
    def check(text: str) -> None:
        try:
            words = split_command(text)
        except InvalidConfig:
            return
        assert all(isinstance(w, str) for w in words)

    check()
