"""The guide's URL under Modal's own HTTP rules (tests/modal_web.py: the 150 s limit and its 303, proxy auth,
a cold GPU function, client disconnects), scaled down in time, in front of the real gateway and a real vLLM
on the CPU engine. Every request is counted where it lands: at the GPU function's door and in vLLM."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import subprocess
import threading
import time
from unittest import mock
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import TEST_KEY, free_port, serve_asgi
from modal_web import TOKEN, WebFunction

LIMIT = 1.5  # Modal's 150 s, scaled down a hundredfold
COLD = 4.0  # a GPU start longer than two limits: 191 s measured on an H200 with dummy weights, scaled
KEY = {"Authorization": f"Bearer {TEST_KEY}"}


class GatewayServer:
    """``start_gateway`` (the body of ``serve_vllm``) in uvicorn, as its container serves it."""

    def __init__(self, upstream: str, relay: dict | None = None, **env: str) -> None:
        from llmodal.modal.container import start_gateway

        base = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "LLMODAL_", "MODAL_PROXY"))}
        with mock.patch.dict(os.environ, {**base, **TOKEN, "VLLM_SERVER_API_KEY": TEST_KEY, **env}, clear=True):
            app = start_gateway(lambda: upstream, **(relay or {}))
        self.server, self.url = serve_asgi(app, lifespan="on")

    def close(self) -> None:
        self.server.should_exit = True


class Stack:
    """client → Modal's door of ``serve_vllm`` → the gateway → Modal's door of the GPU function (proxy auth) → vLLM."""

    def __init__(self, vllm_root: str, **gateway_env: str) -> None:
        self.gpu = WebFunction(vllm_root, limit_s=LIMIT, requires_proxy_auth=True, name="gpu", web_server=True)
        # Modal's times scaled as the limit is: a stream with no answer after 1 s (of the 1.5 s) starts at once;
        # the gateway cancels a GPU call by its id through the rehearsal's stand-in for FunctionCall.cancel.
        self.gateway = GatewayServer(self.gpu.url, {"early_stream_s": 1.0, "cancel_call": self.gpu.cancel},
                                     **gateway_env)
        self.front = WebFunction(self.gateway.url, limit_s=LIMIT, name="serve-vllm")

    @property
    def v1(self) -> str:
        return self.front.url + "/v1"

    def close(self) -> None:
        for part in (self.front, self.gateway, self.gpu):
            part.close()


@pytest.fixture(scope="module")
def stack(server):
    s = Stack(server.root)
    yield s
    s.close()


def _chat(model: str, **kw) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, **kw}


def _gpu_posts(stack) -> int:
    return sum(1 for m, p in stack.gpu.forwarded if m == "POST")


def _metric(server, name: str) -> float:
    text = httpx.get(server.root + "/metrics", timeout=10).text
    return sum(float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M))


def _abandon_four_streams(stack, server) -> tuple[float, float]:
    """Four streams left after 8 chunks at the guide's URL: (tokens vLLM made in the next 3 s, requests running)."""
    async def abandon():
        async with httpx.AsyncClient(timeout=60) as c:
            async def one():
                body = _chat(server.model, max_tokens=1900, stream=True, ignore_eos=True)
                async with c.stream("POST", stack.v1 + "/chat/completions", json=body, headers=KEY) as r:
                    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
                    n = 0
                    async for line in r.aiter_lines():
                        n += line.startswith("data:")
                        if n >= 8:
                            return  # leaves: the response is closed mid-stream
            await asyncio.gather(*(one() for _ in range(4)))

    asyncio.run(abandon())
    left = _metric(server, "vllm:generation_tokens_total")
    time.sleep(3.0)
    return _metric(server, "vllm:generation_tokens_total") - left, _metric(server, "vllm:num_requests_running")


# --- 2. cold starts of any length, through the guide's URL, with only the Bearer key ---

def _curl(url: str, body: dict, follow: bool) -> tuple[int, str, str]:
    args = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code} %{redirect_url}", "-H", f"Authorization: Bearer {TEST_KEY}",
            "-H", "Content-Type: application/json", "-d", json.dumps(body), url]
    out = subprocess.run(["curl", "-L", *args[1:]] if follow else args, capture_output=True, text=True,
                         timeout=60).stdout
    text, _, tail = out.rpartition("\n")
    code, _, redirect = tail.partition(" ")
    return int(code), text, redirect


