"""Will it fit, how much KV cache, how many users, what it costs — the planner's arithmetic.

The planner owns the KV budget. vLLM is told the KV size (``--kv-cache-memory-bytes``)
instead of profiling its own, because its profile differs between a cold start, a start with
a warm compile cache and a sleep-mode start — on an H100 the warm start profiled 0.5 GiB less
activation memory, gave it to KV, and ran out of memory on its first 8k prefill. Per GPU:

    budget    = GPU memory (as torch reports it) × gpu_memory_utilization
    kv_memory = budget − weights/TP − activations × margin − CUDA graphs − non-torch memory
    kv_tokens = kv_memory ÷ (KV bytes per token ÷ TP)

LoRA adapters (``VLLM_LORA_MODULES``) come off the budget before the KV cache: vLLM allocates, when it
starts, ``--max-loras`` slots at ``--max-lora-rank`` in every linear layer, the embedding and the LM head
(``lora_memory.lora_bytes``), whatever the adapters themselves hold.

Activations: vLLM's profiling pass over ``max_num_batched_tokens`` tokens (MLP gate/up and
activation buffers, residual stream) plus one logits row per sequence, with a margin. CUDA
graphs: measured 2.11 GiB for the 70B shape (80 layers × 8192 hidden) on an H100, scaled by
layers × hidden for other shapes. Everything stays inside the utilization, so the rest of the
card is real headroom. Calibrated against this repo's H100 runs; ``benchmarks/kv_accuracy.py``
checks the arithmetic per shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from llmodal.core.errors import PlanError
from llmodal.plan.model_spec import ModelSpec
from llmodal.plan.gpus import GPU, GiB
from llmodal.plan.lora_memory import LoraSlots, lora_bytes
from llmodal.plan.profiles import Batching, ProfileFlags, graph_sizes
from llmodal.plan.profiles import apply as apply_profile

NON_TORCH_GIB = 0.25  # CUDA context, allocator slack; measured 0.22 GiB on one H100
NON_TORCH_TP_GIB = 0.5  # NCCL buffers once there is more than one GPU
ACTIVATION_MARGIN = 1.25  # profiled peaks varied by 0.5 GiB (2.21 vs 1.69) between starts of one shape
CUDA_GRAPH_GIB_70B = 2.5  # 2.11 GiB measured for 80 layers × 8192 hidden, rounded up
MIN_CUDA_GRAPH_GIB = 0.25
FOUR_BIT = ("awq", "gptq", "w4a16")  # only as a pre-quantized checkpoint (vLLM does not make them on the fly)
CHECKPOINT_ONLY = (*FOUR_BIT, "int8")  # likewise: vLLM 0.32 makes no INT8 weights on the fly (FP8 only)
SIXTEEN_BIT = ("bf16", "fp16")  # what vLLM quantizes on the fly from (--quantization fp8): no other checkpoint


def on_the_fly(spec: ModelSpec, quant: str) -> bool:
    """vLLM can make this build from the checkpoint as it is (FP8 from 16-bit weights); else it needs a checkpoint."""
    return quant not in CHECKPOINT_ONLY and spec.quant in SIXTEEN_BIT


@dataclass(frozen=True)
class EngineShape:
    """vLLM's default batch limits for the OpenAI server, which size the profiling pass."""

    max_num_batched_tokens: int
    max_num_seqs: int

    @classmethod
    def for_gpu(cls, gpu: GPU, flags: ProfileFlags | None = None) -> EngineShape:
        base = cls._default(gpu)
        if flags is None:
            return base
        return cls(flags.max_num_batched_tokens or base.max_num_batched_tokens, flags.max_num_seqs or base.max_num_seqs)

    @classmethod
    def _default(cls, gpu: GPU) -> EngineShape:
        # Mirrors vLLM's EngineArgs defaults (A100s keep the small batch on purpose).
        if gpu.memory_gib >= 160:
            return cls(16384, 1024)
        if gpu.memory_gib >= 70 and not gpu.name.startswith("A100"):
            return cls(8192, 1024)
        return cls(2048, 256)


