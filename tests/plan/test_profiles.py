"""What a profile and the batching settings put on vLLM's command line, and how the planner sizes
memory for it (the profile table in plan/profiles.py; the H200 run behind `throughput` is cited there)."""

import pytest

from llmodal.core.config import load_settings
from llmodal.core.errors import ConfigError
from llmodal.engine.prepare import prepare
from llmodal.plan.catalog import lookup
from llmodal.plan.gpus import get_gpu
from llmodal.plan.planner import PlanError, make_plan
from llmodal.plan.profiles import Batching

L70 = "meta-llama/Llama-3.1-70B-Instruct"


def _steps(plan):
    return plan.flags.max_num_batched_tokens, plan.flags.max_num_seqs


@pytest.mark.parametrize(("gpu", "quant", "profile", "want"), [
    ("H200", "fp8", "throughput", (512, 512)),  # the measured goodput set
    ("H100", "fp8", "throughput", (512, 512)),
    ("H200", "fp8", "balanced", (None, None)),  # vLLM's 8,192-token steps: best closed-loop throughput
    ("H100", "awq", "throughput", (None, None)),  # the H100 AWQ run: Machete with long chunks
    ("A100-80GB", "fp8", "throughput", (None, None)),  # no FP8 tensor cores: weight-only FP8
    ("L40S", "fp8", "throughput", (None, None)),  # FP8 tensor cores with ~a third of Hopper's compute: not measured
    ("B200", "fp8", "throughput", (None, None)),
    ("H200", "fp8", "latency", (2048, 32)),
])
def test_short_engine_steps_only_for_an_fp8_build_on_hopper(gpu, quant, profile, want):
    assert _steps(make_plan(lookup(L70), get_gpu(gpu), quantization=quant, profile=profile)) == want


def test_batching_settings_replace_the_profile_and_size_the_activations():
    spec, gpu = lookup(L70), get_gpu("H200")
    default = make_plan(spec, gpu, quantization="fp8")
    short = make_plan(spec, gpu, quantization="fp8", batching=Batching(max_num_batched_tokens=512))
    # 512 tokens a step leave more memory to the KV cache than vLLM's 8,192; a step must hold one
    # token of every sequence, so the sequence limit follows the budget down, said in a note.
    assert short.activation_gib < default.activation_gib and short.kv_tokens > default.kv_tokens
    assert _steps(short) == (512, 512) and any("max_num_seqs lowered to 512" in n for n in short.notes)
    mine = make_plan(spec, gpu, quantization="fp8", profile="throughput", batching=Batching(4096, 64))
    assert _steps(mine) == (4096, 64)
    with pytest.raises(PlanError, match="VLLM_MAX_NUM_BATCHED_TOKENS=512 is below VLLM_MAX_NUM_SEQS=1024"):
        make_plan(spec, gpu, quantization="fp8", batching=Batching(512, 1024))
    # The sequence limit alone: the profile's short steps give way, and a budget it did not choose is named.
    assert _steps(make_plan(spec, gpu, quantization="fp8", profile="throughput", batching=Batching(None, 1024))) \
        == (None, 1024)
    with pytest.raises(PlanError, match="LLMODAL_PROFILE=latency's 2048 tokens per step is below VLLM_MAX_NUM_SEQS=4096"
                                        ".*at least 4096"):
        make_plan(spec, gpu, quantization="fp8", profile="latency", batching=Batching(None, 4096))
    with pytest.raises(PlanError, match="vLLM's default of 2048 tokens per step on A100-80GB"):
        make_plan(spec, get_gpu("A100-80GB"), quantization="awq", batching=Batching(None, 4096))


def test_the_settings_reach_vllms_argv_and_extra_args_may_not_set_them(tmp_path):
    s = load_settings(None, model=L70, gpu="H200", quantization="fp8", server_api_key="k" * 24,
                      max_num_batched_tokens=768)
    argv = prepare(s, gpu=True).launch.argv
    assert argv[argv.index("--max-num-batched-tokens") + 1] == "768"
    assert argv[argv.index("--max-num-seqs") + 1] == "768"
    with pytest.raises(ConfigError, match="set VLLM_MAX_NUM_BATCHED_TOKENS instead"):
        load_settings(None, model=L70, extra_args="--max-num-batched-tokens 512")
    with pytest.raises(ConfigError, match="VLLM_MAX_NUM_SEQS.*from 1 to 4096"):
        load_settings(None, model=L70, max_num_seqs=0)


@pytest.mark.parametrize(("gpu", "quant", "profile", "batching", "top"), [
    ("H200", "fp8", "balanced", Batching(), 512),  # the measured start: 10 sizes, 57.7 s warm
    ("H200", "fp8", "throughput", Batching(), 512),  # 512-token steps: the step's budget is the ceiling too
    ("H200", "fp8", "latency", Batching(), 64),  # 32 sequences: vLLM captures up to twice that
    ("A100-80GB", "awq", "balanced", Batching(), 512),
    ("B200", "fp8", "balanced", Batching(), 1024),  # vLLM's own ceiling on Blackwell
    ("H200", "fp8", "balanced", Batching(max_num_seqs=24), 32),
    ("H200", "fp8", "balanced", Batching(max_num_batched_tokens=256), 256),
])
def test_cuda_graphs_are_captured_for_powers_of_two_up_to_vllms_ceiling(gpu, quant, profile, batching, top):
    g = make_plan(lookup(L70), get_gpu(gpu), quantization=quant, profile=profile, batching=batching).flags
    assert g.cudagraph_capture_sizes == tuple(2 ** k for k in range(top.bit_length()))


def test_the_graph_sizes_reach_vllms_argv_as_separate_numbers_on_a_gpu_only():
    s = load_settings(None, model=L70, gpu="H200", quantization="fp8", server_api_key="k" * 24)
    argv = prepare(s, gpu=True).launch.argv
    at = argv.index("--cudagraph-capture-sizes")
    assert argv[at + 1:at + 11] == ["1", "2", "4", "8", "16", "32", "64", "128", "256", "512"]
    assert argv[at + 11].startswith("--")
    from llmodal.engine.launch import build_launch  # the CPU engine's launch: no profile, no graphs
    assert "--cudagraph-capture-sizes" not in build_launch(s).argv
    with pytest.raises(ConfigError, match="the planner sets it"):
        load_settings(None, model=L70, extra_args="--cudagraph-capture-sizes 1 2 4")
    with pytest.raises(ConfigError, match="the planner sets it"):
        load_settings(None, model=L70, extra_args="--max-cudagraph-capture-size 256")
