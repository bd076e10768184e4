"""The ``zdd`` command: a thin argparse front end over the library.

One exit-code contract for every command: 0 converged (and, with load, no more
failed requests than ``--max-failed-requests``), 1 failed or rolled back (or too
many requests failed), 2 bad input (one line on stderr, never a traceback), 3 the
fleet is someone else's, 130 interrupted before a deployment began. Progress and
errors go to stderr, results to stdout; under ``--json`` an error is one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import attrs

from . import _cli_steer, _local_deploy
from ._config import (
    STRATEGY_NAMES,
    Canary,
    CanaryStep,
    Config,
    Rolling,
    Strategy,
    common_options,
    load_config,
    strategy_from_name,
)
from ._durations import format_duration, parse_duration
from ._errors import (
    ActionFailed,
    DeploymentLocked,
    DeployTimeout,
    InvalidConfig,
    ProviderContractError,
    ZddError,
    describe,
)
from ._execute import ExecuteOptions, GateResult, execute
from ._executor import GateResolver, StatefulGateResolver
from ._fleetjson import load_fleet
from ._model import Capabilities, Desired, FleetState, HealthCheck, Release
from ._plan import Plan
from ._planning import assume_checks_pass, plan
from ._record import MAX_GROUP_MACHINES, RecordView, parse_ascii_int
from ._version import __version__
from .reporters import JsonLinesReporter, TextReporter
from .sim import simulate
from .sim._run import MAX_BOOT_SIGMA, MAX_BOOT_TIME, MAX_CAPACITY, MAX_CONNECTIONS, MAX_RPS
from .sim._svg import render_svg

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


#: Most machines a --machines fleet may have (a group's most, docs/limits.md).
MAX_MACHINES = MAX_GROUP_MACHINES
_ASCII_NUMBER = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?%?$")


def _fraction_or_count(
    flag: str, maximum: float = MAX_GROUP_MACHINES, *, positive: bool = False
) -> Callable[[str], float]:
    def parse(text: str) -> float:
        t = text.strip()
        try:
            if not _ASCII_NUMBER.match(t):  # ASCII only: float() also reads Arabic-Indic digits
                raise ValueError(t)
            percent = t.endswith("%")
            value = float(t[:-1]) / 100 if percent else float(t)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a number; use a fraction (0.25), a percentage "
                f"(25%) or a count (2)"
            ) from None
        if value < 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
        if percent and value >= 1:
            raise argparse.ArgumentTypeError(
                f"{text!r}: a percentage must be below 100%; give a count of machines instead"
            )
        if positive and value == 0:
            raise argparse.ArgumentTypeError("must be above 0")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"at most {maximum:g}, got {text!r}")
        return value

    return parse


def _ascii_int(text: str, maximum: int | None = None) -> int:
    """A whole number of ASCII digits (``int()`` also reads ``' 7'``, ``'1_0'`` and
    Arabic-Indic digits)."""
    value = parse_ascii_int(text.strip())
    if value is None:
        raise argparse.ArgumentTypeError(
            f"{describe(text)} is not a whole number (ASCII digits 0-9)"
        )
    if maximum is not None and value > maximum:
        raise argparse.ArgumentTypeError(f"at most {maximum}, got {value}")
    return value


def _positive_int(text: str) -> int:
    return _ascii_int(text, MAX_MACHINES)


def _build_parser() -> _Parser:
    parser = _Parser(
        prog="zdd",
        description="Zero-downtime deployments: preview, simulate and run deployment plans.",
    )
    parser.add_argument("--version", action="version", version=f"zdd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    p = sub.add_parser("plan", help="print the plan a deployment would follow")
    _add_common(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    s = sub.add_parser(
        "simulate", help="run a deployment on the simulated fleet and report what happened"
    )
    _add_common(s)
    s.add_argument("--seed", type=_int("--seed"), default=0, help="seeds every random draw")
    s.add_argument(
        "--boot-time",
        type=_duration("--boot-time", MAX_BOOT_TIME),
        default=10.0,
        metavar="DUR",
        help="median machine boot time (Go duration, or seconds); default 10s",
    )
    s.add_argument(
        "--boot-sigma",
        type=_fraction_or_count("--boot-sigma", MAX_BOOT_SIGMA),
        default=0.0,
        metavar="S",
        help="log-normal spread of boot times (0: every boot takes --boot-time)",
    )
    s.add_argument(
        "--target-health",
        choices=("passing", "failing", "flaky"),
        default="passing",
        help="how the new release's health checks behave",
    )
    s.add_argument(
        "--target-errors",
        type=_share,
        default=0.0,
        metavar="SHARE",
        help="the share of the new release's requests that fail while its checks pass "
        "(5%% or 0.05); metric gates ([deploy.analysis]) judge it from the simulated traffic",
    )
    s.add_argument("--rps", type=_fraction_or_count("--rps", MAX_RPS), default=100.0, metavar="N")
    s.add_argument(
        "--capacity",
        type=_fraction_or_count("--capacity", MAX_CAPACITY, positive=True),
        default=None,
        metavar="N",
        help="requests per second one machine can serve (default: unlimited)",
    )
    s.add_argument(
        "--connections",
        type=_int("--connections", MAX_CONNECTIONS),
        default=100,
        metavar="N",
        help="long-lived connections (websockets) held open; default 100",
    )
    s.add_argument(
        "--gate",
        action="append",
        default=[],
        metavar="NAME=RESULT",
        type=_gate,
        help="how gate NAME answers: pass, fail, inconclusive or pending (default: pass)",
    )
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.add_argument(
        "--progress",
        action="store_true",
        help="print each executor event as it happens (JSON lines with --json)",
    )
    s.add_argument("--svg", metavar="FILE", help="write a picture of the timeline to FILE")
    _add_max_failed(s)
    m = sub.add_parser(
        "demo",
        help="deploy the bundled demo app on local processes behind HAProxy, under load",
    )
    _add_strategy_flags(m)
    m.add_argument("--machines", metavar="N", type=_positive_int, default=3)
    m.add_argument("--rps", type=_fraction_or_count("--rps", MAX_RPS), default=200.0, metavar="N")
    m.add_argument(
        "--streams", type=_int("--streams"), default=5, metavar="N", help="long-lived streams"
    )
    m.add_argument(
        "--target-health",
        choices=("passing", "failing"),
        default="passing",
        help="failing: v2's health check fails, to watch a rollback",
    )
    m.add_argument(
        "--target-errors",
        type=_share,
        default=0.0,
        metavar="SHARE",
        help="the share of v2's requests that fail (500) while its health check passes",
    )
    m.add_argument(
        "--analysis",
        action="store_true",
        help="judge the canary with a real Prometheus (installed) scraping the demo: "
        "its error ratio against v1's (docs/analysis.md)",
    )
    m.add_argument(
        "--settle",
        type=_duration("--settle"),
        default=2.0,
        metavar="DUR",
        help="load before and after the deployment (default 2s)",
    )
    m.add_argument("--json", action="store_true", help="print one JSON object at the end")
    _add_max_failed(m)
    d = sub.add_parser("deploy", help="deploy a release to a real fleet")
    d.add_argument(
        "--provider",
        choices=("fly", "local"),
        required=True,
        help="where the fleet runs: Fly Machines, or processes on this host behind HAProxy",
    )
    d.add_argument("--app", help="the Fly app (default: app in fly.toml)")
    _add_strategy_flags(d)
    d.add_argument("--image", help="the image to deploy (default: [build].image in fly.toml)")
    d.add_argument(
        "--version",
        dest="target_version",
        metavar="V",
        help="the release's version label (default: the image's tag)",
    )
    d.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    d.add_argument("--json", action="store_true", help="JSON lines (or the plan as JSON)")
    d.add_argument(
        "--api-url", metavar="URL", help="Machines API URL (default: ZDD_FLY_API_URL or Fly's)"
    )
    d.add_argument(
        "--poll-interval",
        type=_duration("--poll-interval"),
        default=None,
        metavar="DUR",
        help="how often machines being waited on are read (default 2s; local 0.5s)",
    )
    d.add_argument(
        "--lock-ttl",
        type=_duration("--lock-ttl"),
        default=30.0,
        metavar="DUR",
        help="how long the fleet's leases last between refreshes (default 30s); a deployer "
        "paused longer than this loses them and stops when it resumes",
    )
    d.add_argument(
        "--gate",
        action="append",
        default=[],
        metavar="NAME=RESULT",
        type=_gate,
        help="answer a gate: pass or fail (unanswered gates wait for approval)",
    )
    _local_deploy.add_flags(d)
    _cli_steer.add_commands(sub)
    return parser


_GATE_RESULTS: tuple[GateResult, ...] = ("pass", "fail", "inconclusive", "pending")


def _add_max_failed(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-failed-requests",
        type=_int("--max-failed-requests"),
        default=0,
        metavar="N",
        help="exit 1 when more than N requests failed (default 0: zero downtime)",
    )


def _verdict(converged: bool, failed: int, limit: int, error: str | None) -> int:
    """The exit code of a run with load: 1 when it did not converge (a rollback
    included) or when more requests failed than allowed; the reason on stderr."""
    if not converged:
        _fail(error or "the deployment did not converge")
        return EXIT_FAILED
    if failed > limit:
        _fail(
            f"{failed} requests failed, more than --max-failed-requests {limit}: "
            f"this deployment is not zero-downtime"
        )
        return EXIT_FAILED
    return EXIT_OK


def _gate(text: str) -> tuple[str, GateResult]:
    name, sep, result = text.partition("=")
    for answer in _GATE_RESULTS:
        if sep and name and result == answer:
            return name, answer
    raise argparse.ArgumentTypeError(
        f"{text!r}: write NAME=RESULT with RESULT one of {', '.join(_GATE_RESULTS)}"
    )


def _share(text: str) -> float:
    """A share of requests: ``5%`` or ``0.05`` (0 to 1), ASCII digits only."""
    t = text.strip()
    percent = t.endswith("%")
    body = t[:-1] if percent else t
    if not re.fullmatch(r"[0-9]{1,3}(?:\.[0-9]{1,6})?", body):
        raise argparse.ArgumentTypeError(f"{text!r}: give a share such as 5% or 0.05")
    value = float(body) / (100.0 if percent else 1.0)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: a share is from 0 to 1 (0% to 100%)")
    return value


def _int(flag: str, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        return _ascii_int(text, maximum)

    return parse


def _duration(flag: str, maximum: float | None = None) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = parse_duration(
                float(text) if _NUMBER.match(text) else text, field=flag, bare_unit=1.0
            )
        except InvalidConfig as exc:
            raise argparse.ArgumentTypeError(exc.reason) from None
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"at most {format_duration(maximum)}, got {text!r}")
        return value

    return parse


_NUMBER = re.compile(r"^[0-9]{1,30}(\.[0-9]{0,30})?$")


def _add_common(p: argparse.ArgumentParser) -> None:
    _add_strategy_flags(p)
    fleet = p.add_mutually_exclusive_group()
    fleet.add_argument("--fleet", metavar="FLEET_JSON", help="the current fleet, as fleet JSON")
    fleet.add_argument(
        "--machines",
        metavar="N",
        type=_positive_int,
        help="shorthand for N started, passing machines m1..mN on v1 (group app, region ord)",
    )
    p.add_argument(
        "--version",
        dest="target_version",
        metavar="V",
        help="the release version to deploy (default: the next vN after the fleet's)",
    )


def _add_strategy_flags(p: argparse.ArgumentParser) -> None:
    """--config, --strategy, --max-unavailable, --max-surge: the flags every command shares."""
    p.add_argument(
        "--config", metavar="FLY_TOML", help="a fly.toml to read [deploy] and checks from"
    )
    p.add_argument("--strategy", metavar="S", help=f"one of {', '.join(STRATEGY_NAMES)}")
    p.add_argument(
        "--max-unavailable",
        metavar="X",
        type=_fraction_or_count("--max-unavailable"),
        help="fraction (0.25), percentage (25%%) or count (2) of a group down at once",
    )
    p.add_argument(
        "--max-surge",
        metavar="X",
        type=_fraction_or_count("--max-surge"),
        help="fraction, percentage or count of extra machines while deploying",
    )
    p.add_argument(
        "--allow-downtime",
        action="store_true",
        default=None,
        help="let a group that serves traffic reach zero serving machines (no warning)",
    )


def _load_state(args: argparse.Namespace) -> FleetState:
    if args.fleet:
        return load_fleet(args.fleet)
    if args.machines is not None:
        return FleetState.uniform(args.machines)
    raise _UsageError("give the current fleet with --fleet FLEET_JSON or --machines N")


_VERSION = re.compile(r"^v([0-9]{1,18})$")


def _next_version(state: FleetState) -> str:
    record = RecordView(state.record)
    if record.in_progress():
        # resuming: the deployment in progress says where it was going
        versions = set(record.target_versions().values())
        if len(versions) == 1:
            return versions.pop()
    numbers = []
    for m in state.live:
        match = _VERSION.match(m.version)
        if match is None:
            raise _UsageError(
                f"cannot guess the next version after {m.version!r}; pass --version V"
            )
        numbers.append(int(match.group(1)))
    return f"v{max(numbers, default=1) + 1}"


def _strategy(args: argparse.Namespace, config: Config) -> Strategy:
    strategy = config.strategy
    if args.strategy and args.strategy.strip().lower() != strategy.name:
        common = common_options(strategy)
        # the file's max_unavailable/max_surge carry over between rolling and canary
        if isinstance(strategy, Rolling | Canary) and args.strategy.strip().lower() in (
            "rolling",
            "canary",
        ):
            rolling = strategy if isinstance(strategy, Rolling) else strategy.then
            common["max_unavailable"] = rolling.max_unavailable
            if rolling.max_surge:
                common["max_surge"] = rolling.max_surge
        strategy = strategy_from_name(args.strategy, **common)
    if getattr(args, "allow_downtime", None):
        strategy = attrs.evolve(strategy, allow_downtime=True)
        if isinstance(strategy, Canary):
            strategy = attrs.evolve(strategy, then=attrs.evolve(strategy.then, allow_downtime=True))
    overrides = {
        k: v
        for k, v in (("max_unavailable", args.max_unavailable), ("max_surge", args.max_surge))
        if v is not None
    }
    if not overrides:
        return strategy
    flag = "--" + next(iter(overrides)).replace("_", "-")
    if isinstance(strategy, Rolling):
        return _evolve(strategy, overrides, flag)
    if isinstance(strategy, Canary):
        return attrs.evolve(strategy, then=_evolve(strategy.then, overrides, flag))
    raise InvalidConfig(
        f"does not apply to the {strategy.name} strategy; it applies to rolling and canary",
        field=flag,
    )


def _evolve(strategy: Rolling, overrides: dict[str, float], flag: str) -> Rolling:
    try:
        return attrs.evolve(
            strategy,
            max_unavailable=overrides.get("max_unavailable", strategy.max_unavailable),
            max_surge=overrides.get("max_surge", strategy.max_surge),
        )
    except InvalidConfig as exc:
        raise InvalidConfig(exc.reason, field=flag) from None


def _inputs(args: argparse.Namespace) -> tuple[FleetState, Desired, Strategy]:
    config = load_config(args.config) if args.config else Config()
    args.loaded_config = config
    strategy = _strategy(args, config)
    state = _load_state(args)
    version = args.target_version or _next_version(state)
    return state, config.desired(state, version), strategy


def _cmd_plan(args: argparse.Namespace) -> int:
    state, desired, strategy = _inputs(args)
    result = _preview(state, desired, strategy)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(result.to_text())
    return EXIT_OK


def _warn(warnings: Sequence[str]) -> None:
    """Say it before it happens: one line per group a deployment may take to zero."""
    for w in warnings:
        print(f"zdd: warning: {w}", file=sys.stderr)


def _preview(
    state: FleetState,
    desired: Desired,
    strategy: Strategy,
    capabilities: Capabilities | None = None,
) -> Plan:
    """The plan a deployment would follow. Machines with no check result yet are
    taken as passing (the executor waits for their first result before it plans),
    and a note on stderr says so."""
    assumed, unknown = assume_checks_pass(state)
    if unknown:
        shown = ", ".join(unknown[:5]) + ("..." if len(unknown) > 5 else "")
        print(
            f"zdd: note: {shown} {'has' if len(unknown) == 1 else 'have'} no check result "
            f"yet; the plan assumes {'it passes' if len(unknown) == 1 else 'they pass'} "
            f"(a deployment waits for a first result before it starts)",
            file=sys.stderr,
        )
    return plan(assumed, desired, strategy, capabilities)


def _cmd_simulate(args: argparse.Namespace) -> int:
    state, desired, strategy = _inputs(args)
    _warn(_preview(state, desired, strategy).warnings)  # bad input is reported here, exit 2
    answers: dict[str, GateResult] = dict(args.gate)

    def gates(name: str) -> GateResult:
        return answers.get(name, "pass")

    report = simulate(
        state,
        desired,
        strategy,
        seed=args.seed,
        boot_time=args.boot_time,
        boot_sigma=args.boot_sigma,
        target_health=args.target_health,
        rps=args.rps,
        capacity=args.capacity or None,
        connections=args.connections,
        target_errors=args.target_errors,
        analysis=args.loaded_config.analysis,
        options=ExecuteOptions(gates=gates),
        reporter=(
            (JsonLinesReporter(sys.stderr) if args.json else TextReporter(sys.stderr))
            if args.progress
            else None
        ),
    )
    if args.svg:
        try:
            Path(args.svg).write_text(render_svg(report), encoding="utf-8")
        except OSError as exc:
            raise _UsageError(f"--svg: cannot write {args.svg} ({exc.strerror})") from None
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.to_text())
        if args.svg:
            print(f"\ntimeline written to {args.svg}")
    return _verdict(
        report.converged, report.failed_requests, args.max_failed_requests, report.error
    )


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo.load import LoadGenerator
    from .providers.local import LocalProvider

    config = load_config(args.config) if args.config else Config()
    strategy = _strategy(args, config)
    if args.machines < 1:
        raise _UsageError("--machines: the demo needs at least 1 machine")
    check = HealthCheck(type="http", path="/health", interval=0.5, timeout=1.0)
    release = Release(
        version="v2",
        checks=config.checks or (check,),
        kill_signal="SIGTERM",
        kill_timeout=5.0,
    )
    v2_env: dict[str, str] = {}
    if args.target_health == "failing":
        v2_env["ZDD_DEMO_HEALTH"] = "failing"
    if args.target_errors:
        v2_env["ZDD_DEMO_ERROR_RATE"] = repr(args.target_errors)
    versions = {"v2": v2_env} if v2_env else {}
    gate_name = "analysis"
    if args.analysis:
        if not isinstance(strategy, Canary):
            raise _UsageError("--analysis: judges a canary; add --strategy canary")
        # one canary at a quarter of the traffic, judged by the analysis
        strategy = attrs.evolve(
            strategy, steps=(CanaryStep(machines=1, weight=25, gate=gate_name),)
        )
    provider = LocalProvider(
        [sys.executable, "-m", "zdd.demo.app"], versions=versions, kill_signal="SIGTERM"
    )
    prometheus = None
    try:
        options = ExecuteOptions()
        if args.analysis:
            from .analysis import MetricAnalysis, MetricGates
            from .demo.prometheus import PrometheusServer, demo_gate
            from .providers.local import TARGETS

            prometheus = PrometheusServer(provider.state_dir / TARGETS)
            gate = demo_gate(prometheus.url, name=gate_name)
            options = ExecuteOptions(
                gates=MetricGates(MetricAnalysis({gate_name: gate})),
                gate_timeout=300.0,
                gate_poll=1.0,
            )
            print(f"zdd demo: Prometheus at {prometheus.url}; {gate.describe()}", file=sys.stderr)
        provider.launch("v1", args.machines)
        state = provider.wait_healthy(60.0)
        desired = Desired.from_fleet(state, release)
        # bad input is reported before any load starts
        _warn(_preview(state, desired, strategy).warnings)
        reporter = None if args.json else TextReporter(sys.stderr)
        load = LoadGenerator("127.0.0.1", provider.port, rps=args.rps, streams=args.streams)
        load.start()
        try:
            time.sleep(args.settle)
            started = time.monotonic()
            result = execute(
                provider, desired, strategy, options=options, reporter=reporter, poll_interval=0.2
            )
            deploy_seconds = time.monotonic() - started
            time.sleep(args.settle)
        finally:
            report = load.stop()
    finally:
        if prometheus is not None:
            prometheus.close()
        provider.close()
    summary = {
        "strategy": strategy.name,
        "total_requests": report.total_requests,
        "failed_requests": report.failed_requests,
        "failures_by_kind": dict(report.failures_by_kind),
        "dropped_connections": report.streams_cut,
        "streams_opened": report.streams_opened,
        "deploy_seconds": round(deploy_seconds, 3),
        "converged": result.converged,
        "rolled_back": result.rolled_back,
        "error": result.error,
        "versions_seen": dict(report.versions_seen),
        "requested_rps": args.rps,
        "delivered_rps": round(report.requests_per_second, 1),
    }
    short = report.requests_per_second < 0.9 * args.rps
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        verdict = "converged" if result.converged else result.outcome.replace("_", " ")
        print(f"zdd demo: {strategy.name} deployment of {args.machines} machines, {verdict}")
        print(f"  requests sent        {report.total_requests}")
        print(f"  requests failed      {report.failed_requests}")
        print(f"  connections dropped  {report.streams_cut} of {report.streams_opened} streams")
        print(f"  deployment time      {deploy_seconds:.1f}s")
        if short:
            print(
                f"  load                 {report.requests_per_second:.0f} requests a second "
                f"of the {args.rps:,.10g} asked: this machine could not send more"
            )
        if result.error:
            print(f"  why                  {result.error}")
    return _verdict(
        result.converged, report.failed_requests, args.max_failed_requests, result.error
    )


def deploy_gates(
    answers: Sequence[tuple[str, GateResult]], config: Config
) -> GateResolver | StatefulGateResolver:
    """What answers a deployment's gates: ``--gate NAME=RESULT`` answers, and the
    metric gates of ``[deploy.analysis]`` (measured against their servers)."""
    given: dict[str, GateResult] = dict(answers)

    def manual(name: str) -> GateResult:
        return given.get(name, "pending")

    if not config.analysis:
        return manual
    from .analysis import MetricAnalysis, MetricGates

    metric = {k: v for k, v in config.analysis.items() if k not in given}
    return MetricGates(MetricAnalysis(metric), manual=manual)


def _image_version(image: str) -> str:
    """A version label from an image reference: its tag, or the start of its digest."""
    ref = image.rsplit("/", 1)[-1]
    if "@" in ref:
        digest = ref.split("@", 1)[1]
        return digest.split(":", 1)[-1][:12] or digest
    if ":" in ref:
        return ref.rsplit(":", 1)[1]
    return "latest"


def _cmd_deploy(args: argparse.Namespace) -> int:
    if args.provider == "local":
        return _local_deploy.deploy_local(args)
    from .providers.fly import FlyMachines

    config = load_config(args.config) if args.config else Config()
    args.fleet = None
    args.machines = None
    strategy = _strategy(args, config)
    image = args.image or config.image
    if not image:
        raise _UsageError("give the image to deploy with --image REF (or [build].image)")
    app = args.app or config.app
    if not app:
        raise _UsageError("give the Fly app with --app NAME (or app in fly.toml)")
    if args.lock_ttl < 2:
        raise _UsageError("--lock-ttl: leases must last at least 2s (default 30s)")
    config = attrs.evolve(config, image=image)
    provider = FlyMachines(app, base_url=args.api_url)
    try:
        state = provider.observe()
    except ActionFailed as exc:
        raise ActionFailed(f"{exc}; nothing was changed: run the same deploy again") from None
    version = args.target_version or _image_version(image)
    # groups with no machine yet get flyctl's first machines in primary_region
    desired = config.desired(state, version, new_groups=True)
    preview = _preview(state, desired, strategy, provider.capabilities())
    if not args.dry_run:
        _warn(preview.warnings)  # the dry run's plan text starts with them
    if args.dry_run:
        print(json.dumps(preview.to_json(), indent=2) if args.json else preview.to_text())
        return EXIT_OK
    # progress on stderr, the result on stdout
    reporter = JsonLinesReporter(sys.stderr) if args.json else TextReporter(sys.stderr)
    result = execute(
        provider,
        desired,
        strategy,
        options=ExecuteOptions(gates=deploy_gates(args.gate, config)),
        reporter=reporter,
        poll_interval=args.poll_interval if args.poll_interval is not None else 2.0,
        lock_ttl=args.lock_ttl,
    )
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(f"zdd deploy: {result.outcome.replace('_', ' ')} in {result.elapsed:.1f}s")
    if isinstance(result.exception, DeploymentLocked):
        _fail(str(result.exception))  # the fleet is someone else's now: stopped, stated
        return EXIT_LOCKED
    if result.rolled_back:
        _fail(f"rolled back: {result.error}")
    elif not result.converged:
        _fail(result.error or "the deployment failed")
    return EXIT_OK if result.converged else EXIT_FAILED


class _Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, systemd, a CI cancel): handled as Ctrl-C is."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


#: zdd.execute() may defer it to a safe point of its loop, as it does Ctrl-C
_on_sigterm.zdd_interrupts = True  # type: ignore[attr-defined]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code.

    A SIGTERM ends it as cleanly as Ctrl-C: a deployment rolls back where it can,
    the demo stops its fleet and HAProxy; the exit code is then 143."""
    installed = False
    previous: object = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
        installed = True
    try:
        return _main(argv)
    except _Terminated:
        _fail("terminated")
        return 143
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous)  # type: ignore[arg-type]


