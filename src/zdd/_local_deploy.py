"""``zdd deploy --provider local``: the user's own app, on this host, behind HAProxy.

What runs comes from fly.toml, as on Fly: the command of each ``[processes]``
group (or ``--command``), the HTTP check of the serving group (its path is what
HAProxy checks, its interval how often), ``kill_signal``/``kill_timeout`` and
``[env]``. Each process gets a free port in ``PORT`` (``--port-env``). The fleet,
HAProxy and the deployment record live in ``--state-dir``; they outlive this
process, and the next ``zdd deploy`` over the same directory adopts them (and
resumes a deployment a crash interrupted).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

import attrs

from ._config import Config, load_config
from ._errors import DeploymentLocked, InvalidConfig
from ._execute import ExecuteOptions
from ._model import Desired, FleetState, GroupSpec
from ._record import RecordView

#: The region of local machines.
REGION = "local"
#: Where the fleet's state lives by default (relative to the working directory).
DEFAULT_STATE_DIR = ".zdd/local"


def add_flags(d: argparse.ArgumentParser) -> None:
    """The ``deploy`` flags that only the local provider reads."""
    g = d.add_argument_group("--provider local")
    g.add_argument(
        "--state-dir",
        metavar="DIR",
        default=DEFAULT_STATE_DIR,
        help=f"where the fleet, HAProxy and the record live (default {DEFAULT_STATE_DIR})",
    )
    g.add_argument(
        "--bind",
        metavar="ADDR",
        default=None,
        help="the address HAProxy listens on (default 127.0.0.1; kept from the state)",
    )
    g.add_argument(
        "--port",
        metavar="N",
        default=None,
        help="HAProxy's port (default: the fleet's, or a free one on the first deploy)",
    )
    g.add_argument(
        "--command",
        dest="app_command",
        metavar="CMD",
        help="the serving group's command line (default: its [processes] entry)",
    )
    g.add_argument(
        "--workdir",
        metavar="DIR",
        help="where the release's processes run (default: fly.toml's directory)",
    )
    g.add_argument(
        "--port-env",
        metavar="NAME",
        default="PORT",
        help="the variable that tells each process its port (default PORT)",
    )
    g.add_argument(
        "--health-path",
        metavar="PATH",
        help="the path HAProxy checks (default: the serving group's HTTP check)",
    )
    g.add_argument(
        "--first-machines",
        metavar="N",
        default=None,
        help="machines of each serving group on the first deploy (default 2; workers 1)",
    )


def _count(text: str | None, flag: str, low: int, high: int) -> int | None:
    if text is None:
        return None
    t = text.strip()
    if not (t.isascii() and t.isdigit() and len(t) <= 6) or not low <= int(t) <= high:
        raise InvalidConfig(f"must be a whole number from {low} to {high}", field=flag)
    return int(t)


def _serving_group(config: Config) -> str:
    groups = config.traffic_groups if config.traffic_groups is not None else config.processes
    serving = [g for g in config.processes if g in groups]
    if len(serving) > 1:
        raise InvalidConfig(
            f"the local provider serves one process group behind HAProxy and fly.toml "
            f"has {len(serving)} ({', '.join(serving)}); keep [http_service] on one",
            field="processes",
        )
    return serving[0] if serving else config.processes[0]


def _commands(config: Config, group: str, command: str | None) -> dict[str, list[str]]:
    table = (config.raw or {}).get("processes")
    out: dict[str, list[str]] = {}
    if isinstance(table, Mapping):
        for name, line in table.items():
            if isinstance(line, list) and line and all(isinstance(a, str) for a in line):
                out[str(name)] = list(line)
            elif isinstance(line, str) and line.strip():
                try:
                    out[str(name)] = shlex.split(line)
                except ValueError:
                    raise InvalidConfig(
                        "cannot be split into a command line (unbalanced quotes?)",
                        field=f"processes.{name}",
                    ) from None
            else:
                raise InvalidConfig(
                    "must be the group's command line (a string)", field=f"processes.{name}"
                )
    if command is not None:
        try:
            argv = shlex.split(command)
        except ValueError:
            raise InvalidConfig("cannot be split (unbalanced quotes?)", field="--command") from None
        if not argv:
            raise InvalidConfig("must not be empty", field="--command")
        out[group] = argv
    missing = [g for g in config.processes if g not in out]
    if missing:
        raise InvalidConfig(
            f"group {missing[0]!r} has no command: give it in [processes] or with --command",
            field="--command" if missing[0] == group else f"processes.{missing[0]}",
        )
    return out


def _health_path(config: Config, group: str, override: str | None) -> tuple[str, float]:
    checks = [c for c in config.release("local", group).checks if c.type == "http" and c.path]
    interval = checks[0].interval if checks else 1.0
    if override is not None:
        return override, interval
    if not checks:
        raise InvalidConfig(
            f"the local provider needs an HTTP check for group {group!r}, which HAProxy "
            "runs: add one ([[http_service.checks]] with a path) or pass --health-path",
            field="checks",
        )
    return str(checks[0].path), interval


def _version(state: FleetState, given: str | None) -> str:
    if given:
        return given
    from .cli import _next_version

    if not state.live and not RecordView(state.record).in_progress():
        return "v1"
    return _next_version(state)


def _desired(
    config: Config, state: FleetState, version: str, first: int | None, serving: str
) -> Desired:
    local = attrs.evolve(config, primary_region=REGION)
    desired = local.desired(state, version, new_groups=True)
    if first is None:
        return desired
    known = set(state.groups()) | set(RecordView(state.record).desired_groups())
    return Desired(
        groups=[
            g
            if g.name in known
            else GroupSpec(
                name=g.name,
                release=g.release,
                regions={REGION: first if g.name == serving else 1},
            )
            for g in desired.groups
        ]
    )


def deploy_local(args: argparse.Namespace) -> int:
    """``zdd deploy --provider local`` (see the module docstring and docs/deploy-local.md)."""
    from . import cli
    from ._execute import execute
    from .providers.local import LocalProvider
    from .reporters import JsonLinesReporter, TextReporter

    for flag, value in (("--image", args.image), ("--app", args.app), ("--api-url", args.api_url)):
        if value:
            raise InvalidConfig(
                "is for --provider fly; the local provider runs commands", field=flag
            )
    config = load_config(args.config) if args.config else Config()
    args.fleet = None
    args.machines = None
    strategy = cli._strategy(args, config)
    group = _serving_group(config)
    commands = _commands(config, group, args.app_command)
    health_path, interval = _health_path(config, group, args.health_path)
    first = _count(args.first_machines, "--first-machines", 1, 100)
    port = _count(args.port, "--port", 0, 65535)
    if args.workdir is not None:
        workdir = Path(args.workdir)
    elif args.config:
        workdir = Path(args.config).absolute().parent
    else:
        workdir = Path.cwd()
    if not workdir.is_dir():
        raise InvalidConfig(f"{workdir} is not a directory", field="--workdir")
    if args.lock_ttl < 2:
        raise InvalidConfig("locks must last at least 2s (default 30s)", field="--lock-ttl")
    state_dir = Path(args.state_dir)
    if args.dry_run:
        state = LocalProvider.peek(state_dir) or FleetState(machines=[])
        version = _version(state, args.target_version)
        desired = _desired(config, state, version, first, group)
        preview = cli._preview(state, desired, strategy)
        print(json.dumps(preview.to_json(), indent=2) if args.json else preview.to_text())
        return cli.EXIT_OK
    provider = LocalProvider(
        commands[group],
        commands=commands,
        workdir=workdir,
        env=None,
        bind=args.bind or "127.0.0.1",
        port=port or 0,
        health_path=health_path,
        check_interval=min(max(interval, 0.1), 60.0),
        group=group,
        region=REGION,
        kill_signal=config.kill_signal,
        kill_timeout=config.kill_timeout,
        state_dir=state_dir,
        port_env=args.port_env,
    )
    try:
        for flag, given, actual in (
            ("--bind", args.bind, provider.bind),
            ("--port", port or None, provider.port),
        ):
            if given is not None and str(given) != str(actual):
                raise InvalidConfig(
                    f"the fleet in {provider.state_dir} serves on {provider.bind}:"
                    f"{provider.port}; to move it, stop it first "
                    "(LocalProvider.shutdown) or use another --state-dir",
                    field=flag,
                )
        state = provider.observe()
        version = _version(state, args.target_version)
        desired = _desired(config, state, version, first, group)
        preview = cli._preview(state, desired, strategy, provider.capabilities())
        cli._warn(preview.warnings)
        provider.prepare_release(version, commands=commands, workdir=workdir)
        print(
            f"zdd: {provider.url} (HAProxy) in front of {len(state.live)} machines; "
            f"state in {provider.state_dir}",
            file=sys.stderr,
        )
        gates = cli.deploy_gates(args.gate, config)
        reporter = JsonLinesReporter(sys.stderr) if args.json else TextReporter(sys.stderr)
        result = execute(
            provider,
            desired,
            strategy,
            options=ExecuteOptions(gates=gates),
            reporter=reporter,
            poll_interval=args.poll_interval if args.poll_interval is not None else 0.5,
            lock_ttl=args.lock_ttl,
        )
    finally:
        provider.detach()  # the fleet and HAProxy keep serving; the next deploy adopts them
    if args.json:
        doc = result.to_json()
        doc["url"] = provider.url
        doc["state_dir"] = os.fspath(provider.state_dir)
        print(json.dumps(doc, indent=2))
    else:
        print(
            f"zdd deploy: {result.outcome.replace('_', ' ')} in {result.elapsed:.1f}s; "
            f"serving at {provider.url}"
        )
    if isinstance(result.exception, DeploymentLocked):
        cli._fail(str(result.exception))
        return cli.EXIT_LOCKED
    if result.rolled_back:
        cli._fail(f"rolled back: {result.error}")
    elif not result.converged:
        cli._fail(result.error or "the deployment failed")
    return cli.EXIT_OK if result.converged else cli.EXIT_FAILED
