"""One typed config, read from the environment and ``.env``, keeping the guide's names.

Every field below is one row of the table users configure llmodal with; the vLLM command
line (``vllm_args``), the local runner, the Modal app and the docs are all built from it.
A bad value fails here, before anything starts, with a message naming the variable, the
value and the allowed range.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmodal.core import constants as C
from llmodal.core import lora
from llmodal.core import vllm_flags as flags
from llmodal.core.constants import GPU_NAMES, QUANTIZATIONS, canonical_gpu
from llmodal.core.errors import ConfigError


_SAID = "said: "  # a model-level error that carries its own complete message


def _f(default: Any, env: str, allowed: str, **kw: Any) -> Any:
    return Field(default, validation_alias=env, json_schema_extra={"env": env, "allowed": allowed}, **kw)


class Settings(BaseSettings):
    """llmodal's settings. Each field's env variable and allowed values are part of its declaration."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      populate_by_name=True)

    # --- the model and the engine (vLLM flags) ---
    model: str = _f(C.DEFAULT_MODEL, "VLLM_MODEL", "a Hugging Face repo id or a local model directory",
                    min_length=1)
    model_revision: str | None = _f(None, "VLLM_MODEL_REVISION", "a branch, tag or commit of the model repo")
    checkpoint: str | None = _f(None, "VLLM_CHECKPOINT",
                                "a repo id or directory of a quantized build of VLLM_MODEL to serve under "
                                "VLLM_MODEL's name (default: the planner's choice)", min_length=1)
    max_model_len: int = _f(C.DEFAULT_MAX_MODEL_LEN, "VLLM_MAX_MODEL_LEN", "an integer from 16 to 1048576",
                            ge=16, le=1 << 20)
    gpu_memory_utilization: float = _f(C.DEFAULT_GPU_MEMORY_UTILIZATION, "VLLM_GPU_MEMORY_UTILIZATION",
                                       "a number greater than 0 and at most 1", gt=0, le=1)
    tensor_parallel_size: int | None = _f(None, "VLLM_TENSOR_PARALLEL_SIZE",
                                          "an integer from 1 to 8, at most LLMODAL_GPU_COUNT (default: the GPU count)",
                                          ge=1, le=8)
    quantization: str = _f(C.DEFAULT_QUANTIZATION, "VLLM_QUANTIZATION", "one of " + ", ".join(QUANTIZATIONS))
    dtype: str = _f(C.DEFAULT_DTYPE, "VLLM_DTYPE", "one of auto, bfloat16, float16, float32")
    server_api_key: SecretStr | None = _f(None, "VLLM_SERVER_API_KEY",
                                          "one Bearer key, or several separated by commas (rotation): no whitespace, "
                                          "not empty")
    lora_modules: str = _f("", "VLLM_LORA_MODULES", "adapters served beside the base: " + lora.FORMAT)
    max_loras: int | None = _f(None, "VLLM_MAX_LORAS",
                               "an integer from 1 to 256, at most the adapters in VLLM_LORA_MODULES: adapters "
                               "resident on the GPU at once (default: all of them)", ge=1, le=256)
    max_lora_rank: int | None = _f(None, "VLLM_MAX_LORA_RANK",
                                   "one of " + ", ".join(map(str, lora.RANKS)) + ", at least every adapter's rank "
                                   "(default: the highest adapter rank, rounded up to one of these)")
    lora_any_base: bool = _f(False, "LLMODAL_LORA_ANY_BASE",
                             "true or false: serve adapters whose adapter_config.json names another base model "
                             "than VLLM_MODEL")
    tool_call_parser: str = _f("auto", "VLLM_TOOL_CALL_PARSER",
                               "auto (the model family's parser), none, or a parser name vLLM offers")
    tool_strict_level: str = _f("parameter", "VLLM_TOOL_STRICT_LEVEL",
                                "one of auto, function, parameter (how strictly vLLM constrains tool calls)",
                                pattern=r"^(auto|function|parameter)$")
    reasoning_parser: str = _f("none", "VLLM_REASONING_PARSER", "none or a reasoning parser name vLLM offers")
    compact_json: bool = _f(True, "LLMODAL_COMPACT_JSON",
                            "true or false: constrained JSON (tools, response_format) has no free whitespace")
    stream_usage: bool = _f(True, "LLMODAL_STREAM_USAGE", "true or false: every stream ends with token usage")
    extra_args: str = _f("", "VLLM_EXTRA_ARGS", "extra vLLM flags, shell-quoted, none that llmodal sets itself")
    host: str = _f(C.DEFAULT_HOST, "VLLM_HOST", "an address to bind, e.g. 127.0.0.1 or 0.0.0.0")
    port: int = _f(C.DEFAULT_PORT, "VLLM_PORT", "an integer from 1 to 65535", ge=1, le=65535)
    drain_timeout_s: int = _f(20, "LLMODAL_DRAIN_TIMEOUT",
                              "seconds from 0 to 600 that in-flight requests may finish on SIGTERM "
                              "(on Modal less: `llmodal deploy` refuses a drain its exit grace would cut)",
                              ge=0, le=600)
    metrics_public: bool = _f(False, "LLMODAL_METRICS_PUBLIC", "true or false: serve /metrics without a key")
    max_body_bytes: int = _f(C.MAX_BODY_BYTES, "LLMODAL_MAX_BODY_BYTES", "bytes from 1024 to 1073741824",
                             ge=1024, le=1 << 30)
    max_n: int | None = _f(None, "LLMODAL_MAX_N",
                           "an integer from 1 to 256: most sequences (n) one request may ask for "
                           "(default: half the full-length sequences the plan's KV cache holds, at least 1; 8 on the CPU)",
                           ge=1, le=256)
    min_sequences: int = _f(16, "LLMODAL_MIN_SEQUENCES",
                            "an integer from 1 to 1024: full-length sequences a build must hold for "
                            "VLLM_QUANTIZATION=auto to prefer it over a smaller one", ge=1, le=1024)
    queue_limit: int | None = _f(None, "LLMODAL_QUEUE_LIMIT",
                                 "an integer from 1 to 100000: inference requests in flight (running + queued) per "
                                 "server before it answers 429 with Retry-After (default: from the plan, twice the "
                                 "quarter-context requests its KV cache holds; 64 on the CPU engine)", ge=1, le=100000)
    profile: str = _f("balanced", "LLMODAL_PROFILE",
                      "latency, balanced or throughput (kernel, batching, KV dtype, Modal concurrency)",
                      pattern=r"^(latency|balanced|throughput)$")
    max_num_batched_tokens: int | None = _f(
        None, "VLLM_MAX_NUM_BATCHED_TOKENS",
        "an integer from 256 to 131072: tokens one engine step may process, prefill chunks included "
        "(default: the profile's, else vLLM's for the GPU)", ge=256, le=131072)
    max_num_seqs: int | None = _f(None, "VLLM_MAX_NUM_SEQS",
                                  "an integer from 1 to 4096: sequences one engine step may run "
                                  "(default: the profile's, else vLLM's for the GPU)", ge=1, le=4096)
    fast_boot: str = _f("auto", "LLMODAL_FAST_BOOT",
                        "auto, off or snapshot (Modal GPU memory snapshot with vLLM sleep mode; one GPU only; "
                        "auto: snapshot on one GPU, off on several)",
                        pattern=r"^(auto|off|snapshot)$")
    force: bool = _f(False, "LLMODAL_FORCE", "true or false: start even if the plan does not fit")
    public: bool = _f(False, "LLMODAL_PUBLIC", "true or false: a deployment may run without a server key")

    # --- the Modal deployment ---
    gpu: str = _f(C.DEFAULT_GPU, "LLMODAL_GPU", "one of " + ", ".join(GPU_NAMES))
    gpu_count: int = _f(C.DEFAULT_GPU_COUNT, "LLMODAL_GPU_COUNT", "an integer from 1 to 8", ge=1, le=8)
    gpu_price_per_hour: float | None = _f(None, "LLMODAL_GPU_PRICE_PER_HOUR", "USD per GPU-hour, > 0", gt=0)
    app_name: str = _f(C.APP_NAME, "LLMODAL_APP_NAME", "a Modal app name", min_length=1, max_length=64,
                       pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    secret_name: str = _f(C.SECRET_NAME, "LLMODAL_SECRET_NAME", "a Modal secret name", min_length=1)
    scaledown_window_s: int = _f(C.SCALEDOWN_WINDOW_S, "LLMODAL_SCALEDOWN_WINDOW", "seconds from 2 to 3600",
                                 ge=2, le=3600)
    timeout_s: int = _f(C.TIMEOUT_S, "LLMODAL_TIMEOUT", "seconds from 10 to 86400", ge=10, le=86400)
    startup_timeout_s: int = _f(C.STARTUP_TIMEOUT_S, "LLMODAL_STARTUP_TIMEOUT", "seconds from 60 to 86400",
                                ge=60, le=86400)
    max_concurrent_inputs: int = _f(C.MAX_CONCURRENT_INPUTS, "LLMODAL_MAX_CONCURRENT_INPUTS",
                                    "an integer from 1 to 1000", ge=1, le=1000)
    min_containers: int = _f(0, "LLMODAL_MIN_CONTAINERS", "an integer from 0 to 100", ge=0, le=100)
    max_containers: int = _f(1, "LLMODAL_MAX_CONTAINERS", "an integer from 1 to 100", ge=1, le=100)

    @field_validator("quantization", "dtype", "gpu", mode="before")
    @classmethod
    def _lower_strip(cls, v: Any) -> Any:
        return v.strip() if isinstance(v, str) else v

    @field_validator("quantization")
    @classmethod
    def _quant(cls, v: str) -> str:
        v = v.lower()
        if v not in QUANTIZATIONS:
            raise ValueError("unknown quantization")
        return v

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        if v.lower() not in ("auto", "bfloat16", "float16", "float32", "half"):
            raise ValueError("unknown dtype")
        return v.lower()

    @field_validator("gpu")
    @classmethod
    def _gpu(cls, v: str) -> str:
        known = canonical_gpu(v)
        if known is None:
            raise ValueError("unknown GPU")
        return known

    @field_validator("server_api_key")
    @classmethod
    def _key(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None or v.get_secret_value() == "":
            return None  # an empty key means "no key", never "accept anything"
        for key in v.get_secret_value().split(","):
            if not key or key != key.strip() or any(c.isspace() for c in key):
                raise ValueError("a key is empty or contains whitespace")
        return v

    @field_validator("extra_args")
    @classmethod
    def _extra(cls, v: str) -> str:
        flags.check_extra_args(v)
        return v

    @field_validator("lora_modules")
    @classmethod
    def _lora(cls, v: str, info: ValidationInfo) -> str:
        lora.parse(v, info.data.get("model", ""))
        return v.strip()

    @field_validator("max_lora_rank")
    @classmethod
    def _rank(cls, v: int | None) -> int | None:
        if v is not None and v not in lora.RANKS:
            raise ValueError("not one of vLLM's LoRA ranks")
        return v

    @field_validator("tool_call_parser", "reasoning_parser")
    @classmethod
    def _parser(cls, v: str) -> str:
        v = v.strip()
        if not v or not all(c.isalnum() or c in "_-." for c in v):
            raise ValueError("not a parser name")
        return v

    @model_validator(mode="after")
    def _tp(self) -> Settings:
        if self.tensor_parallel_size is not None and self.tensor_parallel_size > self.gpu_count:
            raise ValueError("tensor_parallel_size_gt_gpu_count")
        if self.min_containers > self.max_containers:
            raise ValueError("min_containers_gt_max_containers")
        if self.fast_boot == "snapshot" and self.gpu_count > 1:
            raise ValueError("fast_boot_multi_gpu")
        n = len(self.adapters)
        for env, v in (("VLLM_MAX_LORAS", self.max_loras), ("VLLM_MAX_LORA_RANK", self.max_lora_rank)):
            if v is not None and not n:
                raise ValueError(f"{_SAID}{env}={str(v)!r} is invalid (VLLM_LORA_MODULES lists no adapter): expected it "
                                 "unset, or adapters in VLLM_LORA_MODULES")
        if self.max_loras is not None and self.max_loras > n:
            raise ValueError(f"{_SAID}VLLM_MAX_LORAS={str(self.max_loras)!r} is invalid (VLLM_LORA_MODULES lists {n}): "
                             f"expected at most {n}; a slot no adapter fills still takes GPU memory")
        return self

    # --- derived ---
    @property
    def tp(self) -> int:
        return self.tensor_parallel_size or self.gpu_count

    @property
    def snapshot(self) -> bool:
        """Fast boot through Modal's GPU memory snapshot: the default on one GPU (measured on an H100:
        wake + health + first token 1.2 s, no KV lost, decode unchanged; docs/BENCHMARKS.md §1)."""
        return self.fast_boot == "snapshot" or (self.fast_boot == "auto" and self.gpu_count == 1)

    @property
    def adapters(self) -> list[lora.Adapter]:
        """VLLM_LORA_MODULES, parsed (validated when the settings were made)."""
        return lora.parse(self.lora_modules, self.model)

    @property
    def extra_argv(self) -> list[str]:
        return shlex.split(self.extra_args)

    def api_key(self) -> str | None:
        """The first key: what llmodal's own clients send."""
        keys = self.api_keys()
        return keys[0] if keys else None

    def api_keys(self) -> list[str]:
        return self.server_api_key.get_secret_value().split(",") if self.server_api_key else []

    def key_warnings(self) -> list[str]:
        """One line per key shorter than ``MIN_KEY_CHARS`` (never the key itself)."""
        return [f"warning: VLLM_SERVER_API_KEY key {n} of {len(self.api_keys())} has {len(k)} characters; use at "
                f"least {C.MIN_KEY_CHARS} (python -c 'import secrets; print(secrets.token_urlsafe(32))')"
                for n, k in enumerate(self.api_keys(), 1) if len(k) < C.MIN_KEY_CHARS]


_MODEL_ERRORS = {
    "tensor_parallel_size_gt_gpu_count": ("VLLM_TENSOR_PARALLEL_SIZE", "at most LLMODAL_GPU_COUNT"),
    "min_containers_gt_max_containers": ("LLMODAL_MIN_CONTAINERS", "at most LLMODAL_MAX_CONTAINERS"),
    "fast_boot_multi_gpu": ("LLMODAL_FAST_BOOT", "off when LLMODAL_GPU_COUNT > 1 (Modal's GPU memory snapshots "
                                                 "are single-GPU only)"),
}


def _describe(err: ValidationError) -> str:
    lines = []
    fields = Settings.model_fields
    by_env = {f.validation_alias: n for n, f in fields.items()}
    for e in err.errors():
        name = str(e["loc"][0]) if e["loc"] else ""
        name = by_env.get(name, name)
        if name in fields:
            extra = fields[name].json_schema_extra or {}
            env, allowed = extra.get("env", name), extra.get("allowed", "")
            # VLLM_EXTRA_ARGS may hold a secret someone tried to pass: name the flag, not the value.
            value = "<hidden>" if name in ("server_api_key", "extra_args") else repr(e.get("input"))
            why = str(e.get("msg", "")).removeprefix("Value error, ")
            lines.append(f"{env}={value} is invalid ({why}): expected {allowed}")
        else:
            msg = str(e.get("msg", ""))
            if _SAID in msg:  # a whole message, variable and value included
                lines.append(msg.split(_SAID, 1)[1])
                continue
            for code, (env, allowed) in _MODEL_ERRORS.items():
                if code in msg:
                    lines.append(f"{env} is invalid: expected {allowed}")
                    break
            else:
                lines.append(msg)
    return "; ".join(lines)


def handoff(settings: Settings, **changes: Any) -> str:
    """Every setting but the key, as the one JSON value the container receives (LLMODAL_SETTINGS)."""
    data = settings.model_dump(mode="json", exclude={"server_api_key"})
    data.update(changes)
    return json.dumps(data, sort_keys=True)


def from_handoff(text: str | None) -> Settings:
    """The container's side of ``handoff``: re-validate, add the key from the secret's environment.
    Without a handed-over value (an old deploy, a test), read the environment as usual."""
    if not text:
        return load_settings(None)
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not an object")
    except ValueError as e:
        raise ConfigError(f"LLMODAL_SETTINGS is not the JSON object `llmodal deploy` writes ({e})") from None
    unknown = sorted(set(data) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(f"LLMODAL_SETTINGS has unknown fields {unknown}: deploy again with this llmodal version")
    data.pop("server_api_key", None)
    try:
        return Settings(_env_file=None, **data)
    except ValidationError as e:
        raise ConfigError("LLMODAL_SETTINGS: " + _describe(e)) from None


def load_settings(env_file: str | None = ".env", **overrides: Any) -> Settings:
    """Read settings from the environment (winning) and ``env_file``; raise ConfigError on bad values."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(_env_file=env_file, **clean)
    except ValidationError as e:
        raise ConfigError(_describe(e)) from None
