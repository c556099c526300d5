"""``llmodal plan --compare``: every (GPU, build, TP) that fits, with predicted speed and $/1M tokens."""

from __future__ import annotations

import math

from llmodal.plan.prices import cheapest
from llmodal.plan.model_spec import ModelSpec
from llmodal.plan.gpus import get_gpu
from llmodal.plan.planner import Plan, make_plan
from llmodal.plan.speed import Speed, predict

COMPARE_GPUS = ("A100-80GB", "L40S", "H100", "H200", "B200")
COMPARE_BUILDS = ("bf16", "fp8", "awq", "gptq")
COMPARE_TP = (1, 2, 4, 8)


def parse_mix(text: str) -> tuple[int, int]:
    try:
        n_in, n_out = (int(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"--mix {text!r} is invalid: expected IN:OUT tokens, e.g. 1024:256") from None
    if not (1 <= n_in <= 1 << 20 and 1 <= n_out <= 1 << 20):
        raise ValueError(f"--mix {text!r} is invalid: each side from 1 to 1048576 tokens")
    return n_in, n_out


def speed_of(plan: Plan, spec: ModelSpec, mix: tuple[int, int] = (1024, 256), concurrency: int = 128) -> Speed:
    return predict(spec, get_gpu(plan.gpu), plan.quantization, weight_bytes=spec.weight_bytes(plan.quantization),
                   kv_bytes_per_token=plan.kv_bytes_per_token, tp=plan.tensor_parallel_size,
                   kv_tokens=plan.kv_tokens, price_per_hour=plan.price_per_hour, mix=mix, concurrency=concurrency)


def at_load(speed: Speed, price_per_hour: float, rps: float) -> dict:
    """Replicas needed for ``rps`` requests/s of the mix, their $/h and $/1M tokens at that load."""
    n_in, n_out = speed.mix
    per_replica = speed.saturated_out_tok_s / n_out  # requests/s one replica sustains
    replicas = max(1, math.ceil(rps / per_replica))
    hourly = replicas * price_per_hour
    return {"rps": rps, "replicas": replicas, "usd_per_hour": hourly,
            "usd_per_1m_tokens": hourly / 3600 / (rps * (n_in + n_out)) * 1e6}


def compare(spec: ModelSpec, *, max_model_len: int, gpu_memory_utilization: float, mix: tuple[int, int],
            rps: float | None = None, model: str | None = None) -> dict:
    rows = []
    for gname in COMPARE_GPUS:
        gpu = get_gpu(gname)
        for build in COMPARE_BUILDS:
            if build in ("awq", "gptq") and build not in spec.checkpoints and spec.quant != build:
                continue
            if build == "fp8" and not gpu.fp8:
                continue  # weight-only FP8 (Marlin) there: not modelled
            for tp in COMPARE_TP:
                if spec.heads % tp:
                    continue
                p = make_plan(spec, gpu, gpu_count=tp, tensor_parallel_size=tp, max_model_len=max_model_len,
                              gpu_memory_utilization=gpu_memory_utilization,
                              quantization=None if build == spec.quant else build,
                              checkpoint=spec.checkpoints.get(build))
                if not p.fits:
                    continue
                s = speed_of(p, spec, mix)
                row = {"gpu": gname, "build": build, "tp": tp, "checkpoint": p.checkpoint,
                       "kv_sequences": round(p.full_length_sequences, 1), "usd_per_hour": round(p.price_per_hour, 4),
                       **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.to_dict().items()}}
                if rps:
                    row["at_load"] = at_load(s, p.price_per_hour, rps)
                rows.append(row)
                break  # the smallest TP that fits this build on this GPU
    rows.sort(key=lambda r: r["cost_per_1m_tokens"])
    api = cheapest(model or spec.name)
    n_in, n_out = mix
    return {"mix": list(mix), "rows": rows,
            "api": None if api is None else {"usd_per_1m_tokens": api.per_request(n_in, n_out) / (n_in + n_out) * 1e6,
                                             "source": api.source},
            "note": "predicted by llmodal's speed model (speed.py); TP > 1 terms are unmeasured"}