@dataclass(frozen=True)
class Plan:
    model: str  # what clients ask for (served model name)
    checkpoint: str  # the weights vLLM loads
    quantization: str  # bf16 / fp8 / int8 / awq / gptq
    vllm_quantization: str | None  # --quantization to pass, None when the checkpoint says it
    gpu: str
    gpu_count: int
    tensor_parallel_size: int
    max_model_len: int
    gpu_memory_utilization: float
    params_b: float
    weights_gib_total: float
    weights_gib_per_gpu: float
    kv_bytes_per_token: int  # whole model, all layers, at the profile's KV dtype
    budget_gib_per_gpu: float
    activation_gib: float  # with its margin
    cuda_graph_gib: float
    non_torch_gib: float
    kv_gib_per_gpu: float
    kv_cache_bytes: int  # per GPU: what vLLM is told (--kv-cache-memory-bytes)
    kv_tokens: int
    full_length_sequences: float
    decode_ceiling_tok_s: float
    price_per_hour: float
    price_source: str
    idle_tail_cost: float
    day_cost: float
    fits: bool
    reason: str
    notes: list[str] = field(default_factory=list)
    profile: str = "balanced"
    flags: ProfileFlags | None = None  # what the profile puts on vLLM's command line
    lora: LoraSlots | None = None  # adapters served: vLLM's slots, charged before the KV cache
    lora_gib_per_gpu: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def activation_bytes(spec: ModelSpec, shape: EngineShape, tp: int) -> int:
    t = shape.max_num_batched_tokens
    per_token = (3 * spec.intermediate // tp + 4 * spec.hidden) * 2
    logits = shape.max_num_seqs * spec.vocab * 4
    return t * per_token + logits


def cuda_graph_bytes(spec: ModelSpec, tp: int) -> int:
    scale = spec.layers * spec.hidden / (80 * 8192) / tp
    return int(max(MIN_CUDA_GRAPH_GIB, CUDA_GRAPH_GIB_70B * scale) * GiB)


def make_plan(
    spec: ModelSpec,
    gpu: GPU,
    *,
    gpu_count: int = 1,
    tensor_parallel_size: int | None = None,
    max_model_len: int = 8192,
    gpu_memory_utilization: float = 0.95,
    quantization: str | None = None,
    checkpoint: str | None = None,
    served_name: str | None = None,
    scaledown_window_s: int = 900,
    price_per_hour: float | None = None,
    profile: str = "balanced",
    batching: Batching = Batching(),
    lora: LoraSlots | None = None,
) -> Plan:
    """Plan one configuration. ``quantization`` None means the checkpoint's own precision."""
    if max_model_len <= 0:
        raise PlanError(f"max_model_len must be a positive number of tokens, got {max_model_len}")
    if not 0 < gpu_memory_utilization <= 1:
        raise PlanError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    tp = tensor_parallel_size or gpu_count
    if tp < 1 or gpu_count < 1:
        raise PlanError(f"GPU count and tensor parallel size must be ≥ 1, got {gpu_count} and {tp}")
    notes: list[str] = []
    quant = quantization or spec.quant
    weights = spec.weight_bytes(quant)
    flags = apply_profile(profile, gpu, quant, batching)
    shape = EngineShape.for_gpu(gpu, flags)
    if shape.max_num_seqs > shape.max_num_batched_tokens:
        # vLLM refuses to start when a step's token budget is below its sequence limit.
        if batching.max_num_seqs:
            t = shape.max_num_batched_tokens
            src = (f"VLLM_MAX_NUM_BATCHED_TOKENS={t}" if batching.max_num_batched_tokens else
                   f"LLMODAL_PROFILE={profile}'s {t} tokens per step" if flags.max_num_batched_tokens else
                   f"vLLM's default of {t} tokens per step on {gpu.name}")
            raise PlanError(f"{src} is below VLLM_MAX_NUM_SEQS={shape.max_num_seqs}: a step must hold one token of "
                            f"every sequence; set VLLM_MAX_NUM_BATCHED_TOKENS to at least {shape.max_num_seqs}")
        flags = replace(flags, max_num_seqs=shape.max_num_batched_tokens)
        shape = EngineShape.for_gpu(gpu, flags)
        notes.append(f"max_num_seqs lowered to {shape.max_num_seqs}: the step's token budget")
    flags = replace(flags, cudagraph_capture_sizes=graph_sizes(gpu, shape.max_num_seqs, shape.max_num_batched_tokens))
    act = int(activation_bytes(spec, shape, tp) * ACTIVATION_MARGIN)
    graphs = cuda_graph_bytes(spec, tp)
    non_torch = (NON_TORCH_GIB + (NON_TORCH_TP_GIB if tp > 1 else 0)) * GiB
    budget = gpu.memory_gib * GiB * gpu_memory_utilization
    kv_per_token = spec.kv_bytes_per_token(flags.kv_dtype_bytes)
    kv_per_token_gpu = kv_per_token / min(tp, spec.kv_heads)
    lora_mem = lora_bytes(spec, lora, tp, shape.max_num_batched_tokens) if lora else 0
    kv_mem = budget - weights / tp - act - graphs - non_torch - lora_mem
    kv_tokens = max(0, int(kv_mem // kv_per_token_gpu))
    full = kv_tokens / max_model_len

    if spec.heads % tp:
        fits = False
        reason = (f"{spec.heads} attention heads do not divide by tensor parallel size {tp} (--gpus / "
                  f"VLLM_TENSOR_PARALLEL_SIZE; sizes that divide: "
                  f"{', '.join(str(n) for n in (1, 2, 4, 8) if spec.heads % n == 0)})")
    elif weights / tp > budget:
        fits = False
        reason = (f"weights need {weights / tp / GiB:.1f} GiB ({weights / tp / 1e9:.0f} GB) per GPU but only {budget / GiB:.1f} GiB is usable "
                  f"({gpu.memory_gib:.1f} GiB × {gpu_memory_utilization})")
    elif kv_tokens < max_model_len:
        fits = False
        reason = (f"after {weights / tp / GiB:.1f} GiB of weights and {(act + graphs) / GiB:.1f} GiB of activations "
                  "and CUDA graphs, " + (f"{lora_mem / GiB:.2f} GiB of LoRA slots, " if lora else "") +
                  f"{max(kv_mem, 0) / GiB:.1f} GiB is left for KV cache = {kv_tokens:,} tokens, "
                  f"fewer than one {max_model_len:,}-token sequence")
    else:
        fits = True
        reason = f"{kv_tokens:,} KV tokens = {full:.1f} concurrent {max_model_len:,}-token sequences"
    if max_model_len > spec.max_position:
        notes.append(f"max_model_len {max_model_len} exceeds the model's {spec.max_position} positions")
    if quant == "fp8" and not gpu.fp8:
        notes.append(f"{gpu.name} has no FP8 tensor cores: vLLM runs FP8 weights weight-only (Marlin), slower")

    price = gpu.price_per_hour if price_per_hour is None else price_per_hour
    hourly = price * gpu_count
    return Plan(
        model=served_name or spec.name,
        checkpoint=checkpoint or spec.name,
        quantization=quant,
        vllm_quantization="fp8" if (quant == "fp8" and spec.quant != "fp8" and not checkpoint) else None,
        gpu=gpu.name,
        gpu_count=gpu_count,
        tensor_parallel_size=tp,
        max_model_len=max_model_len,
        gpu_memory_utilization=gpu_memory_utilization,
        params_b=spec.params / 1e9,
        weights_gib_total=weights / GiB,
        weights_gib_per_gpu=weights / tp / GiB,
        kv_bytes_per_token=kv_per_token,
        budget_gib_per_gpu=budget / GiB,
        activation_gib=act / GiB,
        cuda_graph_gib=graphs / GiB,
        non_torch_gib=non_torch / GiB,
        kv_gib_per_gpu=max(kv_mem, 0) / GiB,
        kv_cache_bytes=int(max(kv_mem, 0)),
        kv_tokens=kv_tokens,
        full_length_sequences=full,
        decode_ceiling_tok_s=gpu.bandwidth_tbs * 1e12 * tp / weights,
        price_per_hour=hourly,
        price_source="LLMODAL_GPU_PRICE_PER_HOUR" if price_per_hour is not None else gpu.price_source,
        idle_tail_cost=hourly * scaledown_window_s / 3600,
        day_cost=hourly * 24,
        fits=fits,
        reason=reason,
        notes=notes,
        profile=profile,
        flags=flags,
        lora=lora,
        lora_gib_per_gpu=lora_mem / GiB,
    )


@dataclass(frozen=True)
class Suggestion:
    label: str
    plan: Plan


def suggestions(spec: ModelSpec, gpu: GPU, base: Plan, **kw) -> list[Suggestion]:
    """Ways to make ``base`` fit, cheapest first: same GPUs with a smaller checkpoint, more GPUs,
    then a shorter context. Only the ones that fit are returned."""
    out: list[Suggestion] = []
    same = dict(kw, gpu_count=base.gpu_count, tensor_parallel_size=base.tensor_parallel_size,
                max_model_len=base.max_model_len, served_name=base.model)
    for quant in ("awq", "gptq", "w4a16", "fp8"):
        ckpt = spec.checkpoints.get(quant)
        if quant == spec.quant or (ckpt is None and not on_the_fly(spec, quant)):
            continue
        p = make_plan(spec, gpu, quantization=quant, checkpoint=ckpt, **same)
        label = f"{quant.upper()} checkpoint {ckpt}" if ckpt else f"{quant.upper()} on the fly (--quantization {quant})"
        out.append(Suggestion(label, p))
    split = spec.heads % base.tensor_parallel_size != 0  # then fewer GPUs may be the way to fit, too
    for n in (1, 2, 4, 8):
        if n == base.tensor_parallel_size or (n <= base.gpu_count and not split):
            continue
        p = make_plan(spec, gpu, **dict(same, gpu_count=n, tensor_parallel_size=n, quantization=base.quantization,
                                        checkpoint=base.checkpoint))
        out.append(Suggestion(f"{n}× {gpu.name}" + (f" with tensor parallel {n}" if n > 1 else ""), p))
    if base.kv_tokens > 0 and base.weights_gib_per_gpu < base.budget_gib_per_gpu:
        shorter = 1 << (base.kv_tokens.bit_length() - 1)
        if 256 <= shorter < base.max_model_len:
            p = make_plan(spec, gpu, **dict(same, max_model_len=shorter, quantization=base.quantization,
                                            checkpoint=base.checkpoint))
            out.append(Suggestion(f"max_model_len {shorter}", p))
    fitting = [s for s in out if s.plan.fits]
    return sorted(fitting, key=lambda s: s.plan.price_per_hour)  # stable: keeps quantizations first


@dataclass(frozen=True)
class Resolution:
    """The plan as configured, the plan that will run, and the alternatives that fit."""

    asked: Plan
    chosen: Plan
    suggestions: list[Suggestion]
    discovery: object | None = None  # hub.Discovery when the hub's model tree was read
    spec: ModelSpec | None = None  # the model's shape the plans were made from
    lora: object | None = None  # adapters.LoraSetup: the adapters read and checked, vLLM's LoRA limits


def choose(spec: ModelSpec, gpu: GPU, quantization: str, *, min_sequences: float = 16, **kw) -> Resolution:
    """Resolve the config's quantization into one plan.

    ``auto``: ``auto_pick`` among the checkpoint as named and the same-GPU, same-context builds.
    ``none``: the checkpoint as named. Else: that quantization's checkpoint.
    """
    if quantization in ("auto", "none"):
        base = make_plan(spec, gpu, **kw)
    else:
        ckpt = spec.checkpoints.get(quantization) if quantization != spec.quant else None
        rebuilt = quantization != spec.quant and ckpt is None  # vLLM would have to make this build itself
        if rebuilt and quantization in CHECKPOINT_ONLY:
            known = ", ".join(spec.checkpoints) or "none"
            raise PlanError(f"VLLM_QUANTIZATION={quantization!r}: no {quantization.upper()} checkpoint is known for "
                            f"{spec.name} (known: {known}); point VLLM_MODEL at an existing "
                            f"{quantization.upper()} checkpoint instead")
        if rebuilt and not on_the_fly(spec, quantization):
            raise PlanError(f"VLLM_QUANTIZATION={quantization!r}: {spec.name} is already "
                            f"{spec.quant.upper()}-quantized, and vLLM quantizes on the fly from 16-bit weights only; "
                            f"use VLLM_QUANTIZATION=none (or auto) to serve it as it is, or point VLLM_MODEL at an "
                            f"existing {quantization.upper()} checkpoint")
        base = make_plan(spec, gpu, quantization=quantization, checkpoint=ckpt, **kw)
    keep = ("gpu_memory_utilization", "scaledown_window_s", "price_per_hour", "profile", "batching", "lora")
    sugg = suggestions(spec, gpu, base, **{k: v for k, v in kw.items() if k in keep})
    if quantization == "auto":
        same = [s for s in sugg if s.plan.gpu_count == base.gpu_count and s.plan.max_model_len == base.max_model_len]
        pick = auto_pick(base, same, gpu, min_sequences)
        if pick is not None and pick[0] is not None:
            chosen_s, why = pick
            chosen = replace(chosen_s.plan, notes=[*chosen_s.plan.notes, why])
            return Resolution(base, chosen, [x for x in sugg if x is not chosen_s])
        if pick is not None:  # the checkpoint as named won
            return Resolution(base, replace(base, notes=[*base.notes, pick[1]]), [])
    return Resolution(base, base, sugg if not base.fits else [])


# Most faithful first: 16-bit, FP8 (only on FP8 tensor cores), 8-bit integer, then 4-bit.
FAITHFUL = {"bf16": 0, "fp16": 0, "fp8": 1, "int8": 2, "awq": 3, "gptq": 3, "w4a16": 3}


def auto_pick(base: Plan, same: list[Suggestion], gpu: GPU, min_sequences: float):
    """VLLM_QUANTIZATION=auto: among builds that fit on these GPUs at this context, the most faithful
    one that holds at least ``min_sequences`` full-length sequences (FP8 only where the GPU has FP8
    tensor cores); if none holds that many, the one that holds most. Returns (suggestion or None for
    the checkpoint as named, the one-line reason with the runner-up), or None when nothing fits."""
    options: list[tuple[Suggestion | None, Plan]] = [(None, base)] if base.fits else []
    options += [(s, s.plan) for s in same if s.plan.fits and (s.plan.quantization != "fp8" or gpu.fp8)]
    if not options:
        return None
    rank = sorted(options, key=lambda o: (FAITHFUL.get(o[1].quantization, 9), -o[1].full_length_sequences))
    enough = [o for o in rank if o[1].full_length_sequences >= min_sequences]
    best = enough[0] if enough else max(rank, key=lambda o: o[1].full_length_sequences)
    others = [o for o in rank if o is not best]
    rule = (f"the most faithful build holding ≥ {min_sequences:g} full {base.max_model_len:,}-token sequences"
            if enough else f"no build holds {min_sequences:g} full sequences; the one holding most")
    why = (f"VLLM_QUANTIZATION=auto chose {best[1].quantization.upper()} ({best[1].full_length_sequences:.1f} "
           f"sequences): {rule} (LLMODAL_MIN_SEQUENCES)")
    if others:
        r = others[0][1]
        why += f"; runner-up {r.quantization.upper()}: {r.full_length_sequences:.1f} sequences"
    if not gpu.fp8 and any(s.plan.quantization == "fp8" for s in same):
        why += f"; FP8 skipped: {gpu.name} has no FP8 tensor cores"
    return best[0], why


def plan_for_settings(settings, *, gpu: str | None = None, gpu_count: int | None = None, model: str | None = None,
                      max_model_len: int | None = None, gpu_memory_utilization: float | None = None,
                      quantization: str | None = None, tensor_parallel_size: int | None = None,
                      discover: bool = False) -> Resolution:
    """The planner driven by llmodal's Settings, with optional overrides (the CLI's flags).

    Checkpoints come from the catalog; for a model it does not know (or with ``discover``) from
    the hub's model tree when reachable. ``VLLM_CHECKPOINT`` pins one and skips the choice."""
    from llmodal.plan.model_facts import model_facts
    from llmodal.plan.gpus import get_gpu

    model = model or settings.model
    spec, found = model_facts(model, settings.model_revision, settings.checkpoint, discover)
    lora = lora_setup(settings)
    slots = LoraSlots(len(lora.facts), lora.max_loras, lora.max_rank) if lora else None
    if settings.checkpoint:  # pinned: its own format, no choice
        quantization = next(iter(spec.checkpoints), "none")
    else:
        quantization = quantization or settings.quantization
    count = gpu_count or settings.gpu_count
    res = choose(
        spec, get_gpu(gpu or settings.gpu), quantization,
        gpu_count=count,
        tensor_parallel_size=tensor_parallel_size or settings.tensor_parallel_size or count,
        max_model_len=max_model_len or settings.max_model_len,
        gpu_memory_utilization=gpu_memory_utilization or settings.gpu_memory_utilization,
        served_name=model,
        scaledown_window_s=settings.scaledown_window_s,
        price_per_hour=settings.gpu_price_per_hour,
        profile=settings.profile,
        batching=Batching(settings.max_num_batched_tokens, settings.max_num_seqs),
        min_sequences=settings.min_sequences,
        lora=slots,
    )
    if lora:
        from llmodal.plan.adapters import check_all

        p = res.chosen
        notes = lora.notes + check_all(lora, spec, model=model, served=model, quant=p.quantization,
                                       checkpoint=p.checkpoint, any_base=settings.lora_any_base)
        res = replace(res, chosen=replace(p, notes=[*p.notes, *notes]))
    return replace(res, discovery=found, spec=spec, lora=lora)


def lora_setup(settings):
    """VLLM_LORA_MODULES read (each adapter's config, from its folder or the hub) with vLLM's limits, or None."""
    if not settings.adapters:
        return None
    from llmodal.plan.adapters import setup

    return setup(settings.adapters, max_loras=settings.max_loras, max_rank=settings.max_lora_rank)
