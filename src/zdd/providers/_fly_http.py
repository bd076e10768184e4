"""The Fly Machines API's HTTP layer: one request, its pacing and its retries.

The token goes only in the ``Authorization`` header and is scrubbed from any
error text; TLS is verified; https is required unless the host is loopback (the
tests' server). :class:`FlyHTTP` knows nothing of machines, leases or zdd's
actions: that mapping is ``fly.py``'s.
"""

from __future__ import annotations

import ipaddress
import json
import random
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from http.client import HTTPException
from typing import Any

import attrs

from .._errors import ActionFailed, DeploymentLocked, InvalidConfig, ProviderContractError

__all__ = ["DEFAULT_BASE_URL", "FlyHTTP"]


DEFAULT_BASE_URL = "https://api.machines.dev"


_TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})


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


def _status(exc: ActionFailed) -> int | None:
    return exc.status if isinstance(exc, _Failed) else None


def _check_base_url(url: str) -> str:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise InvalidConfig(f"{url!r} is not an http(s) URL", field="api-url")
    if parsed.scheme == "http" and not _loopback(parsed.hostname):
        raise InvalidConfig(
            f"{url!r}: https is required (plain http only to a loopback address)", field="api-url"
        )
    return url.rstrip("/")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


class FlyHTTP:
    """Requests to one app's Machines API (see the module docstring)."""

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
    ) -> None:
        self.app = app
        self._token = token
        self._auth = token if token.startswith("FlyV1 ") else f"Bearer {token}"
        self.base_url = _check_base_url(base_url)
        self.timeout = timeout
        self.retries = retries
        self._rng = rng
        self._sleep = sleep
        self._clock = clock
        self._ssl = ssl.create_default_context()
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FlyHTTP(app={self.app!r}, base_url={self.base_url!r}, token=<redacted>)"

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
        url = f"{self.base_url}/v1/apps/{_q(self.app)}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        attempts = self.retries if retry else 1
        last: ActionFailed | None = None
        for attempt in range(attempts):
            self._pace(action, machine)
            req = urllib.request.Request(url, data=data, method=method)
            req.add_header("Authorization", self._auth)
            req.add_header("Accept", "application/json")
            req.add_header("User-Agent", "zdd")
            if data is not None:
                req.add_header("Content-Type", "application/json")
            for k, v in (headers or {}).items():
                req.add_header(k, v)
            try:
                with urllib.request.urlopen(
                    req, timeout=timeout or self.timeout, context=self._ssl
                ) as resp:
                    raw = resp.read()
                    hdrs = {k.lower(): v for k, v in resp.headers.items()}
                    return (json.loads(raw) if raw.strip() else None), hdrs
            except urllib.error.HTTPError as exc:
                status = exc.code
                message = self._error_message(exc)
                retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
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
                if attempt + 1 < attempts:
                    self._sleep(self.backoff(attempt, retry_after))
            except (urllib.error.URLError, HTTPException, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                last = ActionFailed(
                    f"{method} {path}: {type(exc).__name__}: {self.scrub(str(reason))}",
                    transient=True,
                )
                if isinstance(exc, ValueError) and not isinstance(exc, json.JSONDecodeError):
                    raise ProviderContractError(f"{method} {path}: {exc}") from None
                if attempt + 1 < attempts:
                    self._sleep(self.backoff(attempt, None))
        assert last is not None
        raise last

    def _error_message(self, exc: urllib.error.HTTPError) -> str:
        try:
            raw = exc.read().decode("utf-8", "replace")
        except (OSError, HTTPException):
            raw = ""
        try:
            doc = json.loads(raw)
            text = doc.get("error") or doc.get("message") or raw if isinstance(doc, dict) else raw
        except ValueError:
            text = raw
        return self.scrub(str(text).strip()[:500] or exc.reason or "no message")

    def scrub(self, text: str) -> str:
        return text.replace(self._token, "<redacted>") if self._token else text

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(10.0, 0.25 * 2.0**attempt) * (0.5 + self._rng.random())
        return max(delay, retry_after or 0.0)

    def _pace(self, action: str, machine: str) -> None:
        """Fly's limits: 1 request a second per action per machine (burst 3); reads 5/s (10)."""
        rate, burst = (5.0, 10.0) if action in ("get", "list", "wait") else (1.0, 3.0)
        key = (action, machine)
        while True:
            with self._lock:
                now = self._clock()
                b = self._buckets.get(key)
                if b is None:
                    b = self._buckets[key] = _Bucket(rate, burst, burst, now)
                b.tokens = min(b.burst, b.tokens + (now - b.last) * b.rate)
                b.last = now
                if b.tokens >= 1:
                    b.tokens -= 1
                    return
                wait = (1 - b.tokens) / b.rate
            self._sleep(wait)
