"""How fast a plan serves and what a token costs: per-kernel step times, run through vLLM's scheduler.

**The kernel.** vLLM 0.32 runs a format with a kernel that depends on the GPU (``kernel()``): 4-bit AWQ/GPTQ
through Machete on Hopper (group size −1, 64 or 128), through Marlin on Turing, Ampere, Ada, Blackwell, for
other group sizes, or where a profile disables Machete (VLLM_DISABLED_KERNELS=MacheteLinearKernel); FP8
weights as W8A8 (cutlass) on GPUs with FP8 tensor cores, weight-only through Marlin elsewhere.

**One engine step** processing ``tokens`` tokens (one per decoding sequence plus prompt chunks), reading
``kv_read`` cached tokens for decode attention, on one GPU (TP divides bytes and FLOPs):

    weights = max(weight bytes ÷ (bandwidth × E_MEM),        streaming the weights once
                  FLOOR[kernel],                              a 4-bit kernel's dequantisation: binds at small batch
                  tokens × 2·P ÷ (peak[kernel] × E_COMP[kernel]))   the GEMMs once the step is compute-bound
    step    = weights + kv_read × KV bytes per token ÷ (bandwidth × E_MEM) + prompt attention FLOPs ÷ the same peak

FLOOR is why the AWQ build decodes one stream at 21–22 ms a token on both an H100 and an H200 (43 % more
bandwidth bought about 5 %): Machete is dequantisation-bound there, not bandwidth-bound. The H100 and the H200 have
the same SMs and clocks (989 dense BF16 TFLOP/s each), so a floor measured on one holds on the other; off Hopper
it is carried unscaled and the prediction is marked extrapolated. FLOOR is fitted on the one model measured
(a Llama-3.1-70B at TP 1) and scales with the quantised linear weights each GPU dequantises per step (its
share of the layers' GEMM weights: ÷ TP, × the model's size): dequantisation is work per weight, done once
per step whatever the batch, so a model a ninth the size does a ninth of it. That scaling is physics, not a
measurement: any other (model shape, TP) is marked extrapolated, with no band.

**The load.** ``speed_sim.simulate`` runs those steps through vLLM's scheduler for a closed loop of
``concurrency`` users: the batch is capped by ``max_num_seqs``, the step's token budget and the KV cache
(preempting past it), prompts are chunked into the budget (chunked prefill: a long prompt's chunks share steps
with decodes, and queue behind each other under load, which is what TTFT under load shows). Every token then
passes vLLM's delivery path — the engine core's outputs to its one API-server process, text and server-sent
events — API_TOKEN_S each, one after another: where the engine outruns it (an 8B or smaller at 64+ streams; a
70B on a B200 or at TP > 1), it is the ceiling (``Speed.api_bound`` says by how much).

Constants are fitted by ``benchmarks/speed_validation.py`` to every stored run; the error band beside each
prediction is that script's held-out error for the (architecture, format, kernel, model shape), and
``speed_band`` says where it holds: docs/BENCHMARKS.md, "Planner speed model".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmodal.plan.gpus import GPU
from llmodal.plan.model_spec import ModelSpec
from llmodal.plan.speed_sim import Load, simulate

FOUR_BIT = ("awq", "gptq", "w4a16")
ARCH = {"T4": "Turing", "A10G": "Ampere", "A100-40GB": "Ampere", "A100-80GB": "Ampere", "L4": "Ada", "L40S": "Ada",
        "H100": "Hopper", "H200": "Hopper", "B200": "Blackwell"}


@dataclass(frozen=True)
class KernelFit:
    """What one kernel costs, fitted to measured runs (``measured_on``) or borrowed (``like``)."""

    e_comp: float  # fraction of the kernel's tensor-core peak a compute-bound step reaches
    floor_ms: float = 0.0  # a 4-bit kernel's weight pass at small batch (dequantisation), Hopper, for MEASURED's
    # linear weights on one GPU; a step scales it by the linear weights its GPU holds (Engine.floor_seconds)
    measured_on: tuple[str, ...] = ()  # GPUs whose runs fitted these constants (the 70B's; bands: speed_band)
    like: str = ""  # unfitted: constants borrowed from this kernel
    first_seen: str = ""  # where runs judged an unfitted kernel's borrowed constants (never refitted on them)


# HBM streaming efficiency of weights and KV reads, and per-kernel constants: the fit to every stored run
# (`.venv/bin/python benchmarks/speed_validation.py`, first line), rounded.
E_MEM = 0.693
FITS: dict[str, KernelFit] = {
    "machete": KernelFit(e_comp=0.773, floor_ms=22.03, measured_on=("H100", "H200")),
    "marlin": KernelFit(e_comp=0.384, floor_ms=17.79, measured_on=("H100", "H200")),
    "fp8-w8a8": KernelFit(e_comp=0.627, measured_on=("H100", "H200")),
}
FITS |= {
    # Judged once, first seen (the prediction stored before each run), never fitted: speed-validation.md's
    # dense-16bit rows (tests/plan/test_speed_validation.py reads them back).
    "dense-16bit": KernelFit(e_comp=FITS["fp8-w8a8"].e_comp, like="fp8-w8a8",
                             first_seen="29 throughput runs on an H100 at Llama-3.1-8B's and Llama-3.2-3B's shapes, "
                                        "2026-12-07: -11.0% to +68.5%; 20 single-stream TTFTs +11.1% to -77.0%"),
    "int8-w8a8": KernelFit(e_comp=FITS["fp8-w8a8"].e_comp, like="fp8-w8a8"),
    "fp8-marlin": KernelFit(e_comp=FITS["marlin"].e_comp, floor_ms=FITS["marlin"].floor_ms, like="marlin"),
}
# The one model shape every stored run served (Llama-3.1-70B; 3.3 has the same shape), and at which TP. A
# prediction for any other shape or TP carries FLOOR, E_COMP and the TP term outside what was measured.
MEASURED = ModelSpec("Llama-3.1-70B", layers=80, hidden=8192, heads=64, kv_heads=8, head_dim=128,
                     intermediate=28672, vocab=128256)
MEASURED_TP = (1,)
# The other shapes the H100 ran on 2026-12-07 (benchmarks/results/h100-2026-12-07*).
L8 = ModelSpec("Llama-3.1-8B", layers=32, hidden=4096, heads=32, kv_heads=8, head_dim=128, intermediate=14336,
               vocab=128256)
L3 = ModelSpec("Llama-3.2-3B", layers=28, hidden=3072, heads=24, kv_heads=8, head_dim=128, intermediate=8192,
               vocab=128256, tied_embeddings=True)
# vLLM's delivery path, per output token it streams (from the engine core's outputs through the one API-server
# process, whose output handler and streams share one event loop): fitted to the 8B and 3B runs
# (speed_validation.py, held out by model shape), on the lent H100 host. It binds where the engine outruns it:
# those shapes at 64+ streams, never the 70B's runs. Measured cause: vLLM's own counters put the engine's part
# of each request 0.5-4.1 s under the API server's (2.6-4.1 s at 128 streams), and on the lent H200 host the
# API-server process spent 208 ± 14 µs of CPU a generated token at up to 2,117 tok/s (a coarse reading,
# consistent with this figure: benchmarks/results/h200-2026-12-07/api-server-cpu.md).
# This repo's 2-core machine spends 41-99 µs (docs/BENCHMARKS.md, "The API server's ceiling"): hosts differ.
# vLLM's remedy, more API-server processes, did not lift it: the 3B with --api-server-count 2 (2026-12-07d) gave
# 4,017 / 4,235 out tok/s at 64 / 128 streams, where the one-process model predicted 4,137 / 4,225 before the run.
API_TOKEN_S = 198.4e-6
# What a request's first token costs beyond the engine's steps, whatever its prompt: the API server's handling
# before the engine sees it, a prefill step's fixed cost, the token's way back (speed_sim ``first_s``). Fitted
# to the single-stream TTFT rows (speed_validation.py); measured apart on 2026-12-07c's H100: 256-token prompts
# took 19.3 ms (8B) and 14.8 ms (3B) to the first token, of which the engine's prefill 13.2 / 9.1 ms, and FLOPs
# 4-7 / 2-3 ms (benchmarks/results/h100-2026-12-07c/prefill-step.md).
FIRST_TOKEN_S = 17.4e-3
TP_STEP_MS = 0.15  # per decode step per extra GPU: all-reduces; an assumption, not measured
PLAN_REQUESTS_PER_USER = 4  # the plan's load: 4 requests per user, ramp and drain included (as measured)
# Mean TTFT under a closed-loop load is shown but not validated to a band: against the stored runs it is off
# by this much (docs/BENCHMARKS.md, "TTFT under load"); the fit never sees it.
TTFT_AT_LOAD_ERRORS = (-0.288, 0.318)
# The single-stream TTFT below the 70B's shape is held out wider than a band: the 8B's and 3B's c = 1 rows
# (speed-validation.md's worst held-out column). Both ends are hosts: the same 3B build and 1,024-token prompt took
# 47.7 ms on 2026-12-07b's lent H100 host, 24.1 on 2026-12-07c's; the 8B's 256-token prompt 19.3 ms on 07c's, 25.7 on
# 2026-12-07d's (docs/BENCHMARKS.md, "The small shapes' single-stream TTFT"): a host's CPU matters where the
# prefill step's GPU work is small, and one first-token constant sits between the hosts.
SMALL_SHAPE_TTFT_ERRORS = (-0.398, 0.421)


def ttft_note(spec: ModelSpec) -> str:
    """What plan says beside a single-stream TTFT at a shape whose TTFT rows spread wider (any but the 70B's)."""
    if same_shape(spec, MEASURED):
        return ""
    lo, hi = SMALL_SHAPE_TTFT_ERRORS
    return (f"TTFT at this shape depends on the host's CPU (held out against the 8B/3B runs: predicted "
            f"single-stream TTFT {lo:+.0%} to {hi:+.0%} on the stored runs)")


API_NOTE_FROM = 0.03  # the API server's share of the engine's throughput from which plan names it


MACHETE_GROUPS = (-1, 64, 128)  # vLLM 0.32 machete_utils: group sizes Machete takes with 16-bit activations


def kernel(gpu: GPU, quant: str, disabled_kernels: str | None = None, group_size: int = 128) -> str:
    """The GEMM kernel vLLM 0.32 uses for this format on this GPU. VLLM_DISABLED_KERNELS is matched as vLLM
    matches it: comma-separated exact class names."""
    hopper = ARCH.get(gpu.name) == "Hopper"
    if quant in FOUR_BIT:
        disabled = (disabled_kernels or "").split(",")
        if hopper and "MacheteLinearKernel" not in disabled and group_size in MACHETE_GROUPS:
            return "machete"
        return "marlin"  # MarlinLinearKernel: compute capability 7.5 (Turing) and up
    if quant == "fp8":
        return "fp8-w8a8" if gpu.fp8 else "fp8-marlin"
    if quant == "int8":
        return "int8-w8a8"
    return "dense-16bit"


def dequantised(spec: ModelSpec) -> float:
    """Linear weights a decode step touches (a top-2 MoE: two experts' MLPs per layer at small batch)."""
    mlp = 3 * spec.hidden * spec.intermediate * spec.layers * spec.experts
    return spec.linear_params - mlp + mlp * min(spec.experts, 2) / spec.experts


def tp_measured(tp: int) -> bool:
    """Whether a stored run served at this tensor-parallel degree: elsewhere the TP term (TP_STEP_MS) is assumed."""
    return tp in MEASURED_TP


def same_shape(a: ModelSpec, b: ModelSpec, vocab: bool = True) -> bool:
    """The same layers (and, with ``vocab``, the same vocabulary: Mistral-7B has Llama-3.1-8B's layers with a
    quarter of its LM head)."""
    keys = ("layers", "hidden", "heads", "kv_heads", "head_dim", "intermediate", "experts") + (("vocab",) * vocab)
    return all(getattr(a, k) == getattr(b, k) for k in keys)


def measured_shape(spec: ModelSpec | None, tp: int, shapes: tuple[ModelSpec, ...] = (MEASURED,)) -> bool:
    """At a TP and (when known) a model shape that stored runs served."""
    return tp_measured(tp) and (spec is None or any(same_shape(spec, m) for m in shapes))


def family(quant: str) -> str:
    return "4-bit" if quant in FOUR_BIT else quant


def peak_flops(gpu: GPU, k: str) -> float:
    """The tensor-core peak a kernel computes at: FP8/INT8 cores for W8A8, 16-bit cores otherwise."""
    if k in ("fp8-w8a8", "int8-w8a8"):
        return (gpu.fp8_tflops or 2 * gpu.bf16_tflops) * 1e12
    return gpu.bf16_tflops * 1e12


@dataclass(frozen=True)
class Engine:
    """One build on one GPU, as the step model needs it."""

    spec: ModelSpec
    gpu: GPU
    kernel: str
    weight_bytes: int
    kv_bytes_per_token: int
    tp: int = 1
    fit: KernelFit | None = None  # None: FITS[kernel]
    e_mem: float = E_MEM
    token_s: float = API_TOKEN_S
    first_s: float = FIRST_TOKEN_S

    def floor_seconds(self, f: KernelFit) -> float:
        """The 4-bit floor for the linear weights one GPU dequantises per step, against the measured model's."""
        return f.floor_ms / 1000 * dequantised(self.spec) / self.tp / dequantised(MEASURED)

    def step_seconds(self, tokens: int, kv_read: int, attn_pairs: int) -> float:
        f = self.fit or FITS[self.kernel]
        bw = self.gpu.bandwidth_tbs * 1e12 * self.e_mem
        peak = peak_flops(self.gpu, self.kernel) * f.e_comp
        s = self.spec
        active = s.params if s.experts == 1 else s.params * 2 / s.experts  # top-2 MoE: 2 experts a token
        weights = max(self.weight_bytes / self.tp / bw, self.floor_seconds(f), tokens * 2 * active / self.tp / peak)
        kv = kv_read * self.kv_bytes_per_token / self.tp / bw
        # prompt attention at the 16-bit peak's rate whatever the linear layers' format: W8A8 quantises the GEMMs
        # only; with an FP8 KV cache vLLM's FlashAttention 3 computes attention in FP8 (vLLM docs, "Quantized KV
        # Cache"), but the H200's 8,100-token FP8 prompt was no faster for it: 1,177 ms with, 1,149 without
        attn = attn_pairs * 4 * s.layers * s.heads * s.head_dim / self.tp / (self.gpu.bf16_tflops * 1e12 * f.e_comp)
        return weights + kv + attn + (self.tp - 1) * TP_STEP_MS / 1000


@dataclass(frozen=True)
class Band:
    """The error the validation supports for a prediction, or why there is none."""

    kernel: str
    error: float | None  # ± fraction 90 % of held-out runs stay within; None: no measurement supports one
    worst: float | None = None
    runs: int = 0
    extrapolated: str = ""  # why the number is an extrapolation, when it is
    note: str = ""  # what else holds for the band (a kernel whose constants are borrowed)
    shape: str = ""  # the model shape whose held-out runs gave the band

    def text(self) -> str:
        band = (f"±{self.error:.0%} on throughput ({self.kernel} at the {self.shape} shape: 90 % of {self.runs} "
                f"held-out runs within it, worst {self.worst:+.0%})" if self.error is not None
                else f"no error band ({self.kernel})")
        return band + "".join(f"; {x}" for x in (self.note, self.extrapolated) if x)

    def to_dict(self) -> dict:
        return {"kernel": self.kernel, "error": self.error, "worst": self.worst, "held_out_runs": self.runs,
                "shape": self.shape or None, "extrapolated": self.extrapolated or None, "note": self.note or None}


@dataclass(frozen=True)
class Speed:
    single_stream_tok_s: float
    ttft_s: float  # for the mix's prompt, one stream
    saturated_out_tok_s: float  # at the concurrency asked
    concurrency: int
    cost_per_1m_tokens: float  # USD per million tokens (in + out) at that throughput
    mix: tuple[int, int]
    band: Band | None = field(default=None)
    max_batch: int = 0  # most sequences one step decoded (capped by max_num_seqs, the step budget, the KV cache)
    ttft_at_load_s: float = 0.0  # mean TTFT at that load: prompts queue for chunks of the step budget
    api_bound: float = 0.0  # the share of the engine's throughput vLLM's API server takes at that load (0: none)

    def api_text(self) -> str:
        """Where vLLM's delivery path is the ceiling, what it takes and where that was fitted; else ""."""
        if self.api_bound < API_NOTE_FROM:
            return ""
        return (f"vLLM's token delivery, not the GPU, bounds this figure ({API_TOKEN_S * 1e6:.0f} µs a streamed token "
                f"from the engine through its one API-server process, fitted on the lent H100 host; the engine alone "
                f"would give {self.saturated_out_tok_s / (1 - self.api_bound):,.0f} out tok/s); another host's CPU "
                f"would change it; a second API-server process (--api-server-count 2) measured no faster")

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "band"} | {"mix": list(self.mix)}
        d["error_band"] = self.band.to_dict() if self.band else None
        d["api_server"] = {"token_us": round(API_TOKEN_S * 1e6, 1), "bound": round(self.api_bound, 3),
                           "note": self.api_text() or None}
        return d


