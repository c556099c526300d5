"""The keyed front door: a CPU function that owns the guide's URL and relays to the GPU server.

A request to a Modal web endpoint starts a container before any code of ours can check its key.
So the guide's URL (label ``vllm-llama70b-serve-vllm``) belongs to this small CPU app: the same
``BearerAuthMiddleware`` as the GPU server (allowlist, canonical paths, body limit, queue limit) decides
first, and only a request it lets through is relayed to the GPU endpoint, which Modal's proxy auth closes
to everyone without the workspace's proxy token (``requires_proxy_auth=True``). A stranger, a scanner or
a stale key costs a CPU container at most: no GPU starts and the GPU's scale-down clock is not reset.

What the relay promises, each rehearsed under Modal's HTTP rules in tests/modal/test_web_rules.py:

- **Keyless probes stay here.** ``/health`` and ``/ping`` (any method) are answered by the gateway; a
  public ``/metrics`` still needs a client key here (every relayed request may start a GPU).
- **The path relayed is the path checked**, byte for byte (the guard refuses non-canonical paths first).
- **Cold starts of any length.** Modal ends a web request at 150 s with a 303 to the call's *result URL*
  (https://modal.com/docs/guide/webhook-timeouts, read 2026-12-07). On the GPU leg the gateway follows that
  303 itself, with the proxy token, so a client is never handed a URL of the GPU server (which would answer
  it 401). On the client leg Modal applies the same rule to the gateway's own call: a client that follows
  redirects (``curl -L``, the openai SDK, ``llmodal.client()``) gets the answer from the gateway's result
  URL, on the guide's host.
- **A client that leaves stops the generation.** The relay listens for ``http.disconnect`` after the body
  and closes the GPU leg, which vLLM turns into an abort.
- **No hidden queue.** The connection pool is sized from the plan's queue limit; if it is ever full the
  client is told 429 with ``Retry-After`` instead of waiting inside the gateway.
- **Honest errors.** 502 only when the GPU server could not be reached (nothing was sent: safe to retry);
  504 when the GPU leg timed out after the request was sent, 500 when it broke after sending (it may have
  run: not retried).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable

import httpx

from llmodal.core.constants import OPEN_PATHS
from llmodal.engine.auth import BearerAuthMiddleware

# Headers that describe one hop, not the message (RFC 9110 §7.6.1), and the ones we set ourselves.
_HOP = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
        b"transfer-encoding", b"upgrade", b"host", b"content-length", b"modal-key", b"modal-secret"}
PROXY_TOKEN_ENV = ("MODAL_PROXY_TOKEN_ID", "MODAL_PROXY_TOKEN_SECRET")
RESULT_PARAM = "__modal_function_call_id"  # Modal's result URL: the original URL plus this parameter
MAX_RESULT_HOPS = 200  # 200 × 150 s: longer than any function timeout llmodal allows (24 h)
EXTRA_CONNECTIONS = 16  # GETs (/v1/models, /tokenize) beside the counted generations
POOL_WAIT_S = 1.0
RETRY_AFTER_S = b"1"


def _json(status: int, message: str, kind: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()


NO_TOKEN = _json(500, "the gateway has no Modal proxy token: add MODAL_PROXY_TOKEN_ID and MODAL_PROXY_TOKEN_SECRET "
                 "(https://modal.com/settings/proxy-auth-tokens) to the Modal secret, then redeploy", "server_error")


class _ClientGone(Exception):
    pass


class Relay:
    """ASGI app: forward every request to ``upstream()`` (resolved once, lazily) with the proxy token."""

    def __init__(self, upstream: Callable[[], str], *, environ=os.environ, timeout: float = 1800,
                 max_streams: int = 0) -> None:
        self._upstream, self._base = upstream, None
        self._token = {k: environ.get(k, "") for k in PROXY_TOKEN_ENV}
        # max_streams: the guard's queue limit in front of this relay; the pool holds all of them and the
        # GETs beside, so nothing waits in here unseen (httpx's default is 100 connections).
        limits = httpx.Limits(max_connections=max_streams + EXTRA_CONNECTIONS if max_streams else None,
                              max_keepalive_connections=64)
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=30, pool=POOL_WAIT_S),
                                         limits=limits, follow_redirects=False)

    def _auth_headers(self) -> list[tuple[bytes, bytes]]:
        tid, secret = self._token["MODAL_PROXY_TOKEN_ID"], self._token["MODAL_PROXY_TOKEN_SECRET"]
        return [(b"modal-key", tid.encode()), (b"modal-secret", secret.encode())] if tid and secret else []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # websockets are not relayed: closed before any GPU is involved
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["path"] in OPEN_PATHS:  # probes are answered here, whatever the method: never a GPU
            await self._answer(send, 200, b'{"status":"ok","gateway":true}')
            return
        auth = self._auth_headers()
        if not auth:
            await self._answer(send, *NO_TOKEN)
            return
        if self._base is None:
            self._base = httpx.URL(self._upstream().rstrip("/"))
        raw = scope.get("raw_path") or scope["path"].encode()
        target = raw + (b"?" + scope["query_string"] if scope.get("query_string") else b"")
        url = self._base.copy_with(raw_path=target)
        if url.raw_path != target:  # the guard refused non-canonical paths; this is the last line
            await self._answer(send, *_json(400, "the request path cannot be relayed unchanged",
                                            "invalid_request_error"))
            return
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP] + auth
        body_done = asyncio.Event()

        async def body():
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    raise _ClientGone
                if msg.get("body"):
                    yield msg["body"]
                if not msg.get("more_body"):
                    body_done.set()
                    return

        req = self._client.build_request(scope["method"], url, headers=headers, content=body())
        exchange = asyncio.ensure_future(self._exchange(req, auth, send))
        watch = asyncio.ensure_future(_until_disconnect(receive, body_done))
        done, _ = await asyncio.wait({exchange, watch}, return_when=asyncio.FIRST_COMPLETED)
        if exchange in done:
            watch.cancel()
            exchange.result()
            return
        # The client left: cancelling closes the GPU leg's connection, and vLLM aborts the request.
        exchange.cancel()
        with contextlib.suppress(asyncio.CancelledError, _ClientGone):
            await exchange

    async def _exchange(self, req: httpx.Request, auth, send) -> None:
        try:
            resp = await self._send_following_results(req, auth)
        except _ClientGone:
            return
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            await self._answer(send, *_json(502, f"the GPU server could not be reached ({type(e).__name__}); "
                                            "nothing was sent to it", "server_error"))
            return
        except httpx.PoolTimeout:
            await self._answer(send, 429, _json(429, "the gateway's connections to the GPU server are all in use: "
                                                "retry after the Retry-After seconds", "rate_limit_error")[1],
                               [(b"retry-after", RETRY_AFTER_S)])
            return
        except httpx.TimeoutException as e:
            await self._answer(send, *_json(504, f"the GPU server did not answer in time after the request was "
                                            f"sent ({type(e).__name__}); it may have run", "server_error"))
            return
        except httpx.HTTPError as e:
            await self._answer(send, *_json(500, f"the connection to the GPU server broke after the request was "
                                            f"sent ({type(e).__name__}); it may have run", "server_error"))
            return
        try:
            out = [(k, v) for k, v in resp.headers.raw if k.lower() not in _HOP]
            out = [(k, self._local(v) if k.lower() == b"location" else v) for k, v in out]
            await send({"type": "http.response.start", "status": resp.status_code, "headers": out})
            async for chunk in resp.aiter_raw():  # as it arrives: a stream stays a stream
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await resp.aclose()

    async def _send_following_results(self, req: httpx.Request, auth) -> httpx.Response:
        """Send, then follow Modal's 303s to the GPU call's result URL (same origin, proxy token kept)."""
        resp = await self._client.send(req, stream=True)
        for _ in range(MAX_RESULT_HOPS):
            if resp.status_code != 303:
                return resp
            target = resp.url.join(resp.headers.get("location", ""))
            if (target.scheme, target.host, target.port) != (self._base.scheme, self._base.host, self._base.port) \
                    or RESULT_PARAM not in target.params:
                return resp
            await resp.aclose()
            accept = [(k, v) for k, v in req.headers.raw if k.lower() == b"accept"]
            resp = await self._client.send(self._client.build_request("GET", target, headers=accept + auth),
                                           stream=True)
        return resp

    def _local(self, location: bytes) -> bytes:
        """A redirect from the GPU server never names the GPU server's host: keep only its path."""
        url = httpx.URL(location.decode("latin-1"))
        if url.is_relative_url or url.host != self._base.host:
            return location
        return url.raw_path

    @staticmethod
    async def _answer(send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] = ()) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), *extra]})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive, send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _until_disconnect(receive, body_done: asyncio.Event) -> None:
    """Returns when the client has gone (ASGI's ``http.disconnect``), read only once the body is in."""
    await body_done.wait()
    while (await receive())["type"] != "http.disconnect":
        pass


def make_gateway(upstream: Callable[[], str], guard_env: dict[str, str]):
    """The guard in front of the relay: what ``@modal.asgi_app`` returns. ``guard_env``: the guard's
    variables (keys, metrics choice, body limit, queue limit), the names the GPU server's guard reads."""
    limit = int(guard_env.get("LLMODAL_QUEUE_LIMIT") or 0)
    return BearerAuthMiddleware(Relay(upstream, environ=os.environ, max_streams=limit), environ=guard_env,
                                keyed_metrics=True)
