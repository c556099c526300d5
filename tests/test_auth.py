"""Every route of the real server is closed without the key; the route list comes from the server."""

import asyncio

import httpx
import pytest

from conftest import TEST_KEY
from llmodal.auth import BearerAuthMiddleware

OPEN = {"/health", "/ping"}


def _routes(server):
    root = server.root
    spec = httpx.get(f"{root}/openapi.json", headers={"Authorization": f"Bearer {TEST_KEY}"}, timeout=30).json()
    routes = [(m.upper(), p) for p, ops in spec["paths"].items() for m in ops]
    routes += [("GET", "/metrics"), ("GET", "/docs"), ("GET", "/openapi.json")]  # mounted, not in the spec
    return root, routes


@pytest.mark.server
def test_every_route_needs_the_key(server):
    root, routes = _routes(server)
    assert len(routes) > 20 and ("POST", "/invocations") in routes
    bad_headers = [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TEST_KEY}"},
                   {"Authorization": f"Bearer  {TEST_KEY}"}, {"Authorization": f"Bearer {TEST_KEY}x"}, {"Authorization": TEST_KEY}]
    leaks = []
    with httpx.Client(timeout=30) as c:
        for method, path in routes:
            url = root + path.replace("{", "x").replace("}", "")
            for h in bad_headers:
                status = c.request(method, url, headers=h, json={}).status_code
                if (path in OPEN) != (status != 401):
                    leaks.append((method, path, h.get("Authorization", "-")[:6], status))
            with_key = c.request(method, url, headers={"Authorization": f"Bearer {TEST_KEY}"}, json={}).status_code
            if path not in OPEN:
                assert with_key != 401, (method, path)
            no_key = c.request(method, url, json={}).status_code
            print(f"RECORD route | {method} {path} | {no_key} | {with_key}")
    assert not leaks, leaks


@pytest.mark.server
def test_401_body_is_one_clear_openai_style_error(server):
    r = httpx.post(server.root + "/invocations", json={}, timeout=30)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["type"] == "authentication_error"


@pytest.mark.server
def test_key_never_in_the_server_log(server):
    import os
    from pathlib import Path

    logs = list((Path(os.environ["LLMODAL_CACHE_DIR"]) / "logs").glob("test-*.log"))
    assert logs and all(TEST_KEY not in p.read_text(errors="replace") for p in logs)


def _call(mw_env, monkeypatch, path, headers=(), method="GET", scope_type="http"):
    for k, v in mw_env.items():
        monkeypatch.setenv(k, v)
    sent = []

    async def inner(scope, receive, send):
        sent.append("app")

    async def send(msg):
        sent.append(msg)

    mw = BearerAuthMiddleware(inner)
    scope = {"type": scope_type, "path": path, "method": method, "headers": list(headers)}
    asyncio.run(mw(scope, None, send))
    return "app" if sent == ["app"] else sent[0].get("status", sent[0].get("code"))


def test_metrics_open_only_when_configured(monkeypatch):
    assert _call({"VLLM_API_KEY": "k"}, monkeypatch, "/metrics") == 401
    assert _call({"VLLM_API_KEY": "k", "LLMODAL_METRICS_PUBLIC": "1"}, monkeypatch, "/metrics") == "app"
    assert _call({"VLLM_API_KEY": "k", "LLMODAL_METRICS_PUBLIC": "1"}, monkeypatch, "/tokenize") == 401


def test_websocket_and_cors_preflight(monkeypatch):
    assert _call({"VLLM_API_KEY": "k"}, monkeypatch, "/v1/realtime", scope_type="websocket") == 1008
    pre = [(b"access-control-request-method", b"POST")]
    assert _call({"VLLM_API_KEY": "k"}, monkeypatch, "/v1/models", pre, method="OPTIONS") == "app"
    assert _call({"VLLM_API_KEY": "k"}, monkeypatch, "/v1/models", [(b"authorization", b"bearer k")]) == "app"
