"""`download` (what `llmodal download` runs in Modal) against a fake hub: the volume gets the weights vLLM will
load — the checkpoint's safetensors where it has them at the top, its .bin where it has only those, never both —
a container then finds them cached and starts with the hub offline, and vLLM's own loader, offline, finds in the
volume the weights it would load from the whole checkpoint."""

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


def index(*shards: str) -> bytes:
    """A sharded checkpoint's index: which shard holds each tensor (vLLM keeps only the shards it names)."""
    return json.dumps({"metadata": {}, "weight_map": {f"t{i}": s for i, s in enumerate(shards)}}).encode()


SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
CONSOLIDATED = ("consolidated-00001-of-00002.safetensors", "consolidated-00002-of-00002.safetensors")
REPOS = {
    "acme/both": {**COMMON, SHARDS[0]: b"s1", SHARDS[1]: b"s2", "model.safetensors.index.json": index(*SHARDS),
                  "pytorch_model.bin": b"bin", "training_args.pt": b"pt"},
    "acme/bin-only": {**COMMON, "pytorch_model-00001-of-00002.bin": b"b1", "pytorch_model-00002-of-00002.bin": b"b2",
                      "pytorch_model.bin.index.json": b"{}"},
    # Mistral's layout: the HF shards named by the index and, beside them, the same weights consolidated
    # (mistralai/Mistral-7B-Instruct-v0.3 and Mistral-Large-Instruct-2411, both in the catalog).
    "acme/mistral-style": {**COMMON, SHARDS[0]: b"s1", SHARDS[1]: b"s2", "model.safetensors.index.json": index(*SHARDS),
                           "consolidated.safetensors": b"c", "params.json": b"{}"},
    # Mistral-Large-Instruct-2411's: both copies sharded, each with its index
    "acme/mistral-sharded": {**COMMON, SHARDS[0]: b"s1", SHARDS[1]: b"s2", "model.safetensors.index.json": index(*SHARDS),
                             **{c: b"c" for c in CONSOLIDATED}, "consolidated.safetensors.index.json": index(*CONSOLIDATED),
                             "params.json": b"{}"},
    # .bin weights at the top, another build's safetensors in a folder (vLLM loads the top level only)
    "acme/bin-and-folder": {**COMMON, "pytorch_model.bin": b"bin", "gptq-4bit/model.safetensors": b"q"},
    "acme/pt-only": {**COMMON, "model.pt": b"pt"},
    # safetensors one level into original/: vLLM's own ignore ("original/**/*") does not cover it, so it asks for it
    "acme/original-safetensors": {**COMMON, "model.safetensors": b"s", "original/model.safetensors": b"o"},
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
    # One copy: the consolidated one, which vLLM loads online (the HF shards are the same weights again)
    ("acme/mistral-style", {"consolidated.safetensors"}),
    ("acme/mistral-sharded", set(CONSOLIDATED)),
    ("acme/pt-only", {"model.pt"}),
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


# vLLM 0.32's own choice of weight files for the repo id at the revision download pinned, with a load format (the
# container's, or vLLM's default, auto); or the error it stops with.
VLLM_LOADS = """
import json, os, sys
from vllm.config.load import LoadConfig
from vllm.model_executor.model_loader.default_loader import DefaultModelLoader
out = {}
for cache, repo, sha, load_format in json.loads(sys.argv[1]):
    try:
        folder, files, _, _ = DefaultModelLoader(LoadConfig(download_dir=cache, load_format=load_format)
                                                 )._prepare_weights(repo, None, sha, True, None)
        out[cache] = sorted(os.path.relpath(f, folder) for f in files)
    except Exception as e:
        out[cache] = f"{type(e).__name__}: {e}"
print("LOADS " + json.dumps(out))
"""


def vllm_loads(queries: list[tuple], hub: FakeHub | None = None) -> dict[str, list[str] | str]:
    """Each (HF_HOME, repo[, load format]) query answered by vLLM: offline, as the container runs it once the pinned
    weights are in the volume, or online from ``hub`` (the whole checkpoint, fetched into an empty cache)."""
    pytest.importorskip("vllm")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "HF_"))}
    env.update({"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1"} if hub else {"HF_HUB_OFFLINE": "1"})
    arg = json.dumps([[str(q[0] / "hub"), q[1], SHA, q[2] if len(q) > 2 else "auto"] for q in queries])
    r = subprocess.run([sys.executable, "-c", VLLM_LOADS, arg], env=env, capture_output=True, text=True, timeout=300)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("LOADS ")), None)
    assert r.returncode == 0 and line, r.stdout + r.stderr
    return json.loads(line[len("LOADS "):])


