"""Bad input, load with disconnects, engine death, graceful stop, cold-start client — real server."""

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from conftest import (TEST_ENGINE_ENV, TEST_KEY, TEST_MEMORY_FRACTION, TEST_VLLM_ARGS, LongStream, engine_core,
                      free_port, in_sessions, server_sessions)

pytestmark = pytest.mark.server
AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


def chat(model, content="hello", **kw):
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 8, **kw}


def bad_inputs(model):
    """(name, method, path, kwargs, expected status) — the table in docs/RELIABILITY.md."""
    return [
        ("malformed JSON", "/v1/chat/completions", dict(content=b"{not json", headers={**AUTH, "content-type": "application/json"}), 400),
        ("missing messages", "/v1/chat/completions", dict(json={"model": model}, headers=AUTH), 400),
        ("prompt longer than max_model_len", "/v1/chat/completions",
         dict(json=chat(model, "word " * 5000), headers=AUTH), 400),
        ("max_tokens past the context", "/v1/chat/completions", dict(json=chat(model, max_tokens=10**6), headers=AUTH), 400),
        ("n = 1000 (above LLMODAL_MAX_N, 8 here)", "/v1/chat/completions",
         dict(json=chat(model, n=1000), headers=AUTH), 400),
        ("negative temperature", "/v1/chat/completions", dict(json=chat(model, temperature=-1), headers=AUTH), 400),
        ("unknown model", "/v1/chat/completions", dict(json=chat("no-such-model"), headers=AUTH), 404),
        ("oversized body (17 MiB)", "/v1/chat/completions",
         dict(content=b"x" * (17 * 1024 * 1024), headers={**AUTH, "content-type": "application/json"}), 413),
        ("wrong auth scheme", "/v1/chat/completions",
         dict(json=chat(model), headers={"Authorization": f"Basic {TEST_KEY}"}), 401),
        ("key with trailing garbage", "/v1/chat/completions",
         dict(json=chat(model), headers={"Authorization": f"Bearer {TEST_KEY}x"}), 401),
    ]


def test_bad_input_table(server):
    with httpx.Client(base_url=server.root, timeout=60) as c:
        for name, path, kw, want in bad_inputs(server.model):
            r = c.post(path, **kw)
            assert r.status_code == want, (name, r.status_code, r.text[:300])
            msg = r.json()["error"]["message"] if r.headers.get("content-type", "").startswith("application/json") \
                else r.text
            assert len(msg) > 10, (name, msg)
            if name.startswith("n = 1000"):
                assert re.search(r"\bat most 8\b", msg), msg  # the plan's cap (LLMODAL_MAX_N, 8 here) is named
            assert c.get("/health").status_code == 200, f"server unhealthy after {name}"
            print(f"RECORD bad-input | {name} | {r.status_code} | {msg[:90]} | 200")


def _running(root) -> float:
    text = httpx.get(f"{root}/metrics", headers=AUTH, timeout=30).text
    vals = [float(m.group(1)) for m in re.finditer(r"^vllm:num_requests_running\{[^}]*\} ([0-9.e+]+)$", text, re.M)]
    assert vals, "no vllm:num_requests_running in /metrics"
    return sum(vals)


def test_64_streams_with_16_disconnects(server):
    async def one(i, client):
        body = chat(server.model, f"request {i}", max_tokens=64, stream=True, ignore_eos=True)
        chunks = 0
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=AUTH) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: ") and '"content"' in line:
                    chunks += 1
                    if i < 16 and chunks == 3:
                        return "disconnected"  # leaving the block closes the connection mid-stream
                if line == "data: [DONE]":
                    return "done"
        return "truncated"

    async def main():
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=server.root, timeout=300, limits=limits) as client:
            return await asyncio.gather(*(one(i, client) for i in range(64)), return_exceptions=True)

    results = asyncio.run(main())
    assert results[:16] == ["disconnected"] * 16, results[:16]
    assert results[16:] == ["done"] * 48, [r for r in results[16:] if r != "done"]
    assert httpx.get(f"{server.root}/health", timeout=10).status_code == 200
    deadline = time.monotonic() + 30
    while _running(server.root) != 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _running(server.root) == 0
    print(f"RECORD load | sent 64 | disconnected {results[:16].count('disconnected')} | "
          f"completed {results[16:].count('done')} | lost 0 | running after: {_running(server.root):.0f}")


# --- the lifecycle of `llmodal serve`: cold-start client, engine death and restart, graceful stop ---

QUEUE_LIMIT = 4  # small, so a burst of 10 × it overflows on the CPU engine

