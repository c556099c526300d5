"""The small shapes' single prefill step, against its prompt length: a run's prefill rows (run_any.sh's
prefill-8b / prefill-3b: one server a shape, single streams at 256 … 8,000 prompt tokens, 16 out).

    .venv/bin/python benchmarks/prefill_step.py benchmarks/results/RUN > benchmarks/results/RUN/prefill-step.md

Per shape and prompt length: the client's mean TTFT (llmodal bench, 4 requests after one warm-up), the server's
own mean TTFT and the engine's mean prefill time (vLLM's histograms over the bench call, its warm-up request
included), what `llmodal plan` predicted before the run, and the GEMM FLOPs time at the GPU's dense BF16 peak.
Then a least-squares line through each shape's engine prefill times, ms = a + b × tokens: ``a`` is what a prefill
step costs whatever its length, ``b`` per prompt token, beside the FLOPs' per token at that peak (b ÷ that: the
share of the peak the step's GEMMs reach); and the client's TTFT beyond the engine's prefill (the API server's
tokenizing, scheduling and streaming the first token: it grows with the prompt).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import linear_regression

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

sys.path.insert(0, str(ROOT / "benchmarks"))

from llmodal.plan.catalog import lookup  # noqa: E402
from llmodal.plan.gpus import get_gpu  # noqa: E402
from speed_validation import PREFILL_SHAPES  # noqa: E402  the rows' shapes, as the validation reads them


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def main(d: Path) -> None:
    rows = json.loads((d / "rows.json").read_text())
    print(f"# The small shapes' prefill step against prompt length ({d.name})\n")
    print(f"Command: `.venv/bin/python benchmarks/prefill_step.py {d.relative_to(ROOT)}` (this file is its output).\n")
    fits = []
    for base, (_, quant, model, _) in PREFILL_SHAPES.items():
        build = quant.upper()  # an FP8 (W8A8) build's GEMMs run at the FP8 peak
        mine = sorted(((rec["mix"][0], rec) for row, rec in rows.items()
                       if row.rsplit("-p", 1)[0] == base and rec["measured"].get("1", {}).get("ttft_mean_ms")),
                      key=lambda t: t[0])
        if not mine:
            continue
        spec = lookup(model, None)
        gpu = get_gpu(mine[0][1]["gpu"])
        peak = gpu.fp8_tflops if build == "FP8" else gpu.bf16_tflops
        flops_ms = 2 * spec.params / (peak * 1e12) * 1000  # per prompt token, at the dense peak
        print(f"## {model.split('/')[1]} shape, {build}, {gpu.name}\n")
        print("| prompt tokens | client TTFT mean ms | server TTFT mean ms | engine prefill mean ms | plan predicted "
              "TTFT ms | GEMM FLOPs at the build's dense peak, ms | client TTFT beyond the engine's prefill, ms | file |")
        print("|---|---|---|---|---|---|---|---|")
        xs, ys = [], []
        for n, rec in mine:
            m = rec["measured"]["1"]
            eng = m.get("engine_prefill_mean_ms")
            if eng:
                xs.append(n)
                ys.append(eng)
            print(f"| {n:,} | {m['ttft_mean_ms']:.1f} | {_f(m.get('server_ttft_mean_ms'))} | {_f(eng)} | "
                  f"{rec['predicted']['1']['ttft_ms']:.1f} | {n * flops_ms:.1f} | {_f(eng and m['ttft_mean_ms'] - eng)} | "
                  f"`{m['file']}` |")
        if len(xs) >= 2:
            b, a = linear_regression(xs, ys)
            fits.append((spec.name, a, b, flops_ms))
            print(f"\nEngine prefill ≈ **{a:.1f} ms + {b * 1000:.2f} µs × tokens** (least squares over {len(xs)} "
                  f"lengths); the GEMMs at the build's dense peak take {flops_ms * 1000:.2f} µs a token: the slope is "
                  f"{flops_ms / b:.0%} of the peak (prompt attention, quadratic in the length, is in it).\n")
    if not fits:
        print("No prefill rows with the engine's prefill time in this run.")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
