"""Modal's web rules, rehearsed: what a request meets between a client and a web function, scaled down in time.

What Modal documents (read 2026-12-07), and what this fake does with it:

- "All Web Function types (fastapi_endpoint, asgi_app, wsgi_app, web_server) have a maximum HTTP request
  timeout of 150 seconds ... an HTTP status 303 redirect response is returned pointing at the original URL
  with a special query parameter linking it that request. This is the result URL ... The result URL can be
  reloaded without triggering a new request. It will block until the request completes."
  (https://modal.com/docs/guide/webhook-timeouts). Here: ``limit_s`` (the 150 s) → 303 to
  ``<same path>?__modal_function_call_id=fc-N``; the call runs on; a GET of that URL waits up to ``limit_s``
  for the response to start, answers it, or 303s to itself again.
- Proxy auth (``requires_proxy_auth=True``): a request without ``Modal-Key``/``Modal-Secret`` of a workspace
  proxy token gets 401 and reaches no container (https://modal.com/docs/guide/webhook-proxy-auth).
  The result URL is checked the same way.
- A cold function: the request waits in Modal's queue until a container is up (``ready_after_s``, which the
  tests set longer than ``limit_s``), then is forwarded; the limit counts from the request's arrival.
- A client that disconnects: the call's connection to the container is closed, which an ASGI app sees as
  ``http.disconnect`` from ``receive()`` and an HTTP server (vLLM) as a closed socket (modal 1.6.4,
  ``modal/_runtime/asgi.py``: ``asgi_app_wrapper`` puts ``http.disconnect`` on the app's queue; the
  ``web_server`` proxy aborts its connection to the server on it). After a 303 the call belongs to its result
  URL, not to the client that left.
- What reaches a ``web_server`` container is the *decoded* path plus the raw query (``_proxy_http_request``
  forwards ``scope["path"]``): an escaped character is unescaped on the way in, so the gateway checks the
  raw bytes and refuses escapes that could change the route.

Each ``WebFunction`` is a real HTTP server (uvicorn in a thread) in front of a backend URL, and records what
it forwarded (method, raw path) and what it answered, so tests count at the server.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import httpcore
import httpx

from conftest import serve_asgi

RESULT_PARAM = "__modal_function_call_id"
TOKEN = {"MODAL_PROXY_TOKEN_ID": "wk-rehearsal", "MODAL_PROXY_TOKEN_SECRET": "ws-rehearsal"}
_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"host", b"content-length", b"upgrade", b"te"}
_ids = itertools.count(1)


@dataclass
class _Call:
    started: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    status: int = 0
    headers: list = field(default_factory=list)
    chunks: asyncio.Queue = field(default_factory=asyncio.Queue)
    task: asyncio.Task | None = None


class WebFunction:
    """One web function's URL as Modal's proxy serves it."""

    def __init__(self, backend: str, *, limit_s: float = 1.5, requires_proxy_auth: bool = False,
                 ready_after_s: float = 0.0, name: str = "fn", web_server: bool = False) -> None:
        """``web_server``: a ``@modal.web_server`` container (gets the decoded path, as Modal's in-container proxy
        sends it); otherwise an ASGI function, which gets the request target as the client sent it."""
        self.backend, self.limit_s, self.auth, self.name = backend.rstrip("/"), limit_s, requires_proxy_auth, name
        self.web_server = web_server
        self.ready_at = time.monotonic() + ready_after_s
        self.forwarded: list[tuple[str, str]] = []  # (method, raw path) that reached the backend
        self.answered: list[tuple[str, int, str]] = []  # (raw path, status, location) sent to callers
        self.calls: dict[str, _Call] = {}
        self.cancelled: list[str] = []  # call ids cancelled through Modal's API (FunctionCall.cancel)
        self._pool: httpcore.AsyncConnectionPool | None = None
        self.server, self.url = serve_asgi(self, lifespan="off")

    async def cancel(self, call_id: str) -> None:
        """``modal.FunctionCall.from_id(call_id).cancel()``: the call's connection to its container is closed.
        Callable from any event loop (the gateway's)."""
        def stop():
            self.cancelled.append(call_id)
            call = self.calls.get(call_id)
            if call is not None and call.task is not None:
                call.task.cancel()
        self._loop.call_soon_threadsafe(stop)

    def cold(self, ready_after_s: float) -> None:
        """Scale to zero: the next request waits ``ready_after_s`` for a container."""
        self.ready_at = time.monotonic() + ready_after_s

    def close(self) -> None:
        self.server.should_exit = True

    # --- the proxy ---
    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        self._loop = asyncio.get_running_loop()
        if self._pool is None:  # httpcore: sends the target's bytes as given (httpx would resolve dot segments)
            self._pool = httpcore.AsyncConnectionPool()
        raw = scope.get("raw_path") or scope["path"].encode()
        headers = dict(scope["headers"])
        if self.auth and (headers.get(b"modal-key"), headers.get(b"modal-secret")) != (
                TOKEN["MODAL_PROXY_TOKEN_ID"].encode(), TOKEN["MODAL_PROXY_TOKEN_SECRET"].encode()):
            await self._plain(send, raw, 401, b"modal-http: missing or invalid proxy authorization credentials")
            return
        query = httpx.QueryParams(scope.get("query_string", b"").decode())
        arrival = time.monotonic()
        if RESULT_PARAM in query:
            call = self.calls.get(query[RESULT_PARAM])
            if call is None:
                await self._plain(send, raw, 404, b"modal-http: unknown function call")
                return
            await self._answer(call, raw, query[RESULT_PARAM], arrival, receive, send, detached=True)
            return
        body = b""
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        call_id = f"fc-{next(_ids):06d}"
        call = self.calls[call_id] = _Call()
        fwd = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP]
        path = scope["path"].encode("utf-8") if self.web_server else raw
        target = path + (b"?" + scope["query_string"] if scope.get("query_string") else b"")
        call.task = asyncio.ensure_future(self._run(call, scope["method"], target, fwd, body))
        await self._answer(call, raw, call_id, arrival, receive, send, detached=False)

    async def _run(self, call: _Call, method: str, target: bytes, headers, body: bytes) -> None:
        try:
            while time.monotonic() < self.ready_at:  # the cold start: queued until a container is up
                await asyncio.sleep(0.02)
            self.forwarded.append((method, target.decode("latin-1")))
            u = httpx.URL(self.backend)
            url = httpcore.URL(scheme=b"http", host=u.host.encode(), port=u.port, target=target)
            headers = [*headers, (b"host", f"{u.host}:{u.port}".encode()), (b"content-length", str(len(body)).encode())]
            async with self._pool.stream(method, url, headers=headers, content=body) as resp:
                call.status = resp.status
                call.headers = [(k, v) for k, v in resp.headers if k.lower() not in _HOP]
                call.started.set()
                async for chunk in resp.aiter_stream():
                    await call.chunks.put(chunk)
        except (httpcore.ConnectError, httpcore.ReadError, httpcore.RemoteProtocolError, httpcore.WriteError):
            if not call.started.is_set():
                call.status, call.headers = 502, [(b"content-type", b"text/plain")]
                call.started.set()
                await call.chunks.put(b"modal-http: app for invoked web endpoint is stopped")
        finally:
            await call.chunks.put(None)
            call.done.set()

    async def _answer(self, call: _Call, raw: bytes, call_id: str, arrival: float, receive, send, *,
                      detached: bool) -> None:
        """Wait for the response to start until the limit, then stream it, or 303 to the result URL."""
        left = self.limit_s - (time.monotonic() - arrival)
        waiter = asyncio.ensure_future(call.started.wait())
        gone = asyncio.ensure_future(_disconnected(receive))
        done, _ = await asyncio.wait({waiter, gone}, timeout=max(0.0, left), return_when=asyncio.FIRST_COMPLETED)
        if gone in done:  # the client left before an answer
            waiter.cancel()
            if not detached:
                call.task.cancel()
            return
        if waiter not in done:
            waiter.cancel()
            gone.cancel()
            location = f"{raw.decode('latin-1')}?{RESULT_PARAM}={call_id}"
            self.answered.append((raw.decode("latin-1"), 303, location))
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", (self.url + location).encode()), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        self.answered.append((raw.decode("latin-1"), call.status, ""))
        await send({"type": "http.response.start", "status": call.status, "headers": call.headers})
        streaming = asyncio.ensure_future(self._stream(call, send))
        done, _ = await asyncio.wait({streaming, gone}, return_when=asyncio.FIRST_COMPLETED)
        if gone in done:
            streaming.cancel()
            if not detached:
                call.task.cancel()  # the client left mid-answer: the container's connection is closed
        else:
            gone.cancel()

    @staticmethod
    async def _stream(call: _Call, send) -> None:
        while (chunk := await call.chunks.get()) is not None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _plain(self, send, raw: bytes, status: int, body: bytes) -> None:
        self.answered.append((raw.decode("latin-1"), status, ""))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
