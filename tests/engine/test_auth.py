"""Every route of the real server is closed without the key; the route list comes from the server."""

import asyncio

import httpx
import pytest

import os

from conftest import CONTROL_KEY, SECOND_KEY, TEST_KEY
from llmodal.engine.auth import BearerAuthMiddleware

BAD_HEADERS = [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TEST_KEY}"},
               {"Authorization": f"Bearer  {TEST_KEY}"}, {"Authorization": f"Bearer {TEST_KEY}x"},
               {"Authorization": f"Bearer {TEST_KEY[:-1]}"}, {"Authorization": TEST_KEY}]


def _routes(argv):
    """Every route vLLM registers for the session server's own command line (development mode on),
    from vLLM's app builder in a separate process: the guard under test cannot shape the list."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    i = argv.index("vllm.entrypoints.openai.api_server")
    out = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "vllm_routes.py"), *argv[i + 1:]],
                         env={**os.environ, "VLLM_SERVER_DEV_MODE": "1"}, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return [tuple(r) for r in json.loads(out.strip().splitlines()[-1])]


# The allowlist, written out here rather than read from the guard under test: the routes a client key opens.
CLIENT_ALLOWLIST = {
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages",
    "/v1/messages/count_tokens", "/v1/audio/transcriptions", "/v1/audio/translations", "/v1/realtime",
    "/v1/rerank", "/v2/rerank", "/rerank", "/v1/score", "/score", "/pooling", "/classify", "/v1/classify",
    "/v1/models", "/tokenize", "/detokenize", "/version",
    "/v1/responses/{response_id}", "/v1/responses/{response_id}/cancel", "/v1/responses/{response_id}/input_items",
}


def _expected_kind(path: str) -> str:
    """What each route of vLLM's app must be on the session server (/metrics opened for a scraper)."""
    if path in ("/health", "/ping", "/metrics"):
        return "open"
    if path in ("/sleep", "/wake_up", "/is_sleeping"):
        return "control"
    return "client" if path in CLIENT_ALLOWLIST else "closed"


def _want(kind: str, who: str) -> str:
    """What the guard must do: pass (reaches vLLM), 401 or 403."""
    if kind == "open":
        return "pass"
    if kind == "client":
        return "pass" if who in ("client", "control") else "401"
    if kind == "control":
        return {"control": "pass", "client": "403"}.get(who, "401")
    return "403" if who in ("client", "control") else "401"


@pytest.mark.server
def test_every_route_with_development_mode_on_is_allowlisted(server, server_argv):
    """Every route of vLLM's app with development mode on, every method, every kind of caller."""
    routes = _routes(server_argv)
    for must in (("POST", "/pause"), ("POST", "/collective_rpc"), ("GET", "/server_info"), ("POST", "/sleep"),
                 ("POST", "/update_weights"), ("POST", "/invocations"), ("POST", "/v1/chat/completions")):
        assert must in routes, must  # development mode really is on in the list we sweep
    callers = [("none", h) for h in BAD_HEADERS] + [("client", {"Authorization": f"Bearer {TEST_KEY}"}),
                                                    ("client", {"Authorization": f"Bearer {SECOND_KEY}"}),
                                                    ("control", {"Authorization": f"Bearer {CONTROL_KEY}"})]
    wrong = []
    counts = {"open": 0, "client": 0, "control": 0, "closed": 0}
    with httpx.Client(timeout=60) as c:
        for method, path in routes:
            kind = _expected_kind(path)
            counts[kind] += 1
            url = server.root + path.replace("{", "x").replace("}", "")
            for who, h in callers:
                if who == "control" and path == "/sleep":
                    continue  # the CPU engine has no sleep mode; the control key's access is checked on /is_sleeping
                if kind in ("client", "open") and who != "none" and method == "POST" and path != "/tokenize":
                    continue  # would run inference for every route; inference with a key is tested elsewhere
                status = c.request(method, url, headers=h, json={}).status_code
                got = "401" if status == 401 else "403" if status == 403 else "pass"
                if got != _want(kind, who):
                    wrong.append((method, path, who, h.get("Authorization", "-")[:12], status))
            # OPTIONS without an Origin is no preflight: it is judged like any request.
            opt = c.request("OPTIONS", url, headers={"Access-Control-Request-Method": "POST"}).status_code
            if kind != "open" and opt not in (401, 403):
                wrong.append(("OPTIONS", path, "none", "-", opt))
            print(f"RECORD route | {method} {path} | {kind}")
    print(f"RECORD route-sweep | {len(routes)} routes | {counts}")
    assert counts["closed"] >= 25 and counts["control"] >= 3
    assert not wrong, wrong


