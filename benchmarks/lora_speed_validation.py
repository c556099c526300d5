"""The planner's LoRA speed model (src/llmodal/plan/lora_speed.py) fitted on one GPU run and checked on the others.

    PYTHONPATH=src .venv/bin/python benchmarks/lora_speed_validation.py   → benchmarks/results/lora-speed-validation.md

Input: the lent H100's run of 2026-12-07 (benchmarks/results/h100-2026-12-07/, command.txt): Llama-3.1-8B's shape
in BF16 with four rank-16 adapters on all seven linear modules, one server with --enable-lora; `llmodal bench`
1024 in / 256 out at c = 1 and 64, requests to the base (lora-8b), to one adapter (lora-8b-one) and to the four in
turn (lora-8b-mix). The server without --enable-lora (bf16-8b) is shown beside, not used.

Fitted on lora-8b-one at c = 1 only, against requests to the base on the same server: the time per output token
per request ((e2e − TTFT) / (tokens − 1), each request's own, median) gives the graphed step's cost per wrapped
layer, the TTFT (median) the eager prompt step's. Held out: every c = 64 row and the mixed runs. A row's error is
its predicted LoRA/base throughput ratio against the measured one (the base model's own speed error is
speed_validation.py's business); beside it what `plan` would have printed in tok/s. The prefix cache is checked
first: a repeated prompt would make a run look faster than its kernels are.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "results" / "h100-2026-12-07"
OUT = ROOT / "benchmarks" / "results" / "lora-speed-validation.md"
BASE = "meta-llama/Llama-3.1-8B-Instruct"  # the catalog's shape of the measured /tmp/m8 (make_model.py --8b)
ROWS = [("lora-8b-one", 1, True), ("lora-8b-one", 64, False), ("lora-8b-mix", 1, False), ("lora-8b-mix", 64, False)]
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def measured(name: str, c: int) -> dict:
    path = RUN / f"{name}-c{c}.json"
    level = json.loads(path.read_text())["levels"][0]
    reqs = level["requests"]
    return {"file": str(path.relative_to(ROOT)), "tok_s": level["output_tok_s"], "sent": level["sent"],
            "tpot_ms": statistics.median((r["e2el_ms"] - r["ttft_ms"]) / (r["output_tokens"] - 1) for r in reqs),
            "ttft_ms": statistics.median(r["ttft_ms"] for r in reqs)}


def prefix_cache() -> tuple[float, float]:
    """The highest hit rate the LoRA server logged, and the hit tokens the rows' server metrics counted."""
    log = (RUN / "lora-8b-serve.log").read_text()
    rates = [float(x) for x in re.findall(r"Prefix cache hit rate: ([\d.]+)%", log)]
    rows = json.loads((RUN / "rows.json").read_text())
    hits = sum(lv.get("prefix_cache_hit_tokens") or 0 for k in ("lora-8b", "lora-8b-one", "lora-8b-mix")
               for lv in rows[k]["measured"].values())
    return max(rates), hits


