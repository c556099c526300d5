"""Bearer-token guard for every route of the vLLM server, loaded through vLLM's ``--middleware``.

vLLM's own ``--api-key`` checks only paths under ``/v1``, ``/v2``, ``/inference`` and
``/cohere``: ``/invocations`` runs inference without a key, and ``/tokenize``, ``/metrics``,
``/docs``, ``/scale_elastic_ep`` … stay open. This middleware runs inside the vLLM process
(no proxy hop) and closes all of them except the health probes.

Configuration comes from the environment vLLM is started with (``build_launch`` sets it):
``LLMODAL_API_KEYS`` (one key or several, comma-separated, for rotation; no key → nothing is
checked, by the deployer's explicit choice; the container refuses that unless public was chosen),
``LLMODAL_METRICS_PUBLIC=1`` to leave ``/metrics`` open for a scraper, and
``LLMODAL_MAX_BODY_BYTES`` (default 16 MiB) above which a request body is refused with 413
before vLLM parses it — an authenticated client still should not be able to exhaust memory.
"""

from __future__ import annotations

import hmac
import json
import logging
import os

from ._constants import MAX_BODY_BYTES as DEFAULT_MAX_BODY
from ._constants import OPEN_PATHS

log = logging.getLogger("llmodal.auth")

# vLLM's sleep-mode routes (development mode, used by fast boot): only the container's own control
# key opens them, never a client's key, and never "no key configured".
CONTROL_ROUTES = ("/sleep", "/wake_up", "/is_sleeping")


def _error(status: int, message: str, kind: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()


UNAUTHORIZED_BODY = _error(
    401, "Missing or invalid API key: send 'Authorization: Bearer <key>' (the key is VLLM_SERVER_API_KEY on the "
    "server, VLLM_API_KEY in the client's .env).", "authentication_error")


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


def _bearer(scope) -> bytes:
    auth = dict(scope.get("headers") or []).get(b"authorization", b"")
    scheme, _, token = auth.partition(b" ")
    return token if scheme.lower() == b"bearer" else b""


class _TooLarge(Exception):
    pass


class BearerAuthMiddleware:
    """Pure ASGI middleware: 401 for any HTTP or WebSocket request without the right Bearer key."""

    def __init__(self, app) -> None:
        self.app = app
        keys = [k.encode() for k in os.environ.get("LLMODAL_API_KEYS", "").split(",") if k]
        control = os.environ.get("LLMODAL_CONTROL_KEY", "").encode()
        self._control = [control] if control else []
        self._keys = keys + self._control
        self._key = keys[0] if keys else None
        self._metrics_public = os.environ.get("LLMODAL_METRICS_PUBLIC", "0").lower() in ("1", "true", "yes")
        self._max_body = int(os.environ.get("LLMODAL_MAX_BODY_BYTES") or DEFAULT_MAX_BODY)
        self._too_large = _error(413, f"request body larger than {self._max_body} bytes (LLMODAL_MAX_BODY_BYTES)",
                                 "invalid_request_error")
        if self._key is None:
            log.warning("llmodal: no API key configured; every route of this server is public")

    def _allowed(self, scope) -> bool:
        path = scope.get("path", "")
        if path in CONTROL_ROUTES:
            return self._matches(_bearer(scope), self._control)
        if path in OPEN_PATHS:
            return True
        if self._metrics_public and (path == "/metrics" or path.startswith("/metrics/")):
            return True
        token = _bearer(scope)
        if not token and path.startswith("/v1/messages"):
            # The Anthropic SDK sends its key as x-api-key; accept it on the Anthropic-style routes only.
            token = dict(scope.get("headers") or []).get(b"x-api-key", b"")
        return self._matches(token, self._keys)

    @staticmethod
    def _matches(token: bytes, keys: list[bytes]) -> bool:
        # Compare with every key, always all of them: the time taken says nothing about which matched.
        ok = False
        for key in keys:
            ok |= hmac.compare_digest(token, key)
        return bool(token) and ok

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self._key is not None and _is_preflight(scope):
            # Answered here, never passed on: a preflight reaches no handler, with or without a key.
            await _respond(send, 204, b"", _PREFLIGHT_HEADERS)
            return
        guarded = self._key is not None or scope.get("path", "") in CONTROL_ROUTES
        if guarded and not self._allowed(scope):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await _respond(send, 401, UNAUTHORIZED_BODY, [(b"www-authenticate", b"Bearer")])
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
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
