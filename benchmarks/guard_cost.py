"""What llmodal's auth guard costs: requests/s with and without the middleware, one machine, one run.

    .venv/bin/python benchmarks/guard_cost.py [--rounds 3] [--requests 300] [--concurrency 8]

Two CPU-engine servers of the tiny model run side by side: A as llmodal launches it (auth
middleware, keys), B the same command without ``--middleware`` and without keys. Rounds alternate
A, B, A, B… so both see the same machine. Two workloads of short requests: ``GET /v1/models``
(nothing but HTTP and the guard) and a one-token completion. Goal: the guard costs ≤ 2 %.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _local import KEY, free_port  # noqa: E402

from llmodal.engine.tiny_model import SERVED_NAME, ensure_tiny_model  # noqa: E402


@contextmanager
def server(model: Path, guarded: bool):
    from llmodal.core.config import load_settings
    from llmodal.engine.launch import build_launch
    from llmodal.core.state import cache_dir
    from llmodal.run.supervisor import Supervisor

    settings = load_settings(None, model=str(model), max_model_len=2048, gpu_memory_utilization=0.2)
    port = free_port()
    launch = build_launch(settings, served_model_name=SERVED_NAME, api_key=KEY, port=port, python=sys.executable)
    if not guarded:
        argv = list(launch.argv)
        i = argv.index("--middleware")
        del argv[i:i + 2]
        env = {k: v for k, v in launch.env.items() if "KEY" not in k}
        launch = replace(launch, argv=argv, env=env)
    proc = Supervisor(launch, cache_dir() / "logs" / f"guard-{port}.log")
    proc.start()
    try:
        proc.wait_ready(900)
        print(f"# {'A guarded' if guarded else 'B unguarded'}: {launch.shell()}", file=sys.stderr)
        yield launch.base_url
    finally:
        proc.stop()


async def load(base: str, kind: str, n: int, c: int) -> float:
    import aiohttp

    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"model": SERVED_NAME, "prompt": "hi", "max_tokens": 1}
    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=0)) as s:
        sem, bad = asyncio.Semaphore(c), 0

        async def one() -> None:
            nonlocal bad
            async with sem:
                req = s.get(base + "/models") if kind == "models" else s.post(base + "/completions", json=body)
                async with req as r:
                    await r.read()
                    bad += r.status != 200

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        took = time.perf_counter() - t0
    if bad:
        raise SystemExit(f"{bad} of {n} requests failed against {base}")
    return n / took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=8)
    a = ap.parse_args()
    model = ensure_tiny_model()
    with ExitStack() as stack:
        urls = {"A": stack.enter_context(server(model, True)), "B": stack.enter_context(server(model, False))}
        rows = []
        for kind in ("models", "completion"):
            got: dict[str, list[float]] = {"A": [], "B": []}
            asyncio.run(load(urls["A"], kind, 50, a.concurrency))  # warm both
            asyncio.run(load(urls["B"], kind, 50, a.concurrency))
            for r in range(a.rounds):
                for side in ("A", "B") if r % 2 == 0 else ("B", "A"):
                    got[side].append(asyncio.run(load(urls[side], kind, a.requests, a.concurrency)))
            ga, gb = statistics.median(got["A"]), statistics.median(got["B"])
            rows.append((kind, ga, gb, got))
    print(f"| workload (c={a.concurrency}, {a.requests} requests × {a.rounds} rounds each) | guarded req/s (median) "
          "| unguarded req/s (median) | guard cost | every round A / B |")
    print("|---|---|---|---|---|")
    for kind, ga, gb, got in rows:
        what = "GET /v1/models" if kind == "models" else "POST /v1/completions, 1 token"
        rounds = " · ".join(f"{x:.0f}/{y:.0f}" for x, y in zip(got["A"], got["B"]))
        print(f"| {what} | {ga:.1f} | {gb:.1f} | {(1 - ga / gb) * 100:+.1f} % | {rounds} |")


if __name__ == "__main__":
    main()