def the_plan():
    """`plan`'s own plan for the measured server: the 8B on an H100, profile balanced, four rank-16 adapters."""
    from llmodal.core.config import load_settings
    from llmodal.plan.planner import plan_for_settings

    tmp = Path(tempfile.mkdtemp())
    for i in range(4):
        (tmp / f"a{i}").mkdir()
        (tmp / f"a{i}" / "adapter_config.json").write_text(json.dumps({
            "peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": MODULES, "base_model_name_or_path": BASE}))
    mods = ",".join(f"a{i}={tmp / f'a{i}'}" for i in range(4))
    res = plan_for_settings(load_settings(None, model=BASE, gpu="H100", profile="balanced", lora_modules=mods))
    kv_measured = json.loads((RUN / "rows.json").read_text())["lora-8b-one"]["plan"]["kv_tokens"]
    assert res.chosen.kv_tokens == kv_measured, (res.chosen.kv_tokens, kv_measured)  # the server's own plan
    return res


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from llmodal.plan import lora_speed
    from llmodal.plan.compare import _engine, lora_speed_of, speed_of
    from llmodal.plan.lora_speed import LoraEngine, lora_layers
    from llmodal.plan.speed import run
    from llmodal.plan.speed_sim import Load

    rate, hits = prefix_cache()
    if rate > 0 or hits > 0:
        sys.exit(f"the LoRA server's prefix cache served prompts (hit rate up to {rate}%, {hits:.0f} tokens): "
                 "the rows are not the kernels' cost")
    res = the_plan()
    plan, spec = res.chosen, res.spec
    n = lora_layers(spec)
    base = {c: measured("lora-8b", c) for c in (1, 64)}
    fit_row = measured("lora-8b-one", 1)
    graphed_us = (fit_row["tpot_ms"] - base[1]["tpot_ms"]) / n * 1000
    eager_us = (fit_row["ttft_ms"] - base[1]["ttft_ms"]) / n * 1000
    graph_max = max(plan.flags.cudagraph_capture_sizes)

    lines, held = [f"| lora-8b | {c} | base: the ratios' reference | {base[c]['tok_s']:,.1f} | {base[c]['tok_s']:,.1f} | – | – "
                   f"| – | – | – | `{base[c]['file']}` |" for c in (1, 64)], []
    for name, c, fitted in ROWS:
        m = measured(name, c)
        engine, limits = _engine(plan, spec, (1024, 256), c)
        lim = {k: limits[k] for k in ("max_num_seqs", "max_num_batched_tokens", "kv_tokens")}
        load = Load(1024, 256, c, m["sent"])  # the run's own load: its users and requests
        p_base = run(engine, load, **lim)
        p_lora = run(LoraEngine(engine, graph_max, round(graphed_us, 1), round(eager_us, 0)), load, **lim)
        ratio_p, ratio_m = p_lora.out_tok_s / p_base.out_tok_s, m["tok_s"] / base[c]["tok_s"]
        err = ratio_p / ratio_m - 1
        if not fitted:
            held.append(abs(err))
        ttft = (f"+{(p_lora.ttft_s - p_base.ttft_s) * 1000:.0f} / +{m['ttft_ms'] - base[c]['ttft_ms']:.0f}"
                if c == 1 else "–")
        lines.append(f"| {name} | {c} | {'fitted' if fitted else 'held out'} | {m['tok_s']:,.1f} | "
                     f"{base[c]['tok_s']:,.1f} | {ratio_m - 1:+.1%} | {ratio_p - 1:+.1%} | {err:+.1%} | "
                     f"{p_lora.out_tok_s:,.1f} ({p_lora.out_tok_s / m['tok_s'] - 1:+.1%}) | {ttft} | `{m['file']}` |")
    worst = max(held)

    shown = lora_speed_of(plan, spec)  # what `plan` prints for this setup: the module's rounded constants
    base_shown = speed_of(plan, spec)
    bf = {c: measured("bf16-8b", c) for c in (1, 64)}
    text = f"""# LoRA speed model: fitted on one run, checked on the others (2026-12-07)

Command: `PYTHONPATH=src .venv/bin/python benchmarks/lora_speed_validation.py` (this file is its output).
Input: `benchmarks/results/h100-2026-12-07/` (its `command.txt`): the lent H100, vLLM 0.32.0, Llama-3.1-8B's
shape in BF16, four random rank-16 adapters on all seven linear modules, one server with --enable-lora
(`--max-loras 4 --max-lora-rank 16`); `llmodal bench` 1024 in / 256 out, c = 1 (4 requests) and c = 64
(128 requests); requests to the base (`lora-8b`), to one adapter (`lora-8b-one`), to the four in turn
(`lora-8b-mix`). Model: `src/llmodal/plan/lora_speed.py`.

Prefix cache: the LoRA server logged a hit rate of at most {rate:.1f} % and its metrics counted {hits:.0f} hit
tokens over the three rows' runs (`rows.json`): each run's prompts were fresh (a new seed each), so no row is
faster for repeated prompts, the c = 64 base row included.

## Fit (lora-8b-one, c = 1, against lora-8b, c = 1, same server)

{n} wrapped layers (4 × {spec.layers} decoder layers + embedding and LM head).

| | base | one adapter | added | per wrapped layer and step |
|---|---|---|---|---|
| time per output token, median of requests (graphed decode step) | {base[1]['tpot_ms']:.3f} ms | {fit_row['tpot_ms']:.3f} ms | {fit_row['tpot_ms'] - base[1]['tpot_ms']:.3f} ms | GRAPHED_US = {graphed_us:.1f} µs |
| TTFT, median of requests (eager 1,024-token prompt step) | {base[1]['ttft_ms']:.1f} ms | {fit_row['ttft_ms']:.1f} ms | {fit_row['ttft_ms'] - base[1]['ttft_ms']:.1f} ms | EAGER_US = {eager_us:.0f} µs |

Steps of at most {graph_max} tokens (the plan's largest CUDA-graph size) take the graphed cost, larger ones the eager.

## Every LoRA row

Ratio: the row's out tok/s over the base's at the same c on the same server. Error: predicted ratio over
measured ratio − 1 (the LoRA model's own error). `plan` in tok/s: the simulated run with adapters (the planner's
base model, whose own error on this shape is in `h100-2026-12-07/table.md`), and its error against the row.

| row | c | | measured out tok/s | base (lora-8b) | measured cost | predicted cost | error | `plan` tok/s with adapters (error) | TTFT added ms, predicted / measured | file |
|---|---|---|---|---|---|---|---|---|---|---|
""" + "\n".join(lines) + f"""

Held out: {len(held)} rows, worst |error| {worst:.1%} (HELD_OUT_WORST = {worst:.3f}, HELD_OUT_RUNS = {len(held)}).
The model has no term for several adapters in one batch: it predicts the mixed runs as one adapter's, which the
c = 64 mixed row measures {measured('lora-8b-mix', 64)['tok_s'] / measured('lora-8b-one', 64)['tok_s'] - 1:+.1%} against one adapter's (at c = 1: {measured('lora-8b-mix', 1)['tok_s'] / fit_row['tok_s'] - 1:+.1%}, one adapter per step either way).

Not modelled: requests to the base on a server with --enable-lora. Against the server without it (`bf16-8b`,
another server): c = 1 {base[1]['tok_s']:.1f} vs {bf[1]['tok_s']:.1f} out tok/s ({base[1]['tok_s'] / bf[1]['tok_s'] - 1:+.1%}), TTFT
{base[1]['ttft_ms']:.0f} vs {bf[1]['ttft_ms']:.0f} ms; c = 64 {base[64]['tok_s']:,.1f} vs {bf[64]['tok_s']:,.1f} ({base[64]['tok_s'] / bf[64]['tok_s'] - 1:+.1%}: faster with
LoRA on, so server-to-server spread at c = 64 exceeds what --enable-lora alone costs; the cost above is taken
against the same server's base for that reason).

## What `plan` prints for this setup (the module's rounded constants)

`llmodal plan --model {BASE} --gpu H100` with these four adapters in `VLLM_LORA_MODULES`, mix 1024:256:
base {base_shown.single_stream_tok_s:.0f} tok/s one stream, {base_shown.saturated_out_tok_s:,.0f} out tok/s at 128 streams;
{shown.text()}
"""
    OUT.write_text(text)
    print(f"GRAPHED_US = {graphed_us:.1f}\nEAGER_US = {eager_us:.1f}\nHELD_OUT_WORST = {worst:.3f}\n"
          f"HELD_OUT_RUNS = {len(held)}\n(module: {lora_speed.GRAPHED_US}, {lora_speed.EAGER_US}, "
          f"{lora_speed.HELD_OUT_WORST}, {lora_speed.HELD_OUT_RUNS})\n→ {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
