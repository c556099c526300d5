"""`plan`'s speed with LoRA adapters is the validated one: lora_speed.py carries the constants fitted from the raw
GPU files, every LoRA row is in the validation, and `plan`, `--json`, `--compare` print the validation's figures
inside the measured setup and say "extrapolated" outside it."""

import json
import re
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmodal.cli import app
from llmodal.plan import lora_speed

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "benchmarks" / "results" / "h100-2026-12-07"
MD = (ROOT / "benchmarks" / "results" / "lora-speed-validation.md").read_text()
BASE8 = "meta-llama/Llama-3.1-8B-Instruct"
EXTRAPOLATED = "extrapolated: measured on an H100 with an 8B BF16 base at rank 16"


def _median(name: str, key: str) -> float:
    reqs = json.loads((RUN / name).read_text())["levels"][0]["requests"]
    if key == "tpot":
        return statistics.median((r["e2el_ms"] - r["ttft_ms"]) / (r["output_tokens"] - 1) for r in reqs)
    return statistics.median(r["ttft_ms"] for r in reqs)


def test_the_constants_are_the_fit_to_the_raw_files():
    # Llama-3.1-8B: 32 decoder layers × (qkv, o, gate_up, down) + embedding + LM head, as vLLM wraps them
    per_layer = 32 * 4 + 2
    graphed = (_median("lora-8b-one-c1.json", "tpot") - _median("lora-8b-c1.json", "tpot")) / per_layer * 1000
    eager = (_median("lora-8b-one-c1.json", "ttft") - _median("lora-8b-c1.json", "ttft")) / per_layer * 1000
    assert lora_speed.GRAPHED_US == pytest.approx(graphed, abs=0.05)
    assert lora_speed.EAGER_US == pytest.approx(eager, abs=0.5)
    assert f"GRAPHED_US = {lora_speed.GRAPHED_US:.1f} µs" in MD and f"EAGER_US = {lora_speed.EAGER_US:.0f} µs" in MD
    assert (f"HELD_OUT_WORST = {lora_speed.HELD_OUT_WORST:.3f}, HELD_OUT_RUNS = {lora_speed.HELD_OUT_RUNS}" in MD)


def test_every_lora_file_is_a_row_fitted_or_held_out_and_the_band_is_the_worst_held_out_error():
    files = sorted(p.name for p in RUN.glob("lora-8b*.json"))
    rows = [line for line in MD.splitlines() if line.startswith("| lora-8b")]
    assert sorted(re.search(r"`[^`]*/([^/`]+)` \|$", r).group(1) for r in rows) == files
    assert sum(" base: the ratios' reference " in r for r in rows) == 2  # lora-8b-c1, -c64: requests to the base
    held = [abs(float(r.split(" | ")[7].rstrip("%"))) / 100 for r in rows if " held out " in r]
    assert sum(" fitted " in r for r in rows) == 1 and len(held) == lora_speed.HELD_OUT_RUNS == 3
    assert lora_speed.HELD_OUT_WORST == pytest.approx(max(held), abs=0.0006)
    # the measured column is the raw file's throughput
    for r in rows:
        name = re.search(r"`[^`]*/([^/`]+)` \|$", r).group(1)
        tok_s = json.loads((RUN / name).read_text())["levels"][0]["output_tok_s"]
        assert f"| {tok_s:,.1f} |" in r, r


def test_the_prefix_cache_served_nothing_in_the_runs():
    rates = re.findall(r"Prefix cache hit rate: ([\d.]+)%", (RUN / "lora-8b-serve.log").read_text())
    assert rates and max(map(float, rates)) == 0.0
    assert "hit rate of at most 0.0 %" in MD


def _cli(*args, env):
    r = CliRunner().invoke(app, ["plan", "--env-file", "", *args], env={"COLUMNS": "250", **env})
    assert r.exit_code == 0, r.output
    return r.output


@pytest.fixture
def four(tmp_path):
    """The measured server's adapters: four of rank 16 on all seven linear modules of the 8B."""
    mods = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    for i in range(4):
        (tmp_path / f"a{i}").mkdir()
        (tmp_path / f"a{i}" / "adapter_config.json").write_text(json.dumps(
            {"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": mods, "base_model_name_or_path": BASE8}))
    return {"VLLM_LORA_MODULES": ",".join(f"a{i}={tmp_path / f'a{i}'}" for i in range(4))}


