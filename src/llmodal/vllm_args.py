"""The one place vLLM's command line is built.

``llmodal serve``, the Modal container and the GPU benchmark all start vLLM from
``build_launch``. The API key travels in the child's environment (``VLLM_API_KEY``), never
in argv: argv shows in ``ps`` and in vLLM's own startup log.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field

from .config import Settings

AUTH_MIDDLEWARE = "llmodal.auth.BearerAuthMiddleware"
# Our own settings that vLLM must not see (it warns on unknown VLLM_* names) or that hold secrets.
_PRIVATE_ENV = ("VLLM_MODEL", "VLLM_MODEL_REVISION", "VLLM_MAX_MODEL_LEN", "VLLM_GPU_MEMORY_UTILIZATION",
                "VLLM_TENSOR_PARALLEL_SIZE", "VLLM_QUANTIZATION", "VLLM_DTYPE", "VLLM_SERVER_API_KEY",
                "VLLM_EXTRA_ARGS", "VLLM_HOST", "VLLM_PORT", "VLLM_BASE_URL", "VLLM_API_KEY")


@dataclass(frozen=True)
class Launch:
    """What it takes to start vLLM: argv, the environment to add, and where it will listen."""

    argv: list[str]
    env: dict[str, str] = field(repr=False)
    host: str
    port: int

    def child_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in (os.environ if base is None else base).items() if k not in _PRIVATE_ENV}
        env.update(self.env)
        return env

    def shell(self) -> str:
        """The command as a user could type it (the key is not in it)."""
        return shlex.join(self.argv)

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
    api_key: str | None = None,
    host: str | None = None,
    port: int | None = None,
    python: str | None = None,
    extra: list[str] | None = None,
) -> Launch:
    """Turn settings (and the planner's choice of checkpoint) into vLLM's argv and environment.

    ``checkpoint`` is the weights vLLM loads; ``served_model_name`` is what clients ask for
    (default: ``VLLM_MODEL``), so a client that follows the guide keeps working when the
    planner swaps in a 4-bit checkpoint. ``api_key`` defaults to ``VLLM_SERVER_API_KEY``.
    """
    host = host or settings.host
    port = port or settings.port
    argv = [
        python or sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", checkpoint or settings.model,
        "--served-model-name", served_model_name or settings.model,
        "--max-model-len", str(settings.max_model_len),
        "--gpu-memory-utilization", str(settings.gpu_memory_utilization),
        "--tensor-parallel-size", str(settings.tp),
        "--dtype", settings.dtype,
        "--host", host,
        "--port", str(port),
        "--middleware", AUTH_MIDDLEWARE,
        "--shutdown-timeout", str(settings.drain_timeout_s),
    ]
    rev = revision if revision is not None else (settings.model_revision if checkpoint in (None, settings.model)
                                                 else None)
    if rev:
        argv += ["--revision", rev]
    if quantization:
        argv += ["--quantization", quantization]
    argv += settings.extra_argv + list(extra or [])
    key = api_key if api_key is not None else settings.api_key()
    env = {"LLMODAL_METRICS_PUBLIC": "1" if settings.metrics_public else "0"}
    if key:
        env["VLLM_API_KEY"] = key
    return Launch(argv=argv, env=env, host=host, port=port)
