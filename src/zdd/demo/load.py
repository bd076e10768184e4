"""A load generator for the demo app: paced keep-alive requests plus long-lived streams.

:class:`LoadGenerator` sends ``GET /`` at about ``rps`` requests a second in total, spread
over ``workers`` threads that each keep one HTTP/1.1 connection alive (and open a new one
after an error), and holds ``streams`` ``GET /stream`` connections open, opening each
again when it ends. It only ever talks to the loopback interface. :meth:`LoadGenerator.stop`
returns a :class:`LoadReport`: what was sent, what failed and how, which versions
answered, and how every stream ended.

A stream is *closed cleanly* when the server wrote its ``bye`` line and then ended the
chunked body properly; any other end while the generator runs is a *cut*: a reset, an
end of file in the middle of the body, a body that ended without ``bye``, or no data for
longer than ``stream_idle_timeout`` (the demo app ticks every 100 ms).

Counting is exact: a request is counted once it has completed, succeeded or failed, so
``total_requests`` is successes plus ``failed_requests``; requests in flight when
:meth:`~LoadGenerator.stop` is called are waited for (up to ``timeout``) and counted. A
stream still open when the generator stops is neither cut nor clean:
``streams_opened == streams_cut + streams_closed_cleanly + streams_open_at_stop``.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import threading
import time
from collections import Counter
from types import TracebackType
from typing import Any

import attrs

__all__ = ["LoadGenerator", "LoadReport"]

_MAX_LAG = 0.1  # a paced request later than this is dropped, not sent in a burst
_REOPEN_PAUSE = 0.05  # after a failed or cut stream, before opening it again
_USER_AGENT = "zdd-load"
_READ_SIZE = 65536


@attrs.frozen(kw_only=True)
class LoadReport:
    """What a :class:`LoadGenerator` saw, from :meth:`~LoadGenerator.start` to its stop."""

    total_requests: int
    """``GET /`` requests completed, successful or not."""
    failed_requests: int
    """Of those: a non-2xx status, a connection error, or a timeout."""
    failures_by_kind: dict[str, int]
    """``failed_requests`` by cause: ``http_503``, ``connection_refused``,
    ``connection_reset``, ``remote_disconnected``, ``timeout``, …"""
    versions_seen: Counter[str]
    """The ``X-Version`` header of every response that had one."""
    streams_opened: int
    """``GET /stream`` connections that got a 200 response."""
    streams_cut: int
    """Streams that ended without ``bye`` and a clean end of the chunked body."""
    streams_closed_cleanly: int
    """Streams the server ended with ``bye`` and a clean end of the chunked body."""
    duration_s: float
    """Seconds from start to stop (or to the ``max_seconds`` limit)."""
    cuts_by_kind: dict[str, int] = attrs.field(factory=dict)
    """``streams_cut`` by cause: ``incomplete_read``, ``connection_reset``, ``timeout``,
    ``ended_without_bye``, …"""
    stream_open_failures: int = 0
    """Attempts to open a stream that failed (refused, reset, non-200, …)."""
    streams_open_at_stop: int = 0
    """Streams still open when the generator stopped (neither cut nor clean)."""
    stream_ticks: int = 0
    """``tick`` lines received over all streams."""

    @property
    def succeeded_requests(self) -> int:
        """Requests answered with a 2xx status."""
        return self.total_requests - self.failed_requests

    @property
    def requests_per_second(self) -> float:
        """Completed requests per second over the run."""
        return self.total_requests / self.duration_s if self.duration_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {
            "total_requests": self.total_requests,
            "failed_requests": self.failed_requests,
            "failures_by_kind": dict(sorted(self.failures_by_kind.items())),
            "versions_seen": dict(sorted(self.versions_seen.items())),
            "streams_opened": self.streams_opened,
            "streams_cut": self.streams_cut,
            "streams_closed_cleanly": self.streams_closed_cleanly,
            "duration_s": round(self.duration_s, 3),
            "cuts_by_kind": dict(sorted(self.cuts_by_kind.items())),
            "stream_open_failures": self.stream_open_failures,
            "streams_open_at_stop": self.streams_open_at_stop,
            "stream_ticks": self.stream_ticks,
        }


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"the load generator only targets this machine (127.0.0.1, ::1 or localhost), "
            f"not {host!r}"
        )


def _failure_kind(error: BaseException) -> str:
    """A short, stable name for why a request or a stream failed."""
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, http.client.RemoteDisconnected):
        return "remote_disconnected"
    if isinstance(error, http.client.IncompleteRead):
        return "incomplete_read"
    if isinstance(error, ConnectionRefusedError):
        return "connection_refused"
    if isinstance(error, ConnectionResetError):
        return "connection_reset"
    if isinstance(error, BrokenPipeError):
        return "broken_pipe"
    if isinstance(error, ConnectionAbortedError):
        return "connection_aborted"
    if isinstance(error, http.client.HTTPException):
        return "protocol_error"
    return f"os_error_{getattr(error, 'errno', None) or type(error).__name__}"


class _Tally:
    """The mutable counts behind a report; every access holds ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.total = 0
        self.failed = 0
        self.failures: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self.opened = 0
        self.cut = 0
        self.clean = 0
        self.cuts: Counter[str] = Counter()
        self.open_failures = 0
        self.ticks = 0

    def request(self, status: int | None, version: str | None, failure: str | None) -> None:
        with self.lock:
            self.total += 1
            if version is not None:
                self.versions[version] += 1
            if failure is not None:
                self.failed += 1
                self.failures[failure] += 1

    def report(self, duration: float) -> LoadReport:
        with self.lock:
            return LoadReport(
                total_requests=self.total,
                failed_requests=self.failed,
                failures_by_kind=dict(self.failures),
                versions_seen=Counter(self.versions),
                streams_opened=self.opened,
                streams_cut=self.cut,
                streams_closed_cleanly=self.clean,
                duration_s=duration,
                cuts_by_kind=dict(self.cuts),
                stream_open_failures=self.open_failures,
                streams_open_at_stop=self.opened - self.cut - self.clean,
                stream_ticks=self.ticks,
            )


