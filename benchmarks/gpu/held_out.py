"""Speed rows the planner's speed model was not fitted to: what `llmodal plan` predicts, stored before
the row is measured, then the measurement beside it.

    python benchmarks/gpu/held_out.py predict OUT ROW --model DIR --profile P --levels 1,64,128 [--mix IN:OUT]
                                               [--again N]
    python benchmarks/gpu/held_out.py measure OUT ROW [--deadline EPOCH_S] [--levels 1,64] [--models a0[,a1…]]
                                               [--seed-of TAG]
    python benchmarks/gpu/held_out.py table OUT            (markdown: predicted vs measured, every row)

``predict`` runs the real CLI (`python -m llmodal.cli plan --json`, with LLMODAL_PROFILE and the GPU of
this machine, env GP_GPU) and keeps its output whole; the CLI predicts one concurrency (128, capped by what
the KV cache holds), so each level's figure comes from the same function the CLI calls
(`plan.compare.speed_of`) at that level's concurrency, on the same plan. ``measure`` runs `llmodal bench`
(goodput.py's `llmodal_bench`: completions, 1024 in / 256 out, ignore_eos, 2 × c prompts (≥ 4), fresh
prompts per level, one uncounted warm-up request) on the server `goodput.py serve` started, one level
at a time, and writes OUT/rows.json after each level: a run cut short keeps every level it finished.
A level that would end after ``--deadline`` (its predicted time × 2, + 20 s) is skipped and marked so.
``--levels``: only those of the predicted levels (a LoRA row interleaves its request targets level by level);
``--models``: the requests go to that served model (a LoRA adapter), or in turn to several (a mixed run).
``--mix IN:OUT``: another prompt/output length (default 1024:256; a prefill row's single streams at 256 … 8,000
prompt tokens). ``--again N`` with ``--seed-of TAG``: the repeated-prompts rule judged before it is seen — the
level re-sends the N prompts of the level TAG just sent (the same bench seed: prompt i is the same text), and the
stored prediction is the rule's (speed_validation.py ``_repeated``: those N requests find all but their last 16
prompt tokens in vLLM's prefix cache, if TAG's N × (IN + OUT) tokens fit the KV cache; none otherwise).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
MIX = (1024, 256)


def _arg(name: str, default: str | None = None) -> str | None:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def _load(out: Path) -> dict:
    f = out / "rows.json"
    return json.loads(f.read_text()) if f.exists() else {}


def _store(out: Path, row: str, rec: dict) -> None:
    doc = _load(out)
    doc[row] = rec
    (out / "rows.json").write_text(json.dumps(doc, indent=2))


def predict(out: Path, row: str) -> None:
    from llmodal.core.config import load_settings
    from llmodal.plan.compare import speed_of
    from llmodal.plan.planner import plan_for_settings

    model, profile = _arg("--model"), _arg("--profile", "balanced")
    gpu = os.environ.get("GP_GPU", "H100")
    levels = [int(x) for x in (_arg("--levels") or "1,64,128").split(",")]
    mix = tuple(int(x) for x in (_arg("--mix") or "%d:%d" % MIX).split(":"))
    again = int(_arg("--again", "0"))
    env = {**os.environ, "LLMODAL_PROFILE": profile}
    argv = [sys.executable, "-m", "llmodal.cli", "plan", "--env-file", "", "--model", model, "--gpu", gpu, "--json",
            "--mix", f"{mix[0]}:{mix[1]}"]
    r = subprocess.run(argv, capture_output=True, text=True, env=env)
    try:
        cli = json.loads(r.stdout)
    except json.JSONDecodeError:
        cli = {"exit": r.returncode, "stdout": r.stdout[-2000:], "stderr": r.stderr[-2000:]}
    os.environ["LLMODAL_PROFILE"] = profile  # the same settings the CLI read, in this process
    settings = load_settings(None, model=model, gpu=gpu)
    res = plan_for_settings(settings)
    per = {}
    for c in levels:
        s = speed_of(res.chosen, res.spec, mix, concurrency=c)
        per[str(c)] = {"out_tok_s": round(s.saturated_out_tok_s, 1), "batch_modelled": s.concurrency,
                       "single_stream_tok_s": round(s.single_stream_tok_s, 2), "ttft_ms": round(s.ttft_s * 1000, 1)}
        if again:
            per[str(c)] |= _rule(res, mix, c, again)
    cli_speed = (cli.get("speed") or {}) if isinstance(cli, dict) else {}
    p = res.chosen
    rec = {"model": model, "profile": profile, "gpu": gpu, "mix": list(mix), "predicted_at": time.strftime("%FT%TZ", time.gmtime()),
           "command": f"LLMODAL_PROFILE={profile} python -m llmodal.cli plan --env-file '' --model {model} --gpu {gpu} "
                      f"--json --mix {mix[0]}:{mix[1]}",
           "plan": {"quantization": p.quantization, "kv_tokens": p.kv_tokens, "kv_bytes_per_token": p.kv_bytes_per_token,
                    "max_model_len": p.max_model_len, "fits": p.fits, "price_per_hour": p.price_per_hour},
           "cli_speed": cli_speed,
           # the CLI's own figure must be the per-level function's at c = 128: else the per-level ones are not its
           "cli_matches_per_level_at_128": (abs(cli_speed.get("saturated_out_tok_s", -1)
                                                - speed_of(p, res.spec, mix, concurrency=128).saturated_out_tok_s) < 0.01
                                            if cli_speed else None),
           "predicted": per, "cli": cli, "measured": {}}
    _store(out, row, rec)
    print(json.dumps({k: rec[k] for k in ("plan", "predicted", "cli_matches_per_level_at_128")}, indent=2), flush=True)


def _rule(res, mix: tuple[int, int], c: int, again: int) -> dict:
    """The repeated-prompts rule's figure for this level as it will be sent (2c requests, the first ``again`` of
    them repeats), on the plan's engine and limits: what speed_validation.py will compute for its row."""
    from llmodal.plan.compare import _engine
    from llmodal.plan.speed import run
    from llmodal.plan.speed_fit import cached_tokens, in_cache
    from llmodal.plan.speed_sim import Load

    engine, lim = _engine(res.chosen, res.spec, mix, c)
    limits = {k: lim[k] for k in ("max_num_seqs", "max_num_batched_tokens", "kv_tokens")}
    hits = in_cache(again, *mix, lim["kv_tokens"])
    n = max(4, 2 * c)
    sim = run(engine, Load(mix[0], mix[1], c, n, cached_in=cached_tokens(mix[0]) if hits else 0, cached_requests=hits),
              **limits)
    fresh = run(engine, Load(mix[0], mix[1], c, n), **limits)
    return {"rule": {"repeated_requests": again, "credited_hits": hits, "requests": n,
                     "out_tok_s": round(sim.out_tok_s, 1), "same_run_fresh_out_tok_s": round(fresh.out_tok_s, 1)}}


