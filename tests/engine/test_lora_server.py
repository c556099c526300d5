"""LoRA adapters served by the real engine: one vLLM CPU server with the tiny model and two adapters the
project makes (random weights, PEFT layout), built the way `llmodal serve` builds it, talked to with the
openai SDK. Development mode is on and run-time LoRA loading is switched on in vLLM too, so the routes
that load and unload adapters exist: the guard is what keeps them closed."""

import json

import httpx
import openai
import pytest

from conftest import CONTROL_KEY, TEST_KEY, free_port, start_server
from llmodal.engine.tiny_adapter import write_adapter
from llmodal.engine.tiny_model import SERVED_NAME

pytestmark = pytest.mark.server

ADAPTERS = {"sql-expert": dict(rank=8, targets=("q_proj", "v_proj"), seed=1),
            "poet": dict(rank=16, targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                           "down_proj"), seed=2)}


@pytest.fixture(scope="module")
def lora_dirs(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    dirs = {name: write_adapter(root / name, tiny_model, base_name=SERVED_NAME, **kw) for name, kw in ADAPTERS.items()}
    dirs["late"] = write_adapter(root / "late", tiny_model, base_name=SERVED_NAME, rank=8, seed=3)
    return dirs


@pytest.fixture(scope="module")
def lora_server(tiny_model, lora_dirs, tmp_path_factory):
    pytest.importorskip("vllm")
    modules = ",".join(f"{n}={lora_dirs[n]}" for n in ADAPTERS)
    log = tmp_path_factory.mktemp("lora-server") / "server.log"  # this server's alone: its route lines are read
    proc = start_server(tiny_model, free_port(), key=TEST_KEY, lora_modules=modules, log=log,
                        env={"VLLM_SERVER_DEV_MODE": "1", "LLMODAL_CONTROL_KEY": CONTROL_KEY,
                             "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "1"})
    proc.start()
    try:
        proc.wait_ready(600)
        yield proc
    finally:
        proc.stop()


def _oa(proc, key=TEST_KEY):
    return openai.OpenAI(base_url=proc.launch.base_url, api_key=key, max_retries=0, timeout=180)


def _greedy(proc, model: str) -> str:
    r = _oa(proc).completions.create(model=model, prompt="Hello, please introduce yourself.", max_tokens=12,
                                     temperature=0, seed=0)
    return r.choices[0].text


def test_models_lists_base_and_every_adapter_with_its_parent(lora_server):
    models = {m.id: m for m in _oa(lora_server).models.list().data}
    assert set(models) == {SERVED_NAME, *ADAPTERS}
    for name in ADAPTERS:
        assert models[name].model_extra["parent"] == SERVED_NAME


def test_launch_carries_the_adapters_and_limits_from_the_flag_table(lora_server, lora_dirs):
    argv = lora_server.launch.argv
    assert "--enable-lora" in argv
    i = argv.index("--lora-modules")
    assert argv[i + 1:i + 3] == [f"{n}={lora_dirs[n]}" for n in ADAPTERS]
    assert argv[argv.index("--max-loras") + 1] == "2"  # every adapter resident
    assert argv[argv.index("--max-lora-rank") + 1] == "16"  # the highest adapter rank


def test_each_adapter_answers_and_changes_the_answer(lora_server):
    """Greedy decoding: the same prompt gives the base's text and a different text per adapter — the adapter's
    weights are applied, not just its name accepted."""
    base = _greedy(lora_server, SERVED_NAME)
    answers = {name: _greedy(lora_server, name) for name in ADAPTERS}
    assert all(a for a in answers.values())
    assert len({base, *answers.values()}) == 3, (base, answers)
    assert _greedy(lora_server, "poet") == answers["poet"]  # deterministic: the difference is the adapter


def test_chat_streaming_and_tools_per_adapter(lora_server):
    oa = _oa(lora_server)
    for name in ADAPTERS:
        r = oa.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=8)
        assert r.model == name and r.choices[0].message.content is not None and r.usage.completion_tokens > 0
        chunks = list(oa.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}],
                                                 max_tokens=8, stream=True))
        assert all(c.model == name for c in chunks)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0  # LLMODAL_STREAM_USAGE
        tool = {"type": "function", "function": {"name": "lookup", "parameters": {
            "type": "object", "properties": {"q": {"type": "string", "enum": ["a", "b"]}}, "required": ["q"],
            "additionalProperties": False}}}
        t = oa.chat.completions.create(model=name, messages=[{"role": "user", "content": "look up a"}],
                                       tools=[tool], tool_choice={"type": "function", "function": {"name": "lookup"}},
                                       max_tokens=300, temperature=1.0, seed=7)
        assert t.choices[0].message.tool_calls, t.choices[0]
        call = t.choices[0].message.tool_calls[0]
        assert call.function.name == "lookup" and json.loads(call.function.arguments)["q"] in ("a", "b")


