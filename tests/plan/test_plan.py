"""Planner arithmetic: hand-checked cases and the recorded GPU run."""

import itertools
import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmodal.core.errors import PlanError
from llmodal.plan.catalog import lookup
from llmodal.cli import app
from llmodal.plan.gpus import get_gpu
from llmodal.plan.planner import choose, make_plan

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
RECORDED = RESULTS / "h100-llama70b-awq.json"
L70 = "meta-llama/Llama-3.1-70B-Instruct"


def test_llama70b_kv_is_320_kib_per_token():
    assert lookup(L70).kv_bytes_per_token() == 80 * 8 * 128 * 2 * 2 == 320 * 1024


def test_bf16_70b_is_141_gb_and_does_not_fit_one_80gb_card():
    spec = lookup(L70)
    assert 140e9 < spec.weight_bytes("bf16") < 142e9
    p = make_plan(spec, get_gpu("A100-80GB"))
    assert not p.fits and "141 GB" in p.reason


def test_awq_int4_fits_with_30_gib_for_kv():
    spec = lookup(L70)
    assert 37e9 <= spec.weight_bytes("awq") <= 40e9
    p = make_plan(spec, get_gpu("A100-80GB"), quantization="awq")
    assert p.fits and p.kv_gib_per_gpu > 30
    assert p.full_length_sequences >= 8


def test_auto_picks_the_awq_checkpoint_and_keeps_the_served_name():
    res = choose(lookup(L70), get_gpu("A100-80GB"), "auto", served_name=L70)
    assert not res.asked.fits
    assert res.chosen.checkpoint == "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4"
    assert res.chosen.model == L70 and res.chosen.fits
    assert res.chosen.vllm_quantization is None  # the checkpoint declares AWQ itself


@pytest.mark.parametrize("quant", ["awq", "gptq", "fp8"])
def test_a_quantized_checkpoint_is_never_quantized_again_on_the_fly(quant):
    """An H200 run of 2026-12-07 (benchmarks/results/h200-2026-12-07) served a local AWQ 70B: auto picked FP8
    "on the fly", and vLLM refused (the config's awq against --quantization fp8). vLLM quantizes on the fly
    from 16-bit weights only."""
    spec = replace(lookup(L70), name="/models/mine", quant=quant, checkpoints={})
    for gpu in ("H200", "H100", "A100-80GB"):
        res = choose(spec, get_gpu(gpu), "auto")
        assert res.chosen.quantization == quant and res.chosen.vllm_quantization is None, gpu
        assert not any("on the fly" in s.label for s in res.suggestions), [s.label for s in res.suggestions]
    other = "fp8" if quant != "fp8" else "awq"
    said = f"/models/mine is already {quant.upper()}" if other == "fp8" else "no AWQ checkpoint is known for /models/mine"
    with pytest.raises(PlanError, match=f"VLLM_QUANTIZATION='{other}': {said}"):
        choose(spec, get_gpu("H200"), other)
    # a 16-bit checkpoint still may be
    sixteen = replace(spec, quant="bf16")
    assert choose(sixteen, get_gpu("H200"), "fp8").chosen.vllm_quantization == "fp8"
    assert any("FP8 on the fly" in s.label for s in choose(sixteen, get_gpu("A100-80GB"), "none").suggestions)


def test_int8_is_never_planned_from_a_16_bit_checkpoint():
    """vLLM makes no INT8 weights on the fly (its --quantization fp8 is the one on-the-fly build): an INT8 plan from
    a 16-bit checkpoint would size 8-bit weights and pass no --quantization, so vLLM loaded twice the bytes into a
    cache sized for half of them. An INT8 checkpoint is planned as it is."""
    l8 = lookup("meta-llama/Llama-3.1-8B-Instruct")
    with pytest.raises(PlanError, match=r"VLLM_QUANTIZATION='int8': no INT8 checkpoint is known for "
                                        r"meta-llama/Llama-3.1-8B-Instruct \(known: awq, gptq"):
        choose(l8, get_gpu("H100"), "int8")
    int8 = replace(l8, name="/models/int8", quant="int8", checkpoints={})
    assert choose(int8, get_gpu("H100"), "int8").chosen.quantization == "int8"
    r = CliRunner().invoke(app, ["plan", "--env-file", "", "--model", "meta-llama/Llama-3.1-8B-Instruct",
                                 "--gpu", "H100", "--quantization", "int8"])
    assert r.exit_code != 0 and "no INT8 checkpoint is known" in r.output, r.output


