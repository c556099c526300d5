"""Every default llmodal uses, in one place.

The guide's names are kept verbatim: app ``vllm-llama70b``, function ``serve-vllm``,
secret ``vllm-secrets``, 8192-token context, 0.95 memory utilization, 15-minute idle
scale-down, 24-hour timeout.
"""

from __future__ import annotations

DEFAULT_MODEL = "meta-llama/Llama-3.1-70B-Instruct"
DEFAULT_MAX_MODEL_LEN = 8192
DEFAULT_GPU_MEMORY_UTILIZATION = 0.95
DEFAULT_QUANTIZATION = "auto"
DEFAULT_DTYPE = "auto"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000

DEFAULT_GPU = "A100-80GB"
# Modal's GPU names llmodal plans for (plan/gpus.py holds their facts, one row each) and the spellings
# accepted for them; the settings validate against these without reaching into the planner.
GPU_NAMES = ("T4", "L4", "A10G", "L40S", "A100-40GB", "A100-80GB", "H100", "H200", "B200")
GPU_ALIASES = {"A100": "A100-40GB", "A100-80G": "A100-80GB", "A100-40G": "A100-40GB", "H100-80GB": "H100"}
# VLLM_QUANTIZATION's values: auto (the planner's choice), none (as the checkpoint is), or a format.
QUANTIZATIONS = ("auto", "none", "fp8", "int8", "awq", "gptq", "w4a16")
DEFAULT_GPU_COUNT = 1

APP_NAME = "vllm-llama70b"
WEB_LABEL = "serve-vllm"
SECRET_NAME = "vllm-secrets"
HF_CACHE_VOLUME = "llmodal-hf-cache"
VLLM_CACHE_VOLUME = "llmodal-vllm-cache"

SCALEDOWN_WINDOW_S = 15 * 60
TIMEOUT_S = 24 * 60 * 60
# A 70B cold start measured 201 s on an H100 with dummy weights and vLLM 0.32.0
# (benchmarks/results/h100-vllm0.32/cold.json); real weights add their Volume read, so the web
# server gets 20 minutes to come up.
STARTUP_TIMEOUT_S = 20 * 60
MAX_CONCURRENT_INPUTS = 64

# Largest request body the guard lets through to vLLM (413 above it).
MAX_BODY_BYTES = 16 * 1024 * 1024

# A shorter server key starts with a warning (the guide's own example, `your-secret-key`, is 15).
MIN_KEY_CHARS = 16

# Paths that stay open without a key: the probes a load balancer or Modal uses.
OPEN_PATHS = ("/health", "/ping")

# The guide's test request.
GUIDE_PROMPT = "你好，请介绍一下你自己"
GUIDE_TEMPERATURE = 0.7
GUIDE_MAX_TOKENS = 512

# How long `llmodal serve` waits for /health before calling the start a failure.
LOCAL_STARTUP_TIMEOUT_S = 900.0
# Client-side cold-start budget: Modal's 70B cold start is minutes, not seconds.
CLIENT_COLD_START_TIMEOUT_S = 600.0


def canonical_gpu(name: str) -> str | None:
    """Modal's spelling of a GPU name (case-insensitive, aliases resolved), or None if unknown."""
    key = name.strip().upper()
    key = GPU_ALIASES.get(key, key)
    return next((g for g in GPU_NAMES if g.upper() == key), None)


def modal_url(app_name: str, workspace: str) -> str:
    """The guide's endpoint: the gateway's web label on Modal (``WS--APP-serve-vllm.modal.run``)."""
    return f"https://{workspace}--{app_name}-{WEB_LABEL}.modal.run/v1"
