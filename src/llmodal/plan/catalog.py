"""Model facts: a built-in catalog of common families, or a model's own ``config.json``.

The catalog lets the default plan work offline. Each entry also names the pre-quantized
checkpoints the planner may swap in (the served model name stays what the user asked for).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from llmodal.core.errors import PlanError
from llmodal.plan.model_config import fetch_config, spec_from_config
from llmodal.plan.model_spec import ModelSpec



def _llama(name, layers, hidden, heads, intermediate, checkpoints, kv_heads=8, vocab=128256):
    return ModelSpec(name, layers, hidden, heads, kv_heads, hidden // heads, intermediate, vocab,
                     checkpoints=checkpoints, arch="LlamaForCausalLM")


# Shapes: each model's config.json as its maker publishes it. Builds: the publisher's hub page
# (hugging-quants, neuralmagic/RedHatAI, Qwen, TheBloke, casperhansen, kosbu); listed from the
# hub's model pages, not re-checked from this machine (it has no network): `llmodal plan
# --discover` reads the hub's model tree when reachable, and the container's download fails
# loudly on a repo that does not exist.
def _qwen(name, layers, hidden, heads, kv_heads, intermediate, suffixes, **kw):
    """Qwen publishes its own builds as the model's name plus a suffix."""
    return ModelSpec(name, layers, hidden, heads, kv_heads, 128, intermediate,
                     checkpoints={q: name + sfx for q, sfx in suffixes.items()}, **kw)


_HQ = "hugging-quants/Meta-Llama-3.1-{size}-Instruct-{fmt}-INT4"
_NM = "neuralmagic/{name}"
_QWEN25 = dict(vocab=152064, max_position=32768, arch="Qwen2ForCausalLM")
_QWEN3 = dict(vocab=151936, max_position=40960, arch="Qwen3ForCausalLM")
_MISTRAL = "MistralForCausalLM"
CATALOG: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        _llama("meta-llama/Llama-3.1-8B-Instruct", 32, 4096, 32, 14336, {
            "awq": _HQ.format(size="8B", fmt="AWQ"), "gptq": _HQ.format(size="8B", fmt="GPTQ"),
            "fp8": "neuralmagic/Meta-Llama-3.1-8B-Instruct-FP8"}),
        replace(_llama("meta-llama/Llama-3.2-3B-Instruct", 28, 3072, 24, 8192, {}), tied_embeddings=True),
        _llama("meta-llama/Llama-3.1-70B-Instruct", 80, 8192, 64, 28672, {
            "awq": _HQ.format(size="70B", fmt="AWQ"), "gptq": _HQ.format(size="70B", fmt="GPTQ"),
            "fp8": "neuralmagic/Meta-Llama-3.1-70B-Instruct-FP8"}),
        _llama("meta-llama/Llama-3.1-405B-Instruct", 126, 16384, 128, 53248, {
            "awq": _HQ.format(size="405B", fmt="AWQ"), "gptq": _HQ.format(size="405B", fmt="GPTQ"),
            "fp8": "meta-llama/Llama-3.1-405B-Instruct-FP8"}),
        # AWQ build: named in this project's issue 17 as a public AWQ INT4 build of Llama 3.3 70B.
        _llama("meta-llama/Llama-3.3-70B-Instruct", 80, 8192, 64, 28672, {
            "awq": "kosbu/Llama-3.3-70B-Instruct-AWQ",
            "fp8": "neuralmagic/Llama-3.3-70B-Instruct-FP8-dynamic"}),
        _llama("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", 80, 8192, 64, 28672, {
            "awq": "casperhansen/deepseek-r1-distill-llama-70b-awq",
            "fp8": _NM.format(name="DeepSeek-R1-Distill-Llama-70B-FP8-dynamic")}),
        _llama("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", 32, 4096, 32, 14336, {
            "fp8": _NM.format(name="DeepSeek-R1-Distill-Llama-8B-FP8-dynamic")}),
        _qwen("Qwen/Qwen2.5-7B-Instruct", 28, 3584, 28, 4, 18944, {"awq": "-AWQ", "gptq": "-GPTQ-Int4"}, **_QWEN25),
        _qwen("Qwen/Qwen2.5-14B-Instruct", 48, 5120, 40, 8, 13824, {"awq": "-AWQ", "gptq": "-GPTQ-Int4"}, **_QWEN25),
        _qwen("Qwen/Qwen2.5-32B-Instruct", 64, 5120, 40, 8, 27648, {"awq": "-AWQ", "gptq": "-GPTQ-Int4"}, **_QWEN25),
        _qwen("Qwen/Qwen2.5-72B-Instruct", 80, 8192, 64, 8, 29568, {"awq": "-AWQ", "gptq": "-GPTQ-Int4"}, **_QWEN25),
        ModelSpec("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", 64, 5120, 40, 8, 128, 27648, **_QWEN25,
                  checkpoints={"awq": "casperhansen/deepseek-r1-distill-qwen-32b-awq"}),
        _qwen("Qwen/Qwen3-8B", 36, 4096, 32, 8, 12288, {"awq": "-AWQ", "fp8": "-FP8"}, **_QWEN3),
        _qwen("Qwen/Qwen3-14B", 40, 5120, 40, 8, 17408, {"awq": "-AWQ", "fp8": "-FP8"}, **_QWEN3),
        _qwen("Qwen/Qwen3-32B", 64, 5120, 64, 8, 25600, {"awq": "-AWQ", "fp8": "-FP8"}, **_QWEN3),
        ModelSpec("mistralai/Mistral-7B-Instruct-v0.3", 32, 4096, 32, 8, 128, 14336, 32768, max_position=32768,
                  arch=_MISTRAL),
        ModelSpec("mistralai/Mistral-Small-24B-Instruct-2501", 40, 5120, 32, 8, 128, 32768, 131072,
                  max_position=32768, arch=_MISTRAL),
        ModelSpec("mistralai/Mistral-Large-Instruct-2411", 88, 12288, 96, 8, 128, 28672, 32768, arch=_MISTRAL),
        ModelSpec("mistralai/Mixtral-8x7B-Instruct-v0.1", 32, 4096, 32, 8, 128, 14336, 32000, max_position=32768,
                  arch="MixtralForCausalLM",
                  experts=8, checkpoints={"awq": "TheBloke/Mixtral-8x7B-Instruct-v0.1-AWQ",
                                          "fp8": _NM.format(name="Mixtral-8x7B-Instruct-v0.1-FP8")}),
        ModelSpec("google/gemma-2-9b-it", 42, 3584, 16, 8, 256, 14336, 256000, tied_embeddings=True,
                  max_position=8192, arch="Gemma2ForCausalLM"),
        ModelSpec("google/gemma-2-27b-it", 46, 4608, 32, 16, 128, 36864, 256000, tied_embeddings=True,
                  max_position=8192, arch="Gemma2ForCausalLM"),
    )
}
# Names people also write for the same weights.
_ALIASES = {
    "meta-llama/Meta-Llama-3.1-70B-Instruct": "meta-llama/Llama-3.1-70B-Instruct",
    "meta-llama/Meta-Llama-3.1-8B-Instruct": "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Meta-Llama-3.1-405B-Instruct": "meta-llama/Llama-3.1-405B-Instruct",
}