def test_suggestions_fit_and_are_cheapest_first():
    res = choose(lookup(L70), get_gpu("A100-80GB"), "none")
    prices = [s.plan.price_per_hour for s in res.suggestions]
    assert res.suggestions and all(s.plan.fits for s in res.suggestions) and prices == sorted(prices)
    assert res.suggestions[0].label.startswith("AWQ")


def test_budget_and_weights_match_the_recorded_h100_run():
    rec = json.loads(RECORDED.read_text())
    p = make_plan(lookup(L70), get_gpu(rec["gpu"]), quantization="awq",
                  max_model_len=rec["max_model_len"], gpu_memory_utilization=rec["gpu_memory_utilization"])
    assert abs(p.budget_gib_per_gpu - rec["budget_gib"]) < 0.05
    assert abs(p.weights_gib_per_gpu - rec["weights_gib"]) / rec["weights_gib"] < 0.05
    # vLLM 0.26's own profile gave KV everything its profile did not see; the planner holds back
    # a margin for activations and CUDA graphs, so it plans less, never more.
    assert p.kv_tokens < rec["kv_tokens"]


@pytest.mark.parametrize("start", ["cold", "warm"])
def test_engine_kv_equals_the_planners_on_every_recorded_start(start):
    """benchmarks/results/h100-vllm0.32: vLLM 0.32.0 given the planner's --kv-cache-memory-bytes."""
    rec = json.loads((RESULTS / "h100-vllm0.32" / f"{start}.json").read_text())
    p = make_plan(lookup(L70), get_gpu("H100"), quantization="awq", max_model_len=8192, gpu_memory_utilization=0.95)
    assert f"--kv-cache-memory-bytes {p.kv_cache_bytes}" in rec["command"]  # today's planner, the run's number
    assert abs(rec["engine_kv_tokens"] - rec["planner_kv_tokens"]) / rec["planner_kv_tokens"] < 0.05
    assert rec["oom_lines"] == 0 and rec["gpu_mib_serving"] < 79.18 * 1024


def test_cost_numbers():
    p = make_plan(lookup(L70), get_gpu("A100-80GB"), quantization="awq", price_per_hour=2.0, scaledown_window_s=900)
    assert p.price_per_hour == 2.0 and p.idle_tail_cost == 0.5 and p.day_cost == 48.0


def test_tensor_parallel_splits_weights_and_kv():
    spec = lookup(L70)
    p1 = make_plan(spec, get_gpu("H100"), quantization="fp8")
    p2 = make_plan(spec, get_gpu("H100"), quantization="fp8", gpu_count=2)
    assert p2.weights_gib_per_gpu == pytest.approx(p1.weights_gib_per_gpu / 2)
    assert p2.kv_tokens > 2 * p1.kv_tokens and p2.price_per_hour == 2 * p1.price_per_hour


def test_local_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 64, "intermediate_size": 512, "vocab_size": 1000}))
    spec = lookup(str(tmp_path))
    assert spec.kv_bytes_per_token() == 4 * 2 * 64 * 2 * 2


@pytest.mark.parametrize("args,needle", [
    (["--gpu", "Z100"], "unknown GPU"),
    (["--model", "/nonexistent/dir-xyz"], "unknown model"),
    (["--max-model-len", "-1"], "VLLM_MAX_MODEL_LEN"),
    (["--gpu-memory-utilization", "1.2"], "VLLM_GPU_MEMORY_UTILIZATION"),
    (["--model", "mistralai/Mistral-7B-Instruct-v0.3", "--quantization", "awq"], "no AWQ checkpoint"),
])
def test_bad_input_exits_2_with_a_message(monkeypatch, args, needle):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = CliRunner().invoke(app, ["plan", "--env-file", "", *args])
    assert r.exit_code == 2 and needle in r.output, r.output


