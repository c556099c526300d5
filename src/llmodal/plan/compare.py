"""``llmodal plan --compare``: every (GPU, build, TP) that fits, with predicted speed and $/1M tokens; a TP no stored
run served is marked unmeasured."""

from __future__ import annotations

import math

from llmodal.core.errors import PlanError

from llmodal.plan.prices import cheapest
from llmodal.plan.model_spec import ModelSpec
from llmodal.plan.gpus import get_gpu
from llmodal.plan.lora_memory import LoraSlots
from llmodal.plan.lora_speed import MEASURED_ON, SOURCE, LoraSpeed, predict_lora
from llmodal.plan.planner import EngineShape, Plan, make_plan
from llmodal.plan.profiles import Batching
from llmodal.plan.speed import Engine, Speed, kernel, predict, tp_measured
from llmodal.plan.speed_band import band

COMPARE_GPUS = ("A100-80GB", "L40S", "H100", "H200", "B200")
COMPARE_BUILDS = ("bf16", "fp8", "awq", "gptq")
COMPARE_TP = (1, 2, 4, 8)


def lora_doc(lora: LoraSlots | None) -> dict | None:
    """The adapters a plan or comparison charges, and where its speed with adapters comes from; None without."""
    if lora is None:
        return None
    return {"adapters": lora.adapters, "max_loras": lora.max_loras, "max_rank": lora.max_rank,
            "memory": "each plan takes vLLM's LoRA slots (--max-loras at --max-lora-rank) before the KV cache",
            "speed_cost": f"LoRA speed: every request on an adapter, the punica kernels' time per wrapped layer "
                          f"and step added to the base's ({MEASURED_ON}; {SOURCE})"}


