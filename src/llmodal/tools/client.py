"""OpenAI clients that survive a cold start, configured from the client's ``.env``.

``client()`` and ``async_client()`` return real ``openai`` clients whose HTTP transport
waits for ``/health`` (bounded) when the endpoint is down or still booting, retries with
backoff and jitter, and follows Modal's 303 redirect for long requests. The openai SDK's own
retries cover seconds; a 70B cold start takes minutes.

A generation is never asked for twice: a POST is retried only where it provably never reached
vLLM — the connection was never made; 502 (the gateway, or Modal's proxy, could not reach a server: the
gateway says 502 for nothing else); 503 (Modal's proxy while no container is ready); 429 (a queue limit
in front of vLLM: the guard's, the gateway's or Modal's ``max_concurrency``), after its ``Retry-After``.
A connection that broke after the request was sent, a 500, a 504, or a stream cut mid-way surfaces as
an error. GET/HEAD (idempotent) also retry those. The openai SDK's own retries (``max_retries``, 2 by
default, which resend a POST on a 500, a 504 or a dropped connection) are off: this transport decides.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass, field

import httpx

from llmodal.core import constants as C
from llmodal.core.errors import ConfigError
from llmodal.core.envfile import read_env
from llmodal.core.state import last_local_server

# Modal answers a web request still running at 150 s with a 303 to its result URL, again every 150 s: httpx's
# default of 20 redirects gives up after 50 minutes; a function may run 24 h (LLMODAL_TIMEOUT's most).
MAX_REDIRECTS = 24 * 3600 // 150 + 2
RETRY_STATUSES = (429, 502, 503, 504)  # idempotent requests
POST_RETRY_STATUSES = (429, 502, 503)  # answered before vLLM saw the request (module docstring)
RETRIED_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError,
                  httpx.ReadTimeout, httpx.WriteError)


def _retryable(request: httpx.Request, status: int | None, error: Exception | None = None) -> bool:
    idempotent = request.method in ("GET", "HEAD", "OPTIONS")
    if error is not None:
        # Connect*: nothing was sent. Anything later: sent, and the server may be generating.
        return isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout)) or idempotent
    return status in (RETRY_STATUSES if idempotent else POST_RETRY_STATUSES)


def _retry_after(resp: httpx.Response, cap: float = 30.0) -> float | None:
    try:
        return min(cap, max(0.0, float(resp.headers.get("retry-after", ""))))
    except ValueError:
        return None


@dataclass(frozen=True)
class Endpoint:
    base_url: str  # ends in /v1
    api_key: str | None = field(repr=False)
    model: str | None

    @property
    def root(self) -> str:
        return self.base_url.rstrip("/").removesuffix("/v1")

    @property
    def headers(self) -> dict[str, str]:
        """The Bearer header every request to this endpoint carries (empty key: the server says 401)."""
        return {"Authorization": f"Bearer {self.api_key or ''}"}


def resolve_endpoint(base_url: str | None = None, api_key: str | None = None, model: str | None = None,
                     env_file: str | None = ".env") -> Endpoint:
    """Flags first, then the process environment, then ``.env``, then the last local ``llmodal serve``."""
    file_env = read_env(env_file) if env_file else {}
    local = last_local_server()

    def pick(flag: str | None, name: str, fallback: str | None = None) -> str | None:
        return flag or os.environ.get(name) or file_env.get(name) or fallback

    url = pick(base_url, "VLLM_BASE_URL", local.get("base_url"))
    if not url:
        raise ConfigError("no endpoint: pass --base-url or set VLLM_BASE_URL (ending in /v1) in .env")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"VLLM_BASE_URL={url!r} is invalid: expected an http:// or https:// URL ending in /v1")
    url = url.rstrip("/")
    if not url.endswith("/v1"):
        url += "/v1"
    return Endpoint(url, pick(api_key, "VLLM_API_KEY"), pick(model, "VLLM_MODEL", local.get("model")))


def _backoff(attempt: int, base: float = 0.5, cap: float = 10.0) -> float:
    return min(cap, base * 2**attempt) * (0.5 + random.random() / 2)


class _ColdStart:
    """Shared policy: which failures mean 'not up yet', and how long to keep trying."""

    def __init__(self, cold_start_timeout: float) -> None:
        self.timeout = cold_start_timeout

    @staticmethod
    def health_url(request: httpx.Request) -> httpx.URL:
        path = request.url.path
        root = path[: path.index("/v1")] if "/v1" in path else ""
        return request.url.copy_with(path=root + "/health", query=None)


class ColdStartTransport(httpx.BaseTransport, _ColdStart):
    def __init__(self, cold_start_timeout: float = C.CLIENT_COLD_START_TIMEOUT_S,
                 inner: httpx.BaseTransport | None = None) -> None:
        _ColdStart.__init__(self, cold_start_timeout)
        self.inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            wait = None
            try:
                resp = self.inner.handle_request(request)
                if not _retryable(request, resp.status_code) or time.monotonic() > deadline:
                    return resp
                resp.close()
                wait = _retry_after(resp) if resp.status_code == 429 else None
            except RETRIED_ERRORS as e:
                if not _retryable(request, None, e) or time.monotonic() > deadline:
                    raise
            if wait is None:  # a 429 is a full queue on a live server: no health wait, its Retry-After
                self._wait_healthy(request, deadline)
            time.sleep(_backoff(attempt) if wait is None else wait)
            attempt += 1

    def _wait_healthy(self, request: httpx.Request, deadline: float) -> None:
        url, attempt = self.health_url(request), 0
        while time.monotonic() < deadline:
            try:
                r = self.inner.handle_request(httpx.Request("GET", url))
                r.read()
                r.close()
                if r.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(_backoff(attempt, cap=5.0))
            attempt += 1

    def close(self) -> None:
        self.inner.close()


class AsyncColdStartTransport(httpx.AsyncBaseTransport, _ColdStart):
    def __init__(self, cold_start_timeout: float = C.CLIENT_COLD_START_TIMEOUT_S,
                 inner: httpx.AsyncBaseTransport | None = None) -> None:
        _ColdStart.__init__(self, cold_start_timeout)
        self.inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            wait = None
            try:
                resp = await self.inner.handle_async_request(request)
                if not _retryable(request, resp.status_code) or time.monotonic() > deadline:
                    return resp
                await resp.aclose()
                wait = _retry_after(resp) if resp.status_code == 429 else None
            except RETRIED_ERRORS as e:
                if not _retryable(request, None, e) or time.monotonic() > deadline:
                    raise
            if wait is None:
                await self._wait_healthy(request, deadline)
            await asyncio.sleep(_backoff(attempt) if wait is None else wait)
            attempt += 1

    async def _wait_healthy(self, request: httpx.Request, deadline: float) -> None:
        url, attempt = self.health_url(request), 0
        while time.monotonic() < deadline:
            try:
                r = await self.inner.handle_async_request(httpx.Request("GET", url))
                await r.aread()
                await r.aclose()
                if r.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(_backoff(attempt, cap=5.0))
            attempt += 1

    async def aclose(self) -> None:
        await self.inner.aclose()


def client(base_url: str | None = None, api_key: str | None = None, *, env_file: str | None = ".env",
           cold_start_timeout: float = C.CLIENT_COLD_START_TIMEOUT_S, timeout: float = 600.0):
    """An ``openai.OpenAI`` for the endpoint in ``.env`` that rides out cold starts."""
    import openai

    ep = resolve_endpoint(base_url, api_key, None, env_file)
    http = httpx.Client(transport=ColdStartTransport(cold_start_timeout), follow_redirects=True, timeout=timeout,
                        max_redirects=MAX_REDIRECTS)
    return openai.OpenAI(base_url=ep.base_url, api_key=ep.api_key or "EMPTY", http_client=http, max_retries=0)


def async_client(base_url: str | None = None, api_key: str | None = None, *, env_file: str | None = ".env",
                 cold_start_timeout: float = C.CLIENT_COLD_START_TIMEOUT_S, timeout: float = 600.0):
    """An ``openai.AsyncOpenAI`` for the endpoint in ``.env`` that rides out cold starts."""
    import openai

    ep = resolve_endpoint(base_url, api_key, None, env_file)
    http = httpx.AsyncClient(transport=AsyncColdStartTransport(cold_start_timeout), follow_redirects=True,
                             max_redirects=MAX_REDIRECTS,
                             timeout=timeout)
    return openai.AsyncOpenAI(base_url=ep.base_url, api_key=ep.api_key or "EMPTY", http_client=http,
                              max_retries=0)

