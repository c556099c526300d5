"""The speed model on hand-worked cases: one step's time, the scheduler's arithmetic, the kernel vLLM picks,
the band shown beside a prediction, and the held-out error computation that sets that band."""

import json

import pytest

from llmodal.plan.gpus import GPU, get_gpu
from llmodal.plan.model_spec import ModelSpec
from dataclasses import replace

from llmodal.plan.catalog import lookup
from llmodal.plan.speed import MEASURED, Engine, KernelFit, kernel, predict
from llmodal.plan.speed_band import BANDS, band
from llmodal.plan.speed_fit import Fold, Outcome, Row, cross_validate, summarize
from llmodal.plan.speed_sim import Load, simulate

# A made-up GPU and model with round numbers: 1 TB/s, 100 TFLOP/s.
TOY_GPU = GPU("toy", 80, 1.0, 3.6, "test", True, bf16_tflops=100, fp8_tflops=200)
TOY = ModelSpec("toy", layers=1, hidden=64, heads=1, kv_heads=1, head_dim=64, intermediate=64, vocab=10)


def engine(k: str, fit: KernelFit, weight_bytes: int = 10**9, kv_bytes: int = 1000) -> Engine:
    return Engine(TOY, TOY_GPU, k, weight_bytes, kv_bytes, fit=fit, e_mem=0.5)


def test_a_step_is_the_slowest_of_weights_floor_and_compute_plus_its_kv_reads():
    flops_per_token = 2 * TOY.params
    dense = engine("fp8-w8a8", KernelFit(e_comp=0.5))
    # 1e9 B at 1 TB/s × 0.5 = 2 ms; one token's GEMMs ≈ 0: bandwidth-bound.
    assert dense.step_seconds(1, 0, 0) == pytest.approx(2e-3)
    # + 1e6 KV tokens × 1000 B at 0.5 TB/s = 2 ms more.
    assert dense.step_seconds(1, 10**6, 0) == pytest.approx(4e-3)
    # Enough tokens that the GEMMs bind: at FP8's 200 TFLOP/s × 0.5.
    n = int(1e12 / flops_per_token)
    assert dense.step_seconds(n, 0, 0) == pytest.approx(n * flops_per_token / 100e12)
    # A 4-bit kernel's floor (given for the measured 70B's weights) binds over the 2 ms of bytes; its GEMMs
    # run at the 16-bit peak.
    four = Engine(MEASURED, TOY_GPU, "machete", 10**9, 1000, fit=KernelFit(e_comp=0.5, floor_ms=20), e_mem=0.5)
    assert four.step_seconds(1, 0, 0) == pytest.approx(20e-3)
    n = int(10e12 / (2 * MEASURED.params))
    assert four.step_seconds(n, 0, 0) == pytest.approx(n * 2 * MEASURED.params / 50e12)
    # Prompt attention goes at the 16-bit peak's rate for every build, W8A8 included (vLLM quantises the
    # GEMMs only): 1e12 query-key pairs × 4 × 1 layer × 1 head × 64 dims at 100 TFLOP/s × 0.5 = 5.12 s,
    # not FP8's 2.56
    for k in ("fp8-w8a8", "machete"):
        e = engine(k, KernelFit(e_comp=0.5))
        assert e.step_seconds(1, 0, 10**12) - e.step_seconds(1, 0, 0) == pytest.approx(5.12), k


