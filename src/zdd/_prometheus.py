"""A client for a Prometheus-compatible query API (``GET /api/v1/query``).

Enough of the HTTP API for metric gates: an instant query, its one number (or
no data), and errors that say whose fault they are. Safe by the same rules as
the Fly transport: https is required unless the host is loopback, TLS is always
verified, redirects are never followed (a token never crosses to another
origin), and the token never appears in a repr, an error or a log line.

* :class:`MetricQueryError`: the server refused the query (HTTP 400/422, a
  PromQL error, a result that is not one number): retrying cannot help.
* :class:`MetricsUnavailable`: the server could not be reached or answered
  5xx/429 after ``retries`` attempts (``transient``).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping

from ._errors import ActionFailed, ZddError
from .providers._fly_http import _check_base_url, _redact_url

__all__ = ["MetricQueryError", "MetricsUnavailable", "PrometheusClient"]

#: The most a query's answer may be (bytes).
MAX_ANSWER = 1 << 20


class MetricQueryError(ZddError):
    """The metrics server refused the query, or its answer is not one number."""


class MetricsUnavailable(ActionFailed):
    """The metrics server could not answer (unreachable, 5xx, 429) after retries."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


class PrometheusClient:
    """Instant queries against ``url`` (``url + "/api/v1/query"``).

    Args:
        url: the API's base, e.g. ``https://api.fly.io/prometheus/personal`` or
            ``http://127.0.0.1:9090``.
        token: a bearer token (``Authorization: Bearer ...``), or ``None``.
        timeout: seconds for one request.
        retries: attempts for an unreachable server or a 5xx/429 answer.
        backoff: seconds before the second attempt (doubled each time).
        sleep: how to wait between attempts (the driver's; ``time.sleep``).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = _check_base_url(url, field="url").rstrip("/")
        self._token = token or None
        if self._token is not None and any(c in self._token for c in "\r\n\0"):
            raise ZddError("the metrics token holds a line break; check its variable")
        self.timeout = float(timeout)
        self.retries = max(1, int(retries))
        self.backoff = float(backoff)
        self._sleep = sleep
        parsed = urllib.parse.urlsplit(self.url)
        self._scheme = parsed.scheme
        self._host = parsed.hostname or ""
        self._port = parsed.port
        self._path = parsed.path.rstrip("/") + "/api/v1/query"
        #: requests sent (for tests and benchmarks)
        self.requests = 0

    @classmethod
    def from_env(
        cls,
        url: str,
        token_env: str | None,
        *,
        environ: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> PrometheusClient:
        """A client whose token is read from the variable ``token_env`` (if named)."""
        env = os.environ if environ is None else environ
        token = None
        if token_env:
            token = env.get(token_env) or None
            if token is None:
                raise ZddError(
                    f"the metrics token variable {token_env} is not set; export it, or "
                    "remove token_env for a server without authentication"
                )
        return cls(url, token=token, timeout=timeout, retries=retries, backoff=backoff, sleep=sleep)

    def __repr__(self) -> str:
        token = "<redacted>" if self._token else None
        return f"PrometheusClient(url={_redact_url(self.url)!r}, token={token})"

    def query(self, promql: str, at: float | None = None) -> float | None:
        """The instant query's one number; ``None`` for no data (empty, NaN).

        Raises:
            MetricQueryError: the query was refused, or returned several series.
            MetricsUnavailable: no answer after ``retries`` attempts.
        """
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        target = f"{self._path}?{urllib.parse.urlencode(params)}"
        last = ""
        delay = self.backoff
        for attempt in range(self.retries):
            if attempt:
                self._sleep(delay)
                delay *= 2
            try:
                status, body = self._get(target)
            except (OSError, http.client.HTTPException) as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"
                continue
            if status == 429 or status >= 500:
                last = f"HTTP {status}"
                continue
            return self._parse(status, body)
        raise MetricsUnavailable(
            f"the metrics server {_redact_url(self.url)} did not answer after "
            f"{self.retries} attempts ({_clean(last)})"
        )

    def _get(self, target: str) -> tuple[int, bytes]:
        self.requests += 1
        conn: http.client.HTTPConnection
        if self._scheme == "https":
            conn = http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        headers = {"Accept": "application/json", "User-Agent": "zdd"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            conn.request("GET", target, headers=headers)
            resp = conn.getresponse()
            body = resp.read(MAX_ANSWER + 1)
            return resp.status, body
        finally:
            conn.close()

    def _parse(self, status: int, body: bytes) -> float | None:
        if len(body) > MAX_ANSWER:
            raise MetricQueryError("the metrics server's answer is over 1 MiB; aggregate the query")
        if 300 <= status < 400:
            raise MetricQueryError(
                f"the metrics server answered a redirect (HTTP {status}); zdd does not follow "
                "redirects (a token must not cross origins): give the final URL"
            )
        if status in (401, 403):
            raise MetricQueryError(
                f"the metrics server refused the token (HTTP {status}); check token_env"
            )
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise MetricQueryError(
                f"the metrics server answered HTTP {status} with something that is not JSON"
            ) from None
        if not isinstance(doc, dict):
            raise MetricQueryError("the metrics server's answer is not a JSON object")
        if doc.get("status") != "success":
            error_type = _clean(str(doc.get("errorType") or f"HTTP {status}"))
            why = _clean(str(doc.get("error") or "no reason given"))
            raise MetricQueryError(f"the metrics server refused the query ({error_type}: {why})")
        data = doc.get("data")
        if not isinstance(data, dict):
            raise MetricQueryError("the metrics server's answer has no data")
        kind = data.get("resultType")
        result = data.get("result")
        if kind == "scalar":
            return _sample(result)
        if kind != "vector" or not isinstance(result, list):
            raise MetricQueryError(
                f"the query must return one number (an instant vector or a scalar), got "
                f"{_clean(str(kind))}"
            )
        if not result:
            return None
        if len(result) > 1:
            raise MetricQueryError(
                f"the query returned {len(result)} series; aggregate it to one, e.g. sum(...)"
            )
        entry = result[0]
        return _sample(entry.get("value") if isinstance(entry, dict) else None)


def _sample(pair: object) -> float | None:
    if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[1], str):
        raise MetricQueryError('the metrics server\'s sample is not [time, "value"]')
    text = pair[1]
    if len(text) > 64:
        raise MetricQueryError("the metrics server's value is not a number")
    try:
        value = float(text)
    except ValueError:
        raise MetricQueryError("the metrics server's value is not a number") from None
    if math.isnan(value):
        return None
    return value


def _clean(text: str) -> str:
    """One short line of someone else's text."""
    return " ".join(text.split())[:300]
