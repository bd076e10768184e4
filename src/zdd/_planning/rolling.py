"""Rolling: a few machines at a time, a floor of serving machines held throughout.

Without surge every outdated machine is updated in place (Fly's behaviour): it
is cordoned, drained, updated, waited healthy and released, at most
``max_unavailable`` at a time. With ``max_surge`` machines without volumes are
replaced instead: new machines are created hidden, released once healthy, and
outdated ones are cordoned, drained, stopped and destroyed as the budgets allow
(Kubernetes' rule). Machines with volumes always update in place.
"""

from __future__ import annotations

from collections.abc import Mapping

from .._errors import PlanningImpossible
from .._model import Desired
from .._strategies import Rolling
from ._core import GroupContext, is_current, rollback_options, rolling_phase
from ._schedule import Phase


def plan_group(ctx: GroupContext, strategy: Rolling | None = None) -> list[Phase]:
    """Steps for one group under ``strategy`` (default: the context's)."""
    s = strategy if strategy is not None else ctx.strategy
    assert isinstance(s, Rolling)
    n = ctx.spec.count
    if s.max_unavailable == 0:
        stuck = [m.id for m in ctx.machines if m.volume and not is_current(m, ctx.version)]
        if stuck and n:
            raise PlanningImpossible(
                f"group {ctx.name!r}: {', '.join(stuck[:3])}{'...' if len(stuck) > 3 else ''} "
                f"{'holds a volume' if len(stuck) == 1 else 'hold volumes'} and must be "
                f"updated in place, which needs max_unavailable >= 1 "
                f"(a surge machine cannot take over a volume); leave max_unavailable unset "
                f"or set it to 1"
            )
    return [rolling_phase(ctx, s, ctx.machines)]


def rollback(strategy: Rolling) -> Rolling:
    """The rolling update that takes a failed rolling deployment back: the same
    budgets, so the same floor (no release or post-deploy command)."""
    return Rolling(
        max_unavailable=strategy.max_unavailable,
        max_surge=strategy.max_surge,
        **rollback_options(strategy),
    )


def can_roll_back(strategy: Rolling, record: Mapping[str, str], desired: Desired) -> bool:
    return strategy.auto_rollback