def test_plan_cli_default_explains_the_4bit_choice():
    r = CliRunner().invoke(app, ["plan", "--env-file", ""], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "does not fit" in r.output and "AWQ-INT4" in r.output and "concurrent 8,192-token" in r.output


def test_plan_cli_json_and_bench_cost(tmp_path):
    bench = tmp_path / "b.json"
    bench.write_text(json.dumps({"levels": [{"concurrency": 1, "output_tok_s": 43.45}]}))
    r = CliRunner().invoke(app, ["plan", "--env-file", "", "--json", "--bench", str(bench)])
    out = json.loads(r.output)
    assert out["plan"]["fits"] and not out["as_configured"]["fits"]
    usd = out["cost_per_million_output_tokens"][0]["usd_per_million_output_tokens"]
    assert usd == pytest.approx(out["plan"]["price_per_hour"] / (43.45 * 3600) * 1e6)
    # An open-loop level is priced at what it held (arrivals × output), and named by its rate.
    bench.write_text(json.dumps({"levels": [{"label": "5.5 req/s", "concurrency": None, "request_rate": 5.5,
                                             "output_tok_s": 1097.6, "held_output_tok_s": 1345.5}]}))
    r = CliRunner().invoke(app, ["plan", "--env-file", "", "--bench", str(bench)], env={"COLUMNS": "200"})
    held = out["plan"]["price_per_hour"] / (1345.5 * 3600) * 1e6  # the same plan's $/h
    assert f"at 5.5 req/s: 1346 output tok/s → ${held:.2f} per 1M output tokens" in r.output, r.output


def test_does_not_fit_exits_3():
    r = CliRunner().invoke(app, ["plan", "--env-file", "", "--quantization", "none"])
    assert r.exit_code == 3


@pytest.mark.parametrize("max_len,util,at_least", [(8192, 0.95, 10), (16384, 0.95, 6), (8192, 0.90, 6),
                                                   (16384, 0.90, 6)])
def test_the_guides_llama33_overrides_fit_one_a100_with_a_4bit_build(monkeypatch, max_len, util, at_least):
    """The guide's examples: VLLM_MODEL=meta-llama/Llama-3.3-70B-Instruct, 16,384 tokens, utilization 0.90."""
    from llmodal.core.config import load_settings
    from llmodal.plan.planner import plan_for_settings

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    s = load_settings(None, model="meta-llama/Llama-3.3-70B-Instruct", max_model_len=max_len,
                      gpu_memory_utilization=util)
    p = plan_for_settings(s).chosen
    assert p.fits and p.gpu_count == 1 and p.gpu == "A100-80GB" and p.quantization in ("awq", "gptq", "w4a16")
    assert p.full_length_sequences >= at_least and p.model == "meta-llama/Llama-3.3-70B-Instruct"


def assert_grouped_cheapest_first(rows: list[dict]) -> None:
    """`plan --compare`'s order: each (GPU, build)'s rows together, the smallest TP first; the groups cheapest first
    by their cheapest row's $/1M."""
    groups = [k for k, _ in itertools.groupby(rows, key=lambda x: (x["gpu"], x["build"]))]
    assert len(groups) == len(set(groups)), groups  # no group split by another's rows
    for g in groups:
        tps = [x["tp"] for x in rows if (x["gpu"], x["build"]) == g]
        assert tps == sorted(tps), (g, tps)
    best = [min(x["cost_per_1m_tokens"] for x in rows if (x["gpu"], x["build"]) == g) for g in groups]
    assert best == sorted(best), list(zip(groups, best))


def test_compare_lists_every_fitting_option_with_speed_and_cost(tmp_path):
    import json
    import subprocess
    import sys

    png = tmp_path / "c.png"
    r = subprocess.run([sys.executable, "-m", "llmodal.cli", "plan", "--env-file", "", "--compare", "--json",
                        "--rps", "2", "--plot", str(png)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    rows = doc["rows"]
    assert {r["gpu"] for r in rows} == {"A100-80GB", "L40S", "H100", "H200", "B200"}
    # No FP8 tensor cores: weight-only FP8 through Marlin, as plain `plan` shows it, never measured.
    a100_fp8 = [r for r in rows if (r["gpu"], r["build"]) == ("A100-80GB", "fp8")]
    assert a100_fp8 and a100_fp8[0]["error_band"]["kernel"] == "fp8-marlin"
    assert a100_fp8[0]["error_band"]["error"] is None and a100_fp8[0]["error_band"]["extrapolated"]
    assert_grouped_cheapest_first(rows)
    assert all(r["saturated_out_tok_s"] > r["single_stream_tok_s"] > 0 for r in rows)
    assert all(r["at_load"]["replicas"] >= 1 and r["at_load"]["rps"] == 2 for r in rows)
    assert all("error_band" in r and "could_be_cheapest" in r for r in rows) and rows[0]["could_be_cheapest"] in (
        True, None)
    a100 = [r for r in rows if r["gpu"] == "A100-80GB"]
    assert a100 and all(r["error_band"]["extrapolated"] for r in a100)
    assert doc["api"]["usd_per_1m_tokens"] > 0 and "read 2026" in doc["api"]["source"]
    assert png.stat().st_size > 10_000  # the picture was drawn
    bad = subprocess.run([sys.executable, "-m", "llmodal.cli", "plan", "--env-file", "", "--compare", "--mix", "1024"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--mix '1024' is invalid" in bad.stderr and "Traceback" not in bad.stderr
    long = subprocess.run([sys.executable, "-m", "llmodal.cli", "plan", "--env-file", "", "--mix", "200000:256"],
                          capture_output=True, text=True, timeout=120)
    assert long.returncode != 0 and "Traceback" not in long.stderr
    assert "--mix 200000:256 is 200,256 tokens a request, more than max_model_len" in " ".join(long.stderr.split())


def test_plan_prints_the_choice_its_reason_and_the_predicted_speed():
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("VLLM_", "LLMODAL_"))}
    r = subprocess.run([sys.executable, "-m", "llmodal.cli", "plan", "--env-file", "", "--gpu", "H200"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "auto chose FP8" in r.stdout and "runner-up AWQ" in r.stdout and "predicted speed" in r.stdout
    assert "error band: ±" in r.stdout and "fp8-w8a8" in r.stdout and "extrapolated" not in r.stdout
    # The guide's A100: Marlin, never measured on that GPU — said beside the number, in text and JSON.
    r = subprocess.run([sys.executable, "-m", "llmodal.cli", "plan", "--env-file", "", "--gpu", "A100-80GB"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert "extrapolated: no measurement of this kernel on this GPU" in " ".join(r.stdout.split()), r.stdout
    r = subprocess.run([sys.executable, "-m", "llmodal.cli", "plan", "--env-file", "", "--gpu", "A100-80GB", "--json"],
                       capture_output=True, text=True, timeout=120, env=env)
    band = __import__("json").loads(r.stdout)["speed"]["error_band"]
    assert band["kernel"] == "marlin" and band["error"] is None and "no measurement" in band["extrapolated"]


def test_the_profiles_sequence_cap_limits_the_predicted_batch():
    import json
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("VLLM_", "LLMODAL_"))}
    out = {}
    for profile in ("balanced", "latency"):
        r = subprocess.run([sys.executable, "-m", "llmodal.cli", "plan", "--env-file", "", "--gpu", "H100", "--json",
                            "--quantization", "awq"], capture_output=True, text=True, timeout=120,
                           env={**env, "LLMODAL_PROFILE": profile})
        out[profile] = json.loads(r.stdout)["speed"]
    assert out["latency"]["max_batch"] <= 32 < out["balanced"]["max_batch"]  # --max-num-seqs 32
    assert out["latency"]["error_band"]["kernel"] == "marlin" and out["balanced"]["error_band"]["kernel"] == "machete"
    assert out["latency"]["saturated_out_tok_s"] < out["balanced"]["saturated_out_tok_s"]


def test_compare_lists_every_tp_that_fits_and_marks_the_unmeasured_ones():
    """Not only the smallest TP of each (GPU, build): a user asking whether TP 2 on an H100 costs less per token than
    TP 1 on an H200 sees both rows; a TP no stored run served says so."""
    import subprocess
    import sys

    from llmodal.plan.speed import MEASURED_TP

    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("VLLM_", "LLMODAL_"))}
    args = [sys.executable, "-m", "llmodal.cli", "plan", "--env-file", "", "--model", L70, "--max-model-len", "8192"]
    r = subprocess.run([*args, "--compare", "--json"], capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["rows"]

    def tps(gpu, build):
        return sorted(x["tp"] for x in rows if (x["gpu"], x["build"]) == (gpu, build))

    # 70.6 B parameters: ~40 GB as AWQ fits one 80 GB card and so every split of it; 141 GB of BF16 needs two.
    assert tps("H100", "awq") == [1, 2, 4, 8] and tps("A100-80GB", "awq") == [1, 2, 4, 8]
    assert tps("H100", "bf16") == [2, 4, 8]
    assert {x["tp"] for x in rows if (x["gpu"], x["build"]) == ("H200", "fp8")} >= {1, 2}
    assert MEASURED_TP == (1,)  # every stored run served TP 1: anything else is unmeasured
    assert all(x["tp_measured"] == (x["tp"] == 1) for x in rows)
    # Each (GPU, build) keeps its rows together, the smallest TP first, even where a larger TP costs less per token
    # (this model's H100 AWQ: TP 2 below TP 1, its KV holding more than twice the sequences).
    h100_awq = {x["tp"]: x["cost_per_1m_tokens"] for x in rows if (x["gpu"], x["build"]) == ("H100", "awq")}
    assert h100_awq[2] < h100_awq[1]  # so a sort by $/1M alone would list TP 2 first
    assert_grouped_cheapest_first(rows)
    text = " ".join(subprocess.run([*args, "--compare"], capture_output=True, text=True, timeout=180,
                                   env=env).stdout.split())
    assert "2 (unmeasured)" in text and "tp_measured false has no multi-GPU run" in text


@pytest.mark.parametrize("env_extra,kernel,cap", [
    ({"LLMODAL_PROFILE": "latency"}, "marlin", 32),  # Marlin, --max-num-seqs 32
    ({"VLLM_MAX_NUM_SEQS": "48"}, "machete", 48),
])
def test_compare_plans_each_row_under_the_profile_and_batching_that_plan_uses(env_extra, kernel, cap):
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("VLLM_", "LLMODAL_"))} | env_extra
    args = [sys.executable, "-m", "llmodal.cli", "plan", "--env-file", "", "--model", L70, "--max-model-len", "8192",
            "--json"]
    cmp = subprocess.run([*args, "--compare"], capture_output=True, text=True, timeout=180, env=env)
    assert cmp.returncode == 0, cmp.stderr
    row = next(r for r in json.loads(cmp.stdout)["rows"] if (r["gpu"], r["build"], r["tp"]) == ("H100", "awq", 1))
    one = subprocess.run([*args, "--gpu", "H100", "--quantization", "awq"], capture_output=True, text=True,
                         timeout=180, env=env)
    speed = json.loads(one.stdout)["speed"]
    assert row["error_band"]["kernel"] == speed["error_band"]["kernel"] == kernel
    assert row["max_batch"] == speed["max_batch"] <= cap
    assert row["saturated_out_tok_s"] == pytest.approx(speed["saturated_out_tok_s"], rel=1e-3)
    text = subprocess.run([*args[:-1], "--compare"], capture_output=True, text=True, timeout=180, env=env).stdout
    flat = " ".join(text.split())
    profile = env_extra.get("LLMODAL_PROFILE", "balanced")
    assert f"profile {profile}" in flat
    if "VLLM_MAX_NUM_SEQS" in env_extra:  # no 70B run had a cap of 48 sequences: no band, and why, in both views
        assert row["error_band"]["error"] is None and speed["error_band"]["error"] is None
        assert "(here: max_num_seqs 48)" in speed["error_band"]["extrapolated"]
    else:  # the latency profile's own limits are what Marlin's runs had: the band, with its worst
        assert row["error_band"]["error"] == speed["error_band"]["error"] is not None and "(worst " in flat


def test_a_smaller_model_or_more_gpus_is_faster_one_stream_and_carries_no_band():
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("VLLM_", "LLMODAL_"))}

    def speed(model: str, gpus: int) -> dict:
        r = subprocess.run([sys.executable, "-m", "llmodal.cli", "plan", "--env-file", "", "--model", model, "--gpu",
                            "H100", "--gpus", str(gpus), "--quantization", "awq", "--json"], capture_output=True,
                           text=True, timeout=120, env=env)
        return json.loads(r.stdout)["speed"]

    l70, l8, tp2 = speed(L70, 1), speed("meta-llama/Llama-3.1-8B-Instruct", 1), speed(L70, 2)
    assert l70["error_band"]["error"] is not None
    # The 8B's GEMM weights are ~1/9 of the 70B's: its dequantisation floor, and its step, far shorter.
    assert l8["single_stream_tok_s"] > 4 * l70["single_stream_tok_s"]
    assert tp2["single_stream_tok_s"] > 1.5 * l70["single_stream_tok_s"]
    for s in (l8, tp2):
        assert s["error_band"]["error"] is None
        assert "no measurement of this model size / tensor-parallel degree" in s["error_band"]["extrapolated"]


