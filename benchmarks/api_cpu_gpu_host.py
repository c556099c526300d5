"""The API-server process's CPU per streamed token on the lent GPU host, from the pipeline's own polls.

    .venv/bin/python benchmarks/api_cpu_gpu_host.py benchmarks/results/h200-2026-12-07 > benchmarks/results/h200-2026-12-07/api-server-cpu.md

Input: RUN/metrics/EPOCH.txt (vLLM's /metrics every 15 s: `vllm:generation_tokens_total`, the tokens the engine
produced) and RUN/metrics/EPOCH.ps (ps's busiest processes at the same moment: CPU seconds so far, whole seconds).
The API server is the engine core's parent (vLLM starts `VLLM::EngineCore` from it). Between two polls of one
server: its CPU seconds against the tokens generated and the seconds elapsed; a least-squares fit of
CPU = idle × seconds + per-token × tokens over every interval gives the CPU each streamed token costs it, apart
from what it spends idle (/metrics, health, its loop). speed.API_TOKEN_S (193.8 µs when this ran; refitted since:
speed.py has today's) was fitted to the H100 8B/3B runs' throughput; this is a CPU measurement of the same path on
another GPU host.
"""

from __future__ import annotations

import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


def tokens(f: Path) -> float | None:
    for family in text_string_to_metric_families(f.read_text()):
        for s in family.samples:
            if s.name == "vllm:generation_tokens_total":
                return s.value
    return None


def api_cpu(f: Path) -> tuple[int, int] | None:
    """(the API server's pid, its CPU seconds so far): the parent of the engine core process."""
    rows = [line.split(None, 4) for line in f.read_text().splitlines()[1:]]
    engine = [r for r in rows if r[4].startswith("VLLM::Engine")]
    if not engine:
        return None
    api = [r for r in rows if r[0] == engine[0][1]]
    return (int(api[0][0]), int(api[0][2])) if api else None


def fit(rows: list[tuple[int, float, int]]) -> tuple[float, float, float]:
    """Least squares of cpu = idle × dt + k × tokens: (idle, k, k's standard error)."""
    sxx = sum(dt * dt for dt, _, _ in rows)
    sxy = sum(dt * n for dt, n, _ in rows)
    syy = sum(n * n for _, n, _ in rows)
    sxc = sum(dt * c for dt, _, c in rows)
    syc = sum(n * c for _, n, c in rows)
    det = sxx * syy - sxy * sxy
    idle, k = (sxc * syy - syc * sxy) / det, (sxx * syc - sxy * sxc) / det
    resid = sum((c - idle * dt - k * n) ** 2 for dt, n, c in rows) / max(len(rows) - 2, 1)
    return idle, k, (resid * sxx / det) ** 0.5


def main(run: Path) -> None:
    polls = []
    for f in sorted((run / "metrics").glob("*.txt")):
        ps = f.with_suffix(".ps")
        if ps.exists() and (n := tokens(f)) is not None and (cpu := api_cpu(ps)):
            polls.append((int(f.stem), n, *cpu))
    per: dict[int, list] = {}  # API-server pid → its intervals
    for (t0, n0, p0, c0), (t1, n1, p1, c1) in zip(polls, polls[1:]):
        if p0 == p1 and n1 >= n0:
            per.setdefault(p1, []).append((t1 - t0, n1 - n0, c1 - c0))
    rows = [r for rs in per.values() for r in rs]
    idle, k, se = fit(rows)
    print(f"# The API server's CPU per streamed token on the GPU host ({run.name})\n")
    print("Command: `.venv/bin/python benchmarks/api_cpu_gpu_host.py " + (str(run.relative_to(Path.cwd()))
          if run.is_relative_to(Path.cwd()) else str(run)) + "` (this file is its output).\n")
    print(f"Intervals between polls of one server: {len(rows)}, {sum(n for _, n, _ in rows):,.0f} tokens generated, "
          f"{sum(c for _, _, c in rows)} CPU seconds of the API-server process (ps: whole seconds; CPU time of all "
          f"its threads, not the serial time a token waits).\n")
    print(f"**Fit over every interval: {k * 1e6:.0f} µs of API-server CPU a generated token (standard error "
          f"{se * 1e6:.0f} µs), plus {idle:.3f} CPU seconds a second idle.** Per server:\n")
    print("| API-server pid | intervals | tokens/s, most in an interval | µs a token (± standard error) | "
          "CPU ÷ tokens, idle share included |")
    print("|---|---|---|---|---|")
    for pid, rs in per.items():
        i, kk, e = fit(rs)
        print(f"| {pid} | {len(rs)} | {max(n / dt for dt, n, _ in rs):,.0f} | {kk * 1e6:.0f} ± {e * 1e6:.0f} "
              f"| {sum(c for _, _, c in rs) / sum(n for _, n, _ in rs) * 1e6:.0f} |")
    print("\n| interval s | tokens | tokens/s | API-server CPU s |")
    print("|---|---|---|---|")
    for dt, n, c in rows:
        print(f"| {dt} | {n:,.0f} | {n / dt:,.0f} | {c} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
