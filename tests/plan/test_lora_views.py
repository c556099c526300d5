"""`plan --compare` with adapters charges every (GPU, build, TP) the LoRA memory `plan` charges it, and says so;
`plan`, `--compare` and `--json` give beside each speed prediction the speed with adapters, and where it was measured."""

import json

import pytest
from typer.testing import CliRunner

from llmodal.cli import app
from llmodal.core.config import load_settings
from llmodal.plan.planner import plan_for_settings

BASE70 = "meta-llama/Llama-3.1-70B-Instruct"
EXTRAPOLATED = "extrapolated: measured on an H100 with an 8B BF16 base at rank 16"


@pytest.fixture
def adapters(tmp_path):
    out = []
    for name, r in (("a", 16), ("b", 64)):
        d = tmp_path / name
        d.mkdir()
        (d / "adapter_config.json").write_text(json.dumps({
            "peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "target_modules": ["q_proj", "v_proj"],
            "base_model_name_or_path": BASE70}))
        out.append(f"{name}={d}")
    return ",".join(out)


def _plan(*args, env=None):
    r = CliRunner().invoke(app, ["plan", "--env-file", "", *args], env=env or {})
    assert r.exit_code in (0, 3), r.output
    return r.output


def test_every_compared_row_charges_what_plan_charges(adapters):
    doc = json.loads(_plan("--compare", "--json", env={"VLLM_LORA_MODULES": adapters}))
    plain = {(r["gpu"], r["build"], r["tp"]): r for r in json.loads(_plan("--compare", "--json"))["rows"]}
    assert (doc["lora"]["adapters"], doc["lora"]["max_loras"], doc["lora"]["max_rank"]) == (2, 2, 64)
    assert doc["rows"] and "before the KV cache" in doc["lora"]["memory"]
    settings = load_settings(None, lora_modules=adapters)
    for row in doc["rows"]:
        # `plan` for this very (GPU, build, TP): the planner is the one source of both numbers
        p = plan_for_settings(settings, gpu=row["gpu"], gpu_count=row["tp"], tensor_parallel_size=row["tp"],
                              quantization="none" if row["build"] == "bf16" else row["build"]).chosen
        assert p.lora_gib_per_gpu > 0 and row["lora_gib_per_gpu"] == round(p.lora_gib_per_gpu, 3), row
        assert row["kv_sequences"] == round(p.full_length_sequences, 1), row
        assert row["kv_sequences"] < plain[(row["gpu"], row["build"], row["tp"])]["kv_sequences"]
    # and the default plan's own row, as `plan --json` prints it
    shown = json.loads(_plan("--json", env={"VLLM_LORA_MODULES": adapters}))["plan"]
    row = next(r for r in doc["rows"] if (r["gpu"], r["build"], r["tp"]) ==
               (shown["gpu"], shown["quantization"], shown["tensor_parallel_size"]))
    assert row["lora_gib_per_gpu"] == round(shown["lora_gib_per_gpu"], 3)


def test_the_compare_table_shows_the_charge_and_says_so(adapters):
    out = " ".join(_plan("--compare", env={"VLLM_LORA_MODULES": adapters, "COLUMNS": "250"}).split())
    assert "LoRA GiB" in out
    assert "LoRA adapters: 2 served, 2 resident at rank ≤ 64: each plan takes vLLM's LoRA slots" in out
    assert "with LoRA out tok/s, $/1M" in out and EXTRAPOLATED.removeprefix("extrapolated: ") in out
    assert "rows stay ordered by the base's $/1M" in out
    doc = json.loads(_plan("--compare", "--json", env={"VLLM_LORA_MODULES": adapters}))
    for r in doc["rows"]:  # each row's cost with adapters is in its cell, as --json has it
        assert f"${r['lora_speed']['cost_per_1m_tokens']:.3f}/1M" in out, r
        assert r["lora_speed"]["cost_per_1m_tokens"] > r["cost_per_1m_tokens"]  # slower: each token costs more
    assert "LoRA" not in _plan("--compare", env={"COLUMNS": "250"})  # no adapters, no LoRA column or line


def test_plan_gives_the_speed_with_adapters_beside_the_prediction_and_says_it_is_extrapolated(adapters):
    # the 70B at rank 64 on the default GPU: nothing of it was measured with adapters
    out = " ".join(_plan(env={"VLLM_LORA_MODULES": adapters}).split())
    prediction = out[out.index("predicted speed"):out.index("mean TTFT at")]  # the prediction's own lines
    assert "with LoRA adapters in use:" in prediction and EXTRAPOLATED in prediction, prediction
    assert "LoRA cost band" not in prediction  # no band outside what was measured
    doc = json.loads(_plan("--json", env={"VLLM_LORA_MODULES": adapters}))
    w = doc["speed"]["with_lora"]
    assert w["extrapolated"].startswith(EXTRAPOLATED) and "rank 64" in w["extrapolated"] and w["band"] is None
    assert 0 < w["saturated_out_tok_s"] < doc["speed"]["saturated_out_tok_s"]
    assert "with LoRA" not in _plan()
    assert json.loads(_plan("--json"))["lora"] is None and "with_lora" not in json.loads(_plan("--json"))["speed"]


def test_the_speed_with_adapters_says_where_the_api_server_bounds_it(tmp_path):
    # an 8B BF16 base with rank-16 adapters on an H100: at 128 streams vLLM's token delivery bounds the figure with
    # adapters as it bounds the base's; text, --compare and --json say so for both
    mods = []
    for name in "abcd":
        d = tmp_path / name
        d.mkdir()
        (d / "adapter_config.json").write_text(json.dumps({
            "peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"],
            "base_model_name_or_path": "meta-llama/Llama-3.1-8B-Instruct"}))
        mods.append(f"{name}={d}")
    env = {"VLLM_LORA_MODULES": ",".join(mods), "COLUMNS": "250"}
    args = ("--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "H100", "--quantization", "none")
    api = json.loads(_plan(*args, "--json", env=env))["speed"]["with_lora"]["api_server"]
    assert api["bound"] > 0.1 and api["note"]
    out = " ".join(_plan(*args, env=env).split())
    lora_line = out[out.index("with LoRA adapters in use:"):out.index("mean TTFT at")]
    assert " ".join(api["note"].split()) in lora_line, lora_line
    rows = json.loads(_plan(*args[:2], "--compare", "--json", env=env))["rows"]
    row = next(r for r in rows if (r["gpu"], r["build"], r["tp"]) == ("H100", "bf16", 1))
    assert row["lora_speed"]["api_server"] == api  # compare and plan say the same
    lines = _plan(*args[:2], "--compare", env=env).splitlines()
    head = next(i for i, x in enumerate(lines) if "with LoRA" in x)
    col = next(i for i, c in enumerate(lines[head].split("┃")) if "with LoRA" in c)  # the header's ┃, the rows' │
    first = next(i for i, x in enumerate(lines) if "│      H100 │  bf16 │            1 │" in x)
    rest = next(i for i in range(first + 1, len(lines)) if lines[i].split("│")[1].strip() or "─" in lines[i])
    cell = " ".join(x.split("│")[col].strip() for x in lines[first:rest])  # the cell, its wrapped lines joined
    assert f"${row['lora_speed']['cost_per_1m_tokens']:.3f}/1M (API −{api['bound']:.0%})" in cell, cell
