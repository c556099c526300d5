"""Write a Llama-3.1-70B-Instruct-shaped model directory: the real config, the AWQ INT4
quantization_config of the checkpoint the planner picks, and a tokenizer made on the spot.
No weights: vLLM serves it with --load-format dummy (same kernels, memory and speed).

    python benchmarks/gpu/make_model.py OUT_DIR [--fp8] [--8b | --3b]
    python benchmarks/gpu/make_model.py --lora BASE_DIR OUT_DIR N

--fp8: the FP8 (W8A8, per-tensor, static activations) quantization_config of
neuralmagic/Meta-Llama-3.1-70B-Instruct-FP8 instead of the AWQ one.
--8b: meta-llama/Llama-3.1-8B-Instruct's shape, unquantized BF16 (a second model size for the speed model);
with --fp8, the same shape with the FP8 config (a second FP8 size).
--3b: meta-llama/Llama-3.2-3B-Instruct's shape (embeddings untied), BF16: a third size, where a fixed time per
sequence would weigh most.
--lora: N LoRA adapters for BASE_DIR's model at OUT_DIR/a0 … a{N-1}: PEFT layout, random weights, rank 16 on all
seven linear modules (the project's one adapter writer, engine/tiny_adapter.py), declaring BASE_DIR as their base.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from llmodal.engine.tiny_model import TinyShape, _train_tokenizer, llama_config  # noqa: E402

# meta-llama/Llama-3.1-70B-Instruct's config.json, and hugging-quants' AWQ INT4 build of it.
L70 = TinyShape(hidden=8192, heads=64, kv_heads=8, head_dim=128, layers=80, intermediate=28672, vocab=2000,
                max_position=131072)
# meta-llama/Llama-3.1-8B-Instruct's config.json (unquantized, bfloat16, untied embeddings).
L8 = TinyShape(hidden=4096, heads=32, kv_heads=8, head_dim=128, layers=32, intermediate=14336, vocab=2000,
               max_position=131072)
# meta-llama/Llama-3.2-3B-Instruct's config.json (its tied embeddings written untied: 0.4 GB more, same kernels).
L3 = TinyShape(hidden=3072, heads=24, kv_heads=8, head_dim=128, layers=28, intermediate=8192, vocab=2000,
               max_position=131072)
AWQ = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}
_FP8_ARGS = {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False, "symmetric": True,
             "group_size": None, "block_structure": None, "observer": "minmax", "observer_kwargs": {}}
FP8 = {"quant_method": "compressed-tensors", "format": "naive-quantized", "quantization_status": "frozen",
       "config_groups": {"group_0": {"targets": ["Linear"], "weights": _FP8_ARGS, "input_activations": _FP8_ARGS,
                                     "output_activations": None}},
       "ignore": ["lm_head"], "kv_cache_scheme": None}


def main(out: Path, fp8: bool = False, b8: bool = False, b3: bool = False) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tok = _train_tokenizer(L70.vocab)
    tok.save_pretrained(out)
    cfg = llama_config(L8 if b8 else L3 if b3 else L70, tok.bos_token_id, tok.eos_token_id, vocab=128256)
    if fp8 or not (b8 or b3):
        cfg["quantization_config"] = FP8 if fp8 else AWQ
    cfg.update(torch_dtype="bfloat16" if fp8 or b8 or b3 else "float16", rope_scaling={
        "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192, "rope_type": "llama3"})
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    print(f"wrote {out}")


def adapters(base: Path, out: Path, n: int) -> None:
    from llmodal.engine.tiny_adapter import LLAMA_MODULES, write_adapter

    for i in range(n):
        # scale 0.01, not the tiny tests' 0.5: with 4,096-wide layers a 0.5 adapter would push the dummy
        # weights' activations to inf in bf16; the values do not change the kernels' work, NaNs might.
        write_adapter(out / f"a{i}", base, rank=16, targets=tuple(LLAMA_MODULES), seed=i + 1, scale=0.01)
    print(f"wrote {n} adapters under {out}")


if __name__ == "__main__":
    if sys.argv[1] == "--lora":
        adapters(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
        sys.exit()
    main(Path(sys.argv[1]), fp8="--fp8" in sys.argv, b8="--8b" in sys.argv, b3="--3b" in sys.argv)