def parse_mix(text: str) -> tuple[int, int]:
    try:
        n_in, n_out = (int(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"--mix {text!r} is invalid: expected IN:OUT tokens, e.g. 1024:256") from None
    if not (1 <= n_in <= 1 << 20 and 1 <= n_out <= 1 << 20):
        raise ValueError(f"--mix {text!r} is invalid: each side from 1 to 1048576 tokens")
    return n_in, n_out


DEFAULT_MIX = (1024, 256)


def default_mix(max_model_len: int) -> tuple[tuple[int, int], str]:
    """1,024 in / 256 out, or, where the context is shorter, the same 4:1 split of the whole context — and a
    line saying so (an explicit --mix that does not fit is refused instead)."""
    if sum(DEFAULT_MIX) <= max_model_len:
        return DEFAULT_MIX, ""
    n_out = max(1, max_model_len // 5)
    mix = (max(1, max_model_len - n_out), n_out)
    return mix, (f"mix scaled down to {mix[0]}:{mix[1]} to fit max_model_len {max_model_len:,} "
                 f"(the default {DEFAULT_MIX[0]}:{DEFAULT_MIX[1]} is {sum(DEFAULT_MIX):,} tokens a request)")


def _engine(plan: Plan, spec: ModelSpec, mix: tuple[int, int], concurrency: int) -> tuple[Engine, dict]:
    if sum(mix) > plan.max_model_len:
        raise PlanError(f"--mix {mix[0]}:{mix[1]} is {sum(mix):,} tokens a request, more than max_model_len "
                        f"{plan.max_model_len:,}: vLLM would refuse it; shorten the mix or raise VLLM_MAX_MODEL_LEN")
    gpu = get_gpu(plan.gpu)
    disabled = plan.flags.disabled_kernels if plan.flags else None
    shape = EngineShape.for_gpu(gpu, plan.flags)
    engine = Engine(spec, gpu, kernel(gpu, plan.quantization, disabled, spec.group_size), spec.weight_bytes(plan.quantization),
                    plan.kv_bytes_per_token, plan.tensor_parallel_size)
    return engine, dict(kv_tokens=plan.kv_tokens, price_per_hour=plan.price_per_hour,
                        max_num_seqs=shape.max_num_seqs, max_num_batched_tokens=shape.max_num_batched_tokens, mix=mix,
                        concurrency=concurrency)


def speed_of(plan: Plan, spec: ModelSpec, mix: tuple[int, int] = (1024, 256), concurrency: int = 128) -> Speed:
    """The plan's predicted speed under its own profile's limits, with the error band for its kernel."""
    engine, limits = _engine(plan, spec, mix, concurrency)
    flags = plan.flags
    batching = tuple((k, v) for k, v in (("max_num_seqs", flags and flags.max_num_seqs),
                                         ("max_num_batched_tokens", flags and flags.max_num_batched_tokens)) if v)
    # the KV cache the load's running batch asks for at once: past what the runs had, the band does not hold
    demand = min(concurrency, limits["max_num_seqs"]) * sum(mix) / max(1, plan.kv_tokens)
    return predict(engine, **limits,
                   band_=band(engine.gpu, plan.quantization, flags.disabled_kernels if flags else None, spec,
                              plan.tensor_parallel_size, profile=plan.profile, mix=mix, batching=batching,
                              kv_demand=demand))


def lora_speed_of(plan: Plan, spec: ModelSpec, mix: tuple[int, int] = (1024, 256), concurrency: int = 128,
                  base: Speed | None = None) -> LoraSpeed | None:
    """The plan's predicted speed with every request on an adapter (lora_speed.py); None without adapters."""
    if plan.lora is None:
        return None
    engine, limits = _engine(plan, spec, mix, concurrency)
    sizes = plan.flags.cudagraph_capture_sizes if plan.flags else None
    return predict_lora(engine, base or speed_of(plan, spec, mix, concurrency), plan.lora,
                        graph_max=max(sizes) if sizes else None, **limits)


def ties(rows: list[dict]) -> None:
    """``could_be_cheapest``: whether a row's $/1M, within its error band, reaches the cheapest row's upper
    end — an order among such rows is not supported by the validation. None where a row has no band."""
    def lo_hi(r: dict) -> tuple[float, float] | None:
        e = (r["error_band"] or {}).get("error")
        # cost ∝ 1 / throughput: a throughput error of ±e moves the cost by 1/(1 ± e)
        return None if e is None else (r["cost_per_1m_tokens"] / (1 + e), r["cost_per_1m_tokens"] / (1 - e))

    banded = [b for r in rows if (b := lo_hi(r))]
    best_hi = min((b[1] for b in banded), default=0.0)
    for r in rows:
        b = lo_hi(r)
        r["could_be_cheapest"] = None if b is None else b[0] <= best_hi


def at_load(speed: Speed, price_per_hour: float, rps: float) -> dict:
    """Replicas needed for ``rps`` requests/s of the mix, their $/h and $/1M tokens at that load."""
    n_in, n_out = speed.mix
    per_replica = speed.saturated_out_tok_s / n_out  # requests/s one replica sustains
    replicas = max(1, math.ceil(rps / per_replica))
    hourly = replicas * price_per_hour
    return {"rps": rps, "replicas": replicas, "usd_per_hour": hourly,
            "usd_per_1m_tokens": hourly / 3600 / (rps * (n_in + n_out)) * 1e6}


def compare(spec: ModelSpec, *, max_model_len: int, gpu_memory_utilization: float, mix: tuple[int, int],
            rps: float | None = None, model: str | None = None, profile: str = "balanced",
            batching: Batching = Batching(), lora: LoraSlots | None = None) -> dict:
    """Every row is planned as ``plan`` plans: under the same profile (LLMODAL_PROFILE) and batching
    (VLLM_MAX_NUM_SEQS / VLLM_MAX_NUM_BATCHED_TOKENS), so its kernel, batch cap and KV dtype are the ones
    that would run; with adapters (``lora``: the plan's slots) each row takes its GPU's LoRA memory before the
    KV cache, as ``plan`` does."""
    rows = []
    for gname in COMPARE_GPUS:
        gpu = get_gpu(gname)
        for build in COMPARE_BUILDS:
            if build in ("awq", "gptq") and build not in spec.checkpoints and spec.quant != build:
                continue
            for tp in COMPARE_TP:
                if spec.heads % tp:
                    continue
                p = make_plan(spec, gpu, gpu_count=tp, tensor_parallel_size=tp, max_model_len=max_model_len,
                              gpu_memory_utilization=gpu_memory_utilization,
                              quantization=None if build == spec.quant else build,
                              checkpoint=spec.checkpoints.get(build), profile=profile, batching=batching,
                              lora=lora)
                if not p.fits:
                    continue
                s = speed_of(p, spec, mix)
                row = {"gpu": gname, "build": build, "tp": tp, "tp_measured": tp_measured(tp),
                       "checkpoint": p.checkpoint,
                       "kv_sequences": round(p.full_length_sequences, 1), "usd_per_hour": round(p.price_per_hour, 4),
                       **({"lora_gib_per_gpu": round(p.lora_gib_per_gpu, 3)} if lora else {}),
                       **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.to_dict().items()}}
                if lora:
                    row["lora_speed"] = lora_speed_of(p, spec, mix, base=s).to_dict()
                if rps:
                    row["at_load"] = at_load(s, p.price_per_hour, rps)
                rows.append(row)  # every TP that fits: TP 2 on an H100 may cost less per token than TP 1 on an H200
    # Each (GPU, build) together, the smallest TP first, the groups cheapest first by their cheapest TP: a larger
    # TP can cost less per token (its KV holds more than proportionally more sequences) and is still read beside
    # the TP 1 row it is weighed against.
    best: dict[tuple[str, str], float] = {}
    for r in rows:
        key = (r["gpu"], r["build"])
        best[key] = min(best.get(key, math.inf), r["cost_per_1m_tokens"])
    rows.sort(key=lambda r: (best[r["gpu"], r["build"]], r["gpu"], r["build"], r["tp"]))
    ties(rows)
    api = cheapest(model or spec.name)
    n_in, n_out = mix
    return {"mix": list(mix), "profile": profile, "rows": rows, "lora": lora_doc(lora),
            "api": None if api is None else {"usd_per_1m_tokens": api.per_request(n_in, n_out) / (n_in + n_out) * 1e6,
                                             "source": api.source},
            "note": "predicted by llmodal's speed model (speed.py) with the held-out error band of each kernel "
                    "(docs/BENCHMARKS.md 'Planner speed model'); could_be_cheapest (\"≈ cheapest\"): within "
                    "its band the row's $/1M reaches the cheapest banded row's (a row with no band, \"?\", is "
                    "compared with none); every TP that fits is listed, and a row with tp_measured false has no multi-GPU "
                    "run behind it (its all-reduce term is assumed)"}