def _main(argv: Sequence[str] | None) -> int:
    parser = _build_parser()
    global _JSON_ERRORS
    _JSON_ERRORS = "--json" in (sys.argv[1:] if argv is None else list(argv))
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        if args.command == "plan":
            return _cmd_plan(args)
        if args.command == "simulate":
            return _cmd_simulate(args)
        if args.command == "deploy":
            return _cmd_deploy(args)
        if args.command == "demo":
            return _cmd_demo(args)
        if args.command in _cli_steer.COMMANDS:
            return _cli_steer.run(args)
        raise _UsageError(f"unknown command {args.command!r}")  # pragma: no cover
    except _UsageError as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except DeploymentLocked as exc:
        _fail(str(exc))
        return EXIT_LOCKED
    except (ActionFailed, DeployTimeout, ProviderContractError) as exc:
        _fail(str(exc))  # the world's fault, not the input's
        return EXIT_FAILED
    except _Terminated:
        raise
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    except InvalidConfig as exc:
        _fail(_with_flag(exc))
        return EXIT_USAGE
    except ZddError as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except BrokenPipeError:  # pragma: no cover - e.g. `zdd plan | head`
        return EXIT_OK


#: Library fields the CLI sets from a flag: the flag it names instead.
_FIELD_FLAGS = {
    "config": "--config",
    "fleet": "--fleet",
    "strategy": "--strategy",
    "boot_time": "--boot-time",
    "boot_sigma": "--boot-sigma",
    "rps": "--rps",
    "capacity": "--capacity",
    "connections": "--connections",
    "seed": "--seed",
    "target_health": "--target-health",
    "base_url": "--api-url",
    "app": "--app",
}


def _with_flag(exc: InvalidConfig) -> str:
    """A library error, said in the CLI's words: a field the CLI sets from a flag is
    named by that flag; a group's shape (``groups.*``) points at ``--machines``."""
    field = exc.field or ""
    flag = _FIELD_FLAGS.get(field)
    if flag is not None:
        where = f"{exc.source}: " if exc.source else ""
        return f"{flag}: {where}{exc.reason}"
    if field == "groups" or field.startswith("groups."):
        return f"{exc} (the fleet's shape: --machines N or --fleet)"
    if exc.source == "fleet JSON":
        return f"--fleet: {exc}"
    return str(exc)


#: Under --json an error is one JSON object too (on stderr, like every error).
_JSON_ERRORS = False


def _fail(message: str) -> None:
    one_line = " ".join(message.split())
    if _JSON_ERRORS:
        print(json.dumps({"error": one_line}), file=sys.stderr)
    else:
        print(f"zdd: error: {one_line}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
