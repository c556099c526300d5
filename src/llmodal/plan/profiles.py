"""Performance profiles: what ``LLMODAL_PROFILE`` changes, in terms the planner can account for.

Measured on an H100 with the 70B AWQ plan (vLLM 0.26.0, shared/measurements/h100-kernels-sleep.md):
Hopper's default AWQ kernel (Machete) gave 43.2 tok/s for one stream and 834 at 64 streams; Marlin
gave 50.8 (+17.6 %) and 507 (−39 %). 8k prefill chunks stalled decoding at 64 streams (p99 ITL
1.4 s). So: ``latency`` takes Marlin and short prefill chunks, ``throughput`` keeps Machete, allows
more sequences and halves KV bytes with an FP8 KV cache, ``balanced`` is vLLM's default. On GPUs
without Machete (A100) or without FP8 (A100, T4, A10G) only the batching changes.

An FP8 build on Hopper (H100, H200) under ``throughput`` runs 512-token engine steps. Measured on an
H200 with the 70B FP8 build (vLLM 0.32.0, benchmarks/results/h200-2026-12-02b): open-loop arrivals,
1,024 in / 256 out, vLLM's 8,192-token steps broke p99 ITL 100 ms already at 3 req/s (171 ms: a whole
prompt's prefill lands in one step), 512-token steps held 68 ms at 3.5 and 78 ms at 4 req/s; closed
loop at 128 streams they cost 3–7 % throughput, so ``balanced`` keeps vLLM's default.

Every profile on a GPU captures CUDA graphs for powers of two only (1, 2, 4 … 512: ten sizes against
vLLM's 51). Same H200 build (benchmarks/results/h200-2026-12-02c): graph capture went from ~20 s to
4 s and launch → /health with the compile cache from 77.7 s to 57.7 s; closed-loop throughput at 1,
32 and 128 streams stayed within 1 % of the 51-size server's (a decode batch pads up to the next
power of two: memory-bound steps barely notice). Under Poisson arrivals, where the batch wanders between
powers of two, the same arrival draws at 5.2 and 5.8 req/s gave the ten sizes p99 TTFT 1,226 / 2,606 ms
against 1,269 / 2,714 with vLLM's 51, and p99 ITL 75 against 90 ms (benchmarks/results/h200-2026-12-02d).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmodal.plan.gpus import GPU

HOPPER = ("H100", "H200")


@dataclass(frozen=True)
class Profile:
    name: str
    max_num_seqs: int | None  # None: vLLM's default for the GPU
    max_num_batched_tokens: int | None
    fp8_kv: bool  # --kv-cache-dtype fp8 (needs --dtype bfloat16 with FlashAttention 3)
    marlin: bool  # on Hopper, AWQ/GPTQ through Marlin instead of Machete
    concurrent_inputs: int  # Modal's per-container concurrency for this profile
    fp8_steps: int | None = None  # FP8 build on Hopper: tokens (and sequences) per engine step


PROFILES = {
    "latency": Profile("latency", 32, 2048, fp8_kv=False, marlin=True, concurrent_inputs=32),
    "balanced": Profile("balanced", None, None, fp8_kv=False, marlin=False, concurrent_inputs=64),
    "throughput": Profile("throughput", None, None, fp8_kv=True, marlin=False, concurrent_inputs=256, fp8_steps=512),
}


@dataclass(frozen=True)
class ProfileFlags:
    """The profile applied to one GPU and quantization: what goes on vLLM's command line."""

    max_num_seqs: int | None
    max_num_batched_tokens: int | None
    kv_cache_dtype: str | None
    dtype: str | None
    disabled_kernels: str | None  # VLLM_DISABLED_KERNELS
    cudagraph_capture_sizes: tuple[int, ...] | None = None  # the planner's, once the batch limits are final

    @property
    def kv_dtype_bytes(self) -> int:
        return 1 if self.kv_cache_dtype == "fp8" else 2


@dataclass(frozen=True)
class Batching:
    """``VLLM_MAX_NUM_BATCHED_TOKENS`` / ``VLLM_MAX_NUM_SEQS``: set, they replace the profile's value."""

    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None


def apply(profile: str, gpu: GPU, quant: str, batching: Batching = Batching()) -> ProfileFlags:
    p = PROFILES[profile]
    hopper = gpu.name in HOPPER
    fp8_kv = p.fp8_kv and gpu.fp8
    fp8_build = quant == "fp8" and hopper  # measured on the H200; H100 has the same FP8 tensor cores
    steps = p.fp8_steps if (fp8_build and batching == Batching()) else None  # either setting: the user's batching
    return ProfileFlags(
        max_num_seqs=batching.max_num_seqs or steps or p.max_num_seqs,
        max_num_batched_tokens=batching.max_num_batched_tokens or steps or p.max_num_batched_tokens,
        kv_cache_dtype="fp8" if fp8_kv else None,
        dtype="bfloat16" if fp8_kv else None,
        disabled_kernels="MacheteLinearKernel" if (p.marlin and hopper and quant in ("awq", "gptq")) else None,
    )


def graph_sizes(gpu: GPU, max_num_seqs: int, max_num_batched_tokens: int) -> tuple[int, ...]:
    """Powers of two up to vLLM's own ceiling for these limits: twice the sequences, at most 512
    (1,024 on Blackwell data-center GPUs), never past a step's token budget."""
    top = min(2 * max_num_seqs, 1024 if gpu.name == "B200" else 512, max_num_batched_tokens)
    out, n = [], 1
    while n <= top:
        out.append(n)
        n *= 2
    return tuple(out)
