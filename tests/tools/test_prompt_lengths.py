"""Prompt lengths without a local tokenizer: the real server counts them."""

import json

import pytest

from conftest import TEST_KEY
from llmodal.tools.bench.prompts import TOLERANCE, Counter, calibrate, check_lengths
from test_bench import _bench


@pytest.mark.server
@pytest.mark.parametrize("api", ["completions", "chat"])
def test_bench_without_tokenizer_sends_what_the_server_counts_as_input_len(server, tmp_path, api):
    out = tmp_path / "r.json"
    r = _bench("--base-url", server.base_url, "--api-key", TEST_KEY, "--model", server.model, "--concurrency", "2",
               "--num-prompts", "6", "--input-len", "256", "--output-len", "4", "--api", api, "--warmup", "0",
               "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())
    lv = doc["levels"][0]
    per_request = lv["prompt_tokens"] / lv["completed"]  # usage.prompt_tokens, as the server counted
    assert abs(per_request / 256 - 1) <= TOLERANCE, per_request
    assert doc["meta"]["prompt_calibration"]["method"] == "tokenize"
    assert doc["meta"]["prompt_check"]["warning"] is False and "server's count" in doc["meta"]["prompt_lengths"]


@pytest.mark.server
def test_usage_fallback_when_the_server_has_no_tokenize(server):
    counter = Counter(server, "completions")
    counter.method = "usage"  # as against a server without /tokenize
    try:
        texts, rec = calibrate(counter, 3, 128)
        counts = [counter.count(t) for t in texts]
    finally:
        counter.close()
    assert rec["method"] == "usage" and len(texts) == 3
    assert all(abs(c / 128 - 1) <= TOLERANCE for c in counts), counts
    assert rec["max_deviation"] <= TOLERANCE


def test_a_run_far_from_the_target_is_flagged():
    rows = [{"completed": 4, "prompt_tokens": 4 * 1064}]
    assert check_lengths(rows, 256)["warning"] is True
    assert check_lengths([{"completed": 4, "prompt_tokens": 4 * 260}], 256)["warning"] is False
    assert check_lengths([{"completed": 0, "prompt_tokens": 0}], 256) is None
