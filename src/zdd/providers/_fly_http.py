"""The Fly Machines API's HTTP layer: one request, its transport, pacing and retries.

:class:`FlyHTTP` knows nothing of machines, leases or zdd's actions: that mapping
is ``fly.py``'s. Its rules:

* **one keep-alive pool**: requests go over :mod:`http.client` connections kept
  in a thread-safe pool (a LIFO of at most ``max_idle``, default 32, idle
  connections; each in use by one thread at a time), so a deployment opens about as many TCP and TLS
  connections as it has concurrent requests, not one per request
  (:attr:`FlyHTTP.connections_opened` counts them). Every response body is read
  to its end; a connection is dropped after any error and when the server
  answers ``Connection: close``. An idle connection the server has closed is
  noticed before it is used when it can be; when it cannot (the server closed
  it as the request went out), a GET is sent once more on a new connection, and
  any other method fails as transient, never resent here: the request may have
  been carried out.
* **one retry owner**: this layer retries only what its caller marks
  idempotent (``retry=True``, the default): the statuses in ``retry_statuses``
  (408, 429, 5xx) and transport errors, up to ``retries`` attempts, with
  exponential backoff and jitter honouring ``Retry-After``. With
  ``retry=False`` there is exactly one attempt, and a failure worth retrying is
  raised as transient (:attr:`~zdd.ActionFailed.transient`) for the caller,
  which knows how to retry it safely (a create looks for its key first).
  Requests are paced per action and machine to Fly's limits (:meth:`FlyHTTP._pace`).
* **the token** goes only in the ``Authorization`` header, and only to the API's
  origin: redirects are never followed (a 3xx answer is an error naming only
  the target's origin), https is required unless the host is loopback (the
  tests' server) and TLS is always verified. The token is refused when it holds
  a control or non-ASCII character (it could not be a header), and it is
  scrubbed from every error text, the server's included. An API URL with
  credentials in it is refused, and never printed with them.
* **proxies**: ``https_proxy``/``HTTPS_PROXY`` is honoured (unless ``no_proxy``/
  ``NO_PROXY`` names the host, or the host is loopback) through a ``CONNECT``
  tunnel, so TLS runs end to end with the API host and the proxy never sees the
  token; credentials in the proxy URL are sent as ``Proxy-Authorization: Basic``
  and never printed. ``http_proxy`` is never used: plain http goes only to
  loopback, where no proxy applies.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import ipaddress
import json
import os
import random
import re
import select
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .._errors import ActionFailed, DeploymentLocked, InvalidConfig, ProviderContractError

__all__ = ["DEFAULT_BASE_URL", "FlyHTTP"]


DEFAULT_BASE_URL = "https://api.machines.dev"


_TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})
_MAX_IDLE = 32  # fly.py runs up to 32 requests at once (FlyMachines.parallel)
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _Failed(ActionFailed):
    """An action that failed with an HTTP status."""

    def __init__(self, message: str, *, status: int, transient: bool) -> None:
        super().__init__(message, transient=transient)
        self.status = status


@attrs.define(eq=False)
class _Bucket:
    rate: float
    burst: float
    tokens: float
    last: float


@attrs.frozen
class _Proxy:
    """A CONNECT proxy: where it is, and the headers of its tunnel (credentials)."""

    host: str
    port: int
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"_Proxy({self.host}:{self.port})"


def _status(exc: ActionFailed) -> int | None:
    return exc.status if isinstance(exc, _Failed) else None


# -- configuration checks ---------------------------------------------------------


def _redact_url(url: str) -> str:
    """``url`` with any userinfo (``user:password@``) replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return f"{scheme}{sep}{netloc}{tail}"