def run(engine: Engine, load: Load, *, max_num_seqs: int, max_num_batched_tokens: int, kv_tokens: int,
        token_s: float | None = None):
    """``load`` through vLLM's scheduler on this engine; ``token_s``: the delivery path's time instead of the
    engine's (0: an API server that keeps up)."""
    return simulate(load, engine.step_seconds, max_num_seqs=max_num_seqs,
                    max_num_batched_tokens=max_num_batched_tokens, kv_tokens=kv_tokens,
                    token_s=engine.token_s if token_s is None else token_s, first_s=engine.first_s)


def predict(engine: Engine, *, kv_tokens: int, price_per_hour: float, max_num_seqs: int,
            max_num_batched_tokens: int, mix: tuple[int, int] = (1024, 256), concurrency: int = 128,
            band_: Band | None = None) -> Speed:
    n_in, n_out = mix
    limits = dict(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens, kv_tokens=kv_tokens)
    one = run(engine, Load(n_in, n_out, 1, 1), **limits)
    load = Load(n_in, n_out, concurrency, PLAN_REQUESTS_PER_USER * concurrency)
    loaded = run(engine, load, **limits)
    # the engine alone (an API server that keeps up): how much of the engine's throughput the server takes
    alone = run(engine, load, **limits, token_s=0.0).out_tok_s if engine.token_s else 0.0
    total_tok_s = loaded.out_tok_s * (n_in + n_out) / n_out
    step1 = engine.step_seconds(1, n_in + n_out // 2, 0)
    return Speed(single_stream_tok_s=1 / step1, ttft_s=one.ttft_s, saturated_out_tok_s=loaded.out_tok_s,
                 concurrency=concurrency, cost_per_1m_tokens=price_per_hour / 3600 / total_tok_s * 1e6, mix=mix,
                 band=band_, max_batch=loaded.max_batch, ttft_at_load_s=loaded.ttft_s,
                 api_bound=max(0.0, 1 - loaded.out_tok_s / alone) if alone else 0.0)
