"""``zdd status``, ``zdd gate``, ``zdd abort``, ``zdd promote``: steer a deployment in flight.

They work through the deployment record: ``status`` reads it (no lock needed);
the others leave an *instruction* (``op.*``, naming the deployment's target) in
the provider's instruction channel, which the deployer reads at its next look at
the fleet (docs/decisions/0012). They exit 2 with one line when there is nothing
to act on.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from ._errors import InvalidConfig
from ._model import FleetState
from ._record import OP_ABORT, OP_PROMOTE, op_gate_key
from ._status import DeploymentStatus, status_of

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .providers.fly import FlyMachines

__all__ = ["add_commands", "run"]

COMMANDS = ("status", "gate", "abort", "promote")


def add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    st = sub.add_parser("status", help="show the deployment in flight (or the last one)")
    _where(st, fleet=True)
    st.add_argument("--json", action="store_true", help="print the status as JSON")
    g = sub.add_parser("gate", help="answer a waiting gate: pass or fail")
    g.add_argument("name", help="the gate")
    g.add_argument("answer", choices=("pass", "fail"))
    _where(g)
    g.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    a = sub.add_parser("abort", help="roll the deployment in flight back now")
    _where(a)
    a.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    p = sub.add_parser("promote", help="skip the canary's remaining bakes and gates")
    _where(p)
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)


def _where(p: argparse.ArgumentParser, *, fleet: bool = False) -> None:
    p.add_argument(
        "--provider",
        choices=("local", "fly"),
        default="local",
        help="where the fleet runs (default local)",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        default=".zdd/local",
        help="the local fleet's state directory (default .zdd/local)",
    )
    p.add_argument("--app", help="the Fly app (default: app in --config)")
    p.add_argument("--config", help="fly.toml (for the Fly app's name)")
    p.add_argument("--api-url", metavar="URL", help="Machines API URL")
    if fleet:
        p.add_argument(
            "--fleet", metavar="FLEET_JSON", help="read the record from fleet JSON instead"
        )


def _observe(args: argparse.Namespace) -> FleetState:
    if getattr(args, "fleet", None):
        from ._fleetjson import load_fleet

        return load_fleet(args.fleet)
    if args.provider == "local":
        from .providers.local import LocalProvider

        state = LocalProvider.peek(args.state_dir)
        if state is None:
            raise InvalidConfig(f"{args.state_dir} holds no local fleet", field="--state-dir")
        return state
    provider = _fly(args)
    try:
        return provider.observe()
    finally:
        provider.close()


def _fly(args: argparse.Namespace) -> FlyMachines:
    from ._config import load_config
    from .providers.fly import FlyMachines

    app = args.app or (load_config(args.config).app if args.config else None)
    if not app:
        raise InvalidConfig("give the Fly app (or --config with app in it)", field="--app")
    return FlyMachines(app, base_url=args.api_url)


def _in_progress(status: DeploymentStatus | None, verb: str) -> DeploymentStatus:
    if status is None:
        raise InvalidConfig(f"nothing to {verb}: no deployment is recorded", field=verb)
    if status.phase != "deploying":
        raise InvalidConfig(
            f"nothing to {verb}: the last deployment is {status.phase.replace('_', ' ')}",
            field=verb,
        )
    return status


def _instruct(args: argparse.Namespace, values: Mapping[str, str]) -> None:
    if args.provider == "local":
        from .providers.local import LocalProvider

        LocalProvider.instruct(args.state_dir, values)
        return
    provider = _fly(args)
    try:
        provider.instruct(values)
    finally:
        provider.close()


def run(args: argparse.Namespace) -> int:
    """Run one of :data:`COMMANDS`; its exit code."""
    state = _observe(args)
    status = status_of(state)
    if args.command == "status":
        if status is None:
            raise InvalidConfig("no deployment is recorded for this fleet", field="status")
        print(json.dumps(status.to_json(), indent=2) if args.json else status.to_text())
        return status.exit_code
    current = _in_progress(status, args.command)
    target = current.target_text
    if args.command == "gate":
        _instruct(args, {op_gate_key(args.name): f"{args.answer} {target}"})
        print(f"zdd gate: {args.name} answered {args.answer} for {target}")
    elif args.command == "abort":
        _instruct(args, {OP_ABORT: target})
        print(f"zdd abort: the deployment of {target} will roll back")
    else:
        if current.strategy != "canary":
            raise InvalidConfig(
                f"promotes a canary; this deployment is {current.strategy or 'unknown'}",
                field="promote",
            )
        _instruct(args, {OP_PROMOTE: target})
        print(f"zdd promote: the canary of {target} skips its remaining bakes and gates")
    return 0
