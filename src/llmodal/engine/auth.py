"""Bearer-key guard for every route of the vLLM server, loaded through vLLM's ``--middleware``.

Deny by default. vLLM's own ``--api-key`` checks only ``/v1``, ``/v2``, ``/inference`` and
``/cohere``, and its development mode (which fast boot needs for sleep/wake) adds admin routes
(``/pause``, ``/collective_rpc``, ``/server_info``, ``/update_weights`` …). Here a route is one of:

- **open**: the health probes (and ``/metrics`` when ``LLMODAL_METRICS_PUBLIC``), no key;
- **client**: what a client needs (``CLIENT_ROUTES``): any client key, or nothing on a public
  (keyless) deployment;
- **control**: ``/sleep``, ``/wake_up``, ``/is_sleeping``, only the container's own control key;
- **closed**: everything else, any route a future vLLM adds included: 403 to a valid key, 401 to
  anything else, public or not.

Configuration comes from the environment vLLM is started with (``build_launch`` sets it):
``LLMODAL_API_KEYS`` (comma-separated, each key works: rotation) or ``LLMODAL_API_KEYS_FILE`` (the
same, in a file re-read when it changes: a restored fast-boot container serves the keys its secret
holds at restore time, not at snapshot time); ``LLMODAL_CONTROL_KEY``; ``LLMODAL_METRICS_PUBLIC``;
``LLMODAL_MAX_BODY_BYTES`` (default 16 MiB, 413 above it before vLLM parses the body);
``LLMODAL_QUEUE_LIMIT``: the most inference requests in flight (running and queued in vLLM) — one more
gets 429 with ``Retry-After`` at once instead of waiting minutes in an unbounded queue;
``LLMODAL_SERVED_MODELS``: the base and its LoRA adapters — vLLM's 404 for an unknown ``model`` names the
base only, so the guard's names every one a client may ask for.

LoRA's run-time routes (``/v1/load_lora_adapter``, ``/v1/unload_lora_adapter``) are closed like every
admin route: adapters are declared (``VLLM_LORA_MODULES``), checked and planned before the start, never
loaded by a caller.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re

from llmodal.core.constants import MAX_BODY_BYTES as DEFAULT_MAX_BODY
from llmodal.core.constants import OPEN_PATHS

log = logging.getLogger("llmodal.engine.auth")

# vLLM's sleep-mode routes: only the container's own control key opens them.
CONTROL_ROUTES = frozenset({"/sleep", "/wake_up", "/is_sleeping"})
# What a client needs: OpenAI and Anthropic inference, the model list, tokenizer, version, probes.
# /invocations (SageMaker's entry, which dispatches to any of these) is not a client route.
CLIENT_ROUTES = frozenset({
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages",
    "/v1/messages/count_tokens", "/v1/audio/transcriptions", "/v1/audio/translations", "/v1/realtime",
    "/v1/rerank", "/v2/rerank", "/rerank", "/v1/score", "/score", "/pooling", "/classify", "/v1/classify",
    "/v1/models", "/tokenize", "/detokenize", "/version", *OPEN_PATHS,
})
# Retrieve / cancel / list the input of a stored response: exact shapes, never a prefix (a prefix lets
# `/v1/responses/x/../../collective_rpc` through a check that a normalising hop then resolves elsewhere).
CLIENT_PATTERNS = (re.compile(r"/v1/responses/[A-Za-z0-9_-]{1,128}(/cancel|/input_items)?"),)
# A path is checked and relayed as the bytes the client sent; one that a hop could rewrite into
# another route (dot segments, empty segments, escaped slashes or dots, backslashes) is refused first.
_NOT_CANONICAL = re.compile(rb"//|\\|%2[eEfF]|%5[cC]|(^|/)\.{1,2}(/|$)")


def path_problem(raw_path: bytes) -> str | None:
    """Why a request path is refused before any route check, or None when it is canonical."""
    if not raw_path.startswith(b"/"):
        return "the path must start with '/'"
    if _NOT_CANONICAL.search(raw_path):
        return "the path has dot segments, empty segments or escaped separators ('..', '//', '%2e', '%2f', '\\')"
    return None


def route_kind(path: str, metrics_public: bool = False) -> str:
    """open, client, control or closed (the default)."""
    if path in OPEN_PATHS or (metrics_public and (path == "/metrics" or path.startswith("/metrics/"))):
        return "open"
    if path in CONTROL_ROUTES:
        return "control"
    if path in CLIENT_ROUTES or any(p.fullmatch(path) for p in CLIENT_PATTERNS):
        return "client"
    return "closed"


def _error(status: int, message: str, kind: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()


UNAUTHORIZED_BODY = _error(
    401, "Missing or invalid API key: send 'Authorization: Bearer <key>' (the key is VLLM_SERVER_API_KEY on the "
    "server, VLLM_API_KEY in the client's .env).", "authentication_error")
FORBIDDEN_BODY = _error(403, "This route is not open to client keys on an llmodal server.", "permission_error")
BAD_PATH = "Refused request path: {}."
BUSY_BODY = _error(429, "The server's queue is full (LLMODAL_QUEUE_LIMIT): retry after the Retry-After seconds.",
                   "rate_limit_error")
RETRY_AFTER_S = b"1"


async def _respond(send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] = ()) -> None:
    head = [(b"content-type", b"application/json")] if body else []
    await send({"type": "http.response.start", "status": status,
                "headers": [*head, (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})


_PREFLIGHT_HEADERS = [(b"access-control-allow-origin", b"*"),
                      (b"access-control-allow-methods", b"GET, POST, DELETE, OPTIONS"),
                      (b"access-control-allow-headers", b"authorization, content-type, x-api-key"),
                      (b"access-control-max-age", b"600")]


def _is_preflight(scope) -> bool:
    """A CORS preflight is an OPTIONS request with an Origin and Access-Control-Request-Method."""
    if scope["type"] != "http" or scope.get("method") != "OPTIONS":
        return False
    headers = dict(scope.get("headers") or [])
    return b"origin" in headers and b"access-control-request-method" in headers


def _raw_path(scope) -> bytes:
    return scope.get("raw_path") or scope.get("path", "").encode("utf-8")


def _checked_path(scope) -> str:
    """The path the routes are matched on: the raw bytes the client sent (and the gateway relays), so an
    escaped character can never make the checked path differ from the one a later hop decodes."""
    return _raw_path(scope).decode("latin-1")


def _token(scope) -> bytes:
    headers = dict(scope.get("headers") or [])
    scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
    if scheme.lower() == b"bearer":
        return token
    if scope.get("path", "").startswith("/v1/messages"):
        # The Anthropic SDK sends its key as x-api-key; accept it on the Anthropic-style routes only.
        return headers.get(b"x-api-key", b"")
    return b""


def _matches(token: bytes, keys: list[bytes]) -> bool:
    # Compare with every key, always all of them: the time taken says nothing about which matched.
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(token, key)
    return bool(token) and ok


def split_keys(text: str) -> list[bytes]:
    return [k.encode() for k in text.replace("\n", ",").split(",") if k.strip()]


class KeySource:
    """The client keys: from ``LLMODAL_API_KEYS``, or from ``LLMODAL_API_KEYS_FILE`` re-read whenever
    the file changes. A file that cannot be read accepts no key at all (fail closed)."""

    def __init__(self, environ=os.environ) -> None:
        self.path = environ.get("LLMODAL_API_KEYS_FILE") or None
        self._keys = [] if self.path else split_keys(environ.get("LLMODAL_API_KEYS", ""))
        self._stamp: tuple[int, int] | None = None

    @property
    def public(self) -> bool:
        """No key configured at all: the deployer's explicit choice (the container refuses it otherwise)."""
        return self.path is None and not self._keys

    def keys(self) -> list[bytes]:
        if self.path is None:
            return self._keys
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                with open(self.path, "rb") as f:
                    self._keys = split_keys(f.read().decode())
                self._stamp = stamp
        except OSError:
            self._keys, self._stamp = [], None
        return self._keys