def _judged(pred: dict) -> float:
    return (pred.get("rule") or pred)["out_tok_s"]


def _gpu_used_mib() -> int | None:
    try:
        return int(subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True, timeout=30).stdout.split()[0])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


def measure(out: Path, row: str) -> None:
    import goodput

    rec = _load(out)[row]
    deadline = float(_arg("--deadline", "1e12"))
    only = set((_arg("--levels") or ",".join(rec["predicted"])).split(","))
    models = _arg("--models")
    mix = tuple(rec.get("mix", MIX))
    seed_of = _arg("--seed-of")
    if seed_of:
        rec["seed_of"] = seed_of
    if models:
        rec["models"] = models
    rec.setdefault("gpu_used_mib_idle", _gpu_used_mib())  # before this row's first level
    for c_s, pred in rec["predicted"].items():
        if c_s not in only:
            continue
        c = int(c_s)
        n = max(4, 2 * c)
        need = n * mix[1] / max(pred["out_tok_s"], 1.0) * 2 + 20
        if time.time() + need > deadline:
            rec["measured"][c_s] = {"skipped": f"would end {need:.0f} s from now, past the pipeline's deadline"}
            _store(out, row, rec)
            continue
        try:
            m = goodput.llmodal_bench(out, f"{row}-c{c}", c=c, n=n, models=models, mix=mix,
                                      seed=zlib.crc32(seed_of.encode()) if seed_of else None)
        except Exception as e:  # the server gone (killed, out of memory): keep the row, say why
            m = {"tool": "llmodal", "error": f"{type(e).__name__}: {e}"[:500]}
        m["n"] = n
        m["file"] = f"{row}-c{c}.json"
        if m.get("out_tok_s"):  # a repeated level is judged against the rule's figure, stored before it ran
            m["error_out_tok_s"] = round(_judged(pred) / m["out_tok_s"] - 1, 4)
        if c == 1 and m.get("ttft_mean_ms"):
            m["error_ttft"] = round(pred["ttft_ms"] / m["ttft_mean_ms"] - 1, 4)
        rec["measured"][c_s] = m
        rec["gpu_used_mib_loaded"] = _gpu_used_mib()
        _store(out, row, rec)
        print(f"{row} c={c}: predicted {pred['out_tok_s']} out tok/s, measured {m.get('out_tok_s')}", flush=True)


def table(out: Path) -> None:
    print("| row | c | predicted out tok/s | measured | error | predicted TTFT ms (c=1) | measured TTFT mean | file |")
    print("|---|---|---|---|---|---|---|---|")
    for row, rec in _load(out).items():
        for c_s, pred in rec["predicted"].items():
            m = rec["measured"].get(c_s, {})
            meas = m.get("out_tok_s")
            err = f"{m['error_out_tok_s']:+.1%}" if "error_out_tok_s" in m else (m.get("skipped") and "skipped" or "–")
            ttft = (f"{pred['ttft_ms']:,.0f} | {m['ttft_mean_ms']:,.0f}" if c_s == "1" and m.get("ttft_mean_ms")
                    else "– | –")
            print(f"| {row} | {c_s} | {_judged(pred):,.1f} | {meas if meas is None else f'{meas:,.1f}'} | {err} "
                  f"| {ttft} | `{m.get('file', '')}` |")


def main() -> None:
    step, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    if step == "predict":
        predict(out, sys.argv[3])
    elif step == "measure":
        measure(out, sys.argv[3])
    elif step == "table":
        table(out)
    else:
        sys.exit(f"unknown step {step!r}: predict, measure, table")


if __name__ == "__main__":
    main()