@pytest.fixture(scope="module")
def serve_cli(tiny_model, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "out.log"
    env = dict(os.environ, VLLM_SERVER_API_KEY=TEST_KEY, VLLM_GPU_MEMORY_UTILIZATION=str(TEST_MEMORY_FRACTION),
               VLLM_EXTRA_ARGS=TEST_VLLM_ARGS,
               VLLM_MAX_MODEL_LEN="2048", LLMODAL_DRAIN_TIMEOUT="30", PYTHONUNBUFFERED="1",
               LLMODAL_QUEUE_LIMIT=str(QUEUE_LIMIT),
               # vLLM stays up after its engine dies, as one CI run saw it do anyway (503 for ten minutes):
               # the supervisor, not vLLM's own watchdog, must end it and restart.
               VLLM_KEEP_ALIVE_ON_ENGINE_DEATH="1")
    env.pop("VLLM_MODEL", None)
    for k in TEST_ENGINE_ENV:  # the user's CPU `llmodal serve`: vLLM's own process layout (a worker process)
        env.pop(k, None)
    state = {"port": port, "log": log, "env": env, "proc": None, "base": f"http://127.0.0.1:{port}/v1"}
    yield state
    proc = state["proc"]
    if proc and proc.poll() is None:
        sids = server_sessions(proc.pid)  # vLLM runs in a session of its own: a killed llmodal would orphan it
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        for p in in_sessions(sids):
            p.kill()


def _start_serve(state):
    f = state["log"].open("w")
    state["proc"] = subprocess.Popen([sys.executable, "-m", "llmodal.cli", "serve", "--env-file", "", "--port",
                                      str(state["port"]), "--max-restarts", "2"], stdout=f, stderr=subprocess.STDOUT,
                                     env=state["env"])


def _wait_healthy(root, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{root}/health", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def test_client_survives_a_cold_start(serve_cli):
    import llmodal

    result = {}

    def call():
        try:
            oa = llmodal.client(serve_cli["base"], TEST_KEY, env_file=None, cold_start_timeout=600)
            r = oa.chat.completions.create(model="llmodal/tiny-llama", messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=4)
            result["ok"] = r.usage.completion_tokens
        except Exception as e:  # reported below
            result["error"] = repr(e)

    t = threading.Thread(target=call)
    t_call = time.monotonic()
    if serve_cli["proc"] is not None and serve_cli["proc"].poll() is None:  # another test's server: start anew
        serve_cli["proc"].send_signal(signal.SIGTERM)
        serve_cli["proc"].wait(90)
    t.start()  # the first call is made while nothing listens on the port yet
    time.sleep(3)
    assert t.is_alive(), result
    _start_serve(serve_cli)
    t.join(timeout=700)
    assert result.get("ok") == 4, (result, serve_cli["log"].read_text()[-2000:])
    print(f"RECORD cold-start | first call made before the server started; answered after {time.monotonic() - t_call:.0f} s")


def _streaming(serve_cli) -> tuple[str, LongStream]:
    """The healthy server's root and a long stream that has started producing tokens. Starts `llmodal
    serve` when no earlier test left one running, so each test runs alone and in any order."""
    root = serve_cli["base"].removesuffix("/v1")
    if serve_cli["proc"] is None or serve_cli["proc"].poll() is not None:
        _start_serve(serve_cli)
    assert _wait_healthy(root, 600), serve_cli["log"].read_text()[-2000:]
    # llmodal's own start wait must have seen /health too: an engine killed before that is a failed
    # start (no restart), not the death of a running server.
    deadline = time.monotonic() + 60
    while "ready after" not in serve_cli["log"].read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    t = LongStream(root)
    t.start()
    assert t.first_token.wait(60)
    return root, t


def test_dead_engine_fails_health_fast_ends_requests_and_restarts(serve_cli):
    # Kill as soon as tokens flow: the tiny model generates 1,900 tokens in about a second, and the
    # API server can still be streaming out tokens the engine finished before it died.
    root, t = _streaming(serve_cli)
    engine_core(serve_cli["proc"].pid).kill()
    killed = time.monotonic()
    unhealthy_after = None
    while time.monotonic() - killed < 5:
        try:
            ok = httpx.get(f"{root}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            ok = False
        if not ok:
            unhealthy_after = time.monotonic() - killed
            break
        time.sleep(0.1)
    t.join(timeout=60)
    assert unhealthy_after is not None, "/health still 200 five seconds after the engine died"
    # The tiny model can finish its 1,900 tokens before the death reaches the stream; what must hold
    # is that the in-flight request ends (done or an error), never hangs.
    assert not t.is_alive() and t.end is not None, t.end
    print(f"RECORD engine-kill | /health non-200 after {unhealthy_after:.2f} s | in-flight ended: {t.end}")
    t_restart = time.monotonic()
    assert _wait_healthy(root, 600), serve_cli["log"].read_text()[-2000:]
    deadline = time.monotonic() + 30  # supervise notices health on its own poll
    while "ready again" not in serve_cli["log"].read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    log = serve_cli["log"].read_text()
    assert "restart 1/2" in log and "ready again" in log, log[-2000:]
    assert "kept answering /health with an error" in log, log[-2000:]
    print(f"RECORD engine-kill | healthy again {time.monotonic() - t_restart:.0f} s later (restart 1/2)")


def test_a_burst_of_ten_times_the_queue_limit_is_answered_in_full(serve_cli):
    """10 × LLMODAL_QUEUE_LIMIT requests at once: each answered, 2xx or 429 with Retry-After, none lost
    or hung, the server healthy after."""
    root, t = _streaming(serve_cli)
    t.join(timeout=60)
    n = 10 * QUEUE_LIMIT

    async def one(c, i):
        body = chat("llmodal/tiny-llama", f"burst {i}", max_tokens=32, ignore_eos=True)
        r = await c.post("/v1/chat/completions", json=body, headers=AUTH)
        return r.status_code, r.headers.get("retry-after")

    async def burst():
        async with httpx.AsyncClient(base_url=root, timeout=120, limits=httpx.Limits(max_connections=n)) as c:
            return await asyncio.gather(*(one(c, i) for i in range(n)), return_exceptions=True)

    t0 = time.monotonic()
    results = asyncio.run(burst())
    took = time.monotonic() - t0
    codes = [r[0] if isinstance(r, tuple) else type(r).__name__ for r in results]
    assert all(c in (200, 429) for c in codes), codes
    assert all(r[1] == "1" for r in results if r[0] == 429)
    ok, busy = codes.count(200), codes.count(429)
    assert ok >= QUEUE_LIMIT and busy > 0 and ok + busy == n
    assert httpx.get(f"{root}/health", timeout=5).status_code == 200
    print(f"RECORD burst | {n} at once, queue limit {QUEUE_LIMIT} | 200: {ok} | 429 (Retry-After 1): {busy} | "
          f"lost 0 | all answered in {took:.1f} s | healthy after")


def test_sigterm_drains_in_flight_requests(serve_cli):
    _, t = _streaming(serve_cli)
    sids = server_sessions(serve_cli["proc"].pid)
    assert sids and len(in_sessions(sids)) >= 2  # the API server and its engine, at least
    t0 = time.monotonic()
    serve_cli["proc"].send_signal(signal.SIGTERM)
    code = serve_cli["proc"].wait(timeout=90)
    t.join(timeout=30)
    assert code == 0, serve_cli["log"].read_text()[-2000:]
    assert t.end == "done", t.end
    assert time.monotonic() - t0 < 60
    print(f"RECORD sigterm | in-flight request finished in full | serve exited {code} after "
          f"{time.monotonic() - t0:.1f} s")
    # An engine that outlived its server is reparented, so look for it by its session, not its parent.
    time.sleep(1)
    assert in_sessions(sids) == [], "vLLM processes outlived `llmodal serve`"


def test_a_killed_llmodal_serve_takes_vllm_with_it(serve_cli):
    """`kill -9` of `llmodal serve` (or its terminal closing) leaves nothing behind: vLLM runs in a session of its
    own, so only llmodal's parent-death signal ends it — without it the engine kept the port and the memory."""
    root, t = _streaming(serve_cli)
    sids = server_sessions(serve_cli["proc"].pid)
    assert sids and len(in_sessions(sids)) >= 2
    t0 = time.monotonic()
    serve_cli["proc"].kill()
    serve_cli["proc"].wait(10)
    deadline = t0 + 60
    while in_sessions(sids) and time.monotonic() < deadline:
        time.sleep(0.5)
    gone = time.monotonic() - t0
    t.join(timeout=30)
    left = in_sessions(sids)
    for p in left:  # the next test must find the port free either way
        p.kill()
    assert left == [], f"vLLM outlived a killed `llmodal serve`: {[p.pid for p in left]}"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{root}/health", timeout=2)
    print(f"RECORD kill-9 | `llmodal serve` SIGKILLed mid-stream | stream ended: {t.end} | every vLLM process gone "
          f"after {gone:.1f} s, port closed")


@pytest.mark.parametrize("method,first,retried", [
    ("POST", "refused", True),            # nothing was sent: safe to send again
    ("POST", 503, True),                  # Modal's proxy, no container ready: vLLM never saw it
    ("POST", "broken", False),            # sent; the server may be generating: never twice
    ("POST", 504, False),                 # the proxy gave up waiting: the request may be running
    ("GET", "broken", True),              # idempotent
    ("GET", 504, True),
])
def test_the_client_never_sends_a_generation_twice(method, first, retried):
    from llmodal.tools.client import ColdStartTransport

    sent = []

    def handler(request):
        sent.append((request.method, request.url.path))
        if request.url.path == "/health":
            return httpx.Response(200)
        if len([s for s in sent if s[1] != "/health"]) == 1:
            if first == "refused":
                raise httpx.ConnectError("refused", request=request)
            if first == "broken":
                raise httpx.RemoteProtocolError("peer closed", request=request)
            return httpx.Response(first)
        return httpx.Response(200, json={"ok": True})

    transport = ColdStartTransport(cold_start_timeout=30, inner=httpx.MockTransport(handler))
    with httpx.Client(transport=transport, base_url="http://x") as c:
        try:
            status = c.request(method, "/v1/completions", json={}).status_code
        except httpx.RemoteProtocolError:
            status = "raised"
    calls = [s for s in sent if s[1] != "/health"]
    assert (len(calls) == 2) is retried, calls
    assert status == (200 if retried else ("raised" if first == "broken" else first))
