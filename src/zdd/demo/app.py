"""The bundled demo app: a tiny HTTP/1.1 server that says which version it is.

Run it as ``python -m zdd.demo.app``; it listens on 127.0.0.1 only. Configuration comes
from the environment (the flags ``--port`` and ``--version`` override it):

``PORT``
    The port to listen on (default 8080; 0 picks a free one).
``ZDD_VERSION``
    The version this process serves (default ``dev``).
``ZDD_DEMO_HEALTH``
    ``failing`` makes ``/health`` answer 503: a broken release.
``ZDD_DEMO_BOOT_DELAY``
    Seconds to sleep before binding the port: a slow boot (default 0).
``ZDD_DEMO_SHUTDOWN_DELAY``
    Seconds to keep serving open connections after SIGTERM before the drain (default 0).
``ZDD_DEMO_ERROR_RATE``
    A share of ``GET /`` requests to answer 500 (``0.05`` or ``5%``; default 0) while
    ``/health`` passes: a release that is healthy but bad. The failures are spread
    evenly (every 20th request at 5%), not drawn at random.

Endpoints (``GET``; ``HEAD`` too, except ``/stream``):

``/``
    200, body ``version <version>\\n``.
``/health``
    200 ``ok``; 503 when the health is set to fail, or once shutdown has begun.
``/stream``
    A chunked response that never ends by itself: ``tick <version> <n>\\n`` every 100 ms.
    On graceful shutdown the server writes ``bye\\n`` and the terminating zero-length chunk;
    a client that saw both knows the stream was closed cleanly, not cut.
``/metrics``
    Prometheus' text format: ``zdd_demo_http_requests_total{version, status}``, the
    requests to ``/`` and ``/slow`` this process answered, by status.
``/slow?ms=N``
    Like ``/`` after N milliseconds (at most 1000): an in-flight request that shutdown
    must let finish.

Every response carries ``X-Version``.

SIGTERM or SIGINT shuts down gracefully: the listening socket closes at once (new
connections are refused); responses from then on carry ``Connection: close``; after
``ZDD_DEMO_SHUTDOWN_DELAY`` the drain begins: every stream ends with ``bye``, idle
keep-alive connections are closed, in-flight requests finish; the process exits 0 once
every connection is done, or after a grace period of 1.5 s, whichever comes first.

The only output is one line on stderr once the port is bound::

    zdd demo app v1 listening on http://127.0.0.1:8080 (pid 4242)
"""

from __future__ import annotations

import argparse
import io
import math
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from _socket import _RetAddress
    from socketserver import _RequestType

__all__ = ["DemoServer", "main", "serve"]

HOST = "127.0.0.1"
TICK_INTERVAL = 0.1
DRAIN_GRACE = 1.5
SLOW_MAX_MS = 1000
_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


class DemoServer(ThreadingHTTPServer):
    """The HTTP server, with connection tracking for a graceful drain.

    A connection counts from its accept until its socket is shut down. Shutdown has two
    phases: :meth:`begin_shutdown` (responses say ``Connection: close``; ``/health``
    fails) and :meth:`drain` (streams end, idle connections close, wait for the rest).
    """

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(
        self, port: int, *, version: str, health_failing: bool = False, error_rate: float = 0.0
    ) -> None:
        super().__init__((HOST, port), _Handler)
        self.version = version
        self.health_failing = health_failing
        self.error_rate = error_rate
        self._served = 0
        self._counts: dict[int, int] = {}
        self._counts_mu = threading.Lock()
        self.shutting_down = threading.Event()
        self.draining = threading.Event()
        self._connections = 0
        self._changed = threading.Condition()
        # A byte written here, never read, wakes every idle connection at once.
        self.wake_reader, self._wake_writer = socket.socketpair()

    def next_status(self) -> HTTPStatus:
        """200, or 500 for the ``error_rate`` share of requests (spread evenly)."""
        with self._counts_mu:
            before = int(self._served * self.error_rate)
            self._served += 1
            fail = int(self._served * self.error_rate) > before
            status = HTTPStatus.INTERNAL_SERVER_ERROR if fail else HTTPStatus.OK
            self._counts[status.value] = self._counts.get(status.value, 0) + 1
        return status

    def metrics(self) -> str:
        """``/metrics`` in Prometheus' text exposition format."""
        with self._counts_mu:
            counts = dict(self._counts)
        lines = [
            "# HELP zdd_demo_http_requests_total Requests to / and /slow, by status.",
            "# TYPE zdd_demo_http_requests_total counter",
        ]
        for status in sorted(counts or {200: 0}):
            lines.append(
                f'zdd_demo_http_requests_total{{version="{_label(self.version)}",'
                f'status="{status}"}} {counts.get(status, 0)}'
            )
        return "\n".join(lines) + "\n"

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        return int(self.server_address[1])

    @property
    def connections(self) -> int:
        """Connections accepted and not yet closed."""
        with self._changed:
            return self._connections

    def process_request(self, request: _RequestType, client_address: _RetAddress) -> None:
        with self._changed:
            self._connections += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request: _RequestType) -> None:
        try:
            super().shutdown_request(request)
        finally:
            with self._changed:
                self._connections -= 1
                self._changed.notify_all()

    def handle_error(self, request: _RequestType, client_address: _RetAddress) -> None:
        """Stay quiet: a client that went away is not worth a traceback."""

    def begin_shutdown(self) -> None:
        """From now on every response closes its connection, and ``/health`` fails."""
        self.shutting_down.set()

    def drain(self, grace: float = DRAIN_GRACE) -> bool:
        """End streams, close idle connections, and wait for the rest up to ``grace`` s.

        Returns whether every connection was done in time.
        """
        self.shutting_down.set()
        self.draining.set()
        self._wake_writer.send(b"x")
        deadline = time.monotonic() + grace
        with self._changed:
            while self._connections > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        # No connection is left to select on the wake-up socket.
        self.wake_reader.close()
        self._wake_writer.close()
        return True