@pytest.mark.server
def test_a_cold_start_longer_than_the_limit_is_answered_once_on_the_guides_url(stack, server):
    """The guide's curl with -L, the openai SDK, llmodal.client() and LiteLLM each get their answer through a
    GPU start longer than two of Modal's limits; each generation reaches vLLM once; no client ever sees a
    URL of the GPU function (whose proxy auth would refuse it, 401)."""
    import openai

    import llmodal

    def cold_call(name, fn):
        stack.gpu.cold(COLD)
        before, t0 = _gpu_posts(stack), time.monotonic()
        out = fn()
        took = time.monotonic() - t0
        assert took > 2 * LIMIT, (name, took)  # the client really waited past two limits
        assert _gpu_posts(stack) - before == 1, (name, stack.gpu.forwarded[before:])  # sent once
        return out

    # curl without -L: Modal's 303 at the limit, pointing at the *guide's* host (never the GPU's); with -L: the answer.
    stack.gpu.cold(COLD)
    code, text, redirect = _curl(stack.v1 + "/chat/completions", _chat(server.model), follow=False)
    assert code == 303 and urlsplit(redirect).netloc == urlsplit(stack.front.url).netloc, (code, redirect)
    time.sleep(COLD)  # let that abandoned call finish before the next cold start
    code, text, _ = cold_call("curl -L", lambda: _curl(stack.v1 + "/chat/completions", _chat(server.model),
                                                       follow=True))
    assert code == 200 and json.loads(text)["choices"][0]["message"]["content"] is not None

    sdk = openai.OpenAI(base_url=stack.v1, api_key=TEST_KEY, max_retries=0)
    r = cold_call("openai", lambda: sdk.chat.completions.create(**_chat(server.model)))
    assert r.choices and r.usage.completion_tokens >= 1

    ours = llmodal.client(base_url=stack.v1, api_key=TEST_KEY, env_file=None)
    r = cold_call("llmodal.client", lambda: ours.chat.completions.create(**_chat(server.model)))
    assert r.choices and r.usage.completion_tokens >= 1

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: no fetch of its price list
    import litellm

    r = cold_call("litellm", lambda: litellm.completion(model=f"openai/{server.model}", api_base=stack.v1,
                                                        api_key=TEST_KEY, num_retries=0, max_retries=0,
                                                        **{k: v for k, v in _chat(server.model).items()
                                                           if k != "model"}))
    assert r.choices

    gpu_host = urlsplit(stack.gpu.url).netloc
    assert all(gpu_host not in loc for _, _, loc in stack.front.answered)  # the client was never sent there
    assert any(s == 303 for _, s, _ in stack.gpu.answered)  # the GPU leg did meet Modal's limit, and absorbed it


@pytest.mark.server
def test_the_gpu_function_refuses_a_caller_without_the_proxy_token(stack):
    r = httpx.get(stack.gpu.url + "/v1/models", headers=KEY, timeout=10)
    assert r.status_code == 401  # what a client handed the GPU's URL would get


# --- 3. a client that leaves stops the generation ---

@pytest.mark.server
def test_a_client_that_leaves_stops_the_generation(stack, server):
    """Four streams of 1,900 tokens (the test server's context is 2,048), abandoned after a few chunks at the
    guide's URL: vLLM stops them, as it does for a client that leaves a direct connection."""
    made, running = _abandon_four_streams(stack, server)
    print(f"RECORD gateway-disconnect | tokens generated in the 3 s after 4 clients left: {made:.0f}")
    assert running == 0 and made <= 4 * 16, (made, running)


# --- 4. nothing without a key is relayed; the path relayed is the path checked ---

@pytest.mark.server
def test_no_request_without_a_key_reaches_the_gpu(server):
    s = Stack(server.root, LLMODAL_METRICS_PUBLIC="true")
    try:
        with httpx.Client(base_url=s.front.url, timeout=20) as c:
            for method in ("GET", "POST", "HEAD", "PUT", "DELETE"):
                for path in ("/health", "/ping"):
                    assert c.request(method, path).status_code == 200, (method, path)  # answered by the gateway
                for path in ("/metrics", "/v1/models", "/v1/chat/completions", "/pause", "/v1/load_lora_adapter"):
                    assert c.request(method, path).status_code == 401, (method, path)
            assert s.gpu.forwarded == []
            assert c.get("/metrics", headers=KEY).status_code == 200  # a public /metrics, with a key, is relayed
        assert s.gpu.forwarded == [("GET", "/metrics")]
    finally:
        s.close()


def _raw(base: str, method: str, path: str) -> int:
    u = urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
    conn.request(method, path, body=b"{}" if method == "POST" else None,
                 headers={**KEY, "Content-Type": "application/json"})
    status = conn.getresponse().status
    conn.close()
    return status