def test_the_4bit_floor_scales_with_the_linear_weights_each_gpu_dequantises():
    fit = KernelFit(e_comp=0.5, floor_ms=20)
    # Half the layers: half the linear weights (by hand: every layer holds the same GEMM weights).
    half = replace(MEASURED, layers=40)
    assert Engine(half, TOY_GPU, "machete", 1, 0, fit=fit).floor_seconds(fit) == pytest.approx(10e-3)
    # TP 2: each GPU dequantises half of the 70B's weights.
    assert Engine(MEASURED, TOY_GPU, "machete", 1, 0, tp=2, fit=fit).floor_seconds(fit) == pytest.approx(10e-3)
    # An 8B (32 layers × 4096 hidden × 14336 MLP) against the 70B (80 × 8192 × 28672), by its GEMM weights:
    # per layer q,o 2·h·h, k,v 2·h·1024, MLP 3·h·i.
    per = lambda h, i: 2 * h * h + 2 * h * 1024 + 3 * h * i  # noqa: E731
    ratio = 32 * per(4096, 14336) / (80 * per(8192, 28672))
    e8 = Engine(lookup("meta-llama/Llama-3.1-8B-Instruct"), TOY_GPU, "machete", 1, 0, fit=fit)
    assert e8.floor_seconds(fit) == pytest.approx(20e-3 * ratio) and ratio < 0.12


def test_the_kernel_vllm_picks_per_architecture_and_profile():
    assert kernel(get_gpu("H100"), "awq") == "machete" and kernel(get_gpu("H200"), "gptq") == "machete"
    assert kernel(get_gpu("H100"), "awq", "MacheteLinearKernel") == "marlin"  # profile latency
    assert kernel(get_gpu("A100-80GB"), "awq") == "marlin" and kernel(get_gpu("L40S"), "awq") == "marlin"
    assert kernel(get_gpu("H200"), "fp8") == "fp8-w8a8" and kernel(get_gpu("L40S"), "fp8") == "fp8-w8a8"
    assert kernel(get_gpu("A100-80GB"), "fp8") == "fp8-marlin"  # no FP8 tensor cores: weight-only
    assert kernel(get_gpu("H100"), "bf16") == "dense-16bit"
    # vLLM 0.32: MarlinLinearKernel.get_min_capability() is 75, so Turing runs Marlin too.
    assert kernel(get_gpu("T4"), "awq") == "marlin"
    # Machete takes group sizes -1, 64 and 128 (machete_utils.query_machete_supported_group_sizes).
    assert kernel(get_gpu("H100"), "awq", group_size=32) == "marlin"
    assert kernel(get_gpu("H100"), "gptq", group_size=64) == kernel(get_gpu("H100"), "awq", group_size=-1) == "machete"
    # VLLM_DISABLED_KERNELS holds exact class names, comma-separated: a name that merely contains it is not it.
    assert kernel(get_gpu("H100"), "awq", "ExllamaLinearKernel,MacheteLinearKernel") == "marlin"
    assert kernel(get_gpu("H100"), "awq", "MacheteLinearKernelV2") == "machete"