def test_the_default_mix_shrinks_to_a_short_context_and_says_so_an_explicit_one_is_refused():
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("VLLM_", "LLMODAL_"))}
    base = [sys.executable, "-m", "llmodal.cli", "plan", "--env-file", "", "--max-model-len", "1000"]
    r = subprocess.run(base, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "mix scaled down to 800:200 to fit max_model_len 1,000" in " ".join(r.stdout.split())
    r = subprocess.run([*base, "--json"], capture_output=True, text=True, timeout=120, env=env)
    assert json.loads(r.stdout)["speed"]["mix"] == [800, 200]
    r = subprocess.run([*base, "--compare", "--json"], capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["mix"] == [800, 200]
    r = subprocess.run([*base, "--mix", "1024:256"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode != 0 and "--mix 1024:256 is 1,280 tokens a request" in " ".join(r.stderr.split())


def test_plan_and_compare_say_where_the_api_server_bounds_the_figure():
    import json
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("VLLM_", "LLMODAL_"))}
    env["COLUMNS"] = "250"

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "llmodal.cli", "plan", "--env-file", "", *args], capture_output=True,
                           text=True, timeout=300, env=env)
        assert r.returncode == 0, r.stderr
        return r.stdout

    small = ("--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "H100")
    text, doc = " ".join(cli(*small).split()), json.loads(cli(*small, "--json"))
    api = doc["speed"]["api_server"]
    assert api["bound"] > 0.1 and api["note"] in text and "fitted on the lent H100 host" in api["note"]
    assert doc["speed"]["error_band"]["error"] is not None  # BF16 8B on an H100: held out by model shape
    guide = json.loads(cli("--gpu", "H100", "--quantization", "awq", "--json"))["speed"]["api_server"]
    assert guide["note"] is None and guide["bound"] < 0.03  # the 70B never comes near it
    rows = json.loads(cli(*small[:2], "--compare", "--json"))["rows"]
    row = next(r for r in rows if (r["gpu"], r["build"], r["tp"]) == ("H100", "bf16", 1))
    assert row["api_server"] == api  # compare and plan say the same
    table = cli(*small[:2], "--compare")
    line = next(x for x in table.splitlines() if "H100" in x and " bf16 " in x and "│              1 │" in x)
    assert f"(API −{api['bound']:.0%})" in line and "not the GPU, bounds that row's" in " ".join(table.split())


def test_readme_says_where_plan_names_the_token_delivery_bound():
    """README's plan row scopes the delivery note; plan also prints it for the guide's 70B on a B200 (FP8,
    TP 1) and on four H100s (BF16, TP 4), so the row must not say 'an 8B or smaller' as if that were all."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `llmodal plan [--gpu"))
    for args in (["--gpu", "B200"], ["--gpu", "H100", "--gpus", "4"]):
        out = CliRunner().invoke(app, ["plan", "--env-file", "", "--json", *args], env={"VLLM_MODEL": L70}).output
        speed = json.loads(out)["speed"]
        assert speed["api_server"]["note"], args  # the 70B: bound by delivery here
    assert "an 8B or smaller at 64+ streams:" not in row
    assert "a 70B on a B200 or over several GPUs" in row


def test_a_tp_the_heads_do_not_divide_says_which_do_and_suggests_fewer_gpus_too():
    from llmodal.plan.planner import suggestions

    qwen, h100 = lookup("Qwen/Qwen2.5-7B-Instruct"), get_gpu("H100")  # 28 heads: 8 GPUs cannot split them
    base = make_plan(qwen, h100, gpu_count=8, tensor_parallel_size=8)
    assert not base.fits and "sizes that divide: 1, 2, 4)" in base.reason and "VLLM_TENSOR_PARALLEL_SIZE" in base.reason
    got = [s.label for s in suggestions(qwen, h100, base)]
    assert got[:3] == ["1× H100", "2× H100 with tensor parallel 2", "4× H100 with tensor parallel 4"], got
    # a plan that fits on its GPUs is never told to use fewer (only a split that fails widens the search)
    l8 = lookup("meta-llama/Llama-3.1-8B-Instruct")
    small = make_plan(l8, h100, gpu_count=2, tensor_parallel_size=2, max_model_len=10**6)
    assert all(not s.label.startswith("1×") for s in suggestions(l8, h100, small))


@pytest.mark.parametrize("columns, widest", [(None, 150), ("100", 100)])
def test_piped_output_is_150_columns_wide_unless_columns_says_otherwise(columns, widest):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | ({"COLUMNS": columns} if columns else {})
    r = subprocess.run([sys.executable, "-m", "llmodal.cli", "plan", "--env-file", "", "--compare"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert max(len(line) for line in r.stdout.splitlines()) == widest  # the table fills the width it is given