@pytest.mark.server
@pytest.mark.parametrize("path", [
    "/v1/responses/x/../../../collective_rpc", "/v1/responses/x/..%2f..%2f..%2fcollective_rpc",
    "/v1/%2e%2e/collective_rpc", "//v1/models", "/v1//models", "/v1/./models", "/v1/models/..", "/v1\\..\\pause",
    "/v1/responses/x/y", "/v1/responses/", "/v1/models/", "/v1/chat/completions%2F",
])
def test_a_path_that_a_hop_could_rewrite_is_refused_before_any_check(stack, path):
    before = list(stack.gpu.forwarded)
    assert _raw(stack.front.url, "POST", path) in (400, 403), path  # 400: not canonical; 403: not a client route
    assert stack.gpu.forwarded == before  # nothing reached the GPU's door


@pytest.mark.server
def test_the_path_relayed_is_byte_for_byte_the_path_checked(stack):
    before = len(stack.gpu.forwarded)
    assert _raw(stack.front.url, "GET", "/v1/models?x=%41b&y") == 200
    assert stack.gpu.forwarded[before:] == [("GET", "/v1/models?x=%41b&y")]


# --- 5. backpressure end to end ---

@pytest.mark.server
def test_a_burst_of_ten_times_the_queue_limit_gets_only_2xx_or_429(server):
    limit = 4
    s = Stack(server.root, LLMODAL_QUEUE_LIMIT=str(limit))
    try:
        async def burst():
            async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=None)) as c:
                body = _chat(server.model, max_tokens=64, ignore_eos=True)
                return await asyncio.gather(*(c.post(s.v1 + "/chat/completions", json=body, headers=KEY)
                                              for _ in range(10 * limit)))

        got = asyncio.run(burst())
        codes = sorted(r.status_code for r in got)
        assert len(got) == 10 * limit and set(codes) <= {200, 429}, codes  # every one answered, nothing else
        assert all(r.headers.get("retry-after") for r in got if r.status_code == 429)
        assert codes.count(200) >= limit and codes.count(429) > 0, codes
        assert _gpu_posts(s) == codes.count(200)  # only what was answered 200 reached the GPU: no hidden pool
    finally:
        s.close()


# --- 6. the gateway's statuses say whether anything was sent ---

def _listener(behaviour: str) -> tuple[str, list]:
    """A TCP upstream that accepts and then: 'hang' (reads, never answers) or 'drop' (reads, closes)."""
    import socket

    seen = []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)

    def loop():
        while True:
            c, _ = sock.accept()
            seen.append(c.recv(65536))
            if behaviour == "drop":
                c.close()

    threading.Thread(target=loop, daemon=True).start()
    return f"http://127.0.0.1:{sock.getsockname()[1]}", seen


@pytest.mark.parametrize("upstream,status,sent", [("refused", 502, False), ("hang", 504, True), ("drop", 500, True)])
def test_the_gateway_says_502_only_when_nothing_was_sent(upstream, status, sent):
    from llmodal.engine.auth import BearerAuthMiddleware
    from llmodal.modal.gateway import Relay

    if upstream == "refused":
        url, seen = f"http://127.0.0.1:{free_port()}", []
    else:
        url, seen = _listener(upstream)
    with mock.patch.dict(os.environ, TOKEN):
        app = BearerAuthMiddleware(Relay(lambda: url, timeout=1.0), environ={"LLMODAL_API_KEYS": TEST_KEY})
    srv, root = serve_asgi(app, lifespan="off")
    try:
        r = httpx.post(f"{root}/v1/chat/completions", json={"x": 1}, headers=KEY, timeout=20)
        assert r.status_code == status, r.text
        assert bool(seen) == sent and ("may have run" in r.text) == sent, r.text
    finally:
        srv.should_exit = True


def test_a_redirect_from_the_gpu_server_never_names_the_gpu_host():
    """Anything but Modal's result-URL 303 is passed on, with the GPU's host taken out of its Location."""
    from llmodal.engine.auth import BearerAuthMiddleware
    from llmodal.modal.gateway import Relay

    up_port = free_port()

    async def redirecting(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 307,
                    "headers": [(b"location", f"http://127.0.0.1:{up_port}/v1/models?a=1".encode())]})
        await send({"type": "http.response.body", "body": b""})

    servers = [serve_asgi(redirecting, up_port)[0]]
    with mock.patch.dict(os.environ, TOKEN):
        app = BearerAuthMiddleware(Relay(lambda: f"http://127.0.0.1:{up_port}"), environ={"LLMODAL_API_KEYS": TEST_KEY})
    gw, root = serve_asgi(app, lifespan="off")
    servers.append(gw)
    try:
        r = httpx.get(f"{root}/v1/models", headers=KEY, timeout=10)
        assert r.status_code == 307 and r.headers["location"] == "/v1/models?a=1", r.headers
    finally:
        for srv in servers:
            srv.should_exit = True


