"""The demo app as a real process, and the load generator against it.

Every app runs as a subprocess on a port it picks itself (``PORT=0``; the port comes
from its startup line). The ``apps`` fixture kills whatever a test left running and
fails the test if anything was left, so no process outlives the file.
"""

from __future__ import annotations

import http.client
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from zdd.demo.load import LoadGenerator, LoadReport

STARTUP = re.compile(r"zdd demo app (\S+) listening on http://127\.0\.0\.1:(\d+) \(pid (\d+)\)")

Start = Callable[..., tuple["subprocess.Popen[str]", int]]


def _read_startup_line(proc: subprocess.Popen[str], timeout: float = 10.0) -> str:
    assert proc.stderr is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stderr, selectors.EVENT_READ)
        assert sel.select(timeout), "the app printed nothing"
    return proc.stderr.readline()


def _demo_children() -> list[int]:
    """Live processes running the demo app whose parent is this test process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == os.getpid() and state != "Z" and b"zdd.demo.app" in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture
def apps() -> Iterator[Start]:
    started: list[subprocess.Popen[str]] = []

    def start(
        version: str = "v1", *, wait: bool = True, args: Sequence[str] = (), **env: str
    ) -> tuple[subprocess.Popen[str], int]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "zdd.demo.app", *args],
            env={**os.environ, "PORT": "0", "ZDD_VERSION": version, **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        if not wait:
            return proc, 0
        line = _read_startup_line(proc)
        match = STARTUP.fullmatch(line.strip())
        assert match, f"unexpected startup line {line!r}"
        assert match[1] == version
        assert int(match[3]) == proc.pid
        return proc, int(match[2])

    try:
        yield start
    finally:
        left = [proc for proc in started if proc.poll() is None]
        for proc in left:
            proc.kill()
        for proc in started:
            proc.wait(5)
            assert proc.stderr is not None
            proc.stderr.close()
        assert not left, f"processes left running: {[p.pid for p in left]}"
        assert _demo_children() == []


def _takes_sigterm(pid: int) -> bool:
    """Whether the app has blocked SIGTERM to take it with ``sigwait`` (or waits for it)."""
    proc = Path(f"/proc/{pid}")
    if "sigtimedwait" in (proc / "wchan").read_text():
        return True  # the kernel unblocks the signals waited for, while it waits
    for line in (proc / "status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def _stop(
    proc: subprocess.Popen[str], limit: float = 3.0, sig: signal.Signals = signal.SIGTERM
) -> float:
    """SIGTERM (or ``sig``), and the seconds until a clean exit."""
    began = time.monotonic()
    proc.send_signal(sig)
    assert proc.wait(limit) == 0
    return time.monotonic() - began


def _get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


class _Stream:
    """A ``GET /stream`` read line by line, telling a clean end from a cut."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
        self.conn.request("GET", "/stream")
        self.response = self.conn.getresponse()
        self._pending = b""
        self.lines: list[str] = []
        self.ended = False  # the terminating chunk arrived

    def read_lines(self, n: int) -> list[str]:
        while len(self.lines) < n and not self.ended:
            self._read()
        return self.lines[:n]

    def read_to_end(self) -> list[str]:
        while not self.ended:
            self._read()
        return self.lines

    def _read(self) -> None:
        data = self.response.read1(65536)  # raises on a cut
        if not data:
            self.ended = True
            return
        *lines, self._pending = (self._pending + data).split(b"\n")
        self.lines += [line.decode() for line in lines]

    def close(self) -> None:
        self.conn.close()


# -- the app ---------------------------------------------------------------------


def test_root_health_and_not_found(apps: Start) -> None:
    proc, port = apps("v1")
    status, headers, body = _get(port, "/")
    assert (status, body) == (200, b"version v1\n")
    assert headers["X-Version"] == "v1"
    assert headers["Content-Length"] == "11"
    assert _get(port, "/health")[::2] == (200, b"ok\n")
    assert _get(port, "/nowhere")[0] == 404
    _stop(proc)


def test_failing_health_is_503_and_the_app_still_serves(apps: Start) -> None:
    proc, port = apps("v2", ZDD_DEMO_HEALTH="failing")
    assert _get(port, "/health")[0] == 503
    assert _get(port, "/")[::2] == (200, b"version v2\n")
    _stop(proc, sig=signal.SIGINT)


