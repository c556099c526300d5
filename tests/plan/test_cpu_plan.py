"""`llmodal serve` without a GPU plans against RAM before starting the CPU engine."""

import os
import subprocess
import sys
import time

from llmodal.plan.cpu_fit import cpu_fit

GUIDE_ENV = "VLLM_MODEL=meta-llama/Llama-3.1-70B-Instruct\nVLLM_MAX_MODEL_LEN=8192\n"


def _serve(tmp_path, *args):
    (tmp_path / ".env").write_text(GUIDE_ENV)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "LLMODAL_FORCE"))}
    env.update(HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "llmodal.cli", "serve", "--no-gpu", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_guides_70b_is_refused_on_this_machine_with_numbers_and_fixes(tmp_path):
    t0 = time.monotonic()
    r = _serve(tmp_path)  # not a dry run: it must refuse before starting anything
    out = r.stdout + r.stderr
    assert r.returncode == 3, out
    assert "131.4 GiB of weights (bf16)" in out and "GiB of RAM" in out
    assert "embedded tiny model" in out and "llmodal deploy" in out and "--force" in out
    assert time.monotonic() - t0 < 60 and "api_server" not in out


def test_force_goes_past_the_refusal(tmp_path):
    r = _serve(tmp_path, "--dry-run", "--force")
    assert r.returncode == 0 and "--model meta-llama/Llama-3.1-70B-Instruct" in r.stdout, r.stdout + r.stderr


def test_a_small_model_fits_and_an_unknown_one_is_not_judged(tiny_model):
    fit = cpu_fit(str(tiny_model), None, 0.2)
    assert fit.fits and fit.weights_gib < 0.1
    assert not cpu_fit(str(tiny_model), None, 0.2, ram_gib=2.0).fits  # 0.4 KV + 2 runtime > 2
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        assert cpu_fit("nobody/unknown-model", None, 0.2) is None
    finally:
        del os.environ["HF_HUB_OFFLINE"]


def test_the_cpu_engine_is_given_its_kv_cache_in_bytes(tiny_model):
    """vLLM 0.32's CPU engine reads --gpu-memory-utilization as the share of NUMA node 0 that must hold
    weights, runtime and KV together (by its formula 0.2 of a 16 GiB laptop leaves no KV beside a 3 GB
    model); llmodal passes the KV size itself, so VLLM_GPU_MEMORY_UTILIZATION means what cpu_fit counts:
    the KV cache's share of RAM."""
    from llmodal.core.config import load_settings
    from llmodal.engine.prepare import prepare
    from llmodal.plan.cpu_fit import _ram_bytes

    ram = _ram_bytes()[0]
    for fraction, prep in ((0.2, prepare(load_settings(None), gpu=False, tiny_model=str(tiny_model))),
                           (0.05, prepare(load_settings(None, gpu_memory_utilization=0.05), gpu=False,
                                          tiny_model=str(tiny_model)))):
        argv = prep.launch.argv
        assert int(argv[argv.index("--kv-cache-memory-bytes") + 1]) == int(fraction * ram), argv
        assert f"KV cache {fraction * ram / 2**30:.1f} GiB ({fraction} × RAM)" in prep.summary, prep.summary
