"""The gateway's leg to the GPU server: one request sent once, Modal's result-URL redirects followed, and every
failure named by whether the request may have reached vLLM.

Modal ends a web request at 150 s with a 303 to the call's *result URL*, "the original URL with a special query
parameter"; the result URL "will block until the request completes" (https://modal.com/docs/guide/webhook-timeouts,
read 2026-12-07). Here the gateway follows that 303 itself, with the proxy token, as often as the function's
timeout allows, and remembers the call's id so a client that leaves can have the call cancelled.

What a failure becomes (``LegError.status``), so a client retries only what never reached vLLM:

- 502: the GPU server could not be reached (connect refused or timed out): nothing was sent;
- 429 with ``Retry-After``: every pooled connection was busy: nothing was sent;
- 504: a timeout after the request was sent; 500: any other break after sending (a hop included), and a
  502/503 *answer* from the GPU side (Modal's proxy says those also when a container died mid-request):
  "it may have run", never retried.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx

RESULT_PARAM = "__modal_function_call_id"
WEB_LIMIT_S = 150  # Modal's per-request limit on web functions (docs above)
EXTRA_CONNECTIONS = 16  # GETs (/v1/models, /tokenize) beside the counted generations
POOL_WAIT_S = 1.0
RETRY_AFTER_S = b"1"


def error_body(status: int, message: str, kind: str = "server_error") -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()


class LegError(Exception):
    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, list(headers)

    @property
    def body(self) -> bytes:
        return error_body(self.status, self.message, "rate_limit_error" if self.status == 429 else "server_error")


class GpuLeg:
    """An httpx pool sized from the plan (``max_streams``: the guard's queue limit in front of it, plus room for
    GETs), so nothing waits in here unseen; ``hops``: how many 150 s result-URL waits one request may take."""

    def __init__(self, upstream: Callable[[], str], auth: list[tuple[bytes, bytes]], *, timeout: float = 1800,
                 max_streams: int = 0, hops: int = 24 * 3600 // WEB_LIMIT_S + 2) -> None:
        self._upstream, self._base, self.auth, self.hops = upstream, None, auth, hops
        limits = httpx.Limits(max_connections=max_streams + EXTRA_CONNECTIONS if max_streams else None,
                              max_keepalive_connections=64)
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=30, pool=POOL_WAIT_S),
                                        limits=limits, follow_redirects=False)

    @property
    def base(self) -> httpx.URL:
        if self._base is None:
            self._base = httpx.URL(self._upstream().rstrip("/"))
        return self._base

    def url(self, target: bytes) -> httpx.URL | None:
        """The GPU URL for ``target`` (raw path and query), or None if it would not be sent byte for byte."""
        url = self.base.copy_with(raw_path=target)
        return url if url.raw_path == target else None

    async def send(self, method: str, url: httpx.URL, headers, body: bytes,
                   on_call: Callable[[str], None]) -> httpx.Response:
        """The GPU's response (streaming), or LegError. ``on_call(id)`` learns the Modal call behind a 303."""
        try:
            resp = await self.client.send(self.client.build_request(method, url, headers=headers + self.auth,
                                                                    content=body), stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise LegError(502, f"the GPU server could not be reached ({type(e).__name__}); nothing was sent to it")
        except httpx.PoolTimeout:
            raise LegError(429, "the gateway's connections to the GPU server are all in use: retry after the "
                           "Retry-After seconds", [(b"retry-after", RETRY_AFTER_S)])
        except httpx.HTTPError as e:
            raise _after_sending(e)
        try:
            resp = await self._follow_results(resp, headers, on_call)
        except httpx.HTTPError as e:  # the request went out before any hop: whatever breaks now, it may have run
            raise _after_sending(e)
        if resp.status_code in (502, 503):
            await resp.aclose()
            raise LegError(500, f"the GPU side answered {resp.status_code} after the request was sent; it may have "
                           "run")
        return resp

    async def _follow_results(self, resp: httpx.Response, headers, on_call) -> httpx.Response:
        accept = [(k, v) for k, v in headers if k.lower() == b"accept"]
        for _ in range(self.hops):
            if resp.status_code != 303:
                return resp
            target = resp.url.join(resp.headers.get("location", ""))
            same_origin = (target.scheme, target.host, target.port) == (self.base.scheme, self.base.host,
                                                                       self.base.port)
            if not same_origin or RESULT_PARAM not in target.params:
                return resp
            on_call(target.params[RESULT_PARAM])
            await resp.aclose()
            resp = await self.client.send(self.client.build_request("GET", target, headers=accept + self.auth),
                                          stream=True)
        await resp.aclose()
        raise LegError(504, f"the GPU server did not answer within {self.hops} of Modal's {WEB_LIMIT_S} s limits; "
                       "it may have run")

    def local(self, location: bytes) -> bytes:
        """A redirect from the GPU server never names the GPU server's host: keep only its path."""
        url = httpx.URL(location.decode("latin-1"))
        if url.is_relative_url or url.host != self.base.host:
            return location
        return url.raw_path

    async def aclose(self) -> None:
        await self.client.aclose()


def _after_sending(e: httpx.HTTPError) -> LegError:
    if isinstance(e, httpx.TimeoutException):
        return LegError(504, f"the GPU server did not answer in time after the request was sent ({type(e).__name__}); "
                        "it may have run")
    return LegError(500, f"the connection to the GPU server broke after the request was sent ({type(e).__name__}); "
                    "it may have run")


async def cancel_modal_call(call_id: str) -> None:
    """Cancel the GPU function call behind a result URL (its container closes the request, vLLM aborts it)."""
    import modal

    await modal.FunctionCall.from_id(call_id).cancel.aio()