class _Handler(BaseHTTPRequestHandler):
    server: DemoServer
    protocol_version = "HTTP/1.1"
    server_version = "zdd-demo"
    disable_nagle_algorithm = True
    wbufsize = -1  # buffered: headers and body leave in one write (flushed per request)

    def handle_one_request(self) -> None:
        if not self._wait_for_request():
            self.close_connection = True
            return
        super().handle_one_request()

    def _wait_for_request(self) -> bool:
        """Wait until a request starts arriving; ``False`` if the drain began first."""
        if self._has_buffered_input():
            return True
        while True:
            ready, _, _ = select.select([self.connection, self.server.wake_reader], [], [])
            if self.connection in ready:
                return True
            if self.server.draining.is_set():
                return False

    def _has_buffered_input(self) -> bool:
        """Whether bytes of a next request are already here, without blocking."""
        if not isinstance(self.rfile, io.BufferedReader):
            return False
        timeout = self.connection.gettimeout()
        self.connection.settimeout(0)
        try:
            return bool(self.rfile.peek(1))
        except OSError:
            return True  # let the ordinary read meet the error
        finally:
            self.connection.settimeout(timeout)

    def do_GET(self) -> None:
        self._route(head=False)

    def do_HEAD(self) -> None:
        self._route(head=True)

    def _route(self, *, head: bool) -> None:
        url = urlsplit(self.path)
        version = self.server.version
        if url.path == "/":
            status = self.server.next_status()
            self._reply(status, f"version {version}\n" if status == 200 else "error\n", head=head)
        elif url.path == "/metrics":
            self._reply(HTTPStatus.OK, self.server.metrics(), head=head, metrics=True)
        elif url.path == "/health":
            if self.server.health_failing:
                self._reply(HTTPStatus.SERVICE_UNAVAILABLE, "failing\n", head=head)
            elif self.server.shutting_down.is_set():
                self._reply(HTTPStatus.SERVICE_UNAVAILABLE, "shutting down\n", head=head)
            else:
                self._reply(HTTPStatus.OK, "ok\n", head=head)
        elif url.path == "/stream" and not head:
            self._stream()
        elif url.path == "/slow":
            try:
                ms = int(parse_qs(url.query).get("ms", ["100"])[0])
            except ValueError:
                self._reply(HTTPStatus.BAD_REQUEST, "ms must be an integer\n", head=head)
                return
            time.sleep(min(max(ms, 0), SLOW_MAX_MS) / 1000)
            status = self.server.next_status()
            self._reply(status, f"version {version}\n" if status == 200 else "error\n", head=head)
        else:
            self._reply(HTTPStatus.NOT_FOUND, "not found\n", head=head)

    def _reply(self, status: HTTPStatus, text: str, *, head: bool, metrics: bool = False) -> None:
        body = text.encode()
        self.send_response(status)
        kind = "text/plain; version=0.0.4" if metrics else "text/plain; charset=utf-8"
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Version", self.server.version)
        if self.server.shutting_down.is_set():
            self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _stream(self) -> None:
        version = self.server.version
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Version", version)
        self.end_headers()
        self.close_connection = True
        # A client that stops reading must not hold this thread past the drain.
        self.connection.settimeout(5.0)
        start = time.monotonic()
        n = 0
        try:
            while True:
                self._chunk(f"tick {version} {n}\n".encode())
                n += 1
                wait = start + n * TICK_INTERVAL - time.monotonic()
                if self.server.draining.wait(max(wait, 0.0)):
                    break
            self._chunk(b"bye\n", last=True)
        except OSError:
            pass  # the client went away

    def _chunk(self, data: bytes, *, last: bool = False) -> None:
        """Send one chunk; ``last`` adds the zero-length chunk that ends the body."""
        self.wfile.write(b"%x\r\n%s\r\n%s" % (len(data), data, b"0\r\n\r\n" if last else b""))
        self.wfile.flush()

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: object) -> None:
        """No access log: the startup line is the only output."""


