"""The validation's bookkeeping: every stored run is a row or said not to be one, and speed.py carries the
constants and bands the last validation run printed (benchmarks/results/speed-validation.md)."""

import json
import re
import sys
from pathlib import Path

import pytest

from llmodal.plan import speed

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))
import speed_validation as sv  # noqa: E402


def _is_bench_run(path: Path) -> bool:
    if path.suffix == ".gz":
        return "vllm" in path.name
    try:
        d = json.loads(path.read_text())
    except ValueError:
        return False
    return isinstance(d, dict) and ("levels" in d or "output_throughput" in d)


def test_every_stored_gpu_run_is_a_row_or_listed_as_not_compared():
    runs = {str(p.relative_to(ROOT)) for p in RESULTS.glob("h[12]00*/**/*.json*") if _is_bench_run(p)}
    used = {r.source for r in sv.rows()} | {path for path, _ in sv.not_compared()}
    assert runs and runs <= used, sorted(runs - used)


def test_rows_held_out_in_a_gpu_fold_and_a_profile_fold():
    rows = sv.rows()
    for r in rows:
        gpu = [f.name for f in sv.FOLDS if f.name.startswith("fit H") and f.held_out(r)]
        profile = [f.name for f in sv.FOLDS if f.name.startswith("leave out") and f.held_out(r)]
        assert len(gpu) == 1 and len(profile) == 1, r.label


def test_speed_py_carries_what_the_validation_printed():
    text = (RESULTS / "speed-validation.md").read_text()
    first = text.splitlines()[0]
    assert f"E_MEM {speed.E_MEM:.3f}" in first
    for k in ("machete", "marlin", "fp8-w8a8"):
        f = speed.FITS[k]
        assert f"{k}: E_COMP {f.e_comp:.3f}, FLOOR {f.floor_ms:.2f} ms" in first
    line = next(x for x in text.splitlines() if x.startswith("speed.py BANDS:"))
    for key, (p90, worst, runs) in speed.BANDS.items():
        m = re.search(re.escape(str(key)) + r": \(([-\d.]+), ([-\d.]+), (\d+)\)", line)
        assert m, key
        assert (p90, worst, runs) == (pytest.approx(float(m[1])), pytest.approx(float(m[2])), int(m[3]))


def test_the_ttft_under_load_range_plan_prints_is_the_validations():
    text = (RESULTS / "speed-validation.md").read_text()
    part = text.split("TTFT under load")[1].split("Stored GPU runs not compared")[0]
    errs = [float(m) / 100 for m in re.findall(r"\| ([+-][\d.]+)% \|", part)]
    assert errs and (min(errs), max(errs)) == (pytest.approx(speed.TTFT_AT_LOAD_ERRORS[0], abs=0.005),
                                               pytest.approx(speed.TTFT_AT_LOAD_ERRORS[1], abs=0.005))
