"""Reading a fly.toml: the strategy with its options (``_strategies.py``), checks,
mounts, processes and what zdd needs to build a release.

fly.toml durations follow Fly's own rules (see ``docs/configuration.md``).
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ._analysis import MetricGate, gates_from_table
from ._durations import parse_duration
from ._errors import MAX_DEPTH, InvalidConfig, ZddError, check_limits, describe
from ._model import Desired, FleetState, GroupSpec, HealthCheck, Mount, Release
from ._record import RecordView
from ._strategies import (
    STRATEGY_NAMES,
    BlueGreen,
    Canary,
    CanaryStep,
    Immediate,
    Rolling,
    Strategy,
    _count,
    _waves,
    common_options,
    strategy_from_name,
)

__all__ = [
    "STRATEGY_NAMES",
    "BlueGreen",
    "Canary",
    "CanaryStep",
    "Config",
    "Immediate",
    "Rolling",
    "Strategy",
    "common_options",
    "load_config",
    "parse_config",
    "strategy_from_name",
]


@attrs.frozen(kw_only=True)
class Config:
    """What zdd read from a fly.toml.

    Attributes:
        path: where it came from (``None`` for text).
        app: the ``app`` name, if any.
        primary_region: ``primary_region``, if any.
        strategy: the deployment strategy with its options.
        image: ``[build].image``, if any.
        env: ``[env]`` (values redacted in the repr).
        processes: process group names from ``[processes]``; ``("app",)`` if none.
        checks: every health check, with the groups it applies to.
        mounts: the ``[mounts]`` entries.
        kill_signal: ``kill_signal`` (default SIGINT).
        kill_timeout: ``kill_timeout`` in seconds (default 5).
        traffic_groups: the process groups that take traffic (those an
            ``[http_service]`` or ``[[services]]`` entry or a check applies to);
            ``None`` when unknown (no file): every group is taken to serve.
    """

    path: str | None = None
    app: str | None = None
    primary_region: str | None = None
    strategy: Strategy = attrs.field(factory=Rolling)
    image: str = ""
    env: Mapping[str, str] = attrs.field(factory=dict, repr=lambda e: f"<{len(e)} redacted>")
    processes: tuple[str, ...] = ("app",)
    checks: tuple[HealthCheck, ...] = ()
    mounts: tuple[Mount, ...] = ()
    kill_signal: str = "SIGINT"
    kill_timeout: float = 5.0
    traffic_groups: tuple[str, ...] | None = None
    #: metric gates by name, from ``[deploy.analysis.<name>]`` (docs/analysis.md)
    analysis: Mapping[str, MetricGate] = attrs.field(factory=dict)
    #: the decoded file itself (what a provider builds machines from); never in a repr
    raw: Mapping[str, Any] | None = attrs.field(default=None, repr=False, eq=False)

    def release(self, version: str, group: str = "app") -> Release:
        """The release of ``group`` at ``version``: this file's checks and mounts for it."""
        return Release(
            serves_traffic=self.traffic_groups is None or group in self.traffic_groups,
            version=version,
            image=self.image,
            env=self.env,
            checks=[c for c in self.checks if not c.processes or group in c.processes],
            mounts=[m for m in self.mounts if not m.processes or group in m.processes],
            kill_signal=self.kill_signal,
            kill_timeout=self.kill_timeout,
            app_config=self.raw,
        )

    def desired(self, state: FleetState, version: str, *, new_groups: bool = False) -> Desired:
        """Keep ``state``'s shape, move every group to ``version`` under this config.

        ``new_groups``: a ``[processes]`` group with no machine yet (every group, on an
        app's first deploy) gets flyctl's first machines in ``primary_region``: 2 for
        a group that serves traffic (flyctl's ``--ha`` default), 1 for a worker or a
        group with a volume.
        """
        groups = set(state.groups())
        groups.update(RecordView(state.record).desired_groups())
        releases = {g: self.release(version, g) for g in groups}
        desired = Desired.from_fleet(state, releases)
        specs = [
            GroupSpec(name=g.name, release=self.release(version, g.name), regions=g.regions)
            for g in desired.groups
        ]
        if new_groups:
            for group in self.processes:
                if group in groups:
                    continue
                if not self.primary_region:
                    raise InvalidConfig(
                        f"group {describe(group)} has no machine yet and zdd would create "
                        f"its first ones in primary_region, which is not set; add primary_region",
                        field="primary_region",
                    )
                release = self.release(version, group)
                count = 2 if release.serves_traffic and not release.mounts else 1
                specs.append(
                    GroupSpec(name=group, release=release, regions={self.primary_region: count})
                )
        return Desired(groups=specs)