def _check_base_url(url: str, field: str = "base_url") -> str:
    if not url.strip():
        raise InvalidConfig(
            f"is empty; give an http(s) URL such as {DEFAULT_BASE_URL}, or leave it unset "
            "(ZDD_FLY_API_URL too) for the real API",
            field=field,
        )
    url = url.strip()
    shown = _redact_url(url)
    if _CONTROL.search(url) or " " in url:
        raise InvalidConfig(
            f"{shown!r} contains a space or a control character; give the URL alone",
            field=field,
        )
    try:
        parsed = urllib.parse.urlsplit(url)
        parsed.port  # noqa: B018 (a port that is not a number raises)
    except ValueError:
        raise InvalidConfig(f"{shown!r} is not a valid http(s) URL", field=field) from None
    if "@" in parsed.netloc:
        raise InvalidConfig(
            f"{shown!r} has credentials in it; give the URL without them and the token "
            "apart (FLY_API_TOKEN, or the metrics gate's token_env)",
            field=field,
        )
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise InvalidConfig(f"{shown!r} is not an http(s) URL", field=field)
    if parsed.scheme == "http" and not _loopback(parsed.hostname):
        raise InvalidConfig(
            f"{shown!r}: https is required (plain http only to a loopback address)",
            field=field,
        )
    return url.rstrip("/")


def _check_token(token: str) -> None:
    how = "copy it again, e.g. from `fly tokens deploy`, and pass it alone"
    if _CONTROL.search(token):
        raise InvalidConfig(
            f"the API token contains a control character (a newline?); {how}", field="token"
        )
    if not token.isascii():
        raise InvalidConfig(
            "the API token contains a non-ASCII character (a typographic quote or a "
            f"stray character from copying?); {how}",
            field="token",
        )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _env(environ: Mapping[str, str], name: str) -> str:
    """``name`` from the environment, the lowercase spelling first (as curl and urllib)."""
    return (environ.get(name.lower()) or environ.get(name.upper()) or "").strip()


def _bypass(host: str, port: int, no_proxy: str) -> bool:
    """Whether ``no_proxy`` names ``host`` (as :func:`urllib.request.proxy_bypass_environment`
    reads it: ``*``, or comma-separated names, each matching itself and its subdomains,
    optionally with a port)."""
    if no_proxy == "*":
        return True
    host = host.lower()
    for entry in no_proxy.split(","):
        name = entry.strip().lstrip(".").lower()
        if not name:
            continue
        for candidate in (host, f"{host}:{port}"):
            if candidate == name or candidate.endswith("." + name):
                return True
    return False


def _proxy_for(base_url: str, environ: Mapping[str, str] | None = None) -> _Proxy | None:
    """The CONNECT proxy for ``base_url``: ``https_proxy`` for an https URL, unless
    ``no_proxy`` names its host or the host is loopback; never one for plain http."""
    environ = os.environ if environ is None else environ
    parsed = urllib.parse.urlsplit(base_url)
    host = parsed.hostname or ""
    if parsed.scheme != "https" or _loopback(host):
        return None
    raw = _env(environ, "https_proxy")
    if not raw:
        return None
    if _bypass(host, parsed.port or 443, _env(environ, "no_proxy")):
        return None
    if "://" not in raw:
        raw = "http://" + raw  # "proxy:3128", as curl reads it
    shown = _redact_url(raw)
    try:
        proxy = urllib.parse.urlsplit(raw)
        port = proxy.port
    except ValueError:
        raise InvalidConfig(
            f"{shown!r} is not a valid proxy URL; use http://host:port", field="https_proxy"
        ) from None
    if proxy.scheme not in ("http", "https") or not proxy.hostname:
        raise InvalidConfig(
            f"{shown!r} is not an http(s) proxy URL; use http://host:port (a CONNECT proxy)",
            field="https_proxy",
        )
    headers: dict[str, str] = {}
    if proxy.username is not None or proxy.password is not None:
        if proxy.scheme == "https":
            # http.client cannot speak TLS to the proxy itself: the credentials would
            # go in the clear to a proxy the URL says is reached over TLS
            raise InvalidConfig(
                f"{shown!r}: TLS to the proxy is not supported, so its credentials would "
                "be sent in the clear; use an http:// proxy URL (the API's own TLS "
                "session runs through the tunnel either way)",
                field="https_proxy",
            )
        user = urllib.parse.unquote(proxy.username or "")
        password = urllib.parse.unquote(proxy.password or "")
        if _CONTROL.search(user + password):
            raise InvalidConfig(
                f"{shown!r}: the proxy credentials contain a control character",
                field="https_proxy",
            )
        basic = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers["Proxy-Authorization"] = f"Basic {basic}"
    default_port = 443 if proxy.scheme == "https" else 80
    return _Proxy(proxy.hostname, port or default_port, headers)


