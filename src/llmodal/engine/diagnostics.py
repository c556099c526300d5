"""Turn vLLM's startup output into one line a user can act on."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnosis:
    kind: str
    message: str


# (kind, pattern, advice). First match wins; order matters: specific before generic.
_RULES: list[tuple[str, re.Pattern[str], str]] = [
    ("port_in_use", re.compile(r"address already in use|Errno 98", re.I),
     "the port is already in use: stop the other server or pass --port"),
    ("gated_model", re.compile(r"GatedRepoError|Access to model .* is restricted|awaiting a review|403 Client Error", re.I),
     "the model is gated: accept its license on huggingface.co with the account of HUGGING_FACE_HUB_TOKEN"),
    ("hf_token", re.compile(r"401 Client Error|Invalid user token|Invalid credentials|Unauthorized for url", re.I),
     "the Hugging Face token is missing or invalid: set HUGGING_FACE_HUB_TOKEN (in the vllm-secrets secret on Modal)"),
    # vLLM's CPU engine checks the KV size llmodal passes against one NUMA node's free memory:
    # GPU advice (a 4-bit checkpoint) does not help there, a smaller share of RAM does.
    ("host_memory", re.compile(r"Available memory on node \d+ .*less than requested memory for kv", re.I),
     "the CPU engine's KV cache (VLLM_GPU_MEMORY_UTILIZATION × RAM) does not fit this NUMA node's free memory: "
     "lower VLLM_GPU_MEMORY_UTILIZATION or VLLM_MAX_MODEL_LEN, or free memory"),
    ("out_of_memory", re.compile(r"CUDA out of memory|OutOfMemoryError|No available memory for the cache blocks|"
                                 r"larger than the maximum number of tokens that can be stored in KV cache|"
                                 r"KV cache is needed, which is larger than", re.I),
     "out of memory: run `llmodal plan` and lower VLLM_MAX_MODEL_LEN or use its suggested 4-bit checkpoint"),
    ("unsupported_quantization", re.compile(r"Unknown quantization method|quantization .*not supported|"
                                            r"Cannot find the config file for (awq|gptq|fp8|\w+)|"
                                            r"is not supported for the current GPU|Quantization method specified in "
                                            r"the model config .* does not match", re.I),
     "the quantization is not supported here: pick another VLLM_QUANTIZATION or a checkpoint for this GPU"),
    ("bad_model", re.compile(r"Invalid repository ID or local directory|HFValidationError|Repo id must|"
                             r"does not appear to have a file named|No such file or directory.*config\.json|"
                             r"RepositoryNotFoundError|is not a local folder and is not a valid model identifier|"
                             r"Unrecognized model in|Can't load the configuration|"
                             r"[Ii]nvalid model path|ValueError: No supported config format found", re.I),
     "the model could not be loaded: check VLLM_MODEL (a Hugging Face id or a directory with config.json)"),
]
_ERROR_LINE = re.compile(r"(\w+(Error|Exception)): (.+)")
# Wrappers that point elsewhere for their cause: the line they point at says more.
_WRAPPER = re.compile(r"See root cause above|See stack trace \(above\)|Engine core initialization failed", re.I)


def _clean(line: str) -> str:
    line = re.sub(r"^\(\w+ pid=\d+\)\s*", "", line.strip())
    line = re.sub(r"^(ERROR|WARNING|INFO) \d\d-\d\d \d\d:\d\d:\d\d \[[^\]]+\]\s*", "", line)
    return line[:300]


def diagnose(log_text: str) -> Diagnosis:
    """Classify a failed start. Always returns one line, never the whole log."""
    # vLLM's WARNING lines can quote errors it merely fears ("… like `OSError: [Errno 24] Too many
    # open files`. Consider increasing with ulimit -n"): they are never the cause.
    lines = [ln for ln in log_text.splitlines() if ln.strip() and not re.search(r"\bWARNING\b", ln)]
    for kind, pattern, advice in _RULES:
        for ln in reversed(lines):
            if pattern.search(ln):
                return Diagnosis(kind, f"{advice} (vLLM: {_clean(ln)})")
    for ln in reversed(lines):
        m = _ERROR_LINE.search(ln)
        if m and "Traceback" not in ln and not _WRAPPER.search(ln):
            return Diagnosis("engine_error", f"vLLM failed: {_clean(m.group(0))}")
    for ln in reversed(lines):
        if "EngineDeadError" in ln or _WRAPPER.search(ln):
            return Diagnosis("engine_died", f"the engine process died (killed, or out of host memory): {_clean(ln)}")
    tail = _clean(lines[-1]) if lines else "no output"
    return Diagnosis("unknown", f"vLLM exited during startup; last line: {tail}")
