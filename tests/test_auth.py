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
            # OPTIONS with no key and no Origin is not a preflight: it needs the key too.
            opt = c.request("OPTIONS", url, headers={"Access-Control-Request-Method": "POST"}).status_code
            if path not in OPEN and 200 <= opt < 300:
                leaks.append(("OPTIONS", path, "-", opt))
            print(f"RECORD route | {method} {path} | {no_key} | {with_key}")
    assert not leaks, leaks


@pytest.mark.server
def test_rotation_keys_and_x_api_key_on_the_real_server(server):
    from conftest import SECOND_KEY

    with httpx.Client(base_url=server.root, timeout=60) as c:
        for key, want in ((TEST_KEY, 200), (SECOND_KEY, 200), ("removed-key-0000", 401)):
            assert c.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == want, key
        body = {"model": server.model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
        assert c.post("/v1/messages", json=body, headers={"x-api-key": SECOND_KEY}).status_code == 200
        assert c.post("/v1/messages", json=body, headers={"x-api-key": "wrong"}).status_code == 401
        assert c.post("/v1/messages", json=body).status_code == 401
        assert c.post("/v1/chat/completions", json=body, headers={"x-api-key": TEST_KEY}).status_code == 401


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
    assert _call({"LLMODAL_API_KEYS": "k"}, monkeypatch, "/metrics") == 401
    assert _call({"LLMODAL_API_KEYS": "k", "LLMODAL_METRICS_PUBLIC": "1"}, monkeypatch, "/metrics") == "app"
    assert _call({"LLMODAL_API_KEYS": "k", "LLMODAL_METRICS_PUBLIC": "1"}, monkeypatch, "/tokenize") == 401


def test_websocket_and_cors_preflight(monkeypatch):
    env = {"LLMODAL_API_KEYS": "k"}
    assert _call(env, monkeypatch, "/v1/realtime", scope_type="websocket") == 1008
    pre = [(b"access-control-request-method", b"POST")]
    # Without an Origin it is no preflight: it needs the key like any request.
    assert _call(env, monkeypatch, "/metrics", pre, method="OPTIONS") == 401
    # A real preflight is answered by the middleware itself and never reaches the app.
    assert _call(env, monkeypatch, "/metrics", [*pre, (b"origin", b"https://x.example")], method="OPTIONS") == 204
    assert _call(env, monkeypatch, "/v1/models", [(b"authorization", b"bearer k")]) == "app"


def test_several_keys_for_rotation(monkeypatch):
    env = {"LLMODAL_API_KEYS": "old-key,new-key"}
    for key, want in ((b"old-key", "app"), (b"new-key", "app"), (b"gone-key", 401), (b"old-key,new-key", 401)):
        assert _call(env, monkeypatch, "/v1/models", [(b"authorization", b"Bearer " + key)]) == want, key


def test_x_api_key_only_on_messages_routes(monkeypatch):
    env = {"LLMODAL_API_KEYS": "k1,k2"}
    assert _call(env, monkeypatch, "/v1/messages", [(b"x-api-key", b"k2")], method="POST") == "app"
    assert _call(env, monkeypatch, "/v1/messages", [(b"x-api-key", b"wrong")], method="POST") == 401
    assert _call(env, monkeypatch, "/v1/messages", [], method="POST") == 401
    assert _call(env, monkeypatch, "/v1/chat/completions", [(b"x-api-key", b"k1")], method="POST") == 401


def test_sleep_routes_answer_only_the_containers_control_key(monkeypatch):
    env = {"LLMODAL_API_KEYS": "client", "LLMODAL_CONTROL_KEY": "control"}
    for path in ("/sleep", "/wake_up", "/is_sleeping"):
        assert _call(env, monkeypatch, path, [(b"authorization", b"Bearer client")], method="POST") == 401
        assert _call(env, monkeypatch, path, [(b"authorization", b"Bearer control")], method="POST") == "app"
    # Closed even on a public (keyless) deployment, and with no control key configured at all.
    monkeypatch.delenv("LLMODAL_CONTROL_KEY")
    assert _call({"LLMODAL_API_KEYS": ""}, monkeypatch, "/sleep", [], method="POST") == 401
    assert _call({"LLMODAL_API_KEYS": ""}, monkeypatch, "/v1/models", []) == "app"