@pytest.mark.server
def test_rotation_keys_and_x_api_key_on_the_real_server(server):
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
    monkeypatch.delenv("LLMODAL_API_KEYS_FILE", raising=False)
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
        assert _call(env, monkeypatch, path, [(b"authorization", b"Bearer client")], method="POST") == 403
        assert _call(env, monkeypatch, path, [(b"authorization", b"Bearer wrong")], method="POST") == 401
        assert _call(env, monkeypatch, path, [(b"authorization", b"Bearer control")], method="POST") == "app"
    # Closed even on a public (keyless) deployment, and with no control key configured at all.
    monkeypatch.delenv("LLMODAL_CONTROL_KEY")
    assert _call({"LLMODAL_API_KEYS": ""}, monkeypatch, "/sleep", [], method="POST") == 401
    assert _call({"LLMODAL_API_KEYS": ""}, monkeypatch, "/v1/models", []) == "app"


def test_public_deployment_opens_client_routes_only(monkeypatch):
    monkeypatch.delenv("LLMODAL_CONTROL_KEY", raising=False)
    env = {"LLMODAL_API_KEYS": ""}
    assert _call(env, monkeypatch, "/v1/chat/completions", [], method="POST") == "app"
    for path in ("/pause", "/collective_rpc", "/server_info", "/update_weights", "/invocations", "/docs",
                 "/a_route_a_future_vllm_adds"):
        assert _call(env, monkeypatch, path, [], method="POST") == 401, path


def test_keys_file_is_reread_when_it_changes_and_fails_closed(monkeypatch, tmp_path):
    import time

    from llmodal.modal.fast_boot import write_keys

    monkeypatch.delenv("LLMODAL_API_KEYS", raising=False)
    monkeypatch.setenv("LLMODAL_API_KEYS_FILE", str(tmp_path / "keys"))
    write_keys(str(tmp_path / "keys"), ["k1", "k2"])
    assert oct((tmp_path / "keys").stat().st_mode & 0o777) == "0o600"
    seen = []

    async def inner(scope, receive, send):
        seen.append(scope["path"])

    async def send(msg):
        seen.append(msg.get("status"))

    mw = BearerAuthMiddleware(inner)

    def status(key):
        seen.clear()
        asyncio.run(mw({"type": "http", "path": "/v1/models", "method": "GET",
                        "headers": [(b"authorization", b"Bearer " + key)]}, None, send))
        return "app" if seen == ["/v1/models"] else seen[0]

    assert [status(k) for k in (b"k1", b"k2", b"k3")] == ["app", "app", 401]
    time.sleep(0.01)
    write_keys(str(tmp_path / "keys"), ["k2", "k3"])
    assert [status(k) for k in (b"k1", b"k2", b"k3")] == [401, "app", "app"]
    (tmp_path / "keys").unlink()
    assert [status(k) for k in (b"k1", b"k2", b"k3")] == [401, 401, 401]


def test_route_kinds():
    from llmodal.engine.auth import route_kind

    assert route_kind("/v1/chat/completions") == route_kind("/v1/responses/abc/cancel") == "client"
    assert route_kind("/health") == "open" and route_kind("/metrics") == "closed"
    assert route_kind("/metrics", metrics_public=True) == "open"
    assert route_kind("/wake_up") == "control"
    assert route_kind("/v1/chat/completions_admin") == route_kind("/v1/modelsx") == "closed"
    # Exact shapes, not prefixes: nothing below a stored response's id is a client route.
    for path in ("/v1/responses/a/b", "/v1/responses/", "/v1/responses/a/cancel/x", "/v1/responses/a/../../pause"):
        assert route_kind(path) == "closed", path


@pytest.mark.parametrize("raw", [b"/v1/responses/x/../../../collective_rpc", b"/v1/./models", b"//v1/models",
                                 b"/v1//models", b"/v1/%2e%2e/pause", b"/v1/models%2F..", b"/v1/%5Cpause", b"/..",
                                 b"/v1\\pause", b"v1/models"])
def test_non_canonical_paths_are_refused_before_any_check(monkeypatch, raw):
    seen = []

    async def inner(scope, receive, send):
        seen.append(scope["path"])

    async def send(msg):
        seen.append(msg.get("status"))

    mw = BearerAuthMiddleware(inner, environ={"LLMODAL_API_KEYS": "k"})
    asyncio.run(mw({"type": "http", "path": raw.decode(), "raw_path": raw, "method": "GET",
                    "headers": [(b"authorization", b"Bearer k")]}, None, send))
    assert seen[0] == 400 and len(seen) == 2, (raw, seen)  # answered (start, body), never passed on
