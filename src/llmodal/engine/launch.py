"""The one place vLLM's command line is built, from the flag table in ``flags``.

``llmodal serve``, the Modal container, ``--dry-run`` and the GPU benchmark all start vLLM
from ``build_launch``. The server keys never travel in argv (argv shows in ``ps`` and in vLLM's own
startup log), and vLLM's own ``--api-key`` is not used: the keys go to llmodal's guard inside the vLLM
process (``--middleware``), in the child's environment as ``LLMODAL_API_KEYS`` (comma-separated), or, with
fast boot, in a file it re-reads, named by ``LLMODAL_API_KEYS_FILE``. The fast-boot container's own key
for ``/sleep`` and ``/wake_up`` travels the same way (``LLMODAL_CONTROL_KEY``).
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
from dataclasses import dataclass, field

from pydantic import SecretStr

from llmodal.core import vllm_flags as flags
from llmodal.core.errors import ConfigError
from llmodal.core.config import Settings
from llmodal.plan.profiles import ProfileFlags

VLLM_DEFAULTS = ProfileFlags(None, None, None, None, None)  # no profile: vLLM's own batching and kernels

AUTH_MIDDLEWARE = "llmodal.engine.auth.BearerAuthMiddleware"
CPU_MAX_N = 8  # n cap where no plan sizes it
CPU_QUEUE_LIMIT = 64  # requests in flight where no plan sizes it
# The client's names: a .env written for a client must not configure the server it starts.
_CLIENT_ENV = ("VLLM_BASE_URL", "VLLM_API_KEY")


def private_env() -> frozenset[str]:
    """llmodal's own variables: vLLM warns on unknown VLLM_* names, and some hold secrets. Every variable
    the flag table sets is set by the launch itself, never inherited from whoever started it."""
    names = {f.validation_alias for f in Settings.model_fields.values() if isinstance(f.validation_alias, str)}
    return frozenset(names | set(_CLIENT_ENV) | flags.env_names() | {"MODAL_PROXY_TOKEN_ID", "MODAL_PROXY_TOKEN_SECRET"})


def guard_env(settings: Settings) -> dict[str, str]:
    """The auth guard's settings that are not flag-table rows: the GPU server's guard (inside vLLM) and the
    gateway's read the same names."""
    return {"LLMODAL_METRICS_PUBLIC": "1" if settings.metrics_public else "0",
            "LLMODAL_MAX_BODY_BYTES": str(settings.max_body_bytes)}


@dataclass(frozen=True)
class Launch:
    """What it takes to start vLLM: argv, the environment to add, and where it will listen."""

    argv: list[str]
    env: dict[str, str] = field(repr=False)
    host: str
    port: int

    def child_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        drop = private_env()
        env = {k: v for k, v in (os.environ if base is None else base).items() if k not in drop}
        env.update(self.env)
        return env

    def shell(self) -> str:
        """The command as a user could type it (the key is not in it)."""
        return shlex.join(self.argv)

    def shown_env(self) -> dict[str, str]:
        """The environment additions with secrets masked, for --dry-run."""
        secret = flags.secret_env_names()
        return {k: ("<set, hidden>" if k in secret else v) for k, v in sorted(self.env.items())}

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}/v1"


def build_launch(
    settings: Settings,
    *,
    checkpoint: str | None = None,
    served_model_name: str | None = None,
    quantization: str | None = None,
    revision: str | None = None,
    kv_cache_bytes: int | None = None,
    tool_call_parser: str | None = None,
    reasoning_parser: str | None = None,
    sleep_mode: bool = False,
    keys_file: str | None = None,
    control_key: bool = False,  # fast boot: a key of the container's own for /sleep, /wake_up
    queue_limit: int | None = None,  # the plan's; LLMODAL_QUEUE_LIMIT wins
    max_n: int | None = None,
    profile: ProfileFlags | None = None,  # the plan's batching, KV dtype, kernel (None: vLLM's defaults)
    lora_modules: tuple[str, ...] = (),  # name=where vLLM reads each adapter (engine.prepare resolves them)
    max_loras: int | None = None,
    max_lora_rank: int | None = None,
    served_models: str | None = None,
    formats: dict[str, str] | None = None,  # vLLM flag (no dashes) → value for the checkpoint's layout
    api_key: str | None = None,
    host: str | None = None,
    port: int | None = None,
    python: str | None = None,
    extra: list[str] | None = None,
) -> Launch:
    """Turn settings (and the planner's decisions) into vLLM's argv and environment.

    ``checkpoint`` is the weights vLLM loads; ``served_model_name`` is what clients ask for
    (default: ``VLLM_MODEL``), so a client that follows the guide keeps working when the
    planner swaps in a 4-bit checkpoint. ``api_key`` defaults to ``VLLM_SERVER_API_KEY``.
    """
    p = profile or VLLM_DEFAULTS
    if api_key is not None:
        settings = settings.model_copy(update={"server_api_key": SecretStr(api_key) if api_key else None})
    rev = revision if revision is not None else (settings.model_revision if checkpoint in (None, settings.model)
                                                 else None)
    inputs = flags.Inputs(
        settings=settings, checkpoint=checkpoint or settings.model,
        served_model_name=served_model_name or settings.model, quantization=quantization, revision=rev,
        kv_cache_bytes=kv_cache_bytes, tensor_parallel_size=settings.tp,
        tool_call_parser=tool_call_parser, reasoning_parser=reasoning_parser, sleep_mode=sleep_mode,
        control_key=secrets.token_urlsafe(32) if (sleep_mode or control_key) else None, keys_file=keys_file,
        queue_limit=settings.queue_limit or queue_limit or CPU_QUEUE_LIMIT,
        max_n=settings.max_n or max_n or CPU_MAX_N,
        max_num_seqs=p.max_num_seqs, max_num_batched_tokens=p.max_num_batched_tokens,
        cudagraph_capture_sizes=p.cudagraph_capture_sizes,
        kv_cache_dtype=p.kv_cache_dtype, dtype=p.dtype, disabled_kernels=p.disabled_kernels,
        host=host or settings.host, port=port or settings.port, middleware=AUTH_MIDDLEWARE,
        lora_modules=lora_modules, max_loras=max_loras, max_lora_rank=max_lora_rank, served_models=served_models,
        formats=tuple(sorted((formats or {}).items())),
    )
    args, env = flags.render(inputs)
    args += settings.extra_argv + flags.check_extra_args(shlex.join(extra or []))
    env.update(guard_env(settings))
    argv = [python or sys.executable, "-m", "vllm.entrypoints.openai.api_server", *args]
    # The table renders every secret row into the environment (flags.render); the one way a key could
    # reach argv is a user pasting it into VLLM_EXTRA_ARGS. Whole tokens: a key such as "auto" or
    # "8000" may equal a flag's value without being a key on the command line.
    pasted = {t for a in settings.extra_argv + list(extra or []) for t in (a, a.split("=", 1)[-1])}
    if any(k in pasted for k in settings.api_keys()):
        raise ConfigError("VLLM_EXTRA_ARGS=<hidden> is invalid (it holds the server key): expected vLLM flags "
                          "without the key; the key travels only in VLLM_SERVER_API_KEY")
    return Launch(argv=argv, env=env, host=inputs.host, port=inputs.port)