class LoadGenerator:
    """Paced keep-alive ``GET /`` requests and long-lived ``GET /stream`` connections.

    ``rps`` is the total request rate over all ``workers``; a worker whose response is
    slow falls behind and the others take its turns, so the rate holds while at least a
    few workers are responsive (each can do about ``1 / latency`` requests a second).
    The generator stops by itself after ``max_seconds`` and never sends more than
    ``max_requests`` requests. Use it as a context manager, or call :meth:`start` and
    :meth:`stop`; :meth:`stop` may be called again and returns the same report.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        rps: float = 200,
        streams: int = 5,
        workers: int = 8,
        timeout: float = 2.0,
        stream_idle_timeout: float = 2.0,
        max_seconds: float = 600,
        max_requests: int = 1_000_000,
    ) -> None:
        _check_loopback(host)
        if not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, not {port}")
        if not rps > 0:
            raise ValueError(f"rps must be > 0, not {rps}")
        if streams < 0:
            raise ValueError(f"streams must be >= 0, not {streams}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, not {workers}")
        for name, value in (
            ("timeout", timeout),
            ("stream_idle_timeout", stream_idle_timeout),
            ("max_seconds", max_seconds),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, not {value}")
        if max_requests < 0:
            raise ValueError(f"max_requests must be >= 0, not {max_requests}")
        self.host = host
        self.port = port
        self.rps = rps
        self.streams = streams
        self.workers = workers
        self.timeout = timeout
        self.stream_idle_timeout = stream_idle_timeout
        self.max_seconds = max_seconds
        self.max_requests = max_requests

        self._tally = _Tally()
        self._halted = threading.Event()
        self._lock = threading.Lock()  # schedule, open stream sockets, lifecycle
        self._threads: list[threading.Thread] = []
        self._timer: threading.Timer | None = None
        self._stream_socks: set[socket.socket] = set()
        self._started_at: float | None = None
        self._halted_at: float | None = None
        self._next_at = 0.0
        self._reserved = 0
        self._report: LoadReport | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Start sending; the generator runs in daemon threads until :meth:`stop`."""
        with self._lock:
            if self._started_at is not None:
                raise RuntimeError("this LoadGenerator was already started")
            self._started_at = self._next_at = time.monotonic()
        threads = [
            threading.Thread(target=self._request_loop, name=f"zdd-load-worker-{i}", daemon=True)
            for i in range(self.workers)
        ] + [
            threading.Thread(target=self._stream_loop, name=f"zdd-load-stream-{i}", daemon=True)
            for i in range(self.streams)
        ]
        self._threads = threads
        self._timer = threading.Timer(self.max_seconds, self._halt)
        self._timer.daemon = True
        self._timer.start()
        for thread in threads:
            thread.start()

    def stop(self) -> LoadReport:
        """Stop, wait for requests in flight (up to ``timeout``), and report."""
        with self._lock:
            if self._report is not None:
                return self._report
            if self._started_at is None:
                raise RuntimeError("this LoadGenerator was never started")
        self._halt()
        if self._timer is not None:
            self._timer.cancel()
        deadline = time.monotonic() + self.timeout + 1.0
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        with self._lock:
            if self._report is None:
                self._report = self._tally.report(self._duration())
            return self._report

    def snapshot(self) -> LoadReport:
        """The counts so far, while running (open streams count as open at stop)."""
        with self._lock:
            if self._report is not None:
                return self._report
        return self._tally.report(self._duration())

    def __enter__(self) -> LoadGenerator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _halt(self) -> None:
        with self._lock:
            if self._halted.is_set():
                return
            self._halted_at = time.monotonic()
            self._halted.set()
            socks = list(self._stream_socks)
        for sock in socks:  # wake the stream readers
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _duration(self) -> float:
        if self._started_at is None:
            return 0.0
        end = self._halted_at if self._halted_at is not None else time.monotonic()
        return min(end - self._started_at, self.max_seconds)

    # -- requests ----------------------------------------------------------------

    def _next_slot(self) -> float | None:
        """Reserve the next send time, or ``None`` when the generator is done."""
        with self._lock:
            if self._halted.is_set() or self._reserved >= self.max_requests:
                return None
            at = max(self._next_at, time.monotonic() - _MAX_LAG)
            if self._started_at is None or at >= self._started_at + self.max_seconds:
                return None
            self._next_at = at + 1.0 / self.rps
            self._reserved += 1
            return at

    def _request_loop(self) -> None:
        conn: http.client.HTTPConnection | None = None
        try:
            while (at := self._next_slot()) is not None:
                delay = at - time.monotonic()
                if delay > 0 and self._halted.wait(delay):
                    return
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                status: int | None = None
                version: str | None = None
                failure: str | None = None
                try:
                    conn.request("GET", "/", headers={"User-Agent": _USER_AGENT})
                    response = conn.getresponse()
                    response.read()
                    status = response.status
                    version = response.getheader("X-Version")
                    if response.will_close:
                        conn.close()
                        conn = None
                except (OSError, http.client.HTTPException) as e:
                    failure = _failure_kind(e)
                    if conn is not None:
                        conn.close()
                    conn = None
                if status is not None and not 200 <= status < 300:
                    failure = f"http_{status}"
                self._tally.request(status, version, failure)
        finally:
            if conn is not None:
                conn.close()

    # -- streams -----------------------------------------------------------------

    def _stream_loop(self) -> None:
        while not self._halted.is_set():
            if not self._one_stream():
                self._halted.wait(_REOPEN_PAUSE)

    def _one_stream(self) -> bool:
        """Open one stream and read it to its end; whether it closed cleanly."""
        tally = self._tally
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.stream_idle_timeout)
        sock: socket.socket | None = None
        try:
            try:
                conn.connect()
                sock = conn.sock
                if not self._track(sock):
                    return False
                conn.request("GET", "/stream", headers={"User-Agent": _USER_AGENT})
                response = conn.getresponse()
            except (OSError, http.client.HTTPException):
                if not self._halted.is_set():
                    with tally.lock:
                        tally.open_failures += 1
                return False
            if response.status != 200:
                with tally.lock:
                    tally.open_failures += 1
                return False
            with tally.lock:
                tally.opened += 1
            saw_bye = False
            clean = False
            cut: str | None = None
            try:
                # read1, not readline: http.client's readline takes an end of file
                # between two chunks for the end of the body.
                pending = b""
                while data := response.read1(_READ_SIZE):
                    if self._halted.is_set():
                        break
                    *lines, pending = (pending + data).split(b"\n")
                    ticks = sum(line.startswith(b"tick ") for line in lines)
                    if ticks:
                        with tally.lock:
                            tally.ticks += ticks
                    saw_bye = saw_bye or b"bye" in lines
                else:  # the terminating chunk: the body ended properly
                    clean = saw_bye
                    cut = None if saw_bye else "ended_without_bye"
            except (OSError, http.client.HTTPException) as e:
                cut = _failure_kind(e)
            with tally.lock:
                if clean:
                    tally.clean += 1
                elif not self._halted.is_set():
                    tally.cut += 1
                    tally.cuts[cut or "unknown"] += 1
                # else: still open when the generator stopped
            return clean
        finally:
            if sock is not None:
                with self._lock:
                    self._stream_socks.discard(sock)
            conn.close()

    def _track(self, sock: socket.socket | None) -> bool:
        """Register an open stream socket so a stop can wake its reader."""
        with self._lock:
            if self._halted.is_set() or sock is None:
                return False
            self._stream_socks.add(sock)
            return True
