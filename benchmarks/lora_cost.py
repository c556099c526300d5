"""What LoRA adapters cost on the CPU engine: tok/s and TTFT, base alone vs one adapter vs a mix of N.

    .venv/bin/python benchmarks/lora_cost.py --out benchmarks/results/cpu-2026-12-07-lora \\
        [--adapters 4 --rank 16 --rounds 4 --concurrency 1,4 --input-len 256 --output-len 64 --num-prompts 16]

Two servers of the tiny model, started as `llmodal serve` starts them (settings → prepare → launch):
A without LoRA; B with ``VLLM_LORA_MODULES`` listing N adapters the project makes (random weights, PEFT
layout, all seven linear modules). Each round runs all four, each round starting one run later, so every run
sees the same (shared, 2-core) machine in every place of the order:

- ``base``: A, requests to the base (no LoRA anywhere);
- ``lora-base``: B, requests to the base (what --enable-lora costs requests that use no adapter);
- ``lora-one``: B, every request to one adapter (``llmodal bench --model a0``);
- ``lora-mixed``: B, requests spread over all N adapters in turn (``llmodal bench --models a0,…``).

Each run is ``llmodal bench`` itself (its JSON is kept); both servers' KV sizes are read from vLLM's log.
Prints a Markdown table of medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _local import KEY, free_port  # noqa: E402

from llmodal.engine.tiny_adapter import LLAMA_MODULES, write_adapter  # noqa: E402
from llmodal.engine.tiny_model import SERVED_NAME, ensure_tiny_model  # noqa: E402

MEMORY_FRACTION = 0.05  # the KV cache's share of RAM (~1.2 GiB here): the size does not matter, equality does


@contextmanager
def server(model: Path, modules: str, log: Path):
    from llmodal.core.config import load_settings
    from llmodal.engine.prepare import prepare
    from llmodal.run.supervisor import Supervisor

    settings = load_settings(None, max_model_len=2048, port=free_port(), gpu_memory_utilization=MEMORY_FRACTION,
                             lora_modules=modules)
    prep = prepare(settings, gpu=False, tiny_model=str(model), tiny_name=SERVED_NAME, api_key=KEY)
    proc = Supervisor(prep.launch, log)
    proc.start()
    try:
        took = proc.wait_ready(900)
        print(f"# up after {took:.0f} s: {prep.launch.shell()}", file=sys.stderr)
        yield prep.launch
    finally:
        proc.stop()


def bench(launch, model: Path, out: Path, args, *which: str) -> dict:
    argv = [sys.executable, "-m", "llmodal.cli", "bench", "--env-file", "", "--base-url", launch.base_url,
            "--api-key", KEY, "--tokenizer", str(model), "--concurrency", args.concurrency,
            "--input-len", str(args.input_len), "--output-len", str(args.output_len),
            "--num-prompts", str(args.num_prompts), "--out", str(out), *which]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"bench failed: {' '.join(argv)}\n{r.stdout}\n{r.stderr}")
    return json.loads(out.read_text())


def kv_tokens(log: Path) -> int | None:
    hits = re.findall(r"KV cache size: ([\d,]+) tokens", log.read_text(errors="replace"))
    return int(hits[-1].replace(",", "")) if hits else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--adapters", type=int, default=4)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--concurrency", default="1,4")
    ap.add_argument("--input-len", type=int, default=256)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--num-prompts", type=int, default=16)
    args = ap.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    model = ensure_tiny_model()
    names = [f"a{i}" for i in range(args.adapters)]
    from llmodal.core.state import cache_dir

    # Made again from their seeds on every run: no weights in the results folder.
    dirs = [write_adapter(cache_dir() / "lora-cost-adapters" / n, model, rank=args.rank, targets=tuple(LLAMA_MODULES), seed=i + 1,
                          base_name=SERVED_NAME) for i, n in enumerate(names)]
    modules = ",".join(f"{n}={d}" for n, d in zip(names, dirs))
    runs: dict[str, list[dict]] = {k: [] for k in ("base", "lora-base", "lora-one", "lora-mixed")}
    logs = {"A": args.out / "server-A-nolora.log", "B": args.out / "server-B-lora.log"}
    with server(model, "", logs["A"]) as a, server(model, modules, logs["B"]) as b:
        how = {"base": (a, ()), "lora-base": (b, ()), "lora-one": (b, ("--model", names[0])),
               "lora-mixed": (b, ("--models", ",".join(names)))}
        order = list(how)
        for rnd in range(1, args.rounds + 1):
            # Each round starts one run later: over 4 rounds every run has every place (a first run after a
            # server switch or a neighbour's burst is not always the same one).
            for name in order[rnd - 1:] + order[:rnd - 1]:
                launch, extra = how[name]
                runs[name].append(bench(launch, model, args.out / f"{name}-r{rnd}.json", args, *extra))
    kv = {k: kv_tokens(p) for k, p in logs.items()}
    lines = [f"KV cache tokens (vLLM's log): A without LoRA {kv['A']}, B with {args.adapters} adapters {kv['B']}", "",
             "| run | level | out tok/s (median of rounds) | vs base | TTFT p50 ms | vs base | rounds' out tok/s |",
             "|---|---|---|---|---|---|---|"]
    levels = [lv["label"] for lv in runs["base"][0]["levels"]]
    for name, docs in runs.items():
        for i, label in enumerate(levels):
            tps = [d["levels"][i]["output_tok_s"] for d in docs]
            ttft = [d["levels"][i]["ttft_ms"]["p50"] for d in docs]
            base_tps = statistics.median(d["levels"][i]["output_tok_s"] for d in runs["base"])
            base_ttft = statistics.median(d["levels"][i]["ttft_ms"]["p50"] for d in runs["base"])
            lines.append(f"| {name} | {label} | {statistics.median(tps):.1f} | "
                         f"{statistics.median(tps) / base_tps - 1:+.1%} | {statistics.median(ttft):.0f} | "
                         f"{statistics.median(ttft) / base_ttft - 1:+.1%} | {', '.join(f'{x:.1f}' for x in tps)} |")
    text = "\n".join(lines)
    (args.out / "summary.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
