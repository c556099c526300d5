"""Planner KV prediction vs vLLM's own "KV cache size: N tokens", per model shape.

On the CPU engine the KV budget is given exactly (``--kv-cache-memory-bytes``), so each row
checks the planner's per-token formula (layers × KV heads × head dim × 2 × dtype bytes) on a
generated model of that shape. The GPU row checks the whole budget model (utilization,
weights, activations) against the recorded H100 run in ``benchmarks/results/``.

    .venv/bin/python benchmarks/kv_accuracy.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _local import local_server  # noqa: E402

from llmodal.plan.catalog import lookup  # noqa: E402
from llmodal.engine.tiny_model import TinyShape, ensure_tiny_model  # noqa: E402

KV_BYTES = 256 * 1024**2
SHAPES = [
    TinyShape(),  # 2 layers, 2 KV heads (GQA), head dim 64
    TinyShape(layers=4, heads=8, kv_heads=8, head_dim=32, hidden=256),  # MHA, head dim 32
    TinyShape(layers=3, heads=4, kv_heads=1, head_dim=128, hidden=256),  # MQA, head dim 128
    TinyShape(layers=6, heads=8, kv_heads=4, head_dim=64, hidden=512, intermediate=1024),
]
_TOKENS = re.compile(r"KV cache size: ([\d,]+) tokens")


def measure(shape: TinyShape) -> tuple[int, int]:
    model = ensure_tiny_model(shape)
    spec = lookup(str(model))
    predicted = KV_BYTES // spec.kv_bytes_per_token()
    with local_server(model, served="shape", max_model_len=1024, kv_cache_bytes=KV_BYTES) as srv:
        m = _TOKENS.search(srv.tail()) or _TOKENS.search(srv.log_path.read_text())
    if not m:
        raise SystemExit(f"no 'KV cache size' line for {shape.slug}")
    return predicted, int(m.group(1).replace(",", ""))


def main() -> None:
    print("| engine | shape (layers/heads/KV heads/head dim) | KV bytes/token | planner tokens | vLLM tokens | error |")
    print("|---|---|---|---|---|---|")
    for shape in SHAPES:
        pred, got = measure(shape)
        per = lookup(str(ensure_tiny_model(shape))).kv_bytes_per_token()
        print(f"| CPU, {KV_BYTES >> 20} MiB KV | {shape.layers}/{shape.heads}/{shape.kv_heads}/{shape.head_dim} | "
              f"{per:,} | {pred:,} | {got:,} | {100 * (pred / got - 1):+.2f} % |", flush=True)
    for start in ("cold", "warm"):
        rec = json.loads((Path(__file__).parent / "results" / "h100-vllm0.32" / f"{start}.json").read_text())
        print(f"| H100 (recorded, vLLM 0.32.0, {start} start), planner's KV bytes | 80/64/8/128, AWQ INT4 | 327,680 | "
              f"{rec['planner_kv_tokens']:,} | {rec['engine_kv_tokens']:,} | "
              f"{100 * (rec['planner_kv_tokens'] / rec['engine_kv_tokens'] - 1):+.2f} % |")


if __name__ == "__main__":
    main()