# -- small helpers ----------------------------------------------------------------


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, min(60.0, seconds))


def _origin(location: str | None, base_url: str) -> str:
    """The origin (``scheme://host:port``) of a redirect's target, nothing more."""
    if not location:
        return "no location"
    try:
        target = urllib.parse.urlsplit(urllib.parse.urljoin(base_url + "/", location.strip()))
        host = target.hostname
        port = target.port
    except ValueError:
        return "an unreadable location"
    if not host or target.scheme not in ("http", "https"):
        return "a location that is not an http(s) URL"
    if ":" in host:
        host = f"[{host}]"
    return f"{target.scheme}://{host}:{port or (443 if target.scheme == 'https' else 80)}"


def _locked(message: str) -> DeploymentLocked:
    holder = message.split("lease currently held by", 1)[1].strip()
    holder, _, expires = holder.partition(", expires at")
    holder = holder.strip().rstrip(",") or "someone"
    return DeploymentLocked(
        f"the app is locked: a lease is held by {holder}"
        + (f" until {expires.strip()}" if expires else "")
        + "; wait for it to expire or ask its holder",
        holder=holder,
        since=None,
    )


def _readable(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read: the server closed it (or
    sent what it should not have); either way it cannot carry a request."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _nodelay(sock: Any) -> None:
    """A request is one write: nothing to gain from Nagle's algorithm, only delays."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _quickack(sock: Any) -> None:
    """Acknowledge the answer's first segment at once (Linux), which keeps a server that
    writes its headers and body apart, with Nagle's algorithm on, from waiting for our
    delayed ACK (40 ms a request on a kept-alive connection)."""
    option = getattr(socket, "TCP_QUICKACK", None)
    if option is not None and sock is not None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, option, 1)


# -- connections ------------------------------------------------------------------


class _HTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, opened: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._opened = opened

    def connect(self) -> None:
        super().connect()
        _nodelay(self.sock)
        self._opened()


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, opened: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._opened = opened

    def connect(self) -> None:
        super().connect()
        _nodelay(self.sock)
        self._opened()


@attrs.frozen
class _Answer:
    status: int
    headers: dict[str, str]
    raw: bytes


class _Transport(Exception):
    """A transport error (kept apart from HTTP answers until it is turned into text)."""

    def __init__(self, exc: BaseException, *, transient: bool, hint: str = "") -> None:
        super().__init__(type(exc).__name__)
        self.exc = exc
        self.transient = transient
        self.hint = hint


class FlyHTTP:
    """Requests to one app's Machines API (see the module docstring).

    ``max_idle``: idle connections kept for reuse (at least the requests in flight at
    once, or the surplus is closed after each burst). ``rate_scale``: multiplies the
    paced request rates (for a test server whose clock runs faster than wall time).

    Attributes:
        connections_opened: TCP (and TLS) connections established so far.
    """

    def __init__(
        self,
        app: str,
        token: str,
        base_url: str,
        *,
        timeout: float,
        retries: int,
        rng: random.Random,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        max_idle: int = _MAX_IDLE,
        rate_scale: float = 1.0,
    ) -> None:
        _check_token(token)
        self.app = app
        self._token = token
        self._auth = token if token.startswith("FlyV1 ") else f"Bearer {token}"
        self.base_url = _check_base_url(base_url)
        parsed = urllib.parse.urlsplit(self.base_url)
        assert parsed.hostname is not None
        self._scheme = parsed.scheme
        self._host = parsed.hostname
        self._port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self._prefix = parsed.path.rstrip("/")
        self._base_query = parsed.query
        self._proxy = _proxy_for(self.base_url)
        self._secrets = [s for s in (self._auth, token) if s]
        if self._proxy is not None:
            self._secrets.extend(self._proxy.headers.values())
        self.timeout = timeout
        self.retries = retries
        self._rng = rng
        self._sleep = sleep
        self._clock = clock
        self._ssl = ssl.create_default_context()  # verified, with hostname checks: always
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._idle: list[http.client.HTTPConnection] = []
        self._max_idle = max(0, max_idle)
        self._rate_scale = rate_scale if rate_scale > 0 else 1.0
        self.connections_opened = 0

    def __repr__(self) -> str:
        return f"FlyHTTP(app={self.app!r}, base_url={self.base_url!r}, token=<redacted>)"

    def __enter__(self) -> FlyHTTP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the idle connections (the ones in use are closed when given back)."""
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- requests -------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        body, _ = self.request_full(method, path, **kwargs)
        return body

    def request_full(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        action: str = "get",
        machine: str = "",
        retry: bool = True,
        retry_statuses: frozenset[int] = _TRANSIENT,
        timeout: float | None = None,
    ) -> tuple[Any, dict[str, str]]:
        """One request; ``retry``: it is idempotent, so transient failures are retried here."""
        target = f"{self._prefix}/v1/apps/{_q(self.app)}{path}"
        params = "&".join(p for p in (self._base_query, urllib.parse.urlencode(query or {})) if p)
        if params:
            target += "?" + params
        data = json.dumps(body).encode() if body is not None else None
        sent = self._headers(method, path, data is not None, headers or {})
        attempts = max(1, self.retries) if retry else 1
        last: ActionFailed | None = None
        for attempt in range(attempts):
            self._pace(action, machine)
            retry_after: float | None = None
            try:
                answer = self._exchange(method, target, data, sent, timeout or self.timeout)
            except _Transport as exc:
                failure = self._transport_failure(method, path, exc)
                if not isinstance(failure, ActionFailed) or not failure.transient:
                    raise failure from None
                last = failure
            else:
                status = answer.status
                if 200 <= status < 300:
                    try:
                        return (json.loads(answer.raw) if answer.raw.strip() else None), dict(
                            answer.headers
                        )
                    except ValueError:
                        # a cut or garbled answer: transient, as a dropped connection is
                        last = ActionFailed(
                            f"{method} {path}: HTTP {status} with a body that is not JSON",
                            transient=True,
                        )
                elif 300 <= status < 400:
                    raise _Failed(
                        self.scrub(
                            f"{method} {path}: the API answered a redirect (HTTP {status}) to "
                            f"{_origin(answer.headers.get('location'), self.base_url)}; it "
                            "was not followed (check the API URL)"
                        ),
                        status=status,
                        transient=False,
                    ) from None
                else:
                    message = self._error_message(answer)
                    if status == 409 and "lease currently held by" in message:
                        raise _locked(message) from None
                    failure = _Failed(
                        f"{method} {path}: HTTP {status}: {message}",
                        status=status,
                        transient=status in _TRANSIENT,
                    )
                    if status not in retry_statuses:
                        raise failure from None
                    last = failure
                    retry_after = _retry_after(answer.headers.get("retry-after"))
            if attempt + 1 < attempts:
                self._sleep(self.backoff(attempt, retry_after))
        assert last is not None
        raise last

    def _headers(
        self, method: str, path: str, has_body: bool, extra: Mapping[str, str]
    ) -> dict[str, str]:
        out = {"Authorization": self._auth, "Accept": "application/json", "User-Agent": "zdd"}
        if has_body:
            out["Content-Type"] = "application/json"
        for name, value in extra.items():
            value = str(value)
            # checked here, for http.client's own error would quote the value
            if not _HEADER_NAME.fullmatch(name) or _CONTROL.search(value):
                raise ProviderContractError(
                    f"{method} {path}: the {self.scrub(name)!r} header has a character a "
                    "header cannot hold"
                )
            for key in [k for k in out if k.lower() == name.lower()]:
                del out[key]
            out[name] = value
        return out

    def _transport_failure(
        self, method: str, path: str, exc: _Transport
    ) -> ActionFailed | ProviderContractError:
        error = exc.exc
        if isinstance(error, http.client.InvalidURL | ValueError):
            return ProviderContractError(
                self.scrub(f"{method} {path}: cannot be sent: {type(error).__name__}: {error}")
            )
        detail = str(error) or "no detail"
        return ActionFailed(
            self.scrub(f"{method} {path}: {type(error).__name__}: {detail}{exc.hint}"),
            transient=exc.transient,
        )

    def _exchange(
        self, method: str, target: str, data: bytes | None, headers: Mapping[str, str], t: float
    ) -> _Answer:
        """Send one request and read its answer; a transport error is a :class:`_Transport`."""
        conn, reused = self._checkout(t)
        try:
            return self._send(conn, method, target, data, headers)
        except _STALE as exc:
            conn.close()
            if not reused:
                raise self._wrap(exc) from None
            if method != "GET":
                raise _Transport(
                    exc,
                    transient=True,
                    hint=" (a kept-alive connection closed before an answer; the "
                    "request may have been carried out, so it is not resent here)",
                ) from None
        except _Transport:
            conn.close()
            raise
        except BaseException as exc:
            conn.close()
            if isinstance(exc, Exception):
                raise self._wrap(exc) from None
            raise
        # the server closed an idle connection as the GET went out: once more, anew
        conn = self._connection(t)
        try:
            return self._send(conn, method, target, data, headers)
        except _Transport:
            conn.close()
            raise
        except BaseException as exc:
            conn.close()
            if isinstance(exc, Exception):
                raise self._wrap(exc) from None
            raise

    def _send(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        target: str,
        data: bytes | None,
        headers: Mapping[str, str],
    ) -> _Answer:
        conn.request(method, target, body=data, headers=dict(headers))
        _quickack(conn.sock)
        resp = conn.getresponse()
        # from here on, the answer has begun: no error is a stale connection's any more
        try:
            raw = resp.read()
        except Exception as exc:
            raise self._wrap(exc) from None
        answer = _Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, raw)
        if resp.will_close or conn.sock is None:
            conn.close()
        else:
            self._checkin(conn)
        return answer

    @staticmethod
    def _wrap(exc: Exception) -> _Transport:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return _Transport(exc, transient=False, hint="; TLS is always verified")
        if isinstance(exc, OSError) and " 407 " in f" {exc} ":
            return _Transport(exc, transient=False, hint="; check the proxy's credentials")
        return _Transport(exc, transient=True)

    # -- the pool -------------------------------------------------------------------

    def _checkout(self, t: float) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection (then reused is true), else a new one."""
        while True:
            with self._pool_lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connection(t), False
            sock = conn.sock
            if sock is None or _readable(sock):
                conn.close()
                continue
            conn.timeout = t
            sock.settimeout(t)
            return conn, True

    def _checkin(self, conn: http.client.HTTPConnection) -> None:
        with self._pool_lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def _connection(self, t: float) -> http.client.HTTPConnection:
        if self._scheme == "http":
            return _HTTPConnection(self._host, self._port, timeout=t, opened=self._opened)
        if self._proxy is None:
            return _HTTPSConnection(
                self._host, self._port, timeout=t, context=self._ssl, opened=self._opened
            )
        conn = _HTTPSConnection(
            self._proxy.host, self._proxy.port, timeout=t, context=self._ssl, opened=self._opened
        )
        conn.set_tunnel(self._host, self._port, headers=dict(self._proxy.headers))
        return conn

    def _opened(self) -> None:
        with self._pool_lock:
            self.connections_opened += 1

    # -- text -----------------------------------------------------------------------

    def _error_message(self, answer: _Answer) -> str:
        raw = answer.raw.decode("utf-8", "replace")
        try:
            doc = json.loads(raw)
            text = doc.get("error") or doc.get("message") or raw if isinstance(doc, dict) else raw
        except ValueError:
            text = raw
        reason = http.client.responses.get(answer.status, "")
        return self.scrub(str(text).strip()[:500] or reason or "no message")

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(10.0, 0.25 * 2.0**attempt) * (0.5 + self._rng.random())
        return max(delay, retry_after or 0.0)

    def _pace(self, action: str, machine: str) -> None:
        """Fly's limits: 1 request a second per action per machine (burst 3); reads 5/s (10)."""
        rate, burst = (5.0, 10.0) if action in ("get", "list", "wait") else (1.0, 3.0)
        rate *= self._rate_scale
        key = (action, machine)
        while True:
            with self._lock:
                now = self._clock()
                b = self._buckets.get(key)
                if b is None:
                    b = self._buckets[key] = _Bucket(rate, burst, burst, now)
                b.tokens = min(b.burst, b.tokens + (now - b.last) * b.rate)
                b.last = now
                if b.tokens >= 1 - 1e-9:  # not 1: rounding would ask for waits too short to pass
                    b.tokens = max(0.0, b.tokens - 1)
                    return
                wait = (1 - b.tokens) / b.rate
            self._sleep(wait)