def test_unknown_adapter_is_404_naming_every_available_model(lora_server):
    with pytest.raises(openai.NotFoundError) as e:
        _oa(lora_server).chat.completions.create(model="sql-expret", messages=[{"role": "user", "content": "x"}],
                                                 max_tokens=4)
    msg = e.value.body["message"] if isinstance(e.value.body, dict) else str(e.value)
    assert "sql-expret" in msg
    for name in (SERVED_NAME, *ADAPTERS):
        assert name in msg, msg
    r = httpx.post(f"{lora_server.launch.base_url}/completions", json={"model": "nope", "prompt": "x"},
                   headers={"Authorization": f"Bearer {TEST_KEY}"}, timeout=60)
    assert r.status_code == 404 and int(r.headers["content-length"]) == len(r.content)
    assert "poet" in r.json()["error"]["message"]


@pytest.mark.parametrize("route", ["/v1/load_lora_adapter", "/v1/unload_lora_adapter"])
def test_runtime_lora_routes_are_closed(lora_server, lora_dirs, route):
    """The routes exist on this very server (vLLM logs every route it registered at start: the guard answers
    403 to any unknown path too, so a 403 alone would prove nothing), and no key opens them."""
    import re

    log = lora_server.log_path.read_text(errors="replace")
    registered = set(re.findall(r"Route: (\S+), Methods: ([A-Z, ]+)", log))
    assert registered, "no route lines in the server log: cannot tell which routes vLLM registered"
    assert any(path == route and "POST" in methods for path, methods in registered), sorted(registered)
    root = lora_server.launch.base_url.removesuffix("/v1")
    body = {"lora_name": "late" if "load_" in route and "unload" not in route else "poet",
            "lora_path": str(lora_dirs["late"])}
    for key, want in ((TEST_KEY, 403), (CONTROL_KEY, 403), ("wrong", 401), (None, 401)):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        r = httpx.post(f"{root}{route}", json=body, headers=headers, timeout=60)
        assert r.status_code == want, (key, r.status_code, r.text)
    names = {m.id for m in _oa(lora_server).models.list().data}
    assert names == {SERVED_NAME, *ADAPTERS}  # nothing loaded, nothing unloaded


def _guarded(status, chunks, served="base,a,b"):
    """What a client gets through the real guard (``BearerAuthMiddleware``) when vLLM answers ``status``
    with the body ``chunks``: the messages sent, in order."""
    import asyncio

    from llmodal.engine.auth import BearerAuthMiddleware

    async def vllm(scope, receive, send):
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(sum(map(len, chunks))).encode())]})
        for i, c in enumerate(chunks):
            await send({"type": "http.response.body", "body": c, "more_body": i < len(chunks) - 1})

    sent = []

    async def send(msg):
        sent.append(msg)

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    mw = BearerAuthMiddleware(vllm, {"LLMODAL_API_KEYS": "k", "LLMODAL_SERVED_MODELS": served})
    scope = {"type": "http", "path": "/v1/completions", "method": "POST",
             "headers": [(b"authorization", b"Bearer k"), (b"content-type", b"application/json")]}
    asyncio.run(mw(scope, receive, send))
    return sent


