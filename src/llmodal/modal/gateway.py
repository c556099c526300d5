"""The keyed front door: a CPU function that owns the guide's URL and relays to the GPU server.

A request to a Modal web endpoint starts a container before any code of ours can check its key.
So the guide's URL (label ``vllm-llama70b-serve-vllm``) belongs to this small CPU app: the same
``BearerAuthMiddleware`` as the GPU server (allowlist, body limit) decides first, and only a request
it lets through is relayed to the GPU endpoint, which Modal's proxy auth closes to everyone without
the workspace's proxy token (``requires_proxy_auth=True``). A stranger, a scanner or a stale key
costs a CPU container at most: no GPU starts and the GPU's scale-down clock is not reset.

The relay streams both ways without buffering (each chunk is sent as it arrives), passes status and
headers through, and answers ``/health`` itself so a probe never starts a GPU. The GPU server keeps
its own guard too (two locks, one key).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import httpx

from llmodal.engine.auth import BearerAuthMiddleware

# Headers that describe one hop, not the message (RFC 9110 §7.6.1), and the ones we set ourselves.
_HOP = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
        b"transfer-encoding", b"upgrade", b"host", b"content-length", b"modal-key", b"modal-secret"}
PROXY_TOKEN_ENV = ("MODAL_PROXY_TOKEN_ID", "MODAL_PROXY_TOKEN_SECRET")


def _json(status: int, message: str, kind: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()


class Relay:
    """ASGI app: forward every request to ``upstream()`` (resolved once, lazily) with the proxy token."""

    def __init__(self, upstream: Callable[[], str], *, environ=os.environ, timeout: float = 1800) -> None:
        self._upstream, self._base = upstream, None
        self._token = {k: environ.get(k, "") for k in PROXY_TOKEN_ENV}
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=30), follow_redirects=False)

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
        if scope["path"] == "/health":
            await self._answer(send, 200, b'{"status":"ok","gateway":true}')
            return
        auth = self._auth_headers()
        if not auth:
            await self._answer(send, *_json(
                503, "the gateway has no Modal proxy token: add MODAL_PROXY_TOKEN_ID and MODAL_PROXY_TOKEN_SECRET "
                "(https://modal.com/settings/proxy-auth-tokens) to the Modal secret, then redeploy", "server_error"))
            return
        if self._base is None:
            self._base = self._upstream().rstrip("/")
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP] + auth
        url = self._base + scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")

        async def body():
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                if msg.get("body"):
                    yield msg["body"]
                if not msg.get("more_body"):
                    return

        req = self._client.build_request(scope["method"], url, headers=headers, content=body())
        try:
            resp = await self._client.send(req, stream=True)
        except httpx.HTTPError as e:
            await self._answer(send, *_json(502, f"the GPU server could not be reached ({type(e).__name__})",
                                            "server_error"))
            return
        try:
            out = [(k, v) for k, v in resp.headers.raw if k.lower() not in _HOP]
            await send({"type": "http.response.start", "status": resp.status_code, "headers": out})
            async for chunk in resp.aiter_raw():  # as it arrives: a stream stays a stream
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await resp.aclose()  # a client that left closes the upstream stream: vLLM aborts the request

    @staticmethod
    async def _answer(send, status: int, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
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


def make_gateway(upstream: Callable[[], str], guard_env: dict[str, str]):
    """The guard in front of the relay: what ``@modal.asgi_app`` returns. ``guard_env``: the guard's
    variables (keys, metrics choice, body limit), the same names as the GPU server's guard reads."""
    return BearerAuthMiddleware(Relay(upstream), environ=guard_env)
