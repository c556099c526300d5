"""Bearer-token guard for every route of the vLLM server, loaded through vLLM's ``--middleware``.

vLLM's own ``--api-key`` checks only paths under ``/v1``, ``/v2``, ``/inference`` and
``/cohere``: ``/invocations`` runs inference without a key, and ``/tokenize``, ``/metrics``,
``/docs``, ``/scale_elastic_ep`` … stay open. This middleware runs inside the vLLM process
(no proxy hop) and closes all of them except the health probes.

Configuration comes from the environment vLLM is started with (``build_launch`` sets it):
``VLLM_API_KEY`` (no key → nothing is checked, by the deployer's explicit choice) and
``LLMODAL_METRICS_PUBLIC=1`` to leave ``/metrics`` open for a scraper.
"""

from __future__ import annotations

import hmac
import json
import logging
import os

from ._constants import OPEN_PATHS

log = logging.getLogger("llmodal.auth")

UNAUTHORIZED_BODY = json.dumps({
    "error": {
        "message": "Missing or invalid API key: send 'Authorization: Bearer <key>' "
                   "(the key is VLLM_SERVER_API_KEY on the server, VLLM_API_KEY in the client's .env).",
        "type": "authentication_error",
        "code": 401,
    }
}).encode()


class BearerAuthMiddleware:
    """Pure ASGI middleware: 401 for any HTTP or WebSocket request without the right Bearer key."""

    def __init__(self, app) -> None:
        self.app = app
        key = os.environ.get("VLLM_API_KEY", "")
        self._key = key.encode() if key else None
        self._metrics_public = os.environ.get("LLMODAL_METRICS_PUBLIC", "0").lower() in ("1", "true", "yes")
        if self._key is None:
            log.warning("llmodal: no API key configured; every route of this server is public")

    def _allowed(self, scope) -> bool:
        path = scope.get("path", "")
        if path in OPEN_PATHS:
            return True
        if self._metrics_public and (path == "/metrics" or path.startswith("/metrics/")):
            return True
        headers = dict(scope.get("headers") or [])
        if scope["type"] == "http" and scope.get("method") == "OPTIONS" and b"access-control-request-method" in headers:
            return True  # CORS preflight carries no credentials by design
        auth = headers.get(b"authorization", b"")
        scheme, _, token = auth.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return False
        return hmac.compare_digest(token, self._key)

    async def __call__(self, scope, receive, send) -> None:
        if self._key is None or scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({
            "type": "http.response.start",
            "status": 401,
            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                        (b"content-length", str(len(UNAUTHORIZED_BODY)).encode())],
        })
        await send({"type": "http.response.body", "body": UNAUTHORIZED_BODY})
