"""The planner's speed model (llmodal/plan/speed.py) against every measured GPU row in this repo.

    .venv/bin/python benchmarks/speed_validation.py > benchmarks/results/cpu-2026-12-02/speed_validation.md

Each row reads its measured figure from the raw file named beside it (benchmarks/results/…) or, for the
shared measurement notes outside this repo, from the figure transcribed with its file's name. Goal:
within ±15 %; a row outside says why.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmodal.plan.catalog import lookup
from llmodal.plan.gpus import get_gpu
from llmodal.plan.speed import predict, prefill_seconds, step_seconds

ROOT = Path(__file__).resolve().parents[1]
R = ROOT / "benchmarks" / "results"
GiB = 1024**3
SPEC = lookup("meta-llama/Llama-3.1-70B-Instruct", None)
H100_AWQ = ("H100", "awq", 37.88)  # weights GiB from the engine log (h100-llama70b-awq.md)
H200_FP8 = ("H200", "fp8", 67.7)  # h200-llama70b-fp8.md

WHY = {
    "preempt": "the KV cache holds ~83 requests of this mix: past that vLLM preempts and recomputes, which the "
               "model (batch capped at what the KV holds) does not charge",
    "latency": "profile latency: Marlin kernel and short prefill chunks; the model's AWQ efficiencies are Machete's",
    "version": "the AWQ efficiencies are fitted to vLLM 0.26's rows; 0.32 serves c=64 faster (1,076 vs 831 tok/s)",
    "tail": "a steady-state model; a run of 2 × c prompts spends its ramp and its drain below c streams",
}


def _llmodal(path: Path) -> tuple[float, float]:
    lv = json.loads(path.read_text())["levels"][0]
    return lv["output_tok_s"], lv["ttft_ms"]["mean"]


def _vllm(path: Path) -> tuple[float, float]:
    d = json.loads(path.read_text())
    return d["output_throughput"], d["mean_ttft_ms"]


def rows():
    prof = R / "h100-vllm0.32" / "profiles"
    h200 = R / "h200-2026-12-02"
    out = []
    # (label, gpu setup, kv bytes per element, KV tokens, concurrency, measured out tok/s, source, why-if-off)
    for c, tps in ((1, 43.45), (8, 293.1), (32, 743.9), (64, 831.1)):
        out.append((f"H100 AWQ, vLLM 0.26, c={c}", H100_AWQ, 2, 114384, c, tps,
                    "shared/measurements/h100-llama70b-awq.md (vllm bench serve)", None))
    for c, tps in ((1, 45.8), (64, 1119.1), (128, 1400.4)):
        out.append((f"H200 FP8, c={c}", H200_FP8, 2, 195022, c, tps, "shared/measurements/h200-llama70b-fp8.md", None))
    out.append(("H200 FP8 + FP8 KV, c=128", H200_FP8, 1, 390045, 128, 1418.6,
                "shared/measurements/h200-llama70b-fp8.md", None))
    for tag in ("balanced", "throughput", "latency"):
        kv_bytes, kv = (1, 213366) if tag == "throughput" else (2, 106683)
        for c in (1, 8, 32, 64, 128):
            f = prof / (f"{tag}-c{c}.json" if tag != "latency" or c in (1, 64) else f"latency2-c{c}.json")
            if f.exists():
                why = ("latency" if tag == "latency" else "preempt" if c == 128 and tag == "balanced"
                       else "version" if c == 64 else None)
                out.append((f"H100 AWQ {tag}, vLLM 0.32, c={c}", H100_AWQ, kv_bytes, kv, c, _llmodal(f)[0],
                            str(f.relative_to(ROOT)), why))
    # §0 (vLLM's 51 graph sizes) and §0c (ten, prefix caching off): balanced, vLLM's own steps.
    for d, note in ((h200, ""), (R / "h200-2026-12-02c", ", ten graph sizes")):
        for f in sorted(d.glob("agree-r*-c*-*.json")):
            c = int(f.stem.split("-c")[1].split("-")[0])
            tps = _llmodal(f)[0] if f.stem.endswith("llmodal") else _vllm(f)[0]
            out.append((f"H200 FP8, vLLM 0.32, c={c} ({f.stem.split('-')[-1]}, round {f.stem.split('-')[1][1]}{note})",
                        H200_FP8, 2, 195022, c, tps, str(f.relative_to(ROOT)), "tail" if c == 32 else None))
    return out


def ttft_rows():
    h100_8k = _llmodal(R / "h100-vllm0.32" / "cold-8k.json")[1]
    return [("H200 FP8, 8,100-token prompt", H200_FP8, 8100, 1149.0, "shared/measurements/h200-llama70b-fp8.md"),
            ("H100 AWQ, 8,100-token prompt, vLLM 0.32", H100_AWQ, 8100, h100_8k,
             "benchmarks/results/h100-vllm0.32/cold-8k.json")]


def main() -> None:
    print("| measured row | predicted out tok/s | measured | error | source | outside ±15 % because |")
    print("|---|---|---|---|---|---|")
    for label, (gpu, quant, wgib), kvb, kv, c, measured, src, why in rows():
        s = predict(SPEC, get_gpu(gpu), quant, weight_bytes=int(wgib * GiB),
                    kv_bytes_per_token=SPEC.kv_bytes_per_token(kvb), tp=1, kv_tokens=kv, price_per_hour=1.0,
                    concurrency=c)
        err = s.saturated_out_tok_s / measured - 1
        off = WHY[why] if why and abs(err) > 0.15 else ("" if abs(err) <= 0.15 else "not explained")
        print(f"| {label} | {s.saturated_out_tok_s:,.1f} | {measured:,.1f} | {err:+.1%} | `{src}` | {off} |")
    print()
    print("| TTFT row | predicted ms | measured ms | error | source |")
    print("|---|---|---|---|---|")
    for label, (gpu, quant, wgib), n, measured, src in ttft_rows():
        g = get_gpu(gpu)
        t = (prefill_seconds(SPEC, g, quant, 1, n) + step_seconds(SPEC, g, quant, int(wgib * GiB),
                                                                 SPEC.kv_bytes_per_token(2), 1, 1, n)) * 1000
        print(f"| {label} | {t:,.0f} | {measured:,.0f} | {t / measured - 1:+.1%} | `{src}` |")


if __name__ == "__main__":
    main()
