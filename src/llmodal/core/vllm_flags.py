"""vLLM's command line as one declared table.

Each row is one vLLM flag: where its value comes from (a setting, the planner, or llmodal
itself) and how it is rendered. From this table come the argv (``launch.build_launch``), the
set of flags ``VLLM_EXTRA_ARGS`` may not touch (with the setting to use instead), and the
environment names the child must not inherit. The server key has a row too: it is the one
value that travels as an environment variable and never as an argument.

This module imports nothing of llmodal's so ``config`` can validate ``VLLM_EXTRA_ARGS`` with it.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PLANNER = "the planner"
LLMODAL = "llmodal"


@dataclass(frozen=True)
class Inputs:
    """Everything a row may read: the settings and what the planner decided for them."""

    settings: Any  # config.Settings (not imported: config imports this module)
    checkpoint: str
    served_model_name: str
    quantization: str | None = None
    revision: str | None = None
    kv_cache_bytes: int | None = None
    tensor_parallel_size: int = 1
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    cudagraph_capture_sizes: tuple[int, ...] | None = None
    max_n: int | None = None
    disabled_kernels: str | None = None
    kv_cache_dtype: str | None = None
    dtype: str | None = None
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    sleep_mode: bool = False
    control_key: str | None = None  # the fast-boot container's own key for /sleep and /wake_up
    keys_file: str | None = None  # client keys in a file re-read on change (fast boot: keys of restore time)
    queue_limit: int | None = None  # inference requests in flight before 429 (the guard enforces it)
    lora_modules: tuple[str, ...] = ()  # name=where vLLM reads it (a folder, or a pinned snapshot)
    max_loras: int | None = None
    max_lora_rank: int | None = None  # the adapters' highest rank, rounded up to one vLLM takes
    served_models: str | None = None  # the base and every adapter, for the guard's 404 message
    # flag (no dashes) → value for the formats vLLM chooses online by itself but not offline (modal/weights.py)
    formats: tuple[tuple[str, str], ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    middleware: str = "llmodal.engine.auth.BearerAuthMiddleware"


@dataclass(frozen=True)
class Flag:
    flag: str  # vLLM's spelling
    owner: str  # the env variable of the setting that decides it, PLANNER or LLMODAL
    value: Callable[[Inputs], Any]  # None or False: the flag is left out
    switch: bool = False  # rendered as the bare flag when the value is true
    env: str | None = None  # travels in the child's environment under this name instead of argv
    secret: bool = False  # masked wherever it is shown
    aliases: tuple[str, ...] = ()  # vLLM's short spellings of the same flag
    # False: VLLM_EXTRA_ARGS may set it too (it comes later in argv, and vLLM keeps the last value)
    reserved: bool = True


def _s(name: str) -> Callable[[Inputs], Any]:
    return lambda i: getattr(i.settings, name)


FLAGS: tuple[Flag, ...] = (
    Flag("--model", "VLLM_MODEL", lambda i: i.checkpoint),
    Flag("--served-model-name", "VLLM_MODEL", lambda i: i.served_model_name),
    Flag("--revision", "VLLM_MODEL_REVISION", lambda i: i.revision),
    Flag("--max-model-len", "VLLM_MAX_MODEL_LEN", _s("max_model_len")),
    Flag("--gpu-memory-utilization", "VLLM_GPU_MEMORY_UTILIZATION", _s("gpu_memory_utilization")),
    Flag("--kv-cache-memory-bytes", PLANNER, lambda i: i.kv_cache_bytes),
    Flag("--tensor-parallel-size", "VLLM_TENSOR_PARALLEL_SIZE", lambda i: i.tensor_parallel_size, aliases=("-tp",)),
    Flag("--quantization", "VLLM_QUANTIZATION", lambda i: i.quantization, aliases=("-q",)),
    Flag("--dtype", "VLLM_DTYPE", lambda i: i.dtype or i.settings.dtype),
    Flag("--kv-cache-dtype", "LLMODAL_PROFILE", lambda i: i.kv_cache_dtype),
    Flag("--max-num-seqs", "VLLM_MAX_NUM_SEQS", lambda i: i.max_num_seqs),
    Flag("--max-num-batched-tokens", "VLLM_MAX_NUM_BATCHED_TOKENS", lambda i: i.max_num_batched_tokens),
    Flag("", "LLMODAL_PROFILE", lambda i: i.disabled_kernels, env="VLLM_DISABLED_KERNELS"),
    # Fewer graphs, shorter starts (plan/profiles.py); vLLM takes the sizes as separate arguments.
    Flag("--cudagraph-capture-sizes", PLANNER, lambda i: i.cudagraph_capture_sizes),
    Flag("--enable-auto-tool-choice", "VLLM_TOOL_CALL_PARSER", lambda i: bool(i.tool_call_parser), switch=True),
    Flag("--tool-call-parser", "VLLM_TOOL_CALL_PARSER", lambda i: i.tool_call_parser),
    # parameter: a forced call's arguments always match the tool's schema, `strict: true` or not
    # (vLLM's default, auto, pins them only for tools marked strict).
    Flag("--tool-strict-level", "VLLM_TOOL_STRICT_LEVEL",
         lambda i: i.settings.tool_strict_level if i.tool_call_parser else None),
    Flag("--reasoning-parser", "VLLM_REASONING_PARSER", lambda i: i.reasoning_parser),
    # Constrained JSON (tool arguments, response_format) without free whitespace: a weak or random
    # model otherwise pads with newlines until max_tokens and returns truncated, unparsable JSON.
    # vLLM allows that switch only with a named backend; xgrammar is what "auto" picks for tool calls
    # (llguidance refuses tool_choice=required: "Invalid grammar specification: triggers").
    Flag("--structured-outputs-config", "LLMODAL_COMPACT_JSON",
         lambda i: '{"backend": "xgrammar", "disable_any_whitespace": true}' if i.settings.compact_json else None),
    Flag("--enable-force-include-usage", "LLMODAL_STREAM_USAGE", _s("stream_usage"), switch=True),
    Flag("--enable-sleep-mode", "LLMODAL_FAST_BOOT", lambda i: i.sleep_mode, switch=True),
    # Sleep mode's /sleep and /wake_up exist only in vLLM's development mode, which also registers
    # admin routes (/pause, /collective_rpc, /update_weights …): the middleware closes all of those.
    Flag("", "LLMODAL_FAST_BOOT", lambda i: "1" if i.sleep_mode else None, env="VLLM_SERVER_DEV_MODE"),
    Flag("", LLMODAL, lambda i: i.control_key, env="LLMODAL_CONTROL_KEY", secret=True),
    # Adapters: vLLM serves each under its name, beside the base (/v1/models lists them with their parent).
    Flag("--enable-lora", "VLLM_LORA_MODULES", lambda i: bool(i.lora_modules), switch=True),
    Flag("--lora-modules", "VLLM_LORA_MODULES", lambda i: i.lora_modules or None),
    Flag("--max-loras", "VLLM_MAX_LORAS", lambda i: i.max_loras if i.lora_modules else None),
    Flag("--max-lora-rank", "VLLM_MAX_LORA_RANK", lambda i: i.max_lora_rank if i.lora_modules else None),
    # Every adapter stays in host memory once read (vLLM's default keeps only --max-loras, re-reading the
    # others from disk whenever a request swaps them in).
    Flag("--max-cpu-loras", LLMODAL, lambda i: len(i.lora_modules) or None),
    # Loading adapters at run time (/v1/load_lora_adapter) is never offered: the row pins it off, so an
    # inherited VLLM_ALLOW_RUNTIME_LORA_UPDATING=1 cannot open it (the guard closes the routes as well).
    Flag("", LLMODAL, lambda i: None, env="VLLM_ALLOW_RUNTIME_LORA_UPDATING"),
    Flag("", "VLLM_LORA_MODULES", lambda i: i.served_models if i.lora_modules else None,
         env="LLMODAL_SERVED_MODELS"),
    # The checkpoint's layout, from the pinned snapshot (set only where the pinned weights are in the volume):
    # Mistral's consolidated*.safetensors and params.json, which vLLM picks by itself online only. Not reserved:
    # `--load-format dummy` (random weights, the GPU benchmarks) stays the user's to pass.
    Flag("--load-format", LLMODAL, lambda i: dict(i.formats).get("load-format"), reserved=False),
    Flag("--config-format", LLMODAL, lambda i: dict(i.formats).get("config-format"), reserved=False),
    Flag("--host", "VLLM_HOST", lambda i: i.host),
    Flag("--port", "VLLM_PORT", lambda i: i.port),
    Flag("--middleware", LLMODAL, lambda i: i.middleware),
    Flag("--shutdown-timeout", "LLMODAL_DRAIN_TIMEOUT", _s("drain_timeout_s")),
    # vLLM's own --api-key takes one key from its environment and guards /v1 only; the middleware
    # guards every route and accepts each of several keys (rotation), so the keys go to it alone.
    Flag("--api-key", "VLLM_SERVER_API_KEY",
         lambda i: None if i.keys_file else ",".join(i.settings.api_keys()), env="LLMODAL_API_KEYS", secret=True),
    Flag("", "VLLM_SERVER_API_KEY", lambda i: i.keys_file, env="LLMODAL_API_KEYS_FILE"),
    # vLLM queues without bound; the guard answers 429 past this many in flight.
    Flag("", "LLMODAL_QUEUE_LIMIT", lambda i: i.queue_limit, env="LLMODAL_QUEUE_LIMIT"),
    # vLLM takes n up to 16,384 per request: one request could claim the whole KV cache.
    Flag("", "LLMODAL_MAX_N", lambda i: i.max_n, env="VLLM_MAX_N_SEQUENCES"),
)

# Flags llmodal never sets but may not be set behind its back: a YAML file of flags (could set any
# row above), and parallel layouts the planner's memory arithmetic does not model.
_ALSO_RESERVED = {"--config": LLMODAL, "--pipeline-parallel-size": PLANNER, "-pp": PLANNER,
                  "--data-parallel-size": PLANNER, "-dp": PLANNER,
                  # vLLM refuses a ceiling that is not the largest of the planner's sizes
                  "--max-cudagraph-capture-size": PLANNER,
                  # the planner sizes LoRA memory with every slot unsharded, in the model's dtype
                  "--fully-sharded-loras": PLANNER, "--lora-dtype": PLANNER,
                  # which modules get LoRA slots, their MoE layout and extra CUDA graphs per active-adapter count:
                  # what the planner charges and the adapter check accepts (an adapter on a module left out would
                  # be refused by vLLM at start, after the GPU is paid for)
                  "--lora-target-modules": PLANNER, "--specialize-active-lora": PLANNER,
                  "--enable-mixed-moe-lora-format": PLANNER, "--enable-moe-shared-loras": PLANNER}


def _norm(flag: str) -> str:
    """vLLM reads ``--max_model_len`` as ``--max-model-len``; compare in one spelling."""
    if flag.startswith("--"):
        return "--" + flag[2:].replace("_", "-").lower()
    return flag.lower()


def reserved() -> dict[str, str]:
    """Every flag llmodal sets itself, in every spelling vLLM accepts → the setting that owns it."""
    out = {f.flag: f.owner for f in FLAGS if f.flag and f.reserved}
    out.update({a: f.owner for f in FLAGS if f.reserved for a in f.aliases})
    out.update(_ALSO_RESERVED)
    return out


def env_names() -> set[str]:
    return {f.env for f in FLAGS if f.env}


def secret_env_names() -> set[str]:
    return {f.env for f in FLAGS if f.env and f.secret}


def check_extra_args(text: str) -> list[str]:
    """Split ``VLLM_EXTRA_ARGS``; raise ValueError naming the setting to use for a reserved flag.

    argparse also takes any unambiguous prefix (``--api-k``), so a prefix of a reserved flag is
    refused as well."""
    try:
        args = shlex.split(text)
    except ValueError as e:
        raise ValueError(f"not valid shell quoting ({e})") from None
    owners = reserved()
    for arg in args:
        if not arg.startswith("-") or arg == "-" or _is_number(arg):
            continue
        name = _norm(arg.split("=", 1)[0])
        if name.startswith("--no-"):  # BooleanOptionalAction's negative spelling
            name = "--" + name[5:]
        hits = [f for f in owners if f == name or (name.startswith("--") and len(name) > 3 and f.startswith(name))]
        if hits:
            owner = owners[hits[0]]
            use = (f"set {owner} instead" if owner not in (PLANNER, LLMODAL)
                   else f"{owner} sets it")
            raise ValueError(f"{arg.split('=', 1)[0]} is {hits[0]}, which llmodal sets itself: {use}")
    return args


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def render(inputs: Inputs) -> tuple[list[str], dict[str, str]]:
    """The table applied to ``inputs``: (argv after the program, environment additions)."""
    argv: list[str] = []
    env: dict[str, str] = {}
    for f in FLAGS:
        assert f.env or not f.secret, f"{f.flag}: a secret row must travel in the environment"
        v = f.value(inputs)
        if v is None or v is False or v == "":
            continue
        if f.env:
            env[f.env] = str(v)
        elif f.switch:
            argv.append(f.flag)
        elif isinstance(v, tuple):
            argv += [f.flag, *map(str, v)]
        else:
            argv += [f.flag, str(v)]
    return argv, env