class BearerAuthMiddleware:
    """Pure ASGI middleware: the route table above, then the body limit."""

    def __init__(self, app, environ=None, *, keyed_metrics: bool = False) -> None:
        # vLLM builds it with the app alone (its environment configures it); the gateway passes its own.
        # keyed_metrics (the gateway): a public /metrics still needs a client key there, since every request
        # the gateway lets through reaches (and may start) a GPU.
        environ = os.environ if environ is None else environ
        self._keyed_metrics = keyed_metrics
        self.app = app
        self.keys = KeySource(environ)
        control = environ.get("LLMODAL_CONTROL_KEY", "").encode()
        self._control = [control] if control else []
        self._metrics_public = environ.get("LLMODAL_METRICS_PUBLIC", "0").lower() in ("1", "true", "yes")
        self._max_body = int(environ.get("LLMODAL_MAX_BODY_BYTES") or DEFAULT_MAX_BODY)
        self._too_large = _error(413, f"request body larger than {self._max_body} bytes (LLMODAL_MAX_BODY_BYTES)",
                                 "invalid_request_error")
        self._queue_limit = int(environ.get("LLMODAL_QUEUE_LIMIT") or 0)  # 0: no limit
        self._served = [m for m in environ.get("LLMODAL_SERVED_MODELS", "").split(",") if m]
        self.in_flight = 0
        if self.keys.public:
            log.warning("llmodal: no API key configured; the client routes of this server are public")

    def decide(self, scope) -> int:
        """0 to pass the request on, else the status to answer (401 or 403)."""
        kind = route_kind(_checked_path(scope), self._metrics_public)
        if kind == "open" and self._keyed_metrics and scope.get("path") not in OPEN_PATHS:
            kind = "client"
        if kind == "open":
            return 0
        token = _token(scope)
        control = _matches(token, self._control)
        client = not control and _matches(token, self.keys.keys())
        if kind == "control":
            return 0 if control else (403 if client else 401)
        if kind == "client":
            return 0 if (control or client or self.keys.public) else 401
        return 403 if (control or client) else 401

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        problem = path_problem(_raw_path(scope))
        if problem:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await _respond(send, 400, _error(400, BAD_PATH.format(problem), "invalid_request_error"))
            return
        if _is_preflight(scope):
            # Answered here, never passed on: a preflight reaches no handler, with or without a key.
            await _respond(send, 204, b"", _PREFLIGHT_HEADERS)
            return
        status = self.decide(scope)
        if status:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            elif status == 401:
                await _respond(send, 401, UNAUTHORIZED_BODY, [(b"www-authenticate", b"Bearer")])
            else:
                await _respond(send, 403, FORBIDDEN_BODY)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        if self._served and scope.get("method") == "POST" and route_kind(_checked_path(scope)) == "client":
            send = _NotFoundNames(send, self._served)
        counted = self._queue_limit and scope.get("method") == "POST" and route_kind(_checked_path(scope)) == "client"
        if not counted:
            await self._limited(scope, receive, send)
            return
        if self.in_flight >= self._queue_limit:
            await _respond(send, 429, BUSY_BODY, [(b"retry-after", RETRY_AFTER_S)])
            return
        self.in_flight += 1  # one event loop: no lock needed
        try:
            await self._limited(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _limited(self, scope, receive, send) -> None:
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            await _respond(send, 413, self._too_large)
            return
        seen = 0
        started = False

        async def counted_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self._max_body:
                    raise _TooLarge
            return msg

        async def tracked_send(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge:
            if not started:
                await _respond(send, 413, self._too_large)


class _TooLarge(Exception):
    pass


class _NotFoundNames:
    """A send that rewrites vLLM's 404 for an unknown model ("Valid aliases:" the base only) to name every
    model served, adapters included. Any other response, and any 404 it does not understand (not JSON, no
    string error.message, longer than NAMES_BUFFER bytes), passes through untouched."""

    NAMES_BUFFER = 64 * 1024  # vLLM's unknown-model 404 is a few hundred bytes; past this, not that one

    def __init__(self, send, served: list[str]) -> None:
        self.send, self.served = send, served
        self.start: dict | None = None
        self.body = b""

    async def __call__(self, msg) -> None:
        if msg["type"] == "http.response.start" and msg.get("status") == 404:
            self.start = msg  # held until the body says what it is
            return
        if self.start is None or msg["type"] != "http.response.body":
            await self.send(msg)
            return
        self.body += msg.get("body", b"")
        if len(self.body) > self.NAMES_BUFFER:  # not the 404 we rewrite: send what is held, then stream on
            start, body, self.start, self.body = self.start, self.body, None, b""
            await self.send(start)
            await self.send({**msg, "body": body})
            return
        if msg.get("more_body"):
            return
        body = self._named(self.body)
        if body is self.body:  # untouched: the response as vLLM sent it, headers and all
            await self.send(self.start)
            await self.send({"type": "http.response.body", "body": body})
            return
        headers = [(k, v) for k, v in self.start.get("headers", []) if k.lower() != b"content-length"]
        await self.send({**self.start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await self.send({"type": "http.response.body", "body": body})

    def _named(self, body: bytes) -> bytes:
        try:
            doc = json.loads(body)
            err = doc["error"]
            message = err["message"]
        except (ValueError, KeyError, TypeError, IndexError):
            return body
        if not isinstance(message, str) or "does not exist" not in message:
            return body
        err["message"] = (message.split(" Valid aliases:")[0] + " Available models: " + ", ".join(self.served)
                          + ".")
        return json.dumps(doc).encode()