def _from_hub(model: str, revision: str | None) -> dict | None:
    return fetch_config(model, revision)


def canonical(model: str) -> str:
    return _ALIASES.get(model, model)


def lookup(model: str, revision: str | None = None) -> ModelSpec:
    """Facts for ``model``: a local directory's config, the catalog, then the hub."""
    path = Path(model).expanduser()
    if path.is_dir():
        cfg_path = path / "config.json"
        if not cfg_path.is_file():
            raise PlanError(f"model directory {model!r} has no config.json")
        return spec_from_config(json.loads(cfg_path.read_text()), model, source=str(cfg_path))
    canonical = _ALIASES.get(model, model)
    if canonical in CATALOG:
        return replace(CATALOG[canonical], name=model)
    for base in CATALOG.values():  # a catalog checkpoint asked for by its own name
        for quant, repo in base.checkpoints.items():
            if repo == model:
                return replace(base, name=model, quant=quant, checkpoints={})
    cfg = _from_hub(model, revision)
    if cfg is None:
        raise PlanError(
            f"unknown model {model!r}: not a local directory with config.json, not in the built-in catalog "
            f"({', '.join(CATALOG)}), and its config.json could not be fetched from the hub"
        )
    return spec_from_config(cfg, model, source=f"hub:{model}/config.json")


# vLLM's tool-call parser per model family (first match on the lower-cased repo name or the
# architecture in config.json). Source: vLLM's tool-calling docs, which name these pairings.
_TOOL_PARSERS = (
    (("llama-3.1", "llama-3.2", "llama-3.3", "llama-3-", "meta-llama-3.1", "tiny-llama"), "llama3_json"),
    (("qwen2.5", "qwen3", "qwq"), "hermes"),
    (("mistral", "mixtral"), "mistral"),
    (("hermes",), "hermes"),
)


def tool_parser_for(*names: str) -> str | None:
    """The tool-call parser for a model's family, or None when no family matches."""
    for name in names:
        low = name.lower()
        for needles, parser in _TOOL_PARSERS:
            if any(n in low for n in needles):
                return parser
    return None
