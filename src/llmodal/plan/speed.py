"""How fast a plan serves and what a token costs: a small roofline model, fitted to our measurements.

One decode step of B streams moves the weights once plus every stream's KV, and does 2·P FLOPs per
token: step(B) = max(bytes ÷ (bandwidth × E_BW), FLOPs ÷ (peak × E_DECODE)). Prefill is compute:
n tokens × (2·P + attention) ÷ (the format's peak × E_PREFILL). A request of n_in / n_out tokens at
concurrency c costs the GPU its prefill plus n_out amortized decode steps:

    time per request = prefill(n_in) × (1 − OVERLAP) + n_out × step(B) ÷ B,   B = min(c, what the KV holds)
    output tok/s     = n_out ÷ time per request

OVERLAP is the share of prefill compute that hides under memory-bound decode steps (vLLM's chunked
prefill runs both in one forward pass); with one stream nothing overlaps.

Tensor parallel divides bytes and FLOPs by TP and adds an all-reduce term per step (TP_STEP_MS,
**unmeasured**: no multi-GPU run exists yet). Efficiencies are per kernel/format, each fitted to a
measured file (docs/BENCHMARKS.md, "Planner speed model", has the table of predicted vs measured).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmodal.plan.model_spec import ModelSpec
from llmodal.plan.gpus import GPU

# Fraction of HBM bandwidth one decode step reaches, by weight format (single stream, 1k context):
# fp8   H200, FP8 W8A8 (cutlass): 67.7 GiB in 21.3 ms/token = 71 % (shared/measurements/h200-llama70b-fp8.md)
# awq   H100, AWQ Machete: 40.7 GB in 22.33 ms/token (TPOT, c=1) = 54 % (shared/measurements/h100-llama70b-awq.md)
# bf16  not measured on a GPU here: taken as FP8's (both are plain dense GEMMs)
E_BW = {"fp8": 0.71, "awq": 0.54, "gptq": 0.54, "w4a16": 0.54, "int8": 0.60, "bf16": 0.71}
# Fraction of the format's dense peak prefill reaches (4-bit formats run on the 16-bit tensor cores).
# fp8: 8,100-token prompt in 1.149 s with one decode step (h200-llama70b-fp8.md) → 54 % of FP8 peak.
# awq: 1,024-token TTFT 198.6 ms less one 22.33 ms step at c = 1 (h100-llama70b-awq.md) → 84 % of FP16 peak.
E_PREFILL = {"fp8": 0.54, "awq": 0.84, "gptq": 0.84, "w4a16": 0.84, "int8": 0.54, "bf16": 0.54}
# One constant for every format, fitted to the load rows of both files above (c = 8…128): worst 8.5 %.
OVERLAP = 0.2
E_DECODE = 0.5  # compute efficiency of a decode step (only binding at very large batches)
TP_STEP_MS = 0.15  # per decode step per extra GPU: all-reduces; an assumption, not measured
FOUR_BIT = ("awq", "gptq", "w4a16")


@dataclass(frozen=True)
class Speed:
    single_stream_tok_s: float
    ttft_s: float  # for the mix's prompt, one stream
    saturated_out_tok_s: float  # at the concurrency asked (or the most the KV cache holds)
    concurrency: int
    cost_per_1m_tokens: float  # USD per million tokens (in + out) at that throughput
    mix: tuple[int, int]

    def to_dict(self) -> dict:
        return self.__dict__ | {"mix": list(self.mix)}


def peak_flops(gpu: GPU, quant: str) -> float:
    """FLOP/s the format computes at: FP8 weights on FP8 tensor cores where the GPU has them."""
    tf = gpu.fp8_tflops if quant == "fp8" and gpu.fp8_tflops else gpu.bf16_tflops
    return tf * 1e12


def prefill_flops_per_token(spec: ModelSpec, n: int) -> float:
    """2 × parameters, plus causal attention over on average n/2 earlier tokens."""
    active = spec.params if spec.experts == 1 else spec.params * 2 / spec.experts  # top-2 MoE: 2 experts
    return 2 * active + 2 * spec.layers * spec.heads * spec.head_dim * n


def step_seconds(spec: ModelSpec, gpu: GPU, quant: str, weight_bytes: int, kv_bytes_per_token: int, tp: int,
                 batch: int, context: int) -> float:
    moved = (weight_bytes + batch * context * kv_bytes_per_token) / tp
    mem = moved / (gpu.bandwidth_tbs * 1e12 * E_BW.get(quant, 0.6))
    comp = 2 * spec.params * batch / tp / (peak_flops(gpu, quant) * E_DECODE)
    return max(mem, comp) + (tp - 1) * TP_STEP_MS / 1000


def prefill_seconds(spec: ModelSpec, gpu: GPU, quant: str, tp: int, n: int) -> float:
    return n * prefill_flops_per_token(spec, n) / tp / (peak_flops(gpu, quant) * E_PREFILL.get(quant, 0.54))


def predict(spec: ModelSpec, gpu: GPU, quant: str, *, weight_bytes: int, kv_bytes_per_token: int, tp: int,
            kv_tokens: int, price_per_hour: float, mix: tuple[int, int] = (1024, 256),
            concurrency: int = 128) -> Speed:
    n_in, n_out = mix
    context = n_in + n_out // 2
    args = (spec, gpu, quant, weight_bytes, kv_bytes_per_token, tp)
    one = step_seconds(*args, 1, context)
    prefill = prefill_seconds(spec, gpu, quant, tp, n_in)
    ttft = prefill + one
    batch = max(1, min(concurrency, kv_tokens // max(1, n_in + n_out)))
    hidden = OVERLAP if batch > 1 else 0.0
    per_request = (prefill * (1 - hidden)
                   + n_out * step_seconds(*args, batch, context) / batch)
    out_tok_s = n_out / per_request
    total_tok_s = out_tok_s * (n_in + n_out) / n_out
    return Speed(single_stream_tok_s=1 / one, ttft_s=ttft, saturated_out_tok_s=out_tok_s, concurrency=batch,
                 cost_per_1m_tokens=price_per_hour / 3600 / total_tok_s * 1e6, mix=mix)
