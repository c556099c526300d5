"""benchmarks/api_cpu_gpu_host.py: the API server's CPU per token from the GPU pipeline's polls."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import api_cpu_gpu_host as A  # noqa: E402

PS = """  PID  PPID     TIME ELAPSED COMMAND
  {eng}  {api}      {ecpu}     261 VLLM::EngineCor
  {api}     1      {acpu}     282 python3
 2796  2505      16      54 python3
"""
METRICS = "# TYPE vllm:generation_tokens_total counter\nvllm:generation_tokens_total{{model_name=\"m\"}} {n}\n"


def test_the_fit_takes_the_idle_share_out(tmp_path, capsys):
    # the API server spends 0.5 CPU-s a second idle and 200 µs a token: made exact in whole seconds
    (tmp_path / "metrics").mkdir()
    t, n, cpu = 1000, 0.0, 0
    for dt, tokens in ((20, 0), (20, 10_000), (40, 50_000), (20, 25_000), (20, 5_000)):
        t, n = t + dt, n + tokens
        cpu += round(0.5 * dt + 200e-6 * tokens)
        (tmp_path / "metrics" / f"{t}.txt").write_text(METRICS.format(n=n))
        (tmp_path / "metrics" / f"{t}.ps").write_text(PS.format(eng=2147, api=2064, ecpu=99, acpu=cpu))
    # a poll of another server (a new API pid): no interval across it
    (tmp_path / "metrics" / f"{t + 15}.txt").write_text(METRICS.format(n=10))
    (tmp_path / "metrics" / f"{t + 15}.ps").write_text(PS.format(eng=3000, api=2999, ecpu=5, acpu=3))
    A.main(tmp_path)
    out = capsys.readouterr().out
    assert "Intervals between polls of one server: 4, 90,000 tokens generated" in out
    assert "Fit over every interval: 200 µs of API-server CPU a generated token (standard error 0 µs), plus 0.500 " \
           "CPU seconds" in out
    assert "| 2064 | 4 | 1,250 | 200 ± 0 |" in out  # the one server's own fit, and its busiest interval


def test_the_stored_reading_regenerates_and_the_docs_quote_it():
    run = ROOT / "benchmarks/results/h200-2026-12-07"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/api_cpu_gpu_host.py"), str(run)], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (run / "api-server-cpu.md").read_text()
    fitted = r.stdout.split("**Fit over every interval: ")[1].split(" µs")[0]
    doc = " ".join((ROOT / "docs/BENCHMARKS.md").read_text().split())
    assert f"{fitted} µs of CPU a generated token" in doc