def test_a_checkpoints_group_size_is_read_from_its_config():
    from llmodal.plan.model_config import spec_from_config

    cfg = {"num_attention_heads": 8, "hidden_size": 512, "num_hidden_layers": 2, "intermediate_size": 1024,
           "vocab_size": 100, "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 32}}
    spec = spec_from_config(cfg, "toy-awq-g32", "test")
    assert spec.group_size == 32 and band(get_gpu("H100"), "awq", spec=spec).kernel == "marlin"


def test_the_band_says_where_a_prediction_is_an_extrapolation():
    measured = band(get_gpu("H200"), "awq")
    assert measured.kernel == "machete" and measured.error is not None and not measured.extrapolated
    a100 = band(get_gpu("A100-80GB"), "awq")
    assert a100.kernel == "marlin" and a100.error is None
    assert "extrapolated: no measurement of this kernel on this GPU" in a100.text()
    # Marlin (the latency profile) ran on both Hopper GPUs since 2026-12-07; on an L40S (Ada) never
    assert band(get_gpu("H200"), "awq", "MacheteLinearKernel").error == BANDS["Hopper", "4-bit", "marlin", "Llama-3.1-70B"][0]
    assert band(get_gpu("L40S"), "awq").error is None
    assert "never measured" in band(get_gpu("H100"), "int8").text()


def test_a_band_holds_on_the_gpu_and_shape_where_the_kernels_runs_were_held_out():
    l70, l8 = lookup("meta-llama/Llama-3.1-70B-Instruct"), lookup("meta-llama/Llama-3.1-8B-Instruct")
    l3 = lookup("meta-llama/Llama-3.2-3B-Instruct")
    # FP8 W8A8 ran at the 70B on both GPUs (the H100's 2026-12-07d) and at the 8B on the H100 only (2026-12-07b, d):
    # the 8B's band does not carry to the H200
    for gpu, spec in (("H200", l70), ("H100", l70), ("H100", l8)):
        assert band(get_gpu(gpu), "fp8", spec=spec).error is not None, (gpu, spec.name)
    b = band(get_gpu("H200"), "fp8", spec=l8)
    assert b.error is None and "no measurement of this model size" in b.text()
    # ... and only at a load whose running batch asks no more of the KV cache than its runs' did (FP8's at most
    # 0.99×: the H100's 22 streams): its `throughput` plan on an H100 holds 28,554 tokens, 128 streams ask 5.7×
    fp8 = dict(spec=l70, profile="throughput", mix=(1024, 256), batching=(("max_num_seqs", 512),
                                                                          ("max_num_batched_tokens", 512)))
    assert band(get_gpu("H100"), "fp8", kv_demand=0.98, **fp8).error is not None
    b = band(get_gpu("H100"), "fp8", kv_demand=5.74, **fp8)
    assert b.error is None and "streams asking 5.74× the KV cache at once, its runs at most 0.99×" in b.text()
    from typer.testing import CliRunner

    from llmodal.cli import app

    out = CliRunner().invoke(app, ["plan", "--env-file", "", "--gpu", "H100", "--quantization", "fp8"],
                             env={"COLUMNS": "400", "LLMODAL_PROFILE": "throughput"}).output
    assert "no error band (fp8-w8a8)" in out and "the KV cache at once, its runs at most 0.99×" in out, out
    # BF16 ran at the 8B and 3B on the H100 only: a band there, with its borrowed constants said
    for spec, name in ((l8, "Llama-3.1-8B"), (l3, "Llama-3.2-3B")):
        b = band(get_gpu("H100"), "bf16", spec=spec)
        assert b.error == BANDS["Hopper", "bf16", "dense-16bit", name][0] and not b.extrapolated  # its own shape's
        assert b.shape == name and f"at the {name} shape" in b.text()
        assert "never fitted; constants borrowed from fp8-w8a8 (first seen: " in b.text()
    assert "no measurement of this model size" in band(get_gpu("H100"), "bf16", spec=l70).text()
    # what the small shapes' runs did not vary is said beside their band (the 70B's were held out by profile)
    assert "balanced profile, prompts of 256-8,000 tokens, outputs of 16-256 only" in band(
        get_gpu("H100"), "bf16", spec=l8).text()
    assert "balanced profile" not in band(get_gpu("H100"), "awq", spec=l70).text()
    # the 70B's runs were held out by profile, at prompts of 1,024-6,000 and outputs of 256-1,024 tokens: a band for
    # any profile inside that, none for a mix outside it (a decode-only chat, a long prompt with a short answer)
    h100 = get_gpu("H100")
    for profile, mix in (("latency", (1024, 256)), ("throughput", (6000, 1024)), ("balanced", (2000, 512))):
        assert band(h100, "awq", spec=l70, profile=profile, mix=mix).error is not None, (profile, mix)
    for mix in ((8000, 100), (100, 2000), (1024, 128), (7000, 512)):
        b = band(h100, "awq", spec=l70, profile="balanced", mix=mix)
        assert b.error is None and f"(here: {mix[0]:,}:{mix[1]} tokens)" in b.text(), b.text()
        assert "prompts of 1,024-6,000 tokens, outputs of 256-1,024" in b.text()
    # and only for the batch caps and mixes that kernel's own runs had: Marlin's (the latency profile's) 32
    # sequences / 2,048 tokens a step, not Machete's, which all ran vLLM's 1,024 / 8,192
    assert band(h100, "awq", "MacheteLinearKernel", spec=l70, profile="latency", mix=(1024, 256),
                batching=(("max_num_seqs", 32), ("max_num_batched_tokens", 2048))).error is not None
    for batching in ((("max_num_seqs", 4),), (("max_num_batched_tokens", 256),), (("max_num_seqs", 2048),),
                     (("max_num_seqs", 32),), (("max_num_batched_tokens", 512),)):
        b = band(h100, "awq", spec=l70, profile="balanced", mix=(1024, 256), batching=batching)
        assert b.error is None and f"(here: {batching[0][0]} {batching[0][1]})" in b.text(), b.text()
        assert "batch caps of 1,024 sequences and 8,192 tokens a step" in b.text()
    # Marlin and FP8 ran the 70B at 1,024:256 only; FP8 never under the latency profile's 32 sequences
    h200 = get_gpu("H200")
    for b in (band(h100, "awq", "MacheteLinearKernel", spec=l70, profile="latency", mix=(6000, 1024)),
              band(h200, "fp8", spec=l70, profile="balanced", mix=(6000, 1024)),
              band(h200, "fp8", spec=l70, profile="latency", mix=(1024, 256),
                   batching=(("max_num_seqs", 32), ("max_num_batched_tokens", 2048)))):
        assert b.error is None and "(here: " in b.text(), b.text()
    assert band(h200, "fp8", spec=l70, profile="throughput", mix=(1024, 256),
                batching=(("max_num_seqs", 512), ("max_num_batched_tokens", 512))).error is not None
    # Llama-3.1-8B's layers with another vocabulary (Mistral-7B's 32,768): not the shape that was run
    m7 = replace(l8, name="mistral-like", vocab=32768)
    assert band(get_gpu("H100"), "bf16", spec=m7).error is None
    h200 = band(get_gpu("H200"), "bf16", spec=l8)
    assert h200.error is None and "no measurement of this kernel on this GPU (measured on H100)" in h200.text()


def test_plan_says_where_the_api_server_bounds_the_figure():
    l8, l70 = lookup("meta-llama/Llama-3.1-8B-Instruct"), lookup("meta-llama/Llama-3.1-70B-Instruct")
    gpu = get_gpu("H100")
    limits = dict(kv_tokens=473_244, price_per_hour=3.95, max_num_seqs=1024, max_num_batched_tokens=8192)
    eng = Engine(l8, gpu, "dense-16bit", l8.weight_bytes("bf16"), l8.kv_bytes_per_token())
    small = predict(eng, **limits)
    alone = predict(replace(eng, token_s=0.0), **limits)
    # the 8B engine outruns the API server at 128 streams: the figure is the server's, and plan says so
    assert small.saturated_out_tok_s < 0.9 * alone.saturated_out_tok_s and alone.api_bound == 0.0
    assert small.api_bound == pytest.approx(1 - small.saturated_out_tok_s / alone.saturated_out_tok_s)
    assert "token delivery, not the GPU, bounds this figure" in small.api_text()
    assert "fitted on the lent H100 host" in small.api_text()
    assert f"{alone.saturated_out_tok_s:,.0f} out tok/s" in small.api_text()
    big = Engine(l70, gpu, "machete", l70.weight_bytes("awq"), l70.kv_bytes_per_token())
    assert predict(big, **(limits | {"kv_tokens": 106_683})).api_text() == ""  # the 70B never comes near it


def test_a_model_size_or_tp_never_measured_has_no_band():
    l70, l8 = lookup("meta-llama/Llama-3.3-70B-Instruct"), lookup("meta-llama/Llama-3.1-8B-Instruct")
    assert band(get_gpu("H100"), "awq", spec=l70).error is not None  # the measured shape (3.1 and 3.3 alike)
    for b in (band(get_gpu("H100"), "awq", spec=l8), band(get_gpu("H100"), "awq", spec=l70, tp=2)):
        assert b.error is None and b.worst is None and b.kernel == "machete"
        assert "extrapolated: no measurement of this model size / tensor-parallel degree" in b.text()


def const(seconds: float):
    return lambda tokens, kv_read, attn: seconds


def test_one_stream_prefill_then_decode_steps():
    # 4 prompt tokens fit one 8-token step, which samples the first token; 2 decode steps follow.
    r = simulate(Load(4, 3, 1, 1), const(1.0), max_num_seqs=8, max_num_batched_tokens=8, kv_tokens=100)
    assert (r.steps, r.out_tok_s, r.ttft_s) == (3, pytest.approx(1.0), pytest.approx(1.0))
    # A 2-token step budget chunks the prompt into two steps.
    r = simulate(Load(4, 3, 1, 1), const(1.0), max_num_seqs=8, max_num_batched_tokens=2, kv_tokens=100)
    assert (r.steps, r.out_tok_s, r.ttft_s) == (4, pytest.approx(0.75), pytest.approx(2.0))


def test_the_api_server_streams_each_steps_tokens_one_after_another():
    # 2 users, 1-token prompts, 3 tokens out, 1 s steps, the API server 1 s a token. Step 1 (t=1) samples both
    # first tokens: streamed by t=3; step 2 (t=2): its 2 tokens wait, streamed by 5; step 3 (t=3): by 7. Both
    # requests are done for their clients at 7, not 3: 6 tokens in 7 s, TTFT 3 s (1 s without the API server).
    limits = dict(max_num_seqs=8, max_num_batched_tokens=64, kv_tokens=100)
    r = simulate(Load(1, 3, 2, 2), const(1.0), token_s=1.0, **limits)
    assert (r.steps, r.out_tok_s, r.ttft_s) == (3, pytest.approx(6 / 7), pytest.approx(3.0))
    r = simulate(Load(1, 3, 2, 2), const(1.0), **limits)
    assert (r.steps, r.out_tok_s, r.ttft_s) == (3, pytest.approx(2.0), pytest.approx(1.0))
    # the next request reaches the engine when its client has the last token, not when the engine is done: 1 user,
    # 2 requests; steps end at 1, 2 (the first request, streamed by 2, 3), the engine idles until 3, when the
    # second arrives; its steps end at 4, 5 (streamed by 5, 6): 4 tokens in 6 s
    r = simulate(Load(1, 2, 1, 2), const(1.0), token_s=1.0, **limits)
    assert (r.steps, r.out_tok_s) == (4, pytest.approx(4 / 6))


def test_the_first_tokens_fixed_cost_delays_each_request_not_the_engine():
    # first_s 0.5 s: one user, 2 requests of a 1-token prompt and 2 tokens out, 1 s steps. The first request reaches
    # the engine at 0.5 (steps end 1.5, 2.5), the second is sent at 2.5 and arrives at 3.0 (steps end 4, 5): TTFT
    # 0.5 + 1 = 1.5 s each, 4 tokens in 5 s; two users arrive together: one prefill step for both, the engine's
    # work unchanged (the same steps), every TTFT 0.5 s longer.
    limits = dict(max_num_seqs=8, max_num_batched_tokens=64, kv_tokens=100)
    r = simulate(Load(1, 2, 1, 2), const(1.0), first_s=0.5, **limits)
    assert (r.steps, r.ttft_s, r.out_tok_s) == (4, pytest.approx(1.5), pytest.approx(4 / 5))
    base = simulate(Load(1, 2, 2, 2), const(1.0), **limits)
    late = simulate(Load(1, 2, 2, 2), const(1.0), first_s=0.5, **limits)
    assert (late.steps, late.ttft_s) == (base.steps, pytest.approx(base.ttft_s + 0.5))


def test_max_num_seqs_caps_the_batch_and_queues_the_rest():
    # 4 users, 2 sequences at a time, 1-token prompts, 2 tokens out: steps 1-2 serve two requests, steps 3-4
    # the other two (queued since t=0): 8 tokens in 4 s; TTFT 1 s for the first two, 3 s for the others.
    r = simulate(Load(1, 2, 4, 4), const(1.0), max_num_seqs=2, max_num_batched_tokens=64, kv_tokens=100)
    assert (r.steps, r.max_batch, r.out_tok_s, r.ttft_s) == (4, 2, pytest.approx(2.0), pytest.approx(2.0))
    free = simulate(Load(1, 2, 4, 4), const(1.0), max_num_seqs=8, max_num_batched_tokens=64, kv_tokens=100)
    assert (free.steps, free.max_batch) == (2, 4)


def test_a_kv_cache_too_small_for_the_batch_preempts():
    # Two 10-token prompts in a 21-token cache: both prefill, then the second token of each needs room.
    r = simulate(Load(10, 4, 2, 2), const(1.0), max_num_seqs=8, max_num_batched_tokens=64, kv_tokens=21)
    assert r.preemptions >= 1 and r.out_tok_s < 8 / 4


def test_a_repeated_prompt_skips_its_prefill():
    step = lambda tokens, kv_read, attn: tokens * 0.01 + 0.01  # noqa: E731
    fresh = simulate(Load(100, 2, 1, 1), step, max_num_seqs=8, max_num_batched_tokens=512, kv_tokens=1000)
    cached = simulate(Load(100, 2, 1, 1, cached_in=96, cached_requests=1), step, max_num_seqs=8,
                      max_num_batched_tokens=512, kv_tokens=1000)
    assert fresh.ttft_s == pytest.approx(1.01) and cached.ttft_s == pytest.approx(0.05)


def row(label: str, gpu: str, x: float, measured: float, cause: str = "") -> Row:
    # x rides in n_in: the toy model below predicts k × x
    return Row(label, gpu, "awq", "balanced", "tput", int(x), 1, 1, 1, 1, 2, measured, "hand", cause=cause)


def toy_cv(rows, band_=0.15):
    fit = lambda train: sum(r.measured / r.n_in for r in train) / len(train)  # noqa: E731
    folds = [Fold("H200 out", lambda r: r.gpu == "H200"), Fold("H100 out", lambda r: r.gpu == "H100")]
    return cross_validate(rows, folds, fit, lambda r, k: k * r.n_in)


def test_held_out_errors_worked_by_hand():
    a, b, c = row("A", "H100", 1, 10.0), row("B", "H100", 2, 22.0), row("C", "H200", 1, 12.0)
    out = toy_cv([a, b, c])
    # H200 out: k = mean(10/1, 22/2) = 10.5 → C predicted 10.5: −12.5 %. A and B are fitted rows there.
    h200 = {o.row.label: o for o in out if o.fold == "H200 out"}
    assert h200["C"].held_out and h200["C"].predicted == pytest.approx(10.5)
    assert h200["C"].error == pytest.approx(-0.125)
    assert not h200["A"].held_out and not h200["B"].held_out
    # H100 out: k = 12 → A 12 (+20 %), B 24 (+9.09 %).
    h100 = {o.row.label: o for o in out if o.fold == "H100 out"}
    assert h100["A"].error == pytest.approx(0.2) and h100["B"].error == pytest.approx(24 / 22 - 1)
    v = {x.row.label: x for x in summarize(out, 0.15)}
    assert v["A"].status == "miss" and v["A"].worst == pytest.approx(0.2)  # outside ±15 %, no cause: a miss
    assert v["B"].status == "within" and v["C"].status == "within"
    assert v["C"].held_out_errors == {"H200 out": pytest.approx(-0.125)}  # fitted folds do not count


def test_a_row_outside_the_band_is_a_miss_unless_a_measured_cause_is_recorded():
    a = row("A", "H100", 1, 10.0, cause="measured: the prefix cache served half the prompts (file X)")
    out = toy_cv([a, row("B", "H100", 2, 22.0), row("C", "H200", 1, 12.0)])
    assert {x.row.label: x.status for x in summarize(out, 0.15)}["A"] == "explained"
    # The same errors against a ±25 % band: every row within.
    assert all(x.status == "within" for x in summarize(out, 0.25))


def test_a_row_never_held_out_or_never_predicted_is_not_counted_as_validated():
    only_fitted = [Outcome("f", row("A", "H100", 1, 10.0), False, 10.0, 0.0)]
    unpredicted = [Outcome("f", row("B", "H100", 1, 10.0), True, None, None)]
    v = summarize(only_fitted + unpredicted, 0.15)
    assert [x.status for x in v] == ["not predicted", "not predicted"] and all(x.worst is None for x in v)


def test_compare_marks_the_rows_whose_band_reaches_the_cheapest():
    from llmodal.plan.compare import ties

    rows = [{"cost_per_1m_tokens": 0.100, "error_band": {"error": 0.10}},  # up to 0.100 / 0.9 = 0.1111
            {"cost_per_1m_tokens": 0.105, "error_band": {"error": 0.10}},  # down to 0.105 / 1.1 = 0.0955: a tie
            {"cost_per_1m_tokens": 0.130, "error_band": {"error": 0.10}},  # down to 0.1182: not
            {"cost_per_1m_tokens": 0.090, "error_band": {"error": None}}]  # no band: unknown
    ties(rows)
    assert [r["could_be_cheapest"] for r in rows] == [True, True, False, None]


def test_auto_does_not_rank_by_predicted_speed(monkeypatch):
    # auto picks by faithfulness and KV sequences; a speed model off by any band cannot flip it. The patch
    # makes FP8 W8A8 a hundred times slower, and the check below proves the patch reaches the predictions.
    from llmodal.core.config import load_settings
    from llmodal.plan import speed
    from llmodal.plan.compare import speed_of
    from llmodal.plan.planner import plan_for_settings

    def choose():
        out = {}
        for g in ("H200", "A100-80GB"):
            res = plan_for_settings(load_settings(None, gpu=g))
            out[g] = (res.chosen.quantization, speed_of(res.chosen, res.spec).single_stream_tok_s)
        return out

    before = choose()
    slow = speed.Engine.step_seconds
    monkeypatch.setattr(speed.Engine, "step_seconds", lambda self, t, kv, a: (
        100 if self.kernel == "fp8-w8a8" else 1) * slow(self, t, kv, a))
    after = choose()
    assert after["H200"][1] < before["H200"][1] / 50  # the predicted speed moved by far more than any band
    assert {g: q for g, (q, _) in before.items()} == {g: q for g, (q, _) in after.items()} == {
        "H200": "fp8", "A100-80GB": "awq"}


@pytest.mark.parametrize("load,limits", [
    (Load(1024, 256, 128, 256), dict(max_num_seqs=1024, max_num_batched_tokens=8192, kv_tokens=106_683)),  # KV-bound
    (Load(1024, 256, 64, 128), dict(max_num_seqs=32, max_num_batched_tokens=2048, kv_tokens=114_192)),  # seq cap
    (Load(1024, 256, 128, 256, cached_in=1008, cached_requests=64),
     dict(max_num_seqs=512, max_num_batched_tokens=512, kv_tokens=405_968)),  # small steps, repeated prompts
    (Load(6000, 1024, 16, 16), dict(max_num_seqs=1024, max_num_batched_tokens=8192, kv_tokens=106_683)),  # preempts
])
@pytest.mark.parametrize("token_s", [0.0, 194e-6, 2e-3])  # none, the fitted one, one that binds the 70B too
def test_summing_plain_decode_steps_in_one_go_changes_nothing(load, limits, token_s):
    step = engine("machete", KernelFit(e_comp=0.8, floor_ms=20), weight_bytes=40 * 10**9, kv_bytes=327_680)
    slow = simulate(load, step.step_seconds, fast=False, token_s=token_s, **limits)
    fast = simulate(load, step.step_seconds, token_s=token_s, **limits)
    assert fast.out_tok_s == pytest.approx(slow.out_tok_s, rel=1e-12)
    assert fast.ttft_s == pytest.approx(slow.ttft_s, rel=1e-12)
    assert (fast.preemptions, fast.max_batch) == (slow.preemptions, slow.max_batch) and fast.steps == slow.steps


def test_a_request_the_kv_cache_cannot_hold_is_refused():
    with pytest.raises(RuntimeError, match="cannot hold one request"):
        simulate(Load(10, 2, 1, 1), const(1.0), max_num_seqs=8, max_num_batched_tokens=4, kv_tokens=8)


@pytest.mark.parametrize("env, args, here", [
    ({"LLMODAL_PROFILE": "latency"}, [], "latency profile"),
    ({"LLMODAL_PROFILE": "throughput"}, [], "throughput profile"),
    ({"VLLM_MAX_NUM_SEQS": "8"}, [], "max_num_seqs 8"),
    ({}, ["--mix", "2048:1024"], "2,048:1024 tokens"),
])
def test_a_small_shapes_band_holds_only_for_the_setup_its_runs_had(env, args, here):
    """The 8B's runs were balanced, prompts of 256-8,000 tokens, outputs of 16-256: a prediction under another
    profile, batch cap or a mix outside that is not what they held out, so plan, --json and --compare give no band
    there and say what differs."""
    from typer.testing import CliRunner

    from llmodal.cli import app

    def run(*a, **e):
        r = CliRunner().invoke(app, ["plan", "--env-file", "", "--gpu", "H100", "--quantization", "none", *a],
                               env={"VLLM_MODEL": "meta-llama/Llama-3.1-8B-Instruct", "COLUMNS": "250"} | e)
        assert r.exit_code == 0, r.output
        return r.output

    inside = json.loads(run("--json"))["speed"]["error_band"]
    assert inside["error"] is not None and inside["shape"] == "Llama-3.1-8B"  # the setup the runs had
    b = json.loads(run("--json", *args, **env))["speed"]["error_band"]
    assert b["error"] is None and b["worst"] is None and b["shape"] is None, b
    assert here in b["extrapolated"] and "balanced profile, prompts of 256-8,000 tokens, outputs of 16-256" in \
        b["extrapolated"], b
    text = " ".join(run(*args, **env).split())
    assert "error band: no error band" in text and here in text and "±9%" not in text
    rows = json.loads(run("--compare", "--json", *args, **env))["rows"]
    h100 = next(r for r in rows if (r["gpu"], r["build"], r["tp"]) == ("H100", "bf16", 1))
    assert h100["error_band"]["error"] is None and h100["could_be_cheapest"] is None


def test_a_gptq_build_shows_machetes_band_and_says_no_gptq_checkpoint_ran():
    # every stored 4-bit run served an AWQ checkpoint; a GPTQ one goes through the same Machete kernel on Hopper,
    # so it gets that band, said to be the AWQ runs', while the AWQ build's band says nothing of the kind
    gptq, awq = band(get_gpu("H100"), "gptq"), band(get_gpu("H100"), "awq")
    assert gptq.kernel == awq.kernel == "machete" and gptq.error == awq.error is not None
    assert "no GPTQ checkpoint was run: the band is the AWQ runs' through the same machete kernel" in gptq.text()
    assert "GPTQ" not in awq.text() and "no GPTQ" not in band(get_gpu("A100-80GB"), "gptq").text()  # no band there
