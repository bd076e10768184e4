"""The threaded driver: runs the executor's core (``zdd._executor``) against a real
provider, on threads and wall time.

The core decides; this module performs: it submits the core's provider calls to
a thread pool bounded by ``ExecuteOptions.concurrency``, polls the machines the
core watches (the whole fleet while machines are taken out of service), keeps
the fleet's lock, and turns Ctrl-C into a rollback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from ._errors import (
    ActionFailed,
    DeploymentLocked,
    ProviderContractError,
    ZddError,
)
from ._executor import (
    Abort,
    ActionDone,
    ActionError,
    Begin,
    Commands,
    DeployResult,
    Event,
    ExecuteOptions,
    ExecutorCore,
    FullObserved,
    GateResolver,
    GateResult,
    Interrupt,
    MachineSeen,
    Observed,
    Perform,
    Tick,
)
from ._model import Capabilities, Desired, FleetState, Machine
from ._planning import rollback_desired, rollback_strategy
from ._strategies import Strategy
from .providers import Provider
from .reporters import Reporter

__all__ = [
    "DeployResult",
    "ExecuteOptions",
    "ExecutorCore",
    "GateResolver",
    "GateResult",
    "Perform",
    "execute",
    "rollback_desired",
    "rollback_strategy",
]


# -- the threaded driver -----------------------------------------------------------


def execute(
    provider: Provider,
    desired: Desired,
    strategy: Strategy,
    *,
    options: ExecuteOptions | None = None,
    reporter: Reporter | None = None,
    owner: str | None = None,
    lock_ttl: float = 30.0,
    poll_interval: float = 2.0,
    observe_interval: float | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] | None = None,
) -> DeployResult:
    """Deploy ``desired`` through a real ``provider`` (see :class:`zdd.providers.Provider`).

    Provider calls run on a thread pool bounded by ``options.concurrency``;
    machines the executor waits on are polled every ``poll_interval`` seconds.
    While machines are taken out of service, the whole fleet is observed every
    ``observe_interval`` seconds (default: the poll interval, at least 1 s, within
    Fly's rate for listing): the floor is held against that view.
    The fleet's lock is taken first (:class:`~zdd.DeploymentLocked` if another
    executor holds it), refreshed every ``lock_ttl / 3`` seconds and always
    released. Ctrl-C (``KeyboardInterrupt``) starts a rollback where the
    strategy can roll back; a second one stops at once, leases released.

    Returns the :class:`DeployResult`; raises only :class:`~zdd.ZddError`.
    """
    opts = options or ExecuteOptions()
    holder = owner or _default_owner()
    try:
        provider.acquire_lock(holder, lock_ttl)
    except ActionFailed as exc:
        raise _unchanged(exc) from None
    pool = ThreadPoolExecutor(max_workers=opts.concurrency, thread_name_prefix="zdd")
    capabilities = provider.capabilities()
    if not isinstance(capabilities, Capabilities):
        raise ProviderContractError(
            f"capabilities() returned {type(capabilities).__name__}, not Capabilities"
        )
    core = ExecutorCore(
        desired, strategy, options=opts, reporter=reporter, capabilities=capabilities
    )
    drv = _Driver(core, provider, pool, clock)
    refresh: _Refresh | None = None
    interrupted = 0
    signals = _Signals()
    signals.install()
    try:
        try:
            first = _observe(provider)
        except ActionFailed as exc:
            raise _unchanged(exc) from None
        drv.feed(Begin(clock(), first))
        next_poll = next_view = next_look = clock()
        view_every = observe_interval if observe_interval is not None else max(poll_interval, 1.0)
        refresh = _Refresh(provider, holder, lock_ttl, clock)
        next_refresh = clock() + lock_ttl / 3
        while True:
            try:
                if signals.take():
                    raise KeyboardInterrupt  # delivered here, where no event is half-fed
                if drv.cmds.finished and not drv.futures:
                    break
                now = clock()
                if drv.cmds.full_observe and not drv.futures and now >= next_look:
                    try:
                        state = _observe(provider)
                    except ActionFailed:
                        # a transient failure: look again after a poll interval (a
                        # provider down for good stops at the lock's refresh)
                        next_look = now + poll_interval
                    else:
                        drv.feed(FullObserved(clock(), state))
                        continue
                if now >= next_refresh and not drv.cmds.finished:
                    next_refresh = refresh.due(now, drv)
                if now >= next_poll and not drv.cmds.finished:
                    seen: frozenset[str] = frozenset()
                    if drv.cmds.view and now >= next_view:
                        # the floor is held against the observed fleet: look at all of it
                        with contextlib.suppress(ActionFailed):
                            state = _observe(provider)
                            drv.feed(Observed(clock(), state))
                            seen = frozenset(m.id for m in state.machines)
                        next_view = now + view_every
                    # the machines waited on, read one by one (a machine too new for the
                    # list among them)
                    for mid in sorted(m for m in drv.cmds.watched if m not in seen):
                        drv.poll(mid)
                    next_poll = now + poll_interval
                wake = drv.cmds.wake_at
                timeout = (
                    min([t for t in (wake, next_poll, next_refresh) if t is not None]) - clock()
                )
                timeout = max(0.0, min(timeout, poll_interval))
                if drv.futures:
                    with signals.interruptible():
                        done, _ = wait(
                            list(drv.futures), timeout=timeout, return_when=FIRST_COMPLETED
                        )
                    for fut in done:
                        drv.deliver(fut)
                elif timeout > 0:
                    with signals.interruptible():
                        (sleep or time.sleep)(timeout)
                drv.feed(Tick(clock()))
                if drv.cmds.interrupt_pending:
                    raise KeyboardInterrupt
            except KeyboardInterrupt:
                interrupted += 1
                if interrupted > 1 or drv.cmds.finished:
                    raise
                drv.feed(Interrupt(clock()))
    except KeyboardInterrupt:
        for fut in drv.futures:
            fut.cancel()
        return DeployResult(
            outcome="failed",
            error="interrupted twice: stopped without finishing the rollback",
            actions=core.actions,
        )
    finally:
        signals.restore()
        pool.shutdown(wait=True, cancel_futures=True)
        if refresh is not None:
            refresh.close()
        with contextlib.suppress(ZddError):
            provider.release_lock(holder)
    assert drv.cmds.result is not None
    return drv.cmds.result


class _Signals:
    """Ctrl-C (and a SIGTERM the CLI turns into one) delivered where the driver can take
    it: only while it waits, or at the top of its loop. An interrupt raised anywhere
    else (between a finished provider call and the event that reports it, in the
    middle of the core's handling) would lose an answer, and the rollback it starts
    would wait for that answer for ever. Only handlers that raise
    ``KeyboardInterrupt`` (Python's own, the CLI's) are taken over; others are left."""

    def __init__(self) -> None:
        self.pending = 0
        self._open = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(sig)
            if previous is signal.default_int_handler or getattr(previous, "zdd_interrupts", False):
                self._previous[sig] = previous
                signal.signal(sig, self._handler)

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handler(self, signum: int, frame: object) -> None:
        if self._open:
            self._open = False
            raise KeyboardInterrupt
        self.pending += 1

    def take(self) -> bool:
        if self.pending:
            self.pending -= 1
            return True
        return False

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        if self.pending:
            self.take()
            raise KeyboardInterrupt
        self._open = True
        try:
            yield
        finally:
            self._open = False


class _Refresh:
    """The lock's periodic refresh, on a thread of its own (a refresh of a thousand
    leases never holds up the driver's loop). A transient failure is retried sooner;
    a refresh that keeps failing, or finds the fleet taken, stops the deployment in a
    stated way (:class:`Abort`) instead of escaping :func:`execute`."""

    def __init__(
        self, provider: Provider, holder: str, ttl: float, clock: Callable[[], float]
    ) -> None:
        self.provider = provider
        self.holder = holder
        self.ttl = ttl
        self.clock = clock
        self.renewed = clock()
        self.started = 0.0
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zdd-lock")
        self.running: Future[None] | None = None

    def due(self, now: float, drv: _Driver) -> float:
        """Start a refresh, or collect the one running; when to look again."""
        if self.running is None:
            self.started = now
            self.running = self.thread.submit(self.provider.acquire_lock, self.holder, self.ttl)
            return now + min(self.ttl / 30, 0.5)
        if not self.running.done():
            return now + min(self.ttl / 30, 0.5)
        future, self.running = self.running, None
        try:
            future.result()
        except DeploymentLocked as exc:
            drv.feed(Abort(self.clock(), f"the lock was lost: {exc}", type(exc)))
            return now + self.ttl
        except ActionFailed as exc:
            if self.clock() - self.renewed < self.ttl * 0.8:
                return now + min(self.ttl / 10, 2.0)  # try again soon, well before expiry
            drv.feed(
                Abort(
                    self.clock(),
                    f"the lock could not be refreshed for {self.clock() - self.renewed:.0f} s "
                    f"({exc}); stopped where it was (the record says the deployment is in "
                    f"progress): run the same deploy again to resume",
                    ActionFailed,
                )
            )
            return now + self.ttl
        except ZddError as exc:
            drv.feed(Abort(self.clock(), f"the lock's refresh failed: {exc}", type(exc)))
            return now + self.ttl
        except Exception as exc:  # a provider breaking its contract
            error = f"provider raised {type(exc).__name__} from acquire_lock(): {exc}"
            drv.feed(Abort(self.clock(), error, ProviderContractError))
            return now + self.ttl
        self.renewed = self.started
        return self.started + self.ttl / 3

    def close(self) -> None:
        """Wait for a refresh in flight (the lock is released after it)."""
        self.thread.shutdown(wait=True, cancel_futures=True)


class _Driver:
    """Carries out the core's commands: provider calls on the pool, reads at once."""

    def __init__(
        self,
        core: ExecutorCore,
        provider: Provider,
        pool: ThreadPoolExecutor,
        clock: Callable[[], float],
    ) -> None:
        self.core = core
        self.provider = provider
        self.pool = pool
        self.clock = clock
        self.cmds = Commands()
        self.futures: dict[Future[Machine | None], int] = {}

    def feed(self, event: Event) -> None:
        """Hand the core one event, and send what it allows at once."""
        cmds = self.core.handle(event)
        self.cmds = cmds
        for p in cmds.perform:
            self.futures[self.pool.submit(self.provider.perform, p.action)] = p.ref
        for mid in sorted(cmds.report):
            self.poll(mid)

    def poll(self, machine_id: str) -> None:
        """Report one machine; a failed read is skipped (the next poll retries)."""
        try:
            m = self.provider.machine(machine_id)
        except ActionFailed:
            return
        except ZddError:
            raise
        except Exception as exc:  # a provider breaking its contract
            raise ProviderContractError(
                f"provider raised {type(exc).__name__} from machine(): {exc}"
            ) from None
        if m is not None and not isinstance(m, Machine):
            raise ProviderContractError(f"machine() returned {type(m).__name__}, not a Machine")
        self.feed(MachineSeen(self.clock(), machine_id, m))

    def deliver(self, fut: Future[Machine | None]) -> None:
        """Turn a finished provider call into the core's event."""
        ref = self.futures.pop(fut)
        now = self.clock()
        try:
            result = fut.result()
        except ActionFailed as exc:
            self.feed(ActionError(now, ref, str(exc), exc.transient, type(exc)))
        except ZddError as exc:  # DeploymentLocked among them: not worth a retry
            self.feed(ActionError(now, ref, str(exc), False, type(exc)))
        except Exception as exc:  # a provider breaking its contract
            error = ProviderContractError(f"provider raised {type(exc).__name__}: {exc}")
            self.feed(ActionError(now, ref, str(error), False, ProviderContractError))
        else:
            if result is not None and not isinstance(result, Machine):
                error_text = f"provider returned {type(result).__name__}, not a Machine"
                self.feed(ActionError(now, ref, error_text, False, ProviderContractError))
            else:
                self.feed(ActionDone(now, ref, result))


def _observe(provider: Provider) -> FleetState:
    try:
        state = provider.observe()
    except ZddError:
        raise
    except Exception as exc:  # a provider breaking its contract
        raise ProviderContractError(
            f"provider raised {type(exc).__name__} from observe(): {exc}"
        ) from None
    if not isinstance(state, FleetState):
        raise ProviderContractError(f"observe() returned {type(state).__name__}, not a FleetState")
    return state


def _unchanged(exc: ActionFailed) -> ActionFailed:
    """A failure before the deployment began, stated as such."""
    return ActionFailed(
        f"{exc}; nothing was changed: run the same deploy again", transient=exc.transient
    )


def _default_owner() -> str:
    return f"zdd@{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
