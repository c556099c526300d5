import json
import os
import subprocess
import sys

import pytest

from conftest import TEST_KEY, free_port
from llmodal.tools.bench.runner import RequestResult, summarize, _pct

LLMODAL = [sys.executable, "-m", "llmodal.cli"]


def _bench(*args, timeout=600):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    return subprocess.run([*LLMODAL, "bench", "--env-file", "", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.server
def test_two_levels_give_complete_json_and_a_plot(server, tiny_model, tmp_path):
    out, png = tmp_path / "r.json", tmp_path / "p.png"
    r = _bench("--base-url", server.base_url, "--api-key", TEST_KEY, "--concurrency", "1,4", "--num-prompts", "6",
               "--input-len", "64", "--output-len", "16", "--tokenizer", str(tiny_model), "--price-per-hour", "2.5",
               "--out", str(out), "--plot", str(png))
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())
    assert doc["meta"]["model"] == server.model and doc["meta"]["prompt_lengths"].startswith("tokenizer")
    assert [lv["concurrency"] for lv in doc["levels"]] == [1, 4]
    for lv in doc["levels"]:
        assert lv["sent"] == 6 and lv["completed"] + lv["failed"] == lv["sent"] and lv["unaccounted"] == 0
        assert lv["completed"] == 6 and lv["output_tokens"] == 6 * 16  # fixed output length held
        assert lv["prompt_tokens"] >= 6 * 64
        for key in ("ttft_ms", "itl_ms", "tpot_ms", "e2el_ms"):
            assert set(lv[key]) == {"mean", "p50", "p90", "p99"} and lv[key]["p50"] > 0
        assert lv["output_tok_s"] > 0 and lv["requests_s"] > 0
        assert lv["usd_per_million_output_tokens"] == pytest.approx(2.5 / (lv["output_tok_s"] * 3600) * 1e6)
    # when it ran, so its figures line up with the server's counters: the run starts before its first level
    # and finishes after its last, and each level starts after the one before has run for its duration
    import datetime

    at = datetime.datetime.fromisoformat
    meta, levels = doc["meta"], doc["levels"]
    assert at(meta["started_at"]) <= at(levels[0]["started_at"]) < at(levels[1]["started_at"]) <= at(meta["finished_at"])
    took = (at(levels[1]["started_at"]) - at(levels[0]["started_at"])).total_seconds()
    assert took >= levels[0]["duration_s"]
    import matplotlib.image

    assert matplotlib.image.imread(png).shape[0] > 100


@pytest.mark.server
def test_open_loop_rate(server, tmp_path):
    out = tmp_path / "r.json"
    r = _bench("--base-url", server.base_url, "--api-key", TEST_KEY, "--request-rate", "20", "--num-prompts", "5",
               "--input-len", "16", "--output-len", "8", "--api", "completions", "--warmup", "0", "--out", str(out))
    assert r.returncode == 0 and "20.0 req/s" in r.stdout, r.stdout + r.stderr
    lv = json.loads(out.read_text())["levels"][0]
    assert (lv["sent"], lv["completed"], lv["failed"]) == (5, 5, 0) and lv["achieved_rate"] > 0


class FakeSSE:
    """A tiny HTTP server that streams completions fast, or misbehaves on request: 'reset' sends one
    chunk then resets the connection; 'garbage' answers with a broken status line."""

    def __init__(self, modes):
        import asyncio

        self.modes, self.asyncio = list(modes), asyncio

    async def handle(self, reader, writer):
        import socket
        import struct

        await reader.readuntil(b"\r\n\r\n")
        mode = self.modes.pop(0) if self.modes else "ok"
        if mode == "garbage":
            writer.write(b"NOT-HTTP nonsense\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
        chunk = json.dumps({"choices": [{"text": "x"}]}).encode()
        writer.write(b"data: " + chunk + b"\n\n")
        await writer.drain()
        if mode == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        writer.write(b"data: " + chunk + b"\n\ndata: [DONE]\n\n")
        await writer.drain()
        writer.close()


def _run_level(modes, n, **level_kw):
    import asyncio

    from llmodal.tools.bench.runner import Runner
    from llmodal.tools.client import Endpoint

    async def go():
        fake = FakeSSE(modes)
        srv = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        runner = Runner(Endpoint(f"http://127.0.0.1:{port}/v1", "k", "m"), api="completions", output_len=2,
                        ignore_eos=True, timeout=10)
        try:
            res, dur = await runner.level(["p"] * n, on_done=lambda: None, **level_kw)
        finally:
            await runner.aclose()
            srv.close()
        return res, dur, runner

    return asyncio.run(go())


def test_a_reset_mid_stream_is_counted_not_fatal():
    res, dur, _ = _run_level(["ok", "reset", "garbage", "ok"], 4, concurrency=1, rate=None)
    s = summarize(res, dur, sent=4, price_per_hour=None)
    assert (s["sent"], s["completed"], s["failed"], s["unaccounted"]) == (4, 2, 2, 0), s
    # The reset reads as a body that ends early; the broken status line as an unexpected client error.
    assert set(s["failures"]) == {"truncated_stream", "error:ClientResponseError"}, s["failures"]


def test_open_loop_sends_at_the_asked_rate():
    # Seed 5's 199 raw gaps average 1/87.6 s: drawn and slept as they come, the level would send
    # 12 % under the rate it names (the H200 sweep asked 5.5 req/s and sent 5.20).
    res, dur, runner = _run_level([], 200, concurrency=None, rate=100.0, seed=5)
    assert len(res) == 200 and all(r.ok for r in res)
    assert 97 <= runner.achieved_rate() <= 103, runner.achieved_rate()


def test_arrival_times_are_poisson_rescaled_to_the_asked_rate():
    from llmodal.tools.bench.runner import arrival_times

    for seed in range(20):
        t = arrival_times(400, 5.5, seed)
        assert t[0] == 0.0 and t[-1] == pytest.approx(399 / 5.5) and t == sorted(t)
    gaps = [b - a for a, b in zip(t, t[1:])]
    mean = sum(gaps) / len(gaps)
    cv = (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5 / mean
    assert 0.85 < cv < 1.15, cv  # exponential gaps (a fixed pace would give 0)
    assert arrival_times(400, 5.5, 1) == arrival_times(400, 5.5, 1) != arrival_times(400, 5.5, 2)
    assert arrival_times(1, 5.5) == [0.0] and arrival_times(0, 5.5) == []


@pytest.mark.server
def test_wrong_key_exits_nonzero_with_a_message(server):
    r = _bench("--base-url", server.base_url, "--api-key", "wrong", "--concurrency", "1")
    assert r.returncode != 0 and "401" in r.stderr and "API key" in r.stderr


def test_dead_endpoint_exits_nonzero_with_a_message():
    r = _bench("--base-url", f"http://127.0.0.1:{free_port()}/v1", "--api-key", "k", "--health-timeout", "2")
    assert r.returncode != 0 and "did not answer 200 within 2 s" in r.stderr


@pytest.mark.parametrize("flag,value", [("--concurrency", "0"), ("--concurrency", "a,b"), ("--request-rate", "-1")])
def test_bad_levels(flag, value):
    r = _bench("--base-url", "http://127.0.0.1:9/v1", flag, value)
    assert r.returncode == 2 and flag in r.stderr


def test_summary_counts_every_request():
    ok = RequestResult(ok=True, ttft=0.1, e2e=1.1, output_tokens=11, prompt_tokens=5, itls=[0.1] * 10)
    res = [ok, RequestResult(ok=False, error="http_500"), RequestResult(ok=False, error="timeout")]
    s = summarize(res, 2.0, sent=4, price_per_hour=3.6)
    assert (s["completed"], s["failed"], s["unaccounted"]) == (1, 2, 1)
    assert s["failures"] == {"http_500": 1, "timeout": 1}
    assert s["output_tok_s"] == 5.5 and s["tpot_ms"]["p50"] == pytest.approx(100.0)
    assert s["usd_per_million_output_tokens"] == pytest.approx(3.6 / (5.5 * 3600) * 1e6)


def test_percentile_interpolates():
    assert _pct([1, 2, 3, 4], 50) == 2.5 and _pct([5], 99) == 5
