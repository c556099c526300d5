"""Quantized builds found through the hub's model tree — against a fake hub (HF_ENDPOINT)."""

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import free_port
from fake_hub import BASE, FakeHub


@pytest.fixture
def hub(monkeypatch):
    h = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", h.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield h
    h.close()


def _plan(*args, **env):
    base = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    return subprocess.run([sys.executable, "-m", "llmodal.cli", "plan", "--env-file", "", *args],
                          capture_output=True, text=True, timeout=120, env={**base, **env})


def test_discovery_keeps_declared_builds_and_ranks_trusted_publishers_first(hub):
    from fake_hub import LLAMA_70B
    from llmodal.plan.hub import discover

    found = discover(BASE, LLAMA_70B)
    assert [c.repo for c in found.ranked] == [
        "hugging-quants/Big-Chat-70B-AWQ-INT4", "neuralmagic/Big-Chat-70B-FP8",  # trusted, by downloads
        "someone/Big-Chat-70B-AWQ", "someone/Big-Chat-70B-W4A16"]
    assert [c.quant for c in found.ranked] == ["awq", "fp8", "awq", "w4a16"]
    why = dict(found.rejected)
    assert "declares no quantization" in why["liar/Big-Chat-70B-AWQ"]
    assert "Qwen2ForCausalLM" in why["other/Big-Chat-70B-Qwen-AWQ"]
    assert "could not be read" in why["gone/Big-Chat-70B-GPTQ"]
    assert found.best() == {"awq": "hugging-quants/Big-Chat-70B-AWQ-INT4", "fp8": "neuralmagic/Big-Chat-70B-FP8",
                            "w4a16": "someone/Big-Chat-70B-W4A16"}


def test_plan_of_an_unknown_model_picks_the_best_4bit_build_and_lists_the_rest(hub):
    r = _plan("--model", BASE, "--json", HF_ENDPOINT=hub.url)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    p = doc["plan"]
    assert p["checkpoint"] == "hugging-quants/Big-Chat-70B-AWQ-INT4" and p["model"] == BASE  # served as asked
    assert p["fits"] and p["full_length_sequences"] >= 10
    assert [c["repo"] for c in doc["hub"]["ranked"]][0] == p["checkpoint"]
    assert {x["repo"] for x in doc["hub"]["rejected"]} == {
        "liar/Big-Chat-70B-AWQ", "other/Big-Chat-70B-Qwen-AWQ", "gone/Big-Chat-70B-GPTQ"}
    text = _plan("--model", BASE, HF_ENDPOINT=hub.url).stdout
    assert "chosen: hugging-quants/Big-Chat-70B-AWQ-INT4: AWQ declared in its config.json" in text
    assert "✗ liar/Big-Chat-70B-AWQ" in text


def test_vllm_checkpoint_pins_a_build(hub):
    r = _plan("--model", BASE, "--json", HF_ENDPOINT=hub.url, VLLM_CHECKPOINT="someone/Big-Chat-70B-W4A16")
    assert r.returncode == 0, r.stdout + r.stderr
    p = json.loads(r.stdout)["plan"]
    assert (p["checkpoint"], p["quantization"], p["model"]) == ("someone/Big-Chat-70B-W4A16", "w4a16", BASE)
    r = _plan("--model", BASE, HF_ENDPOINT=hub.url, VLLM_CHECKPOINT="other/Big-Chat-70B-Qwen-AWQ")
    assert r.returncode != 0 and "VLLM_CHECKPOINT" in r.stderr + r.stdout


def test_discover_refreshes_a_catalog_model_from_the_tree(monkeypatch):
    h = FakeHub(base="meta-llama/Llama-3.3-70B-Instruct")
    try:
        r = _plan("--model", "meta-llama/Llama-3.3-70B-Instruct", "--discover", "--json", HF_ENDPOINT=h.url)
        assert json.loads(r.stdout)["plan"]["checkpoint"] == "hugging-quants/Big-Chat-70B-AWQ-INT4", r.stderr
        h.requests.clear()
        r = _plan("--model", "meta-llama/Llama-3.3-70B-Instruct", "--json", HF_ENDPOINT=h.url)
        assert json.loads(r.stdout)["plan"]["checkpoint"] == "kosbu/Llama-3.3-70B-Instruct-AWQ"  # catalog, no call
        assert not any("/api/models" in q for q in h.requests)
    finally:
        h.close()


def test_offline_falls_back_to_the_catalog_quickly():
    dead = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    r = _plan("--model", "meta-llama/Llama-3.3-70B-Instruct", "--discover", "--json", HF_ENDPOINT=dead)
    assert r.returncode == 0 and json.loads(r.stdout)["plan"]["checkpoint"] == "kosbu/Llama-3.3-70B-Instruct-AWQ"
    r = _plan("--model", BASE, HF_ENDPOINT=dead)
    assert r.returncode != 0 and "unknown model" in r.stdout + r.stderr
    assert time.monotonic() - t0 < 60


def test_doctor_reports_a_gated_base_model_behind_an_ungated_build(hub, tmp_path):
    # A subprocess: huggingface_hub reads HF_ENDPOINT once, when it is first imported.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "MODAL_"))}
    r = subprocess.run([sys.executable, "-m", "llmodal.cli", "doctor", "--env-file", ""], capture_output=True,
                       text=True, timeout=120, env={**base, "HF_ENDPOINT": hub.url, "VLLM_MODEL": BASE,
                                                    "HUGGING_FACE_HUB_TOKEN": "hf_test_token_without_access",
                                                    "MODAL_CONFIG_PATH": str(tmp_path / "none.toml"),
                                                    "HOME": str(tmp_path), "COLUMNS": "250"})
    out = " ".join(r.stdout.split())
    assert r.returncode == 1, r.stdout + r.stderr
    assert "hugging-quants/Big-Chat-70B-AWQ-INT4 is reachable" in out  # the served build: open
    assert f"{BASE} is gated" in out and f"https://huggingface.co/{BASE}" in out  # its base: accept the license
    assert "hf_test_token" not in r.stdout + r.stderr
