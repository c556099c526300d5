"""LoRA adapters for the tiny model, made here like the tiny model itself (random weights, PEFT layout).

The folder is what PEFT's ``save_pretrained`` writes and what a hub adapter repo holds:
``adapter_config.json`` and ``adapter_model.safetensors`` with keys
``base_model.model.model.layers.N.<block>.<module>.lora_A.weight`` ([rank, in]) and ``lora_B`` ([out, rank]).
``lora_B`` is not zero (PEFT's initialisation) but random and large, so an adapter visibly changes what
the model says: the tests tell an adapter's answer from the base's.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmodal.engine.tiny_model import staged_dir

# Llama's linear layers: module → (block, in features, out features) from the model's config.
LLAMA_MODULES = {
    "q_proj": ("self_attn", "hidden", "q"), "k_proj": ("self_attn", "hidden", "kv"),
    "v_proj": ("self_attn", "hidden", "kv"), "o_proj": ("self_attn", "q", "hidden"),
    "gate_proj": ("mlp", "hidden", "inter"), "up_proj": ("mlp", "hidden", "inter"),
    "down_proj": ("mlp", "inter", "hidden"),
}


# Mixtral's (the tiny Mixtral's): Llama's attention; the router and every expert's w1, w3 (gate, up) and w2 (down).
MIXTRAL_MODULES = {
    **{m: LLAMA_MODULES[m] for m in ("q_proj", "k_proj", "v_proj", "o_proj")},
    "gate": ("block_sparse_moe", "hidden", "experts"),
    "w1": ("block_sparse_moe.experts.{e}", "hidden", "inter"), "w3": ("block_sparse_moe.experts.{e}", "hidden", "inter"),
    "w2": ("block_sparse_moe.experts.{e}", "inter", "hidden"),
}


# The embedding and the LM head, outside the layers: PEFT names the embedding's pair lora_embedding_A ([rank, vocab])
# and lora_embedding_B ([hidden, rank]); the LM head is a linear layer (hidden → vocab).
EMBEDDING_KEYS = {
    "embed_tokens": ("model.embed_tokens", "lora_embedding_A", ("rank", "vocab"), "lora_embedding_B", ("hidden", "rank")),
    "lm_head": ("lm_head", "lora_A.weight", ("rank", "hidden"), "lora_B.weight", ("vocab", "rank")),
}


def _dims(cfg: dict) -> dict[str, int]:
    hd = int(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])
    return {"hidden": cfg["hidden_size"], "inter": cfg["intermediate_size"], "q": cfg["num_attention_heads"] * hd,
            "kv": cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * hd,
            "experts": cfg.get("num_local_experts", 0), "vocab": cfg["vocab_size"]}


def write_adapter(out: Path, base: Path, *, rank: int = 8, targets: tuple[str, ...] = ("q_proj", "v_proj"),
                  seed: int = 1, base_name: str | None = None, scale: float = 0.5,
                  config: dict | None = None, experts: int | None = None) -> Path:
    """Write a PEFT-layout adapter for the model in ``base`` to ``out`` (atomically); ``targets`` may also name
    ``embed_tokens`` and ``lm_head``. ``base_name`` is the
    ``base_model_name_or_path`` it declares (default: the base folder); ``config`` overrides config keys. On a
    Mixtral base, w1/w2/w3 are written for every expert (``experts``: as many as the base has, unless said)."""
    import torch
    from safetensors.torch import save_file

    cfg = json.loads((Path(base) / "config.json").read_text())
    dims = _dims(cfg)
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    modules = MIXTRAL_MODULES if dims["experts"] else LLAMA_MODULES
    for module in targets:
        if module in EMBEDDING_KEYS:
            where, a, a_shape, b, b_shape = EMBEDDING_KEYS[module]
            for suffix, shape in ((a, a_shape), (b, b_shape)):
                size = [rank if d == "rank" else dims[d] for d in shape]
                tensors[f"base_model.model.{where}.{suffix}"] = (torch.randn(*size, generator=gen) * scale).to(
                    torch.bfloat16)
    for layer in range(cfg["num_hidden_layers"]):
        for module in (t for t in targets if t not in EMBEDDING_KEYS):
            block, fin, fout = modules[module]
            blocks = [block.format(e=e) for e in range(dims["experts"] if experts is None else experts)] \
                if "{e}" in block else [block]
            for b in blocks:
                key = f"base_model.model.model.layers.{layer}.{b}.{module}"
                tensors[f"{key}.lora_A.weight"] = (torch.randn(rank, dims[fin], generator=gen) * scale).to(
                    torch.bfloat16)
                tensors[f"{key}.lora_B.weight"] = (torch.randn(dims[fout], rank, generator=gen) * scale).to(
                    torch.bfloat16)
    adapter_cfg = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_name or str(base),
        "r": rank, "lora_alpha": 2 * rank, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
        "target_modules": list(targets), "modules_to_save": None, "use_rslora": False, "use_dora": False,
        "inference_mode": True, **(config or {}),
    }
    out = Path(out)
    with staged_dir(out) as tmp:
        save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps(adapter_cfg, indent=2))
    return out