def serve(
    port: int,
    version: str,
    *,
    health_failing: bool = False,
    boot_delay: float = 0.0,
    shutdown_delay: float = 0.0,
    error_rate: float = 0.0,
) -> int:
    """Run the app until SIGTERM or SIGINT, then shut down gracefully; the exit status.

    Call it from the main thread: it blocks SIGTERM and SIGINT in every thread and waits
    for them with :func:`signal.sigwait`, so no Python signal handler runs at an awkward
    moment.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    if boot_delay > 0 and signal.sigtimedwait(_SIGNALS, boot_delay) is not None:
        return 0
    try:
        server = DemoServer(
            port, version=version, health_failing=health_failing, error_rate=error_rate
        )
    except OSError as e:
        print(f"zdd demo app {version}: cannot listen on {HOST}:{port}: {e}", file=sys.stderr)
        return 1
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    print(
        f"zdd demo app {version} listening on http://{HOST}:{server.port} (pid {os.getpid()})",
        file=sys.stderr,
        flush=True,
    )
    signal.sigwait(_SIGNALS)
    server.begin_shutdown()
    server.shutdown()  # the accept loop stops (within one poll interval)
    server.server_close()  # the listening socket closes: new connections are refused
    if shutdown_delay > 0:
        signal.sigtimedwait(_SIGNALS, shutdown_delay)  # a second signal cuts it short
    server.drain()
    return 0


def _env_seconds(parser: argparse.ArgumentParser, name: str) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        parser.error(f"{name} must be a number of seconds, not {raw!r}")
    if not (math.isfinite(value) and value >= 0):
        parser.error(f"{name} must be >= 0, not {raw!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """The ``python -m zdd.demo.app`` entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m zdd.demo.app",
        description="The zdd demo app: says its version, streams ticks, shuts down gracefully.",
    )
    parser.add_argument("--port", type=int, help="port on 127.0.0.1 (default: $PORT or 8080)")
    parser.add_argument("--version", help="version to serve (default: $ZDD_VERSION or 'dev')")
    args = parser.parse_args(argv)
    port: int
    if args.port is not None:
        port = args.port
    else:
        try:
            port = int(os.environ.get("PORT", "8080"))
        except ValueError:
            parser.error(f"PORT must be an integer, not {os.environ['PORT']!r}")
    if not 0 <= port <= 65535:
        parser.error(f"port must be in 0..65535, not {port}")
    version: str = args.version or os.environ.get("ZDD_VERSION") or "dev"
    return serve(
        port,
        version,
        health_failing=os.environ.get("ZDD_DEMO_HEALTH", "").strip().lower() == "failing",
        boot_delay=_env_seconds(parser, "ZDD_DEMO_BOOT_DELAY"),
        shutdown_delay=_env_seconds(parser, "ZDD_DEMO_SHUTDOWN_DELAY"),
        error_rate=_env_share(parser, "ZDD_DEMO_ERROR_RATE"),
    )


def _env_share(parser: argparse.ArgumentParser, name: str) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return 0.0
    text = raw[:-1] if raw.endswith("%") else raw
    try:
        value = float(text) / (100.0 if raw.endswith("%") else 1.0)
    except ValueError:
        parser.error(f"{name} must be a share such as 0.05 or 5%, not {raw!r}")
    if not (math.isfinite(value) and 0 <= value <= 1):
        parser.error(f"{name} must be from 0 to 1 (or 0% to 100%), not {raw!r}")
    return value


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


if __name__ == "__main__":
    sys.exit(main())