def test_plan_prints_the_validations_figures_with_its_band(four):
    out = _cli("--model", BASE8, "--gpu", "H100", env=four)
    line = " ".join(out[out.index("with LoRA adapters in use"):].split("\n  mean TTFT")[0].split())
    assert line in " ".join(MD.split()), line  # the very line the validation printed
    doc = json.loads(_cli("--model", BASE8, "--gpu", "H100", "--json", env=four))
    w = doc["speed"]["with_lora"]
    assert f"{w['saturated_out_tok_s']:,.0f} out tok/s at 128 streams" in line
    # at a load the LoRA runs had (64 streams) the measured setup carries the held-out band
    from llmodal.core.config import load_settings
    from llmodal.plan.compare import lora_speed_of
    from llmodal.plan.planner import plan_for_settings
    res = plan_for_settings(load_settings(None, model=BASE8, gpu="H100", lora_modules=four["VLLM_LORA_MODULES"]))
    at64 = lora_speed_of(res.chosen, res.spec, concurrency=64)
    assert at64.extrapolated == "" and f"LoRA cost band ±{lora_speed.HELD_OUT_WORST:.0%}" in at64.text()
    assert at64.to_dict()["band"] == {"worst": lora_speed.HELD_OUT_WORST, "held_out_runs": 3}
    row = next(r for r in json.loads(_cli("--model", BASE8, "--compare", "--json", env=four))["rows"]
               if (r["gpu"], r["build"], r["tp"]) == ("H100", "bf16", 1))
    assert row["lora_speed"]["saturated_out_tok_s"] == pytest.approx(w["saturated_out_tok_s"])
    assert row["lora_speed"]["band"] == w["band"] and row["lora_speed"]["extrapolated"] == w["extrapolated"]
    # LoRA's band is its cost's alone: the base's own error travels beside it (BF16 8B on an H100: held out)
    assert w["base_error_band"] == doc["speed"]["error_band"] and w["base_error_band"]["error"] is not None
    assert row["lora_speed"]["base_error_band"] == row["error_band"]


@pytest.mark.parametrize("args,differs", [
    (("--model", "meta-llama/Llama-3.1-70B-Instruct", "--gpu", "A100-80GB"), "GPU A100-80GB, kernel marlin, model"),
    (("--model", BASE8, "--gpu", "H100", "--quantization", "fp8"), "kernel fp8-w8a8"),
])
def test_outside_the_measured_setup_the_number_says_extrapolated_and_has_no_band(four, args, differs):
    four = four | {"LLMODAL_LORA_ANY_BASE": "true"}  # the 8B's adapters on the guide's 70B: their shapes still load
    out = " ".join(_cli(*args, env=four).split())
    line = out[out.index("with LoRA adapters in use"):out.index("mean TTFT at")]
    assert f"no band: {EXTRAPOLATED} (here: {differs}" in line and "±" not in line, line
    doc = json.loads(_cli(*args, "--json", env=four))
    assert doc["speed"]["with_lora"]["band"] is None and doc["speed"]["with_lora"]["extrapolated"].startswith(EXTRAPOLATED)


def test_a_rank_other_than_the_measured_one_is_extrapolated(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 32, "lora_alpha": 64, "target_modules": ["q_proj"], "base_model_name_or_path": BASE8}))
    doc = json.loads(_cli("--model", BASE8, "--gpu", "H100", "--json", env={"VLLM_LORA_MODULES": f"a={tmp_path / 'a'}"}))
    assert doc["speed"]["with_lora"]["extrapolated"] == (
        f"{EXTRAPOLATED} (here: rank 32, 128 streams, measured at 1 and 64, 1 adapters resident, measured with 4; "
        "constants carried unchanged)")


@pytest.mark.parametrize("adapters,mix,profile,differs", [
    (2, (1024, 256), None, "2 adapters resident, measured with 4"),
    (4, (2048, 128), None, "token mix 2048:128, measured 1024:256"),
    (4, (1024, 256), "latency", "CUDA graphs up to 64 tokens, measured up to 512"),
])
def test_the_rest_of_the_measured_setup_decides_the_band_too(four, adapters, mix, profile, differs):
    """At a load the LoRA runs had (64 streams), the band holds only for their adapters resident, CUDA graph sizes
    (the balanced profile) and token mix; any other is extrapolated and says which."""
    from llmodal.core.config import load_settings
    from llmodal.plan.compare import lora_speed_of
    from llmodal.plan.planner import plan_for_settings

    modules = ",".join(four["VLLM_LORA_MODULES"].split(",")[:adapters])
    res = plan_for_settings(load_settings(None, model=BASE8, gpu="H100", lora_modules=modules,
                                          **({"profile": profile} if profile else {})))
    at64 = lora_speed_of(res.chosen, res.spec, mix, concurrency=64)
    assert differs in at64.extrapolated and at64.to_dict()["band"] is None, at64.extrapolated


def test_a_figure_at_more_streams_than_the_lora_runs_had_is_extrapolated(four):
    # the LoRA rows were measured at 1 and 64 streams; `plan` prints its saturated figure at 128
    levels = sorted({int(p.stem.rsplit("-c", 1)[1]) for p in RUN.glob("lora-8b*.json")})
    assert levels == [1, 64]
    doc = json.loads(_cli("--model", BASE8, "--gpu", "H100", "--json", env=four))
    w = doc["speed"]["with_lora"]
    assert w["concurrency"] > max(levels)
    assert w["band"] is None and f"{w['concurrency']} streams" in (w["extrapolated"] or ""), w
    out = " ".join(_cli("--model", BASE8, "--gpu", "H100", env=four).split())
    line = out[out.index("with LoRA adapters in use"):out.index("mean TTFT at")]
    assert "±" not in line and "extrapolated" in line, line
