"""How much of vLLM's `random` benchmark prompts a server's prefix cache can serve, per run of the
H200 agreement (benchmarks/results/h200-2026-12-02b): the prompts are re-made with the run's seed and
the test model's tokenizer, and each prompt's leading 16-token blocks that an earlier prompt of the
run already holds are counted (vLLM's prefix cache, no eviction: the KV cache held every prompt).

    .venv/bin/python benchmarks/vllm_prompt_repeats.py [MODEL_DIR]   (default /tmp/m70fp8, made if absent)

vLLM's bench also sends its first prompt once before the run (its ready check); that copy is counted.
llmodal's prompts for the same runs are counted the same way.
"""

from __future__ import annotations

import subprocess
import sys
import zlib
from pathlib import Path

BLOCK = 16
RUNS = ((1, 4), (32, 64), (128, 256))  # (concurrency, prompts) of goodput.py's agree step


def cached_share(prompts: list[list[int]]) -> float:
    seen: set = set()
    hit = total = 0
    for ids in prompts:
        chain, h = [], None
        for i in range(0, len(ids) - BLOCK + 1, BLOCK):  # a block's key covers every block before it
            h = hash((h, tuple(ids[i:i + BLOCK])))
            chain.append(h)
        cached = next((k for k, x in enumerate(chain) if x not in seen), len(chain))
        seen.update(chain)
        hit += cached * BLOCK
        total += len(ids)
    return hit / total


def main() -> None:
    model = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/m70fp8")
    if not (model / "tokenizer.json").exists():
        subprocess.run([sys.executable, str(Path(__file__).parent / "gpu" / "make_model.py"), str(model), "--fp8"],
                       check=True)
    from transformers import AutoTokenizer
    from vllm.benchmarks.datasets import RandomDataset

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from llmodal.tools.bench.runner import make_prompts

    tok = AutoTokenizer.from_pretrained(model)
    print("| c | prompts | vLLM's prompts from the prefix cache | llmodal's |")
    print("|---|---|---|---|")
    for c, n in RUNS:
        ds = RandomDataset(random_seed=zlib.crc32(f"agree-r0-c{c}-vllm".encode()) % 100000)
        reqs = ds.sample(tokenizer=tok, num_requests=n, input_len=1024, output_len=256)
        v = [tok(r.prompt).input_ids for r in reqs]
        mine = make_prompts(n, 1024, str(model), seed=zlib.crc32(f"agree-r0-c{c}-llmodal".encode())).texts
        print(f"| {c} | {n} | {cached_share([v[0], *v]):.1%} | {cached_share([tok(p).input_ids for p in mine]):.1%} |")


if __name__ == "__main__":
    main()
