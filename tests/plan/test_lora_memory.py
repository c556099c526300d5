"""The planner's LoRA charge is what vLLM 0.32 allocates, and an adapter is accepted exactly when vLLM accepts it —
for a dense Llama and for Mixtral's experts. By hand from vLLM's allocation shapes for the real Mixtral; measured
on the CPU engine (benchmarks/lora_memory.py) for a tiny Llama and a tiny Mixtral."""

import json
import sys
from pathlib import Path

import pytest

from llmodal.core.config import load_settings
from llmodal.core.errors import ConfigError
from llmodal.plan.catalog import lookup
from llmodal.plan.planner import LoraSlots, lora_bytes, plan_for_settings

MIXTRAL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
ROOT = Path(__file__).resolve().parents[2]


def test_mixtral_charge_is_vllms_buffers_by_hand():
    """Mixtral 8x7B (32 layers, h 4096, 32 heads and 8 KV heads of 128, I 14336, 8 experts, V 32000), TP 1, 4 slots
    at rank 16, bf16; shapes per slot from vLLM 0.32's create_lora_weights (vllm/lora/layers):
      qkv (MergedQKVParallelLinearWithLoRA): A 3 × (r, 4096); B (4096 + 2 × 1024, r)
      o_proj (RowParallelLinearWithLoRA): A (r, 4096); B (4096, r)
      router gate (ReplicatedLinearWithLoRA): A (r, 4096); B (8, r)
      experts (FusedMoEWithLoRA): w13 A 2 × (8, r, 4096); w2 A (8, r, 14336); w13 B 2 × (8, 14336, r);
        w2 B (8, 4096, r); adapter_enabled int32 (4 + 1)
      embedding: A (32000, r), B (4096, r); LM head: A (r, 4096), B (32000, r)
    plus the step's fp32 buffer: 8192 tokens (an H100's batch) × r × 3 slices × 4 bytes."""
    r, slots = 16, 4
    per_layer = (3 * 4096 + 4096 + 2 * 1024) + (4096 + 4096) + (4096 + 8) \
        + (2 * 8 * 4096 + 8 * 14336 + 2 * 8 * 14336 + 8 * 4096)
    weights = slots * r * (32 * per_layer + (32000 + 4096) + (4096 + 32000)) * 2 + 32 * (slots + 1) * 4
    want = weights + 8192 * r * 3 * 4
    got = lora_bytes(lookup(MIXTRAL), LoraSlots(4, slots, r), 1, 8192)
    assert got == want
    assert 1.80 < got / 2**30 < 1.82  # the reviewer's 1.81 GiB; the charge before was 1.47


def _config_only(path, targets, **cfg):
    path.mkdir(parents=True, exist_ok=True)
    doc = {"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": targets,
           "base_model_name_or_path": MIXTRAL}
    (path / "adapter_config.json").write_text(json.dumps({**doc, **cfg}))
    return path


def test_plan_charges_mixtrals_expert_slots_and_accepts_expert_adapters(tmp_path):
    """Four adapters on the experts' w1/w2/w3 (and everything else vLLM wraps) are planned, not refused; the plan
    takes the slots per expert out of the KV cache."""
    every = ["q_proj", "k_proj", "v_proj", "o_proj", "gate", "w1", "w2", "w3"]
    mods = ",".join(f"a{i}={_config_only(tmp_path / f'a{i}', every)}" for i in range(4))
    s = load_settings(None, model=MIXTRAL, gpu="H100", quantization="awq", max_model_len=4096, lora_modules=mods)
    plain = plan_for_settings(load_settings(None, model=MIXTRAL, gpu="H100", quantization="awq",
                                            max_model_len=4096)).chosen
    p = plan_for_settings(s).chosen
    assert (p.lora.max_loras, p.lora.max_rank, p.tensor_parallel_size) == (4, 16, 1)
    assert p.lora_gib_per_gpu == pytest.approx(lora_bytes(lookup(MIXTRAL), p.lora, 1, 8192) / 2**30)
    assert plain.kv_cache_bytes - p.kv_cache_bytes == pytest.approx(p.lora_gib_per_gpu * 2**30, abs=2)
    # Llama's MLP names are vLLM's Mixtral loader's aliases of w1/w3/w2: accepted too.
    alias = _config_only(tmp_path / "alias", ["gate_proj", "up_proj", "down_proj"])
    plan_for_settings(load_settings(None, model=MIXTRAL, gpu="H100", lora_modules=f"x={alias}"))