def _body(sent):
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_the_404_rewrite_names_every_model():
    msg = b'{"error": {"message": "The model `x` does not exist. Valid aliases: base", "code": 404}}'
    sent = _guarded(404, [msg[:20], msg[20:]])
    doc = json.loads(_body(sent))
    assert doc["error"]["message"] == "The model `x` does not exist. Available models: base, a, b."
    assert dict(sent[0]["headers"])[b"content-length"] == str(len(_body(sent))).encode()


@pytest.mark.parametrize("body", [
    b'{"error": {"message": 404}}', b'{"error": {"message": ["does not exist"]}}',
    b'{"error": {"message": null}}', b'{"error": "does not exist"}', b'["does not exist"]', b'{"error": [1]}',
    b'not json, does not exist', b'',
])
def test_a_404_the_rewrite_does_not_understand_passes_through_unchanged(body):
    sent = _guarded(404, [body])
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 404
    assert _body(sent) == body and dict(sent[0]["headers"])[b"content-length"] == str(len(body)).encode()


def test_a_long_404_is_not_held_past_the_cap():
    """A 404 body past 64 KiB is not vLLM's unknown-model answer: it is sent as it came, the held part
    first, the rest streamed, not buffered whole."""
    from llmodal.engine.auth import _NotFoundNames

    cap = _NotFoundNames.NAMES_BUFFER
    assert cap <= 64 * 1024
    chunk = b'{"error": {"message": "does not exist' + b" " * 4000
    chunks = [chunk] + [b"x" * 4096] * (cap // 4096 + 8) + [b'"}}']
    sent = _guarded(404, chunks)
    assert _body(sent) == b"".join(chunks)  # nothing rewritten, nothing lost
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert len(bodies) > 8 and all(len(m["body"]) <= cap + 4096 for m in bodies)  # streamed past the cap


def _bench(proc, tiny_model, *args):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    return subprocess.run([sys.executable, "-m", "llmodal.cli", "bench", "--env-file", "", "--base-url",
                           proc.launch.base_url, "--api-key", TEST_KEY, "--tokenizer", str(tiny_model),
                           "--input-len", "32", "--output-len", "8", "--num-prompts", "6", "--concurrency", "3",
                           *args], capture_output=True, text=True, timeout=300, env=env)


def test_bench_one_adapter_and_a_mixed_run(lora_server, tiny_model, tmp_path):
    one, mixed = tmp_path / "one.json", tmp_path / "mixed.json"
    r = _bench(lora_server, tiny_model, "--model", "poet", "--out", str(one))
    assert r.returncode == 0, r.stdout + r.stderr
    lv = json.loads(one.read_text())["levels"][0]
    assert lv["completed"] == 6 and lv["output_tokens"] == 6 * 8
    names = [SERVED_NAME, *ADAPTERS]
    r = _bench(lora_server, tiny_model, "--models", ",".join(names), "--out", str(mixed))
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(mixed.read_text())
    assert doc["meta"]["models"] == names and doc["levels"][0]["completed"] == 6
    r = _bench(lora_server, tiny_model, "--models", "poet,poem")
    assert r.returncode != 0 and "'poem' is not served here" in r.stdout + r.stderr and "sql-expert" in r.stdout + r.stderr


def test_a_mixed_run_takes_the_models_in_turn():
    from llmodal.tools.bench.runner import Runner
    from llmodal.tools.client import Endpoint

    r = Runner(Endpoint("http://x/v1", "k", "base"), api="chat", output_len=4, ignore_eos=True, timeout=1,
               models=("base", "a", "b"))
    assert [r.body("p")["model"] for _ in range(5)] == ["base", "a", "b", "base", "a"]
    plain = Runner(Endpoint("http://x/v1", "k", "base"), api="chat", output_len=4, ignore_eos=True, timeout=1)
    assert {plain.body("p")["model"] for _ in range(3)} == {"base"}
