"""The speed model's arithmetic on hand-computed cases, and the measured rows it was fitted to."""

import pytest

from llmodal.plan.catalog import lookup
from llmodal.plan.model_spec import ModelSpec
from llmodal.plan.gpus import GPU, get_gpu
from llmodal.plan.speed import predict, prefill_seconds, step_seconds

# A made-up GPU and model with round numbers: 1 TB/s, 100 TFLOP/s, 1B parameters.
TOY_GPU = GPU("toy", 80, 1.0, 3.6, "test", True, bf16_tflops=100, fp8_tflops=200)
TOY = ModelSpec("toy", layers=1, hidden=64, heads=1, kv_heads=1, head_dim=64, intermediate=64, vocab=10)


def test_decode_step_is_the_slower_of_bytes_and_flops():
    # bf16: E_BW 0.71 → 1e9 B / (1e12 × 0.71) = 1.408 ms; FLOPs 2·P·1 / (100e12 × 0.5) ≈ 0 → memory-bound.
    t = step_seconds(TOY, TOY_GPU, "bf16", weight_bytes=10**9, kv_bytes_per_token=0, tp=1, batch=1, context=0)
    assert t == pytest.approx(1e9 / (1e12 * 0.71))
    # 2 GPUs: half the bytes, plus one all-reduce term of 0.15 ms.
    t2 = step_seconds(TOY, TOY_GPU, "bf16", weight_bytes=10**9, kv_bytes_per_token=0, tp=2, batch=1, context=0)
    assert t2 == pytest.approx(0.5e9 / (1e12 * 0.71) + 0.15e-3)


def test_prefill_uses_the_formats_peak():
    n = 100
    flops = n * (2 * TOY.params + 2 * 1 * 1 * 64 * n)
    assert prefill_seconds(TOY, TOY_GPU, "fp8", 1, n) == pytest.approx(flops / (200e12 * 0.54))
    assert prefill_seconds(TOY, TOY_GPU, "awq", 1, n) == pytest.approx(flops / (100e12 * 0.84))


def test_one_stream_has_no_overlap_and_cost_follows_throughput():
    s = predict(TOY, TOY_GPU, "bf16", weight_bytes=10**9, kv_bytes_per_token=0, tp=1, kv_tokens=10**6,
                price_per_hour=3.6, mix=(100, 10), concurrency=1)
    step = 1e9 / (1e12 * 0.71)
    per_request = prefill_seconds(TOY, TOY_GPU, "bf16", 1, 100) + 10 * step
    assert s.saturated_out_tok_s == pytest.approx(10 / per_request)
    assert s.cost_per_1m_tokens == pytest.approx(3.6 / 3600 / (s.saturated_out_tok_s * 11) * 1e6)


# (GPU, build, weights GiB, KV tokens, concurrency, measured out tok/s, file)
MEASURED = [
    ("H200", "fp8", 67.7, 195022, 1, 45.8, "shared/measurements/h200-llama70b-fp8.md"),
    ("H200", "fp8", 67.7, 195022, 64, 1119.1, "shared/measurements/h200-llama70b-fp8.md"),
    ("H200", "fp8", 67.7, 195022, 128, 1400.4, "shared/measurements/h200-llama70b-fp8.md"),
    ("H100", "awq", 37.88, 114384, 1, 43.45, "shared/measurements/h100-llama70b-awq.md"),
    ("H100", "awq", 37.88, 114384, 8, 293.1, "shared/measurements/h100-llama70b-awq.md"),
    ("H100", "awq", 37.88, 114384, 32, 743.9, "shared/measurements/h100-llama70b-awq.md"),
    ("H100", "awq", 37.88, 114384, 64, 831.1, "shared/measurements/h100-llama70b-awq.md"),
]


@pytest.mark.parametrize("gpu,build,wgib,kv,c,measured,src", MEASURED)
def test_predictions_within_15_percent_of_the_measured_rows(gpu, build, wgib, kv, c, measured, src):
    spec = lookup("meta-llama/Llama-3.1-70B-Instruct", None)
    s = predict(spec, get_gpu(gpu), build, weight_bytes=int(wgib * 1024**3), kv_bytes_per_token=spec.kv_bytes_per_token(2),
                tp=1, kv_tokens=kv, price_per_hour=1.0, concurrency=c)
    err = s.saturated_out_tok_s / measured - 1
    print(f"RECORD speed | {gpu} {build} c={c} | predicted {s.saturated_out_tok_s:.1f} | measured {measured} | "
          f"{err:+.1%} | {src}")
    assert abs(err) <= 0.15


def test_auto_picks_fp8_on_an_h200_and_awq_on_the_guides_a100():
    from llmodal.core.config import load_settings
    from llmodal.plan.planner import plan_for_settings

    h200 = plan_for_settings(load_settings(None, gpu="H200")).chosen
    a100 = plan_for_settings(load_settings(None)).chosen
    assert h200.quantization == "fp8" and any("chose FP8" in n and "runner-up AWQ" in n for n in h200.notes)
    assert a100.quantization == "awq" and any("FP8 skipped" in n for n in a100.notes)
    explicit = plan_for_settings(load_settings(None, gpu="H200", quantization="awq")).chosen
    assert explicit.quantization == "awq"  # set explicitly, it wins