def test_a_module_mixtral_lacks_is_refused_naming_its_modules(tmp_path):
    bad = _config_only(tmp_path / "bad", ["q_proj", "w4"])
    with pytest.raises(ConfigError, match=r"targets \['w4'\], which MixtralForCausalLM does not have .*gate, w1, "
                                          r"w3, w2"):
        plan_for_settings(load_settings(None, model=MIXTRAL, gpu="H100", lora_modules=f"bad={bad}"))


@pytest.fixture(scope="module")
def measured():
    """benchmarks/lora_memory.py on this machine: vLLM's CPU engine, the tiny Llama and the tiny Mixtral."""
    pytest.importorskip("vllm")
    from llmodal.core.state import cache_dir

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import lora_memory

    return {kind: lora_memory.measure(model, ads)
            for kind, (model, ads) in lora_memory.bases(cache_dir() / "lora-memory-adapters").items()}


@pytest.mark.server
@pytest.mark.parametrize("kind", ["llama", "mistral", "mixtral"])
def test_cpu_engine_allocates_what_the_planner_charges(measured, kind):
    """Every LoRA layer class vLLM makes holds the bytes the planner charges for it, at llmodal's own flags;
    the planner's step buffer covers the punica wrapper's index tensors."""
    doc = measured[kind]
    assert (doc["max_loras"], doc["max_lora_rank"]) == (4, 16)  # from llmodal's launch: 4 adapters, rank 16
    assert doc["vllm_by_class"] == doc["planner_by_class"]
    assert ("FusedMoEWithLoRA" in doc["vllm_by_class"]) == (kind == "mixtral")
    assert ("LogitsProcessorWithLoRA" in doc["vllm_by_class"]) == (kind != "mistral")  # both ways exercised
    assert doc["planner_buffer_bytes"] >= doc["vllm_punica_wrapper_bytes"]


@pytest.mark.server
@pytest.mark.parametrize("kind", ["llama", "mistral", "mixtral"])
def test_llmodal_accepts_an_adapter_exactly_when_vllm_does(measured, kind):
    doc = measured[kind]
    verdicts = {n: (v["accepted"], doc["llmodal_adapters"][n]["accepted"]) for n, v in doc["vllm_adapters"].items()}
    assert all(v == m for v, m in verdicts.values()), verdicts
    assert verdicts["embedding-lm-head"] == ((kind != "mistral"),) * 2  # vLLM's embedding_modules, both ways
    if kind != "mixtral":
        assert verdicts["path-targets"] == (True, True)  # vLLM reads the tensors' names; PEFT matched the paths
    if kind == "mixtral":  # both ways are exercised
        assert verdicts["experts-only"] == (True, True) and verdicts["expert-5-of-4"] == (False, False)
        assert verdicts["llama-mlp"] == (False, False)


def test_embedding_lora_table_is_vllms():
    """EMBEDDING_LORA says, per architecture, what vLLM 0.32's model class says: LoRA on the embedding and the LM
    head exactly where its embedding_modules names them."""
    pytest.importorskip("vllm")
    from vllm.model_executor.models.registry import ModelRegistry

    from llmodal.plan.lora_memory import EMBEDDING_LORA

    for arch, wrapped in EMBEDDING_LORA.items():
        cls = ModelRegistry._try_load_model_cls(arch)
        assert bool(getattr(cls, "embedding_modules", None)) == wrapped, arch


def test_every_catalog_model_is_charged_by_its_own_architecture():
    """The catalog names each model's architecture, so the planner knows whether its embedding and LM head take
    LoRA slots (Qwen2.5, Mistral, Gemma 2: no; Llama, Qwen3, Mixtral: yes)."""
    from llmodal.plan.catalog import CATALOG
    from llmodal.plan.lora_memory import EMBEDDING_LORA, lora_weights

    for spec in CATALOG.values():
        assert spec.arch in EMBEDDING_LORA, spec.name
        classes = lora_weights(spec, LoraSlots(1, 1, 16), tp=1)
        assert ("LogitsProcessorWithLoRA" in classes) == EMBEDDING_LORA[spec.arch], spec.name
