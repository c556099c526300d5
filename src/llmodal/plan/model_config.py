"""Reading a model's ``config.json``: from the hub (or ``HF_ENDPOINT``), what format its weights are
stored in, and the ``ModelSpec`` it describes. Below both the catalog and the hub's model tree."""

from __future__ import annotations

import functools
import os

import httpx

from llmodal.core.errors import PlanError
from llmodal.plan.model_spec import ModelSpec

TIMEOUT_S = 5.0


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _headers() -> dict[str, str]:
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def fetch_config(repo: str, revision: str | None = None) -> dict | None:
    """A repo's ``config.json``, or None (offline, missing, gated without access). Read once per
    hub, repo and revision in a process: the catalog lookup and the model tree both need it."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return None
    return _fetch_config(endpoint(), repo, revision or "main")


@functools.lru_cache(maxsize=256)
def _fetch_config(hub: str, repo: str, revision: str) -> dict | None:
    try:
        r = httpx.get(f"{hub}/{repo}/resolve/{revision}/config.json", headers=_headers(), timeout=TIMEOUT_S,
                      follow_redirects=True)
        return r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def quant_of(cfg: dict) -> str:
    """How a checkpoint's ``config.json`` says its linear weights are stored."""
    qc = cfg.get("quantization_config") or cfg.get("compression_config") or {}
    method = str(qc.get("quant_method", "")).lower()
    if method in ("awq", "gptq") and int(qc.get("bits", 4)) == 4:
        return method
    if method == "compressed-tensors":
        weights = [g.get("weights") or {} for g in (qc.get("config_groups") or {}).values()]
        bits = {int(w.get("num_bits", 0)) for w in weights}
        kinds = {str(w.get("type", "")) for w in weights}
        if bits == {4}:
            return "w4a16"
        if bits == {8}:
            return "fp8" if kinds == {"float"} else "int8"
        return "unknown"
    if method in ("fp8", "fbgemm_fp8"):
        return "fp8"
    if method == "bitsandbytes" or int(qc.get("bits", 16)) == 8:
        return "int8"
    return "bf16" if not method else "unknown"


def group_size_of(cfg: dict) -> int:
    """A 4-bit checkpoint's quantization group size (-1: per channel); 128 where the config does not say."""
    qc = cfg.get("quantization_config") or cfg.get("compression_config") or {}
    if "group_size" in qc or "q_group_size" in qc:
        return int(qc.get("group_size", qc.get("q_group_size")))
    for g in (qc.get("config_groups") or {}).values():
        w = g.get("weights") or {}
        if w.get("group_size") is not None:
            return int(w["group_size"])
    return 128


def spec_from_config(cfg: dict, name: str, source: str) -> ModelSpec:
    """Build a spec from a Hugging Face ``config.json`` dict."""
    outer, cfg = cfg, cfg.get("text_config", cfg)
    try:
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        return ModelSpec(
            name=name,
            layers=int(cfg["num_hidden_layers"]),
            hidden=hidden,
            heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            intermediate=int(cfg["intermediate_size"]),
            vocab=int(cfg["vocab_size"]),
            tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            quant=quant_of(cfg),
            group_size=group_size_of(outer),
            source=source,
            max_position=int(cfg.get("max_position_embeddings", 131072)),
            experts=int(cfg.get("num_local_experts") or cfg.get("num_experts") or 1),
            arch=str((cfg.get("architectures") or outer.get("architectures") or [""])[0]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise PlanError(f"{source}: not a decoder config llmodal can plan ({e!r} missing or invalid)") from e
