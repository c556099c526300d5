"""`download` (what `llmodal download` runs in Modal) against a fake hub: the volume gets the weights vLLM will
load — the checkpoint's safetensors where it has them, its .bin where it has only those, never both — and a
container then finds them cached and starts with the hub offline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fake_hub import FakeHub

SHA = "0" * 40  # what the fake hub says every revision is
# A small Llama the planner fits on one A100 without quantization (the checkpoint is then the model itself).
CFG = json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
                  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                  "intermediate_size": 512, "vocab_size": 1024, "max_position_embeddings": 4096,
                  "torch_dtype": "bfloat16"}).encode()
COMMON = {"config.json": CFG, "tokenizer.json": b"{}", "generation_config.json": b"{}",
          "original/consolidated.00.pth": b"meta"}
REPOS = {
    "acme/both": {**COMMON, "model-00001-of-00002.safetensors": b"s1", "model-00002-of-00002.safetensors": b"s2",
                  "model.safetensors.index.json": b"{}", "pytorch_model.bin": b"bin", "training_args.pt": b"pt"},
    "acme/bin-only": {**COMMON, "pytorch_model-00001-of-00002.bin": b"b1", "pytorch_model-00002-of-00002.bin": b"b2",
                      "pytorch_model.bin.index.json": b"{}"},
}


@pytest.fixture(scope="module")
def hub():
    h = FakeHub(children={}, gated=(), files=REPOS)
    yield h
    h.close()


def _download(hub, repo: str, home: Path) -> subprocess.CompletedProcess:
    from llmodal.core.config import handoff, load_settings

    settings = load_settings(None, model=repo, quantization="none", gpu="A100-80GB", fast_boot="off")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "LLMODAL_", "HF_"))}
    env.update(LLMODAL_SETTINGS=handoff(settings), HF_HOME=str(home), HF_ENDPOINT=hub.url,
               HF_HUB_DISABLE_XET="1", PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-c", "from llmodal.modal.container import download_weights as d; d()"],
                          env=env, capture_output=True, text=True, timeout=120)


def _snapshot(home: Path, repo: str) -> set[str]:
    snap = home / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / SHA
    return {str(p.relative_to(snap)) for p in snap.rglob("*") if p.is_file()}


@pytest.mark.parametrize("repo, weights", [
    ("acme/both", {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}),
    ("acme/bin-only", {"pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"}),
])
def test_download_fetches_the_one_format_vllm_loads_and_the_container_finds_it(hub, tmp_path, monkeypatch, repo,
                                                                             weights):
    r = _download(hub, repo, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    got = _snapshot(tmp_path, repo)
    loaded = {f for f in got if f.endswith((".safetensors", ".bin", ".pt", ".pth"))}
    assert loaded == weights, got  # that format, all of its shards, nothing of any other
    assert {"config.json", "tokenizer.json"} <= got
    assert json.loads((tmp_path / "llmodal-pins.json").read_text()) == {repo: SHA}

    from llmodal.modal.container import weights_cached

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert weights_cached(repo, SHA)  # so the container sets HF_HUB_OFFLINE and never downloads


def test_a_checkpoint_without_weights_is_refused_and_not_pinned(tmp_path):
    h = FakeHub(children={}, gated=(), files={"acme/empty": {"config.json": CFG, "README.md": b"soon"}})
    try:
        r = _download(h, "acme/empty", tmp_path)
    finally:
        h.close()
    assert r.returncode != 0 and "acme/empty@" in r.stderr and "no weights vLLM loads" in r.stderr, r.stderr
    assert not (tmp_path / "llmodal-pins.json").exists()