def test_a_healthy_but_bad_release_fails_its_share_and_counts_it(apps: Start) -> None:
    proc, port = apps("v3", ZDD_DEMO_ERROR_RATE="10%")
    statuses = Counter(_get(port, "/")[0] for _ in range(100))
    assert statuses == Counter({200: 90, 500: 10})  # spread evenly, not drawn
    assert _get(port, "/health")[0] == 200  # its check passes all along
    status, headers, body = _get(port, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    lines = body.decode().splitlines()
    assert 'zdd_demo_http_requests_total{version="v3",status="200"} 90' in lines
    assert 'zdd_demo_http_requests_total{version="v3",status="500"} 10' in lines
    _stop(proc)
    proc, port = apps("v1")
    assert _get(port, "/metrics")[2].decode().splitlines()[-1] == (
        'zdd_demo_http_requests_total{version="v1",status="200"} 0'
    )
    _stop(proc)


def test_flags_override_the_environment(apps: Start) -> None:
    proc, port = apps("v9", args=("--port", "0", "--version", "v9"), PORT="x", ZDD_VERSION="v1")
    assert _get(port, "/")[2] == b"version v9\n"
    _stop(proc)


def test_keep_alive_reuses_the_connection(apps: Start) -> None:
    proc, port = apps("v1")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        local = set()
        for _ in range(5):
            conn.request("GET", "/")
            response = conn.getresponse()
            assert response.read() == b"version v1\n"
            assert not response.will_close
            assert conn.sock is not None
            local.add(conn.sock.getsockname())
        assert len(local) == 1
    finally:
        conn.close()
    _stop(proc)


def test_stream_ticks(apps: Start) -> None:
    proc, port = apps("v3")
    stream = _Stream(port)
    try:
        assert stream.response.status == 200
        assert stream.response.getheader("Transfer-Encoding") == "chunked"
        assert stream.response.getheader("X-Version") == "v3"
        began = time.monotonic()
        assert stream.read_lines(4) == ["tick v3 0", "tick v3 1", "tick v3 2", "tick v3 3"]
        assert 0.2 < time.monotonic() - began < 1.5  # one tick every 100 ms
    finally:
        stream.close()
    _stop(proc)


def test_sigterm_ends_streams_with_bye_finishes_in_flight_and_exits_0(apps: Start) -> None:
    proc, port = apps("v1")
    stream = _Stream(port)
    idle = socket.create_connection(("127.0.0.1", port), timeout=3)
    slow: list[tuple[int, dict[str, str], bytes]] = []
    errors: list[Exception] = []

    def slow_request() -> None:
        try:
            slow.append(_get(port, "/slow?ms=700"))
        except Exception as e:  # reported by the assertion below
            errors.append(e)

    slow_thread = threading.Thread(target=slow_request)
    try:
        assert stream.read_lines(1) == ["tick v1 0"]
        idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while not reply.endswith(b"version v1\n"):
            reply += idle.recv(4096)  # then it is an idle keep-alive connection
        slow_thread.start()
        time.sleep(0.2)  # the slow request is in flight

        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        # New connections are refused at once, while the slow request still runs.
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except (ConnectionRefusedError, ConnectionResetError):
                break  # reset: a connection caught in the backlog as the listener closed
            assert time.monotonic() - began < 0.5, "still accepting connections"
            time.sleep(0.01)
        assert slow_thread.is_alive()

        lines = stream.read_to_end()  # raises if the stream is cut
        assert lines[-1] == "bye"
        assert all(line.startswith("tick v1 ") for line in lines[:-1])
        assert idle.recv(4096) == b""  # the idle keep-alive connection was closed

        assert proc.wait(3) == 0
        assert time.monotonic() - began < 3
        slow_thread.join(3)
        assert not errors
        [(status, headers, body)] = slow
        assert (status, body) == (200, b"version v1\n")
        assert headers["Connection"] == "close"
    finally:
        stream.close()
        idle.close()
        if slow_thread.ident is not None:
            slow_thread.join(3)


def test_shutdown_delay_keeps_streams_ticking(apps: Start) -> None:
    proc, port = apps("v1", ZDD_DEMO_SHUTDOWN_DELAY="0.5")
    stream = _Stream(port)
    try:
        stream.read_lines(1)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        lines = stream.read_to_end()
        assert lines[-1] == "bye"
        assert len(lines) >= 1 + 3 + 1  # kept ticking through the delay
        assert proc.wait(3) == 0
        assert 0.45 < time.monotonic() - began < 3
    finally:
        stream.close()


def test_boot_delay_and_sigterm_while_booting(apps: Start) -> None:
    began = time.monotonic()
    slow_boot, port = apps("v1", ZDD_DEMO_BOOT_DELAY="0.4")
    assert time.monotonic() - began >= 0.4
    assert _get(port, "/")[0] == 200
    _stop(slow_boot)
    booting, _ = apps("v1", wait=False, ZDD_DEMO_BOOT_DELAY="30")
    deadline = time.monotonic() + 10
    while not _takes_sigterm(booting.pid):  # before that, SIGTERM would simply kill it
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert _stop(booting, limit=2) < 2


def test_bad_environment_is_a_usage_error(apps: Start) -> None:
    proc, _ = apps("v1", wait=False, ZDD_DEMO_BOOT_DELAY="soon")
    assert proc.wait(10) == 2
    assert proc.stderr is not None
    assert "ZDD_DEMO_BOOT_DELAY" in proc.stderr.read()
    for bad in ("lots", "150%", "-0.1", "nan"):
        proc, _ = apps("v1", wait=False, ZDD_DEMO_ERROR_RATE=bad)
        assert proc.wait(10) == 2
        assert proc.stderr is not None
        assert "ZDD_DEMO_ERROR_RATE" in proc.stderr.read()


# -- the load generator ------------------------------------------------------------


def _assert_consistent(report: LoadReport) -> None:
    assert sum(report.failures_by_kind.values()) == report.failed_requests
    assert sum(report.cuts_by_kind.values()) == report.streams_cut
    assert report.streams_opened == (
        report.streams_cut + report.streams_closed_cleanly + report.streams_open_at_stop
    )
    assert not [t for t in threading.enumerate() if t.name.startswith("zdd-load-")]


def test_load_against_one_app_has_no_failures(apps: Start) -> None:
    proc, port = apps("v1")
    with LoadGenerator("127.0.0.1", port, rps=200, streams=5) as load:
        time.sleep(0.5)
        assert load.snapshot().total_requests > 50
        time.sleep(0.5)
    report = load.stop()
    _assert_consistent(report)
    assert report.failed_requests == 0, report.failures_by_kind
    assert report.total_requests >= 150
    assert report.versions_seen == Counter({"v1": report.total_requests})
    assert report.streams_opened == 5
    assert report.streams_cut == 0
    assert report.streams_open_at_stop == 5
    assert report.stream_ticks >= 5 * 5
    assert 0.9 < report.duration_s < 1.5
    _stop(proc)


def test_load_sees_a_graceful_shutdown_as_clean_streams(apps: Start) -> None:
    proc, port = apps("v1")
    load = LoadGenerator("127.0.0.1", port, rps=100, streams=3)
    load.start()
    try:
        time.sleep(0.4)
        _stop(proc)
        time.sleep(0.2)
    finally:
        report = load.stop()
    _assert_consistent(report)
    assert report.streams_closed_cleanly == 3
    assert report.streams_cut == 0
    assert report.stream_open_failures > 0  # reopening, with nothing left to serve


def test_load_sees_a_killed_app(apps: Start) -> None:
    proc, port = apps("v1")
    load = LoadGenerator("127.0.0.1", port, rps=200, streams=5)
    load.start()
    try:
        time.sleep(0.5)
        proc.kill()
        proc.wait(5)
        time.sleep(0.5)
    finally:
        report = load.stop()
    _assert_consistent(report)
    assert report.failed_requests > 0
    assert report.streams_cut == 5
    assert set(report.cuts_by_kind) <= {"incomplete_read", "connection_reset"}
    assert report.failures_by_kind.get("connection_refused", 0) > 0


def test_load_limits_itself(apps: Start) -> None:
    proc, port = apps("v1")
    capped = LoadGenerator("127.0.0.1", port, rps=1000, streams=0, max_requests=20)
    capped.start()
    time.sleep(0.3)
    assert capped.stop().total_requests == 20
    timed = LoadGenerator("127.0.0.1", port, rps=100, streams=1, max_seconds=0.3)
    timed.start()
    time.sleep(0.6)
    report = timed.stop()
    _assert_consistent(report)
    assert report.duration_s == pytest.approx(0.3, abs=0.05)
    assert 20 <= report.total_requests <= 32
    assert timed.stop() is report
    _stop(proc)


@pytest.mark.parametrize("host", ["10.0.0.1", "example.com", "0.0.0.0", "192.168.1.10", ""])
def test_only_loopback_targets(host: str) -> None:
    with pytest.raises(ValueError, match="only targets this machine"):
        LoadGenerator(host, 8080)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_targets_are_accepted(host: str) -> None:
    LoadGenerator(host, 8080)  # constructing it opens nothing
