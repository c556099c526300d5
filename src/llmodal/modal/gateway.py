"""The keyed front door: a CPU function that owns the guide's URL and relays to the GPU server.

A request to a Modal web endpoint starts a container before any code of ours can check its key.
So the guide's URL (label ``vllm-llama70b-serve-vllm``) belongs to this small CPU app: the same
``BearerAuthMiddleware`` as the GPU server (allowlist, canonical paths, body limit, queue limit) decides
first, and only a request it lets through is relayed to the GPU endpoint, which Modal's proxy auth closes
to everyone without the workspace's proxy token (``requires_proxy_auth=True``). A stranger, a scanner or
a stale key costs a CPU container at most: no GPU starts and the GPU's scale-down clock is not reset.

What the relay promises, each rehearsed under Modal's HTTP rules in tests/modal/test_web_rules.py:

- **Keyless probes stay here.** ``/health`` and ``/ping`` (any method) are answered by the gateway; a
  public ``/metrics`` still needs a client key here (every relayed request may start a GPU); only the
  methods vLLM's client routes use are relayed.
- **The path relayed is the path checked**, byte for byte (the guard refuses non-canonical paths first).
- **Cold starts of any length** (``gpu_leg``): the GPU call's 303s are followed here, never handed out. A
  streamed request that has no answer after ``early_stream_s`` (under Modal's 150 s client limit) is
  answered 200 ``text/event-stream`` at once and kept alive with SSE comments until the GPU answers, so the
  client never meets Modal's 303 and its disconnect is seen; a GPU error then arrives as an SSE
  ``{"error": …}`` event, which the openai SDK raises. A plain request that outlasts 150 s gets Modal's 303
  to the gateway's own result URL (``curl -L``, the openai SDK and ``llmodal.client()`` follow it).
- **A client that leaves stops the generation.** The relay listens for ``http.disconnect`` and closes the
  GPU leg, which vLLM turns into an abort; a GPU call already behind a result URL is cancelled by its id.
- **No hidden queue; honest errors** (``gpu_leg``): 502 only when nothing was sent, 429 when the pool is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable

from llmodal.core.constants import OPEN_PATHS
from llmodal.engine.auth import BearerAuthMiddleware
from llmodal.modal.gpu_leg import GpuLeg, LegError, cancel_modal_call, error_body

log = logging.getLogger("llmodal.modal.gateway")
# Headers that describe one hop, not the message (RFC 9110 §7.6.1), and the ones we set ourselves.
_HOP = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
        b"transfer-encoding", b"upgrade", b"host", b"content-length", b"modal-key", b"modal-secret"}
PROXY_TOKEN_ENV = ("MODAL_PROXY_TOKEN_ID", "MODAL_PROXY_TOKEN_SECRET")
RELAYED_METHODS = {"GET", "HEAD", "POST", "DELETE"}  # what vLLM's client routes answer
EARLY_STREAM_S = 120.0  # Modal's 150 s counts from its edge; the gateway's own start and a margin come first
KEEPALIVE_S = 10.0
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]

NO_TOKEN = (500, error_body(500, "the gateway has no Modal proxy token: add MODAL_PROXY_TOKEN_ID and "
                            "MODAL_PROXY_TOKEN_SECRET (https://modal.com/settings/proxy-auth-tokens) to the Modal "
                            "secret, then redeploy"))


class Relay:
    """ASGI app: forward every request to ``upstream()`` (resolved once, lazily) with the proxy token."""

    def __init__(self, upstream: Callable[[], str], *, environ=os.environ, timeout: float = 1800,
                 max_streams: int = 0, hops: int | None = None, early_stream_s: float = EARLY_STREAM_S,
                 cancel_call: Callable[[str], Awaitable[None]] = cancel_modal_call) -> None:
        tid, secret = (environ.get(k, "") for k in PROXY_TOKEN_ENV)
        auth = [(b"modal-key", tid.encode()), (b"modal-secret", secret.encode())] if tid and secret else []
        self.leg = GpuLeg(upstream, auth, timeout=timeout, max_streams=max_streams,
                          **({"hops": hops} if hops else {}))
        self.early_stream_s, self.cancel_call = early_stream_s, cancel_call

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # websockets are not relayed: closed before any GPU is involved
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["path"] in OPEN_PATHS:  # probes are answered here, whatever the method: never a GPU
            await _answer(send, 200, b'{"status":"ok","gateway":true}')
            return
        if not self.leg.auth:
            await _answer(send, *NO_TOKEN)
            return
        if scope["method"] not in RELAYED_METHODS:
            await _answer(send, 405, error_body(405, f"{scope['method']} is not relayed to the GPU server",
                                                "invalid_request_error"))
            return
        raw = scope.get("raw_path") or scope["path"].encode()
        url = self.leg.url(raw + (b"?" + scope["query_string"] if scope.get("query_string") else b""))
        if url is None:  # the guard refused non-canonical paths; this is the last line
            await _answer(send, 400, error_body(400, "the request path cannot be relayed unchanged",
                                                "invalid_request_error"))
            return
        body = b""
        while True:  # the whole body first (the guard bounds it): nothing is sent for a client that left
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP]
        calls: list[str] = []
        exchange = asyncio.ensure_future(self._exchange(scope["method"], url, headers, body, _streamed(body),
                                                        calls.append, send))
        watch = asyncio.ensure_future(_until_disconnect(receive))
        done, _ = await asyncio.wait({exchange, watch}, return_when=asyncio.FIRST_COMPLETED)
        if exchange in done:
            watch.cancel()
            exchange.result()
            return
        # The client left: cancelling closes the GPU leg's connection, and vLLM aborts the request. A call that
        # already sits behind a result URL no longer hears that connection: it is cancelled by its id.
        exchange.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await exchange
        for call_id in calls[-1:]:
            try:
                await asyncio.wait_for(self.cancel_call(call_id), 30)
            except Exception as e:  # noqa: BLE001 - best effort; the call ends at its max_tokens anyway
                log.warning("llmodal gateway: could not cancel GPU call %s: %s", call_id, e)

    async def _exchange(self, method, url, headers, body: bytes, streamed: bool, on_call, send) -> None:
        pending = asyncio.ensure_future(self.leg.send(method, url, headers, body, on_call))
        started = False
        try:
            if streamed:
                done, _ = await asyncio.wait({pending}, timeout=self.early_stream_s)
                if not done:  # answer now, inside Modal's limit: the stream keeps its client and its disconnect
                    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
                    started = True
                    while not (await asyncio.wait({pending}, timeout=KEEPALIVE_S))[0]:
                        await send({"type": "http.response.body", "body": b": waiting for the GPU server\n\n",
                                    "more_body": True})
            try:
                resp = await pending
            except LegError as e:
                if started:
                    await _last_event(send, e.body)
                else:
                    await _answer(send, e.status, e.body, e.headers)
                return
            try:
                if started and resp.status_code != 200:
                    await _last_event(send, await resp.aread())
                    return
                if not started:
                    out = [(k, self.leg.local(v) if k.lower() == b"location" else v)
                           for k, v in resp.headers.raw if k.lower() not in _HOP]
                    await send({"type": "http.response.start", "status": resp.status_code, "headers": out})
                async for chunk in resp.aiter_raw():  # as it arrives: a stream stays a stream
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            finally:
                await resp.aclose()
        finally:
            if not pending.done():
                pending.cancel()

    async def _lifespan(self, receive, send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.leg.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _streamed(body: bytes) -> bool:
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("stream") is True


async def _answer(send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": body})


async def _last_event(send, error: bytes) -> None:
    """An error after an early 200: the stream's last event carries it (the openai SDK raises on it)."""
    try:
        doc = json.loads(error)
    except ValueError:
        doc = {"error": {"message": error.decode("utf-8", "replace")[:2000], "type": "server_error"}}
    if not (isinstance(doc, dict) and "error" in doc):
        doc = {"error": doc}
    await send({"type": "http.response.body", "body": b"data: " + json.dumps(doc).encode() + b"\n\n"})


async def _until_disconnect(receive) -> None:
    """Returns when the client has gone (ASGI's ``http.disconnect``); called once the body is in."""
    while (await receive())["type"] != "http.disconnect":
        pass


def make_gateway(upstream: Callable[[], str], guard_env: dict[str, str], **relay):
    """The guard in front of the relay: what ``@modal.asgi_app`` returns. ``guard_env``: the guard's
    variables (keys, metrics choice, body limit, queue limit), the names the GPU server's guard reads.
    ``relay``: Relay's options (the rehearsal scales Modal's times down)."""
    limit = int(guard_env.get("LLMODAL_QUEUE_LIMIT") or 0)
    return BearerAuthMiddleware(Relay(upstream, environ=os.environ, max_streams=limit, **relay), environ=guard_env,
                                keyed_metrics=True)


__all__ = ["NO_TOKEN", "PROXY_TOKEN_ENV", "Relay", "make_gateway"]