# --- after Modal's limits: streams start in time, leavers are cancelled, errors stay honest ---

@pytest.mark.server
def test_a_stream_through_a_cold_start_starts_in_time_and_a_leaver_cancels_the_gpu_call(stack, server):
    """A GPU start longer than two limits: the client's stream is answered before Modal's limit (no 303 on its
    side), and clients that leave once tokens flow have the GPU call behind the result URL cancelled."""
    stack.gpu.cold(COLD)
    seen_303 = len([a for a in stack.front.answered if a[1] == 303])
    made, running = _abandon_four_streams(stack, server)
    print(f"RECORD gateway-disconnect-cold | 4 streams through a start of {COLD / LIMIT:.1f} limits, left after 8 "
          f"chunks: {made:.0f} tokens in the next 3 s, {len(stack.gpu.cancelled)} GPU calls cancelled by id")
    assert len([a for a in stack.front.answered if a[1] == 303]) == seen_303  # the client side met no 303
    assert len(stack.gpu.cancelled) >= 4 and running == 0 and made <= 4 * 16, (made, running)


@pytest.mark.server
def test_an_error_after_an_early_start_reaches_the_sdk_as_an_error(stack, server):
    import openai

    stack.gpu.cold(COLD)
    sdk = openai.OpenAI(base_url=stack.v1, api_key=TEST_KEY, max_retries=0)
    before = _gpu_posts(stack)
    with pytest.raises(openai.APIError) as e:
        for _ in sdk.chat.completions.create(**_chat(server.model, max_tokens=10**6), stream=True):
            pass
    assert "max_tokens" in str(e.value) and _gpu_posts(stack) - before == 1, str(e.value)


def _fake_gpu(handler):
    """A raw-socket upstream: each request is answered by ``handler(method, port) -> (status, headers) | 'drop'``
    ('drop': the connection is closed after the request was read, without an answer)."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port, seen = sock.getsockname()[1], []

    def serve(c):
        with c:
            while True:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                length = next((int(v) for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n")[1:])
                               if k.strip().lower() == b"content-length"), 0)
                while len(rest) < length:
                    rest += c.recv(65536)
                method = head.split(b" ")[0].decode()
                seen.append(method)
                out = handler(method, port)
                if out == "drop":
                    return
                status, headers = out
                extra = b"".join(k + b": " + v + b"\r\n" for k, v in headers)
                c.sendall(b"HTTP/1.1 %d X\r\n%scontent-length: 2\r\n\r\n{}" % (status, extra))

    def loop():
        while True:
            c, _ = sock.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return f"http://127.0.0.1:{port}", seen


def _gateway_to(url: str):
    from llmodal.engine.auth import BearerAuthMiddleware
    from llmodal.modal.gateway import Relay

    with mock.patch.dict(os.environ, TOKEN):
        app = BearerAuthMiddleware(Relay(lambda: url, timeout=2.0), environ={"LLMODAL_API_KEYS": TEST_KEY})
    return serve_asgi(app, lifespan="off")


@pytest.mark.parametrize("after_hop", ["drop", 502, 503])
def test_a_failure_after_the_request_was_sent_is_never_called_unsent(after_hop):
    """The POST reached the GPU side; then the hop to its result URL breaks, or the GPU side answers 502/503
    (Modal's proxy says those when a container dies mid-request): 500 "may have run", and llmodal.client()
    sends it once."""
    import llmodal

    def handler(method, port):
        if method == "POST":
            return 303, [(b"location", f"http://127.0.0.1:{port}/v1/chat/completions?__modal_function_call_id=fc-9"
                          .encode())]
        return after_hop if after_hop == "drop" else (after_hop, [(b"content-type", b"application/json")])

    url, seen = _fake_gpu(handler)
    gw, root = _gateway_to(url)
    try:
        r = httpx.post(root + "/v1/chat/completions", json={"model": "m"}, headers=KEY, timeout=20)
        assert r.status_code == 500 and "may have run" in r.text, (r.status_code, r.text)
        c = llmodal.client(base_url=root + "/v1", api_key=TEST_KEY, env_file=None, cold_start_timeout=20)
        posts = seen.count("POST")
        with pytest.raises(Exception):
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert seen.count("POST") == posts + 1  # sent once, not again
    finally:
        gw.should_exit = True


@pytest.mark.server
def test_methods_no_client_route_uses_are_not_relayed(stack):
    before = list(stack.gpu.forwarded)
    for method in ("TRACE", "PROPFIND", "PATCH", "PUT", "OPTIONS"):
        assert _raw(stack.front.url, method, "/v1/chat/completions") in (405,), method
    assert stack.gpu.forwarded == before
