"""What vLLM's API server spends per streamed token, in CPU time: the speed model's API_TOKEN_S, checked on the
process itself instead of fitted to throughput.

    .venv/bin/python benchmarks/api_server_cpu.py --out benchmarks/results/cpu-2026-12-07d/v1024 \
        > benchmarks/results/cpu-2026-12-07d/v1024/api-server-cpu.md      [--levels 16,64 --rounds 2]
    .venv/bin/python benchmarks/api_server_cpu.py --vocab 128256 --out benchmarks/results/cpu-2026-12-07d/v128256 \
        > benchmarks/results/cpu-2026-12-07d/v128256/api-server-cpu.md

One server of the tiny model on this machine's CPU engine, started as `llmodal serve` starts it but with vLLM's
default process layout (the engine core in its own process, as on a GPU; the test suite's servers keep it in one
process): so the API-server process does what it does in front of a GPU — receive requests, tokenize prompts,
turn every step's outputs into text and server-sent events. For each level, `llmodal bench` (completions, as
every GPU row the fitted API_TOKEN_S comes from; 128 in / 256 out, ignore_eos, 2 × c prompts, no warm-up request)
and, around it, the CPU seconds (user + system, all threads) of the API-server process, of the engine core and
of the bench client: the API server's CPU per streamed output token is the figure (its prompt tokenization is in
it too: 128 tokens a request, against 256 streamed). Every request the window holds is a counted one: bench's
warm-up request would add its tokens' CPU to the window but not its tokens to the count.
This measures the cost where one core of this machine pays it; the H100 host's CPU is another one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import subprocess
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _local import KEY, local_server  # noqa: E402

from llmodal.engine.tiny_model import SERVED_NAME, ensure_tiny_model  # noqa: E402


def cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def bench_argv(base_url: str, tokenizer: Path, c: int, out: Path) -> list[str]:
    """One level's `llmodal bench`: the endpoint the GPU rows used (completions; bench's default is chat, whose
    template and larger chunks cost the API server more) and no warm-up request (see the docstring)."""
    return [sys.executable, "-m", "llmodal.cli", "bench", "--env-file", "", "--base-url", base_url, "--api-key", KEY,
            "--api", "completions", "--warmup", "0", "--tokenizer", str(tokenizer), "--concurrency", str(c),
            "--num-prompts", str(2 * c), "--input-len", "128", "--output-len", "256", "--ignore-eos", "--out", str(out)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--levels", default="16,64")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=0,
                    help="serve the tiny model's shape with this vocab_size and dummy weights, its tokenizer unchanged "
                         "(128256: as the GPU runs' random-weight models, whose sampled ids mostly lie past the "
                         "tokenizer's 1,024 tokens)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = ensure_tiny_model()
    tokenizer, extra = model, "-O0"
    if args.vocab:
        wide = Path(tempfile.mkdtemp()) / f"model-v{args.vocab}"  # a config and a tokenizer: not a result
        shutil.copytree(model, wide, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors"))
        cfg = json.loads((wide / "config.json").read_text())
        (wide / "config.json").write_text(json.dumps({**cfg, "vocab_size": args.vocab}))
        model, extra = wide, "-O0 --load-format dummy"
    # -O0: no torch.compile (this machine has no C++ compiler for inductor; the engine's speed is not measured)
    # queue_limit: the guard's in-flight cap (64 where no plan sizes it) would answer 429 to part of a 64-stream level
    rows = []
    # vLLM's default layout: an engine-core process beside the API server (multiprocessing on, as on a GPU)
    with local_server(model, served=SERVED_NAME, gpu_memory_utilization=0.05, extra_args=extra, queue_limit=1024,
                      env={**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}, log=args.out / "server.log") as proc:
        api = psutil.Process(proc.proc.pid)
        engine = api.children(recursive=True)  # the engine core and its CPU worker
        time.sleep(5)
        a0, t0 = cpu(api), time.monotonic()
        time.sleep(10)
        idle = (cpu(api) - a0) / (time.monotonic() - t0)  # its CPU a second with nothing to do
        for rnd in range(args.rounds):
            for c in map(int, args.levels.split(",")):
                out = args.out / f"bench-c{c}-r{rnd}.json"
                argv = bench_argv(proc.launch.base_url, tokenizer, c, out)
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                a, e, t = cpu(api), sum(cpu(p) for p in engine), time.monotonic()
                subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
                wall = time.monotonic() - t
                a, e = cpu(api) - a, sum(cpu(p) for p in engine) - e
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                client = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                level = json.loads(out.read_text())["levels"][0]
                tokens = level["output_tokens"]
                rows.append({"c": c, "round": rnd, "wall_s": round(wall, 2), "output_tokens": tokens,
                             "out_tok_s": round(level["output_tok_s"], 1), "api_cpu_s": round(a, 3),
                             "api_cpu_us_per_token": round(1e6 * (a - idle * wall) / tokens, 1),
                             "engine_cpu_s": round(e, 3), "client_cpu_s": round(client, 3),
                             "client_cpu_us_per_token": round(1e6 * client / tokens, 1)})
                print(json.dumps(rows[-1]), file=sys.stderr)
    (args.out / "api_server_cpu.json").write_text(json.dumps({"idle_api_cpu_per_s": round(idle, 4), "rows": rows},
                                                             indent=2))
    print(f"API server idle: {idle:.3f} CPU-s a second (subtracted)\n")
    print("| c | round | out tok/s | API server CPU µs per streamed token | bench client CPU µs per token "
          "| engine core + worker CPU s | wall s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['c']} | {r['round']} | {r['out_tok_s']:,.1f} | {r['api_cpu_us_per_token']:.0f} "
              f"| {r['client_cpu_us_per_token']:.0f} | {r['engine_cpu_s']:.1f} | {r['wall_s']:.1f} |")


if __name__ == "__main__":
    main()
