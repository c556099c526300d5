"""The bench client under 128 streams, against a fake engine whose schedule is known (tests/fake_engine.py):
what the client measures is the server's timing, not its own overhead, and the request it sends is
the one vLLM's own benchmark sends."""

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port

STEP_MS = 20.0
HERE = Path(__file__).resolve().parents[1]  # tests/: the shared helpers


def _start(prompt_tokens: int, env: dict | None = None):
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "fake_engine.py"), str(port), str(STEP_MS), str(prompt_tokens)],
                            env={**os.environ, **(env or {})})
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}/v1"


def _engine(prompt_tokens: int):
    """A module fixture: a fake engine whose every prompt costs ``prompt_tokens`` of prefill."""
    @pytest.fixture(scope="module")
    def fixture():
        proc, url = _start(prompt_tokens)
        yield url
        proc.terminate()
        proc.wait(10)
    return fixture


fake_engine = _engine(256)
long_prompts_engine = _engine(4000)  # one prompt per engine step (prefill budget 4,096)


def test_128_streams_measure_the_servers_step_not_the_clients_overhead(fake_engine, tiny_model, tmp_path):
    """128 streams × 64 tokens: every token comes one engine step (20 ms + prefill) after the last. A client
    that falls behind parsing 6,400 chunks/s on two cores shows it as longer ITL and lower throughput."""
    out = tmp_path / "b.json"
    r = subprocess.run([sys.executable, "-m", "llmodal.cli", "bench", "--env-file", "", "--base-url", fake_engine,
                        "--api-key", "x", "--model", "fake", "--api", "completions", "--tokenizer", str(tiny_model),
                        "--concurrency", "128", "--num-prompts", "256", "--input-len", "256", "--output-len", "64",
                        "--warmup", "0", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    lv = json.loads(out.read_text())["levels"][0]
    itl_p50 = lv["itl_ms"]["p50"]
    # A step with no prefill takes STEP_MS; the fake cannot deliver faster than 128 tokens per step.
    ceiling = 128 / (STEP_MS / 1000)
    print(f"RECORD bench-client | 128 streams | ITL p50 {itl_p50:.1f} ms (engine step {STEP_MS} ms) | "
          f"{lv['output_tok_s']:.0f} out tok/s of at most {ceiling:.0f}")
    assert lv["completed"] == 256 and STEP_MS * 0.95 <= itl_p50 <= STEP_MS * 1.15
    assert lv["output_tok_s"] >= 0.65 * ceiling  # 0.72–0.80 measured on this 2-core VM, day to day
    # Per request, in sending order: the first 128 go at once, each refill only when a slot frees.
    reqs = lv["requests"]
    starts = [r["start_s"] for r in reqs]
    assert len(reqs) == 256 and starts == sorted(starts) and all(r["ttft_ms"] > 0 for r in reqs)
    first_done = min(r["start_s"] + r["e2el_ms"] / 1000 for r in reqs[:128])
    assert starts[127] < 0.5 < first_done <= starts[128] + 0.001  # rows are rounded to 0.1 ms


def test_the_request_is_the_one_vllms_bench_sends():
    """Same sampling as vLLM's `bench serve`: no temperature unless asked (it stopped forcing greedy)."""
    from llmodal.tools.bench.runner import Runner
    from llmodal.tools.client import Endpoint

    ep = Endpoint("http://x/v1", "k", "m")
    body = Runner(ep, api="completions", output_len=8, ignore_eos=True, timeout=1).body("hi")
    assert body == {"model": "m", "max_tokens": 8, "stream": True, "stream_options": {"include_usage": True},
                    "ignore_eos": True, "prompt": "hi"}
    assert Runner(ep, api="chat", output_len=8, ignore_eos=False, timeout=1, temperature=0.0).body("hi")[
        "temperature"] == 0.0


def test_goodput_sweep_stops_at_the_first_rate_that_breaks_the_slo(long_prompts_engine, tiny_model, tmp_path):
    """--slo with --request-rate: rates in rising order. At 4 req/s a prompt waits one engine step (~24 ms);
    at 400 req/s the 40 prompts queue for the prefill budget, one a step (~1 s for the last)."""
    out = tmp_path / "g.json"
    r = subprocess.run([sys.executable, "-m", "llmodal.cli", "bench", "--env-file", "", "--base-url", long_prompts_engine,
                        "--api-key", "x", "--model", "fake", "--api", "completions", "--tokenizer", str(tiny_model),
                        "--request-rate", "400,4", "--num-prompts", "40", "--input-len", "256", "--output-len", "16",
                        "--warmup", "0", "--slo", "ttft_p99<=300ms", "--seed", "7", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    doc = json.loads(out.read_text())
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert [lv["request_rate"] for lv in doc["levels"]] == [4.0, 400.0]  # sorted, rising
    k = doc["slo"]["knee"]
    assert k["request_rate"] == 4.0 and doc["slo"]["first_failing"] == "400.0 req/s"
    # The knee reports the rate it held: what arrived (every request answered), not the finite
    # level's completions over its fill and drain.
    assert k["held_requests_s"] == pytest.approx(k["achieved_rate"]) and k["held_requests_s"] > k["requests_s"]
    assert k["held_output_tok_s"] == pytest.approx(k["achieved_rate"] * 16)
    assert f"{k['held_requests_s']:.2f} req/s arrived and held" in " ".join(r.stdout.split())
    # Arrivals are drawn per --seed and per level: the 4 req/s level's gaps are the draw of seed 7's
    # first level (within the event loop's lag), and not the draw every level and run used to share.
    starts = sorted(q["start_s"] for q in doc["levels"][0]["requests"])
    gaps = [b - a for a, b in zip(starts, starts[1:])]

    def near(seed: int) -> float:
        from llmodal.tools.bench.runner import arrival_times
        t = arrival_times(40, 4.0, seed)
        return sum(abs(g - (b - a)) < 0.03 for g, a, b in zip(gaps, t, t[1:])) / len(gaps)

    assert near(7 * 1009) >= 0.9 and near(0) < 0.5, (near(7 * 1009), near(0))


def test_a_connection_the_server_closed_as_idle_is_not_a_failed_request():
    """The H200 sweep lost a level to this: one request of 200 failed at once ("disconnect") because
    it went out on a pooled connection the server had just closed as idle (uvicorn: after 5 s).
    Here the server closes idle connections after 0.5 s and each level starts just about then."""
    from llmodal.tools.bench.runner import Runner
    from llmodal.tools.client import Endpoint

    proc, url = _start(64, env={"FAKE_KEEPALIVE_S": "0.5"})

    async def levels() -> list[str]:
        r = Runner(Endpoint(url, "k", "fake"), api="completions", output_len=4, ignore_eos=True, timeout=30)
        errors = []
        try:
            for gap in (0.49, 0.495, 0.5, 0.5, 0.495, 0.49, 0.5, 0.495, 0.5, 0.49):
                res, _ = await r.level(["hi"] * 8, concurrency=8, rate=None, on_done=lambda: None)
                errors += [x.error for x in res if not x.ok]
                await asyncio.sleep(gap)
        finally:
            await r.aclose()
        return errors

    try:
        assert asyncio.run(levels()) == []
    finally:
        proc.terminate()
        proc.wait(10)