# Fly's own keys of [deploy]; any other key there must be one of ours.
_FLY_DEPLOY_KEYS = frozenset(
    {
        "strategy",
        "max_unavailable",
        "wait_timeout",
        "release_command",
        "release_command_timeout",
        "release_command_vm",
        "release_command_compute",
        "seed_command",
    }
)
_OUR_DEPLOY_KEYS = frozenset(
    {
        "max_surge",
        "min_healthy_time",
        "drain_delay",
        "post_deploy_command",
        "post_deploy_command_timeout",
        "region_waves",
        "auto_rollback",
        "allow_downtime",
        "switch_gate",
        "keep_blue_for",
        "canary_steps",
        "analysis",
    }
)
_CANARY_STEP_KEYS = frozenset({"machines", "weight", "bake", "gate"})

#: The signals Fly can stop a machine with (``fly.StopConfig.signal`` in the
#: Machines API): what ``kill_signal`` may be.
FLY_SIGNALS = ("SIGHUP", "SIGINT", "SIGQUIT", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGTERM")


def load_config(path: str | Path) -> Config:
    """Read a fly.toml into a :class:`Config`.

    Raises:
        InvalidConfig: the file is missing, is not TOML, or a setting zdd reads
            is wrong; the message names the setting and the fix.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidConfig(f"{p}: no such file", field="config") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidConfig(
            f"{p}: cannot read it ({exc.__class__.__name__})", field="config"
        ) from None
    return parse_config(text, path=str(p))


def parse_config(text: str | Mapping[str, Any], *, path: str | None = None) -> Config:
    """Parse fly.toml text (or an already-decoded mapping) into a :class:`Config`."""
    where = f"{path}: " if path else ""
    if isinstance(text, str):
        try:
            data: Mapping[str, Any] = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidConfig(f"{where}not valid TOML: {exc}", field="config") from None
        except RecursionError:
            raise InvalidConfig(
                f"{where}nested deeper than {MAX_DEPTH} levels", field="config"
            ) from None
        except ValueError:  # an integer of more than 4300 digits
            raise InvalidConfig(
                f"{where}a number is out of range; integers must fit in 64 bits", field="config"
            ) from None
    elif isinstance(text, Mapping):
        data = text
    else:
        raise InvalidConfig("expected fly.toml text or a mapping", field="config")
    check_limits(data, "", InvalidConfig)
    try:
        return _parse(data, path)
    except ZddError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, ArithmeticError) as exc:
        # never the exception's text: it may quote a value, and a value may be a secret
        raise InvalidConfig(
            f"{where}unreadable configuration ({exc.__class__.__name__})", field="config"
        ) from None


def _table(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise InvalidConfig("must be a table", field=f"{where}{key}")
    return value


def _tables(data: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
    value = data.get(key, [])
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise InvalidConfig("must be a table or an array of tables", field=f"{where}{key}")
    return value


def _opt_str(data: Mapping[str, Any], key: str, field: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        # the type only: the value may be a secret (a release command with a password)
        raise InvalidConfig(f"must be a string, got {type(value).__name__}", field=field)
    return value


def _port(value: object, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InvalidConfig(
            f"must be a port number from 1 to 65535, got {describe(value)}", field=field
        )
    return value


def _env(data: Mapping[str, Any]) -> dict[str, str]:
    env = {}
    for key, value in _table(data, "env", "").items():
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            # never the value: env values are secrets
            raise InvalidConfig(
                f"must be a string, got {type(value).__name__}", field=f"env.{str(key)[:40]}"
            )
        env[str(key)] = str(value)
    return env


def _processes(data: Mapping[str, Any], field: str) -> tuple[str, ...]:
    value = data.get("processes", [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidConfig("must be a list of process group names", field=field)
    return tuple(value)


def _parse(data: Mapping[str, Any], path: str | None) -> Config:
    deploy = _table(data, "deploy", "")
    processes_table = _table(data, "processes", "")
    processes = tuple(processes_table) or ("app",)
    env = _env(data)
    build = _table(data, "build", "")
    image = _opt_str(build, "image", "build.image") or ""
    kill_signal = _opt_str(data, "kill_signal", "kill_signal") or "SIGINT"
    if kill_signal not in FLY_SIGNALS:
        raise InvalidConfig(
            f"{describe(kill_signal)} is not a signal Fly can stop a machine with; "
            f"use one of {', '.join(FLY_SIGNALS)}",
            field="kill_signal",
        )
    kill_timeout = (
        parse_duration(data["kill_timeout"], field="kill_timeout", bare_unit=1.0)
        if "kill_timeout" in data
        else 5.0
    )
    checks = _read_checks(data)
    mounts = _read_mounts(data)
    strategy = _read_strategy(deploy, data.get("primary_region"))
    analysis = gates_from_table(deploy.get("analysis"))
    named: set[str] = set()
    if isinstance(strategy, Canary):
        named.update(step.gate for step in strategy.steps if step.gate)
    if isinstance(strategy, BlueGreen) and strategy.switch_gate:
        named.add(strategy.switch_gate)
    for name in analysis:
        if name not in named:
            raise InvalidConfig(
                "no canary step's gate nor switch_gate names this gate; name it in "
                f'[[deploy.canary_steps]] (gate = "{name}") or remove it',
                field=f"deploy.analysis.{name}",
            )
    for c in checks:
        for g in c.processes:
            if g not in processes:
                raise InvalidConfig(
                    f"names process group {describe(g)}, which [processes] does not define",
                    field=f"checks.{c.name}.processes" if c.name else "checks.processes",
                )
    return Config(
        path=path,
        traffic_groups=_traffic_groups(data, processes, checks),
        app=_opt_str(data, "app", "app"),
        primary_region=_opt_str(data, "primary_region", "primary_region"),
        strategy=strategy,
        image=image,
        env=env,
        processes=processes,
        checks=tuple(checks),
        mounts=tuple(mounts),
        kill_signal=kill_signal,
        kill_timeout=kill_timeout,
        analysis=analysis,
        raw=data,
    )


def _traffic_groups(
    data: Mapping[str, Any], processes: tuple[str, ...], checks: list[HealthCheck]
) -> tuple[str, ...]:
    """The groups that take traffic: those a service or a check applies to (an entry
    without ``processes`` applies to every group)."""
    served: set[str] = set()
    entries = list(_tables(data, "services", ""))
    http_service = _table(data, "http_service", "")
    if http_service:
        entries.append(http_service)
    for i, entry in enumerate(entries):
        procs = _processes(entry, f"services[{i}].processes")
        served.update(procs or processes)
    for c in checks:
        served.update(c.processes or processes)
    return tuple(g for g in processes if g in served)


def _check(
    raw: Mapping[str, Any],
    *,
    field: str,
    name: str,
    type_: str | None,
    bare_unit: float,
    processes: tuple[str, ...],
    port: int | None,
) -> HealthCheck:
    kind = type_ if type_ is not None else raw.get("type")
    if kind not in ("http", "tcp"):
        raise InvalidConfig(
            f"missing or invalid check type {describe(kind)}; must be 'http' or 'tcp'",
            field=f"{field}.type",
        )
    durations = {}
    for key, default in (("grace_period", 0.0), ("interval", 15.0), ("timeout", 2.0)):
        durations[key] = (
            parse_duration(raw[key], field=f"{field}.{key}", bare_unit=bare_unit)
            if key in raw
            else default
        )
    headers = raw.get("headers", {})
    bad_headers = InvalidConfig(
        "must be a table of header names to string values", field=f"{field}.headers"
    )
    if isinstance(headers, list):  # [[...headers]] name/value form
        if not all(
            isinstance(h, Mapping)
            and isinstance(h.get("name"), str)
            and isinstance(h.get("value", ""), str)
            for h in headers
        ):
            raise bad_headers
        headers = {h["name"]: h.get("value", "") for h in headers}
    if not isinstance(headers, Mapping) or not all(isinstance(v, str) for v in headers.values()):
        raise bad_headers
    method = raw.get("method", "GET")
    path = raw.get("path", "/")
    if not isinstance(method, str) or not isinstance(path, str):
        raise InvalidConfig("method and path must be strings", field=field)
    raw_port = _port(raw.get("port", port), f"{field}.port")
    return HealthCheck(
        type=kind,
        name=name,
        port=raw_port,
        method=method.upper(),
        path=path,
        headers={str(k): str(v) for k, v in headers.items()},
        processes=processes,
        **durations,
    )


def _read_checks(data: Mapping[str, Any]) -> list[HealthCheck]:
    checks: list[HealthCheck] = []
    for name, raw in _table(data, "checks", "").items():
        if not isinstance(raw, Mapping):
            raise InvalidConfig("must be a table", field=f"checks.{name}")
        field = f"checks.{name}"
        checks.append(
            _check(
                raw,
                field=field,
                name=str(name),
                type_=None,
                bare_unit=1e-3,
                processes=_processes(raw, f"{field}.processes"),
                port=None,
            )
        )
    for i, service in enumerate(_tables(data, "services", "")):
        where = f"services[{i}]"
        procs = _processes(service, f"{where}.processes")
        port = _port(service.get("internal_port"), f"{where}.internal_port")
        for kind in ("http", "tcp"):
            for j, raw in enumerate(_tables(service, f"{kind}_checks", f"{where}.")):
                checks.append(
                    _check(
                        raw,
                        field=f"{where}.{kind}_checks[{j}]",
                        name=f"{where}.{kind}_checks[{j}]",
                        type_=kind,
                        bare_unit=1e-3,
                        processes=procs,
                        port=port,
                    )
                )
    http_service = _table(data, "http_service", "")
    if http_service:
        procs = _processes(http_service, "http_service.processes")
        port = _port(http_service.get("internal_port"), "http_service.internal_port")
        for j, raw in enumerate(_tables(http_service, "checks", "http_service.")):
            checks.append(
                _check(
                    raw,
                    field=f"http_service.checks[{j}]",
                    name=f"http_service.checks[{j}]",
                    type_="http",
                    bare_unit=1e-3,
                    processes=procs,
                    port=port,
                )
            )
    return checks


def _read_mounts(data: Mapping[str, Any]) -> list[Mount]:
    mounts = []
    for i, raw in enumerate(_tables(data, "mounts", "")):
        field = f"mounts[{i}]"
        source = raw.get("source")
        dest = raw.get("destination")
        if not isinstance(source, str) or not source:
            raise InvalidConfig('needs a volume name (source = "data")', field=f"{field}.source")
        if not isinstance(dest, str) or not dest:
            raise InvalidConfig(
                'needs a path (destination = "/data")', field=f"{field}.destination"
            )
        mounts.append(
            Mount(source=source, destination=dest, processes=_processes(raw, f"{field}.processes"))
        )
    return mounts


def _read_strategy(deploy: Mapping[str, Any], primary_region: object) -> Strategy:
    for key in deploy:
        if key not in _FLY_DEPLOY_KEYS and key not in _OUR_DEPLOY_KEYS:
            known = sorted(_OUR_DEPLOY_KEYS)
            close = difflib.get_close_matches(str(key), [*known, *_FLY_DEPLOY_KEYS], n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InvalidConfig(
                f"unknown key; {hint}zdd's extensions are: {', '.join(known)}",
                field=f"deploy.{key}",
            )
    name = deploy.get("strategy", "rolling")
    if not isinstance(name, str):
        raise InvalidConfig(
            f"must be a string, one of {', '.join(STRATEGY_NAMES)}; got {type(name).__name__}",
            field="deploy.strategy",
        )
    name = name or "rolling"
    opts: dict[str, Any] = {}
    for key in (
        "wait_timeout",
        "release_command_timeout",
        "min_healthy_time",
        "drain_delay",
        "post_deploy_command_timeout",
        "keep_blue_for",
    ):
        if key in deploy:
            value = deploy[key]
            if isinstance(value, int | float) and not isinstance(value, bool):
                raise InvalidConfig(
                    f"a bare number ({describe(value)}) is ambiguous here (flyctl would read "
                    f'nanoseconds); write it with a unit, e.g. "{value}s"',
                    field=f"deploy.{key}",
                )
            opts[key] = parse_duration(value, field=f"deploy.{key}")
    for key in ("release_command", "post_deploy_command", "switch_gate"):
        if key in deploy:
            opts[key] = _opt_str(deploy, key, f"deploy.{key}")
    for key in ("max_unavailable", "max_surge"):
        if key in deploy:
            opts[key] = _count(deploy[key], f"deploy.{key}")
    for key in ("auto_rollback", "allow_downtime"):
        if key in deploy:
            if not isinstance(deploy[key], bool):
                raise InvalidConfig("must be true or false", field=f"deploy.{key}")
            opts[key] = deploy[key]
    if "region_waves" in deploy:
        waves = deploy["region_waves"]
        if waves is True and isinstance(primary_region, str) and primary_region:
            waves = [primary_region]  # primary first; the rest follow alphabetically
        try:
            opts["region_waves"] = _waves(waves)
        except InvalidConfig as exc:
            raise InvalidConfig(exc.reason, field="deploy.region_waves") from None
    if "canary_steps" in deploy:
        opts["steps"] = _read_canary_steps(deploy["canary_steps"])
    try:
        return strategy_from_name(name, **opts)
    except InvalidConfig as exc:
        if exc.field and not exc.field.startswith("deploy."):
            raise InvalidConfig(exc.reason, field=f"deploy.{exc.field}") from None
        raise


def _read_canary_steps(raw: object) -> list[CanaryStep]:
    if not isinstance(raw, list) or not all(isinstance(s, Mapping) for s in raw):
        raise InvalidConfig(
            "must be an array of tables ([[deploy.canary_steps]])", field="deploy.canary_steps"
        )
    steps = []
    for i, entry in enumerate(raw):
        field = f"deploy.canary_steps[{i}]"
        for key in entry:
            if key not in _CANARY_STEP_KEYS:
                raise InvalidConfig(
                    f"unknown key; a canary step has {', '.join(sorted(_CANARY_STEP_KEYS))}",
                    field=f"{field}.{key}",
                )
        kwargs: dict[str, Any] = {}
        if "machines" in entry:
            kwargs["machines"] = entry["machines"]
        if "weight" in entry:
            kwargs["weight"] = entry["weight"]
        if "bake" in entry:
            kwargs["bake"] = parse_duration(entry["bake"], field=f"{field}.bake")
        if "gate" in entry:
            kwargs["gate"] = _opt_str(entry, "gate", f"{field}.gate")
        try:
            steps.append(CanaryStep(**kwargs))
        except InvalidConfig as exc:
            key = (exc.field or "").rsplit(".", 1)[-1]
            raise InvalidConfig(exc.reason, field=f"{field}.{key}") from None
    return steps
