import json
import os
import subprocess
import sys

import pytest

from conftest import TEST_KEY, free_port
from llmodal.bench import RequestResult, summarize, _pct

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
        assert lv["sent"] == 6 and lv["completed"] + lv["failed"] + lv["lost"] == lv["sent"]
        assert lv["completed"] == 6 and lv["output_tokens"] == 6 * 16  # fixed output length held
        assert lv["prompt_tokens"] >= 6 * 64
        for key in ("ttft_ms", "itl_ms", "tpot_ms", "e2el_ms"):
            assert set(lv[key]) == {"mean", "p50", "p90", "p99"} and lv[key]["p50"] > 0
        assert lv["output_tok_s"] > 0 and lv["requests_s"] > 0
        assert lv["usd_per_million_output_tokens"] == pytest.approx(2.5 / (lv["output_tok_s"] * 3600) * 1e6)
    import matplotlib.image

    assert matplotlib.image.imread(png).shape[0] > 100


@pytest.mark.server
def test_open_loop_rate(server):
    r = _bench("--base-url", server.base_url, "--api-key", TEST_KEY, "--request-rate", "20", "--num-prompts", "5",
               "--input-len", "16", "--output-len", "8", "--api", "completions", "--warmup", "0")
    assert r.returncode == 0 and "20.0 req/s" in r.stdout, r.stdout + r.stderr


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
    assert (s["completed"], s["failed"], s["lost"]) == (1, 2, 1)
    assert s["failures"] == {"http_500": 1, "timeout": 1}
    assert s["output_tok_s"] == 5.5 and s["tpot_ms"]["p50"] == pytest.approx(100.0)
    assert s["usd_per_million_output_tokens"] == pytest.approx(3.6 / (5.5 * 3600) * 1e6)


def test_percentile_interpolates():
    assert _pct([1, 2, 3, 4], 50) == 2.5 and _pct([5], 99) == 5
