"""benchmarks/api_server_cpu.py measures the API server's CPU on the path the fitted API_TOKEN_S came from: the GPU
rows' endpoint, and only requests whose tokens it counts."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import api_server_cpu  # noqa: E402

# the GPU run whose rows fitted API_TOKEN_S, and the CPU run docs/BENCHMARKS.md quotes against it
GPU_RUN = ROOT / "benchmarks/results/h100-2026-12-07b"
CPU_RUN = ROOT / "benchmarks/results/cpu-2026-12-07d"


def _opt(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def gpu_apis() -> set[str]:
    return {json.loads(p.read_text())["meta"]["api"] for p in GPU_RUN.glob("*-c*.json")}


def test_each_level_uses_the_gpu_rows_endpoint_and_sends_no_uncounted_request(tmp_path):
    argv = api_server_cpu.bench_argv("http://127.0.0.1:1/v1", tmp_path, 16, tmp_path / "b.json")
    assert gpu_apis() == {_opt(argv, "--api")}
    # a warm-up request's CPU lands in the window, its tokens not in the level's output_tokens
    assert _opt(argv, "--warmup") == "0"


def test_the_stored_cpu_run_is_of_that_endpoint_with_every_request_counted():
    files = sorted(CPU_RUN.glob("*/bench-c*-r*.json"))
    assert files
    for p in files:
        meta = json.loads(p.read_text())["meta"]
        assert {meta["api"]} == gpu_apis() and meta["warmup"] == 0, p