def _whole(home: Path, repo: str, files: dict[str, bytes]) -> None:
    """Every file of the checkpoint in an HF cache, as if nothing had been left out."""
    snap = home / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / SHA
    for name, data in files.items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).write_bytes(data)


def test_vllm_loads_from_the_volume_what_it_loads_from_the_whole_checkpoint(hub, tmp_path, monkeypatch):
    """Judged by vLLM's own loader: offline as the container runs it once the weights are pinned (with the formats
    the container passes it for that snapshot), from what `download` put in the volume, it loads the files it loads
    online, by itself, from the whole checkpoint on the hub; and stops on nothing."""
    from llmodal.modal.container import pinned_snapshot

    got, online = [], []
    for i, repo in enumerate(REPOS):
        r = _download(hub, repo, tmp_path / f"got{i}")
        assert r.returncode == 0, r.stdout + r.stderr
        monkeypatch.setenv("HF_HOME", str(tmp_path / f"got{i}"))
        got.append((tmp_path / f"got{i}", repo, pinned_snapshot(repo, SHA)[1].get("load-format", "auto")))
        online.append((tmp_path / f"all{i}", repo))
    loads = {**vllm_loads(got), **vllm_loads(online, hub)}
    for i, repo in enumerate(REPOS):
        from_whole = loads[str(tmp_path / f"all{i}" / "hub")]
        assert isinstance(from_whole, list) and from_whole, (repo, from_whole)
        assert loads[str(tmp_path / f"got{i}" / "hub")] == from_whole, repo


NO_WEIGHTS = {  # checkpoints vLLM finds no weights in
    "acme/folder-only": {**COMMON, "checkpoint-500/model.safetensors": b"s"},  # weights below the top level only
    # .pt weights beside the Trainer's training_args.bin: vLLM picks *.bin, then drops training_args.bin as not a
    # weight (filter_files_not_needed_for_inference), and is left with nothing
    "acme/pt-and-trainer-args": {**COMMON, "model.pt": b"pt", "training_args.bin": b"args"},
}


def test_a_checkpoint_vllm_finds_no_weights_in_is_refused_and_not_pinned(tmp_path):
    h = FakeHub(children={}, gated=(), files=NO_WEIGHTS)
    try:
        runs = {repo: _download(h, repo, tmp_path / f"got{i}") for i, repo in enumerate(NO_WEIGHTS)}
    finally:
        h.close()
    for i, repo in enumerate(NO_WEIGHTS):
        _whole(tmp_path / f"all{i}", repo, NO_WEIGHTS[repo])
    loads = vllm_loads([(tmp_path / f"all{i}", repo) for i, repo in enumerate(NO_WEIGHTS)])
    for i, (repo, r) in enumerate(runs.items()):
        assert "Cannot find any model weights" in loads[str(tmp_path / f"all{i}" / "hub")], repo  # vLLM's verdict
        assert r.returncode != 0 and f"{repo}@" in r.stderr and "no weights vLLM loads" in r.stderr, (repo, r.stderr)
        assert not (tmp_path / f"got{i}" / "llmodal-pins.json").exists(), repo
