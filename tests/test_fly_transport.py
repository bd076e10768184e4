"""The Fly Machines API's HTTP layer (``zdd.providers._fly_http``): its transport.

Hermetic: every server here is started on 127.0.0.1 (port 0) in a thread; the
one URL that names a real host (``https://api.machines.dev``) is only ever
reached through a fake CONNECT proxy on 127.0.0.1, which never connects on.
Time is a fake clock that :meth:`FakeTime.sleep` advances, so backoff never
waits; no assertion depends on timing.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs
import pytest

from zdd import ActionFailed, DeploymentLocked, InvalidConfig, ProviderContractError
from zdd.providers import _fly_http
from zdd.providers._fly_http import FlyHTTP, _Failed, _Proxy, _proxy_for

TOKEN = "fm2_TRANSPORT-SECRET-5f3a9c1e7b2d4068"
PROXY_ENV = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY")


# -- fakes ------------------------------------------------------------------------


class FakeTime:
    """A clock that only :meth:`sleep` moves; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


@attrs.frozen
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@attrs.frozen
class Reply:
    status: int = 200
    body: Any = attrs.field(factory=lambda: {"ok": True})
    headers: dict[str, str] = attrs.field(factory=dict)
    close_after: bool = False  # close the connection after answering, without saying so


DROP = None  # a script's answer: read the request, then close without answering
Script = Callable[[Seen, int], "Reply | None"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.owner.lock:
            self.server.owner.connections += 1

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""

    def _serve(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        with owner.lock:
            owner.requests.append(seen)
            index = len(owner.requests) - 1
        reply = owner.script(seen, index)
        if reply is None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        payload = (
            reply.body
            if isinstance(reply.body, bytes)
            else json.dumps(reply.body).encode()
            if reply.body is not None
            else b""
        )
        self.send_response(reply.status)
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        if reply.close_after:
            self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _serve


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: Server


class Server:
    """An HTTP/1.1 keep-alive server on 127.0.0.1 answering by ``script``."""

    def __init__(self, script: Script | None = None) -> None:
        self.script: Script = script or (lambda seen, i: Reply())
        self.lock = threading.Lock()
        self.connections = 0
        self.requests: list[Seen] = []
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def count(self, method: str) -> int:
        with self.lock:
            return sum(1 for r in self.requests if r.method == method)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class FakeProxy:
    """A CONNECT proxy on 127.0.0.1 that records what it is sent and connects nowhere:
    it answers the CONNECT with ``status`` and then closes (after reading what follows,
    the TLS ClientHello, for at most a few seconds)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.lock = threading.Lock()
        self.connections = 0
        self.received: list[bytes] = []
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with owner.lock:
                    owner.connections += 1
                sock: socket.socket = self.request
                sock.settimeout(5.0)
                data = b""
                with contextlib.suppress(OSError):
                    while b"\r\n\r\n" not in data:
                        chunk = sock.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    reason = "Connection established" if owner.status == 200 else "Nope"
                    sock.sendall(f"HTTP/1.1 {owner.status} {reason}\r\n\r\n".encode())
                    if owner.status == 200:
                        chunk = sock.recv(65536)  # the ClientHello, for the API host
                        data += chunk
                with owner.lock:
                    owner.received.append(data)

        class TCPServer(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = TCPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def servers() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(script: Script | None = None) -> Server:
        server = Server(script)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def client(fake_time: FakeTime) -> Iterator[Callable[..., FlyHTTP]]:
    made: list[FlyHTTP] = []

    def make(base_url: str, *, token: str = TOKEN, retries: int = 4, **kwargs: Any) -> FlyHTTP:
        http = FlyHTTP(
            "hello",
            token,
            base_url,
            timeout=10.0,
            retries=retries,
            rng=random.Random(7),
            sleep=fake_time.sleep,
            clock=fake_time.clock,
            **kwargs,
        )
        made.append(http)
        return http

    yield make
    for http in made:
        http.close()


def _text(exc: BaseException) -> str:
    return f"{exc} {exc!r} {getattr(exc, 'message', '')}"


# -- keep-alive -------------------------------------------------------------------


def test_sequential_gets_share_one_connection(
    servers: Callable[..., Server], client: Callable[..., FlyHTTP]
) -> None:
    server = servers()
    http = client(server.url)
    for i in range(100):
        assert http.request("GET", f"/machines/m{i}", action="get", machine=f"m{i}") == {"ok": True}
    assert server.count("GET") == 100
    assert http.connections_opened == 1
    assert server.connections == 1


def test_concurrent_gets_open_at_most_one_connection_a_thread(
    servers: Callable[..., Server], client: Callable[..., FlyHTTP]
) -> None:
    server = servers()
    http = client(server.url)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(n: int) -> None:
        try:
            start.wait(timeout=30)
            for i in range(25):
                http.request("GET", f"/machines/t{n}-{i}", action="get", machine=f"t{n}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert server.count("GET") == 200
    assert 1 <= http.connections_opened <= 8
    assert server.connections == http.connections_opened


def test_a_large_body_is_read_to_its_end_and_the_connection_reused(
    servers: Callable[..., Server], client: Callable[..., FlyHTTP]
) -> None:
    big = [{"id": f"m{i}", "pad": "x" * 200} for i in range(2000)]
    server = servers(lambda seen, i: Reply(body=big))
    http = client(server.url)
    for _ in range(3):
        assert http.request("GET", "/machines", action="list") == big
    assert http.connections_opened == server.connections == 1


def test_the_idle_connections_kept_are_bounded(
    servers: Callable[..., Server], client: Callable[..., FlyHTTP]
) -> None:
    server = servers()
    http = client(server.url, max_idle=2)
    taken = [http._checkout(5.0) for _ in range(3)]
    assert [reused for _, reused in taken] == [False, False, False]
    for conn, _ in taken:
        conn.connect()
        http._checkin(conn)
    assert len(http._idle) == 2
    assert taken[2][0].sock is None  # the surplus one was closed
    assert http.request("GET", "/machines") == {"ok": True}
    assert http.connections_opened == 3
    assert len(http._idle) == 2


def test_connection_close_from_the_server_is_honoured(
    servers: Callable[..., Server], client: Callable[..., FlyHTTP]
) -> None:
    server = servers(lambda seen, i: Reply(headers={"Connection": "close"}))
    http = client(server.url)
    for _ in range(3):
        assert http.request("GET", "/machines/m1") == {"ok": True}
    assert http.connections_opened == server.connections == 3
    assert server.count("GET") == 3


def test_close_closes_the_idle_connections(
    servers: Callable[..., Server], client: Callable[..., FlyHTTP]
) -> None:
    server = servers()
    http = client(server.url)
    http.request("GET", "/machines/m1")
    http.close()
    http.request("GET", "/machines/m1")
    assert http.connections_opened == server.connections == 2


def test_an_idle_connection_the_server_closed_is_replaced_for_a_get(
    servers: Callable[..., Server], client: Callable[..., FlyHTTP], fake_time: FakeTime
) -> None:
    # the server closes each connection after its first answer, without saying so
    server = servers(lambda seen, i: Reply(close_after=True))
    http = client(server.url)
    assert http.request("GET", "/machines/m1") == {"ok": True}
    assert http.request("GET", "/machines/m1") == {"ok": True}
    assert http.connections_opened == server.connections == 2
    assert server.count("GET") == 2
    assert fake_time.sleeps == []  # not a retry: no backoff


def test_a_get_dropped_on_a_reused_connection_is_sent_once_more(
    servers: Callable[..., Server], client: Callable[..., FlyHTTP], fake_time: FakeTime
) -> None:
    # the second request (on the kept-alive connection) is read and dropped unanswered
    server = servers(lambda seen, i: DROP if i == 1 else Reply())
    http = client(server.url)
    http.request("GET", "/machines/m1")
    assert http.request("GET", "/machines/m1", retry=False) == {"ok": True}
    assert server.count("GET") == 3
    assert http.connections_opened == server.connections == 2
    assert fake_time.sleeps == []


def test_a_post_dropped_on_a_reused_connection_is_transient_and_not_resent(
    servers: Callable[..., Server], client: Callable[..., FlyHTTP], fake_time: FakeTime
) -> None:
    server = servers(lambda seen, i: DROP if seen.method == "POST" else Reply())
    http = client(server.url)
    http.request("GET", "/machines/m1")
    with pytest.raises(ActionFailed) as caught:
        http.request("POST", "/machines", body={"config": {}}, action="create", retry=False)
    assert caught.value.transient
    assert "not resent" in str(caught.value)
    assert server.count("POST") == 1
    assert http.connections_opened == 1
    assert fake_time.sleeps == []
    # the pool is sound afterwards
    assert http.request("GET", "/machines/m1") == {"ok": True}
    assert http.connections_opened == server.connections == 2


def test_a_post_marked_idempotent_is_retried_by_the_loop_with_backoff(
    servers: Callable[..., Server], client: Callable[..., FlyHTTP], fake_time: FakeTime
) -> None:
    server = servers(lambda seen, i: DROP if i == 1 else Reply())
    http = client(server.url)
    http.request("GET", "/machines/m1")
    assert http.request("POST", "/machines/m1/cordon", action="cordon", machine="m1") == {
        "ok": True
    }
    assert server.count("POST") == 2
    assert len(fake_time.sleeps) == 1


# -- redirects --------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_port_is_not_followed(
    status: int, servers: Callable[..., Server], client: Callable[..., FlyHTTP]
) -> None:
    target = servers()
    location = f"http://mallory-user:mallory-pass@127.0.0.1:{target.port}/steal?q=hidden-query"
    api = servers(lambda seen, i: Reply(status, {}, {"Location": location}))
    http = client(api.url)
    with pytest.raises(_Failed) as caught:
        http.request("GET", "/machines/m1")
    text = _text(caught.value)
    assert caught.value.status == status
    assert not caught.value.transient
    assert f"http://127.0.0.1:{target.port}" in text
    assert "redirect" in text and "not followed" in text
    for secret in ("mallory-user", "mallory-pass", "/steal", "hidden-query"):
        assert secret not in text
    assert target.connections == 0 and target.requests == []
    assert api.count("GET") == 1  # not retried either


@pytest.mark.parametrize(
    ("location", "origin"),
    [
        ("https://other.example:8443/v1/apps/hello?x=1", "https://other.example:8443"),
        ("https://other.example/path", "https://other.example:443"),
        ("http://[::1]:9/x", "http://[::1]:9"),
    ],
)
def test_a_redirect_to_another_host_names_only_its_origin(
    location: str, origin: str, servers: Callable[..., Server], client: Callable[..., FlyHTTP]
) -> None:
    api = servers(lambda seen, i: Reply(302, {}, {"Location": location}))
    http = client(api.url)
    with pytest.raises(_Failed) as caught:
        http.request("POST", "/machines/m1/start", action="start", machine="m1")
    text = str(caught.value)
    assert origin in text
    assert "path" not in text and "x=1" not in text and "/v1/apps/hello?" not in text
    assert api.count("POST") == 1


def test_a_relative_redirect_names_the_apis_own_origin(
    servers: Callable[..., Server], client: Callable[..., FlyHTTP]
) -> None:
    api = servers(lambda seen, i: Reply(307, {}, {"Location": "/elsewhere?secret=1"}))
    http = client(api.url)
    with pytest.raises(_Failed) as caught:
        http.request("GET", "/machines")
    assert f"http://127.0.0.1:{api.port}" in str(caught.value)
    assert "elsewhere" not in str(caught.value)
    assert api.count("GET") == 1


# -- proxies ----------------------------------------------------------------------


def test_http_proxy_is_never_used_for_a_loopback_http_url(
    monkeypatch: pytest.MonkeyPatch, servers: Callable[..., Server], client: Callable[..., FlyHTTP]
) -> None:
    proxy = FakeProxy()
    try:
        for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy.url)
        api = servers()
        http = client(api.url)
        assert http.request("GET", "/machines/m1") == {"ok": True}
        assert api.count("GET") == 1
        assert proxy.connections == 0
    finally:
        proxy.stop()


def test_the_proxy_is_chosen_for_https_only_and_from_https_proxy() -> None:
    url = "https://api.machines.dev"
    assert _proxy_for(url, {"https_proxy": "http://proxy.corp:3128"}) == _Proxy("proxy.corp", 3128)
    assert _proxy_for(url, {"HTTPS_PROXY": "http://proxy.corp"}) == _Proxy("proxy.corp", 80)
    assert _proxy_for(url, {"https_proxy": "http://low:1", "HTTPS_PROXY": "http://up:2"}) == (
        _Proxy("low", 1)
    )
    assert _proxy_for(url, {"https_proxy": "proxy.corp:3128"}) == _Proxy("proxy.corp", 3128)
    assert _proxy_for(url, {"http_proxy": "http://proxy.corp:3128"}) is None
    assert _proxy_for(url, {"HTTP_PROXY": "http://proxy.corp:3128"}) is None
    assert _proxy_for(url, {}) is None
    assert _proxy_for(url, {"https_proxy": ""}) is None
    # plain http (loopback only) and https to loopback: no proxy can reach those
    env = {"https_proxy": "http://proxy.corp:3128", "http_proxy": "http://proxy.corp:3128"}
    assert _proxy_for("http://127.0.0.1:4280", env) is None
    assert _proxy_for("https://localhost:4443", env) is None


@pytest.mark.parametrize(
    ("no_proxy", "bypassed"),
    [
        ("api.machines.dev", True),
        ("machines.dev", True),
        (".machines.dev", True),
        ("example.com, MACHINES.DEV", True),
        ("*", True),
        ("api.machines.dev:443", True),
        ("api.machines.dev:8443", False),
        ("example.com", False),
        ("chines.dev", False),
        ("", False),
    ],
)
def test_no_proxy_is_honoured(no_proxy: str, bypassed: bool) -> None:
    for name in ("no_proxy", "NO_PROXY"):
        env = {"https_proxy": "http://proxy.corp:3128", name: no_proxy}
        found = _proxy_for("https://api.machines.dev", env)
        assert (found is None) is bypassed, (name, no_proxy)


@pytest.mark.parametrize(
    "value", ["socks5://proxy.corp:1080", "ftp://proxy.corp", "file:///etc/passwd", "http://"]
)
def test_a_proxy_url_that_is_not_http_is_refused(value: str) -> None:
    with pytest.raises(InvalidConfig) as caught:
        _proxy_for("https://api.machines.dev", {"https_proxy": value})
    assert caught.value.field == "https_proxy"


def test_proxy_credentials_go_in_proxy_authorization_and_are_never_shown() -> None:
    env = {"https_proxy": "http://proxy-user-zq:proxy%40pass-zq@proxy.corp:3128"}
    proxy = _proxy_for("https://api.machines.dev", env)
    assert proxy is not None
    expected = base64.b64encode(b"proxy-user-zq:proxy@pass-zq").decode()
    assert proxy.headers == {"Proxy-Authorization": f"Basic {expected}"}
    assert "pass-zq" not in repr(proxy) and expected not in repr(proxy)
    # an https:// proxy URL cannot carry them: they would go in the clear
    env = {"https_proxy": "https://proxy-user-zq:proxy-pass-zq@proxy.corp:3128"}
    with pytest.raises(InvalidConfig) as caught:
        _proxy_for("https://api.machines.dev", env)
    assert caught.value.field == "https_proxy"
    assert "proxy-user-zq" not in str(caught.value)
    assert "proxy-pass-zq" not in str(caught.value)
    assert "***@proxy.corp:3128" in str(caught.value)
    with pytest.raises(InvalidConfig) as caught:
        _proxy_for("https://api.machines.dev", {"https_proxy": "socks5://u-zq:p-zq@proxy.corp"})
    assert "u-zq" not in str(caught.value) and "p-zq" not in str(caught.value)


def test_https_goes_through_a_connect_tunnel_the_proxy_cannot_read(
    monkeypatch: pytest.MonkeyPatch, client: Callable[..., FlyHTTP]
) -> None:
    proxy = FakeProxy(status=200)
    try:
        monkeypatch.setenv("HTTPS_PROXY", f"http://tunnel-user:tunnel-pass@127.0.0.1:{proxy.port}")
        http = client("https://api.machines.dev")
        with pytest.raises(ActionFailed) as caught:
            # the fake proxy hangs up instead of relaying the TLS handshake
            http.request("GET", "/machines", action="list", retry=False)
        assert caught.value.transient
        assert proxy.connections == 1
        (data,) = proxy.received
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        assert head.splitlines()[0] == "CONNECT api.machines.dev:443 HTTP/1.0"
        expected = base64.b64encode(b"tunnel-user:tunnel-pass").decode()
        assert f"Proxy-Authorization: Basic {expected}" in head
        assert TOKEN.encode() not in data
        assert b"Authorization: Bearer" not in data
        assert b"/v1/apps" not in data  # the request itself goes inside TLS only
        for secret in (TOKEN, "tunnel-pass", expected):
            assert secret not in _text(caught.value)
            assert secret not in repr(http)
    finally:
        proxy.stop()


def test_a_proxy_refusing_the_tunnel_is_reported_without_its_credentials(
    monkeypatch: pytest.MonkeyPatch, client: Callable[..., FlyHTTP], fake_time: FakeTime
) -> None:
    proxy = FakeProxy(status=407)
    try:
        monkeypatch.setenv("https_proxy", f"http://tunnel-user:tunnel-pass@127.0.0.1:{proxy.port}")
        http = client("https://api.machines.dev")
        with pytest.raises(ActionFailed) as caught:
            http.request("GET", "/machines", action="list")
        assert not caught.value.transient  # a wrong password does not get better
        assert "407" in str(caught.value)
        assert "tunnel-pass" not in _text(caught.value)
        assert proxy.connections == 1
        assert fake_time.sleeps == []
    finally:
        proxy.stop()


# -- the token and the base URL ---------------------------------------------------


@pytest.mark.parametrize(
    ("token", "what"),
    [
        ("SECRETHEAD-zq\nSECRETTAIL-zq", "control character"),
        ("SECRETHEAD-zq\rSECRETTAIL-zq", "control character"),
        ("SECRETHEAD-zq\x00SECRETTAIL-zq", "control character"),
        ("SECRETHEAD-zq\x7fSECRETTAIL-zq", "control character"),
        ("SECRETHEAD-zq\tSECRETTAIL-zq", "control character"),
        ("SECRETHEAD-zq\u00e9SECRETTAIL-zq", "non-ASCII"),
        ("SECRETHEAD-zq\u201cSECRETTAIL-zq", "non-ASCII"),
        ("SECRETHEAD-zq\u0085SECRETTAIL-zq", "non-ASCII"),
    ],
)
def test_a_token_that_cannot_be_a_header_is_refused(
    token: str, what: str, client: Callable[..., FlyHTTP]
) -> None:
    with pytest.raises(InvalidConfig) as caught:
        client("https://api.machines.dev", token=token)
    text = _text(caught.value)
    assert caught.value.field == "token"
    assert what in text
    assert "fly tokens deploy" in text
    assert "SECRETHEAD" not in text and "SECRETTAIL" not in text


def test_a_flyv1_token_is_sent_as_is(
    servers: Callable[..., Server], client: Callable[..., FlyHTTP]
) -> None:
    server = servers()
    client(server.url, token="FlyV1 fm2_abc,fm2_def").request("GET", "/machines")
    client(server.url).request("GET", "/machines")
    assert [r.headers["authorization"] for r in server.requests] == [
        "FlyV1 fm2_abc,fm2_def",
        f"Bearer {TOKEN}",
    ]


@pytest.mark.parametrize("url", ["", " ", "\t\n"])
def test_an_empty_base_url_is_refused(url: str, client: Callable[..., FlyHTTP]) -> None:
    with pytest.raises(InvalidConfig) as caught:
        client(url)
    assert caught.value.field == "base_url"
    assert "empty" in str(caught.value)
    assert "https://api.machines.dev" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://alice-zq:hunter-zq@api.example.com/x",
        "https://alice-zq@api.example.com",
        "https://alice-zq:@api.example.com",
        "https://:hunter-zq@api.example.com",
        "http://alice-zq:hunter-zq@127.0.0.1:4280",
        "ftp://alice-zq:hunter-zq@api.example.com",
        "https://alice-zq:hun@ter-zq@api.example.com",
    ],
)
def test_a_base_url_with_credentials_is_refused_without_showing_them(
    url: str, client: Callable[..., FlyHTTP]
) -> None:
    with pytest.raises(InvalidConfig) as caught:
        client(url)
    text = _text(caught.value)
    assert caught.value.field == "base_url"
    assert "***@" in text
    for secret in ("alice", "hunter", "ter-zq"):
        assert secret not in text
    if url.startswith("http"):
        assert "FLY_API_TOKEN" in text


@pytest.mark.parametrize(
    "url",
    ["ftp://api.example.com", "https://", "api.machines.dev", "https://api.example.com:port"],
)
def test_a_base_url_that_is_not_http_is_refused(url: str, client: Callable[..., FlyHTTP]) -> None:
    with pytest.raises(InvalidConfig) as caught:
        client(url)
    assert caught.value.field == "base_url"


def test_plain_http_is_only_for_loopback(client: Callable[..., FlyHTTP]) -> None:
    with pytest.raises(InvalidConfig, match="https is required"):
        client("http://api.machines.dev")
    assert client("http://localhost:4280").base_url == "http://localhost:4280"
    assert client("http://[::1]:4280/").base_url == "http://[::1]:4280"


def test_a_base_url_path_is_kept_as_a_prefix(
    servers: Callable[..., Server], client: Callable[..., FlyHTTP]
) -> None:
    server = servers()
    http = client(server.url + "/prefix/")
    assert http.base_url == server.url + "/prefix"
    http.request("GET", "/machines", query={"limit": "10"})
    assert server.requests[0].path == "/prefix/v1/apps/hello/machines?limit=10"
    assert TOKEN not in repr(http)


# -- retries ----------------------------------------------------------------------


def test_a_get_is_retried_on_500(
    servers: Callable[..., Server], client: Callable[..., FlyHTTP], fake_time: FakeTime
) -> None:
    server = servers(lambda seen, i: Reply(500, {"error": "boom"}) if i == 0 else Reply())
    assert client(server.url).request("GET", "/machines/m1") == {"ok": True}
    assert server.count("GET") == 2
    assert len(fake_time.sleeps) == 1


def test_a_get_retried_on_429_honours_retry_after(
    servers: Callable[..., Server], client: Callable[..., FlyHTTP], fake_time: FakeTime
) -> None:
    server = servers(
        lambda seen, i: (
            Reply(429, {"error": "slow down"}, {"Retry-After": "7"}) if i < 2 else Reply()
        )
    )
    assert client(server.url).request("GET", "/machines/m1") == {"ok": True}
    assert server.count("GET") == 3
    assert fake_time.sleeps == [7.0, 7.0]


def test_a_get_is_retried_on_a_dropped_connection(
    servers: Callable[..., Server], client: Callable[..., FlyHTTP], fake_time: FakeTime
) -> None:
    # the very first request, on a new connection: dropped, so the retry loop's to retry
    server = servers(lambda seen, i: DROP if i == 0 else Reply())
    http = client(server.url)
    assert http.request("GET", "/machines/m1") == {"ok": True}
    assert server.count("GET") == 2
    assert len(fake_time.sleeps) == 1
    assert http.connections_opened == server.connections == 2


def test_retries_give_up_after_the_last_attempt(
    servers: Callable[..., Server], client: Callable[..., FlyHTTP], fake_time: FakeTime
) -> None:
    server = servers(lambda seen, i: Reply(503, {"error": "unavailable"}))
    with pytest.raises(_Failed) as caught:
        client(server.url, retries=3).request("GET", "/machines/m1")
    assert caught.value.status == 503 and caught.value.transient
    assert server.count("GET") == 3
    assert len(fake_time.sleeps) == 2


def test_a_post_not_marked_idempotent_is_sent_once(
    servers: Callable[..., Server], client: Callable[..., FlyHTTP], fake_time: FakeTime
) -> None:
    server = servers(lambda seen, i: Reply(500, {"error": "boom"}))
    http = client(server.url)
    with pytest.raises(ActionFailed) as caught:
        http.request("POST", "/machines", body={"config": {}}, action="create", retry=False)
    assert caught.value.transient
    assert _fly_http._status(caught.value) == 500
    assert server.count("POST") == 1
    assert fake_time.sleeps == []


def test_a_post_on_a_new_connection_dropped_is_transient_and_sent_once(
    servers: Callable[..., Server], client: Callable[..., FlyHTTP], fake_time: FakeTime
) -> None:
    server = servers(lambda seen, i: DROP)
    with pytest.raises(ActionFailed) as caught:
        client(server.url).request("POST", "/machines", body={}, action="create", retry=False)
    assert caught.value.transient
    assert server.count("POST") == 1
    assert fake_time.sleeps == []


def test_404_is_not_retried(
    servers: Callable[..., Server], client: Callable[..., FlyHTTP], fake_time: FakeTime
) -> None:
    server = servers(lambda seen, i: Reply(404, {"error": "machine not found"}))
    with pytest.raises(_Failed) as caught:
        client(server.url).request("GET", "/machines/m9")
    assert caught.value.status == 404 and not caught.value.transient
    assert "machine not found" in str(caught.value)
    assert server.count("GET") == 1
    assert fake_time.sleeps == []


def test_408_can_be_left_out_of_the_retried_statuses(
    servers: Callable[..., Server], client: Callable[..., FlyHTTP], fake_time: FakeTime
) -> None:
    server = servers(lambda seen, i: Reply(408, {"error": "timeout"}))
    statuses = frozenset(_fly_http._TRANSIENT - {408})
    with pytest.raises(_Failed) as caught:
        client(server.url).request("GET", "/machines/m1/wait", retry_statuses=statuses)
    assert caught.value.status == 408
    assert server.count("GET") == 1


def test_a_held_lease_is_deployment_locked(
    servers: Callable[..., Server], client: Callable[..., FlyHTTP]
) -> None:
    server = servers(
        lambda seen, i: Reply(
            409, {"error": "lease currently held by bob@example.com, expires at 2030-01-01"}
        )
    )
    with pytest.raises(DeploymentLocked) as caught:
        client(server.url).request("POST", "/machines/m1/lease", body={"ttl": 30})
    assert caught.value.holder == "bob@example.com"


def test_a_body_that_is_not_json_is_transient(
    servers: Callable[..., Server], client: Callable[..., FlyHTTP], fake_time: FakeTime
) -> None:
    server = servers(lambda seen, i: Reply(200, b"<html>oops") if i == 0 else Reply())
    assert client(server.url).request("GET", "/machines") == {"ok": True}
    assert server.count("GET") == 2


# -- the token never leaks --------------------------------------------------------


def _echo(seen: Seen, i: int) -> Reply:
    auth = seen.headers.get("authorization", "")
    if seen.path.endswith("/json"):
        return Reply(500, {"error": f"bad credentials: {auth}"})
    if seen.path.endswith("/raw"):
        return Reply(400, f"raw echo {auth} {TOKEN}".encode())
    if seen.path.endswith("/conflict"):
        return Reply(409, {"message": f"conflict for {TOKEN}"})
    return Reply(302, {}, {"Location": f"https://{TOKEN}.evil.example/?t={TOKEN}"})


@pytest.mark.parametrize("retry", [True, False])
def test_the_token_never_appears_in_errors_even_when_the_server_echoes_it(
    retry: bool, servers: Callable[..., Server], client: Callable[..., FlyHTTP]
) -> None:
    server = servers(_echo)
    http = client(server.url, retries=2)
    texts = []
    for kind in ("json", "raw", "conflict", "redirect"):
        with pytest.raises(ActionFailed) as caught:
            http.request("GET", f"/machines/m1/{kind}", retry=retry)
        texts.append(_text(caught.value))
    assert "bad credentials" in texts[0]
    assert "raw echo" in texts[1]
    assert "conflict for" in texts[2]
    assert "redirect" in texts[3]
    for text in texts:
        assert TOKEN not in text
        assert TOKEN[5:25] not in text
    assert TOKEN not in repr(http)


def test_a_header_value_that_cannot_be_sent_is_refused_without_quoting_it(
    servers: Callable[..., Server], client: Callable[..., FlyHTTP]
) -> None:
    server = servers()
    http = client(server.url)
    for headers in (
        {"fly-machine-lease-nonce": f"nonce-zq\r\nX-Evil: {TOKEN}"},
        {"bad header": "x"},
    ):
        with pytest.raises(ProviderContractError) as caught:
            http.request("DELETE", "/machines/m1/lease", headers=headers)
        assert "nonce-zq" not in str(caught.value)
        assert TOKEN not in _text(caught.value)
    assert server.requests == []


def test_a_transport_error_is_scrubbed(
    monkeypatch: pytest.MonkeyPatch, servers: Callable[..., Server], client: Callable[..., FlyHTTP]
) -> None:
    server = servers()
    http = client(server.url)

    def explode(*args: Any, **kwargs: Any) -> None:
        raise OSError(f"Invalid header value b'Bearer {TOKEN}'")

    monkeypatch.setattr(HTTPConnection, "request", explode)
    with pytest.raises(ActionFailed) as caught:
        http.request("GET", "/machines", retry=False)
    assert caught.value.transient
    assert TOKEN not in _text(caught.value)
    assert "<redacted>" in str(caught.value)
