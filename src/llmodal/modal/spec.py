"""What the Modal App is made of, computed from llmodal's settings. ``llmodal.modal.app`` declares
the App from it (the guide's ``modal_vllm.py`` imports that); the containers run ``modal.container``.

Settings are read where ``modal deploy`` runs (environment and ``.env``, or ``--env-file``) and
carried into the container as one value, ``LLMODAL_SETTINGS``, so the container plans and
launches exactly what the deployer's dry run showed. The server key is not carried this way:
it comes from the ``vllm-secrets`` secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmodal.core import constants as C
from llmodal.core.config import Settings, handoff

# vLLM 0.32.0: the release the CPU engine in the test suite runs, so the auth middleware,
# --middleware loading and --shutdown-timeout draining the tests prove are the container's too.
VLLM_VERSION = "0.32.0"
PYTHON_VERSION = "3.12"
# Everything the container installs, pinned. tests/test_modal_app.py resolves this set for the
# image's Python and platform, so `modal deploy` cannot fail at image build on a conflict.
IMAGE_REQUIREMENTS = [
    f"vllm=={VLLM_VERSION}",
    "huggingface_hub==2.4.0",  # hf-xet comes with it: fast downloads without hf_transfer
    "pydantic-settings==2.16.3",
    "typer==0.29.2",
    "platformdirs==4.14.7",
]
# vLLM's FlashInfer sampler needs the flashinfer package and JIT-compiles on first use; every GPU
# figure in this repo ran vLLM's own sampler, so the image runs that one too.
IMAGE_ENV = {"VLLM_USE_FLASHINFER_SAMPLER": "0"}
# The key-checking gateway (a CPU container): llmodal's own dependencies, no vLLM.
GATEWAY_REQUIREMENTS = [
    "httpx==0.28.1", "openai==3.57.0", "pydantic==2.14.4", "pydantic-settings==2.16.3", "python-dotenv==1.2.4",
    "platformdirs==4.14.7", "rich==15.0.0", "typer==0.29.2", "aiohttp==3.14.5", "fastapi==0.136.3",
]
# Modal's per-container concurrency for the gateway, as a multiple of the streams it relays: the excess
# reaches the gateway's guard and is told 429 at once instead of waiting in Modal's queue.
GATEWAY_INPUTS_FACTOR = 2
# Modal gives the exit hook 30 s, on scale-down and on preemption's SIGINT alike: "Exit handlers are also called
# when a container is preempted. The exit handler is given a grace period of 30 seconds to finish, and it will be
# killed if it takes longer than that to complete." (https://modal.com/docs/guide/lifecycle-functions, read
# 2026-12-07). modal 1.6.4's @app.cls and @modal.web_server take no exit-grace parameter (only @app.server's
# exit_grace_period, up to 3600 s, and the experimental flash servers'), so the drain is bounded by it.
MODAL_EXIT_GRACE_S = 30
STOP_MARGIN_S = 3  # the supervisor waits this long past vLLM's --shutdown-timeout before it SIGKILLs the group
KILL_S = 2  # the SIGKILL, the reap and the last log lines
MAX_DRAIN_S = MODAL_EXIT_GRACE_S - STOP_MARGIN_S - KILL_S
HF_CACHE_PATH = "/root/.cache/huggingface"
VLLM_CACHE_PATH = "/root/.cache/vllm"
PORT = 8000


@dataclass(frozen=True)
class AppSpec:
    """Everything ``modal_vllm.py`` passes to Modal, computed from one Settings."""

    app_name: str
    gpu: str
    function_kwargs: dict[str, Any]
    concurrent_inputs: int
    web_port: int
    startup_timeout: int
    container_env: dict[str, str]
    web_label: str  # the guide's URL: owned by the key-checking gateway
    gpu_label: str  # the GPU server's own URL, behind Modal's proxy auth
    snapshot_kwargs: dict[str, Any]  # empty when fast boot is off: the plain function server
    gateway_kwargs: dict[str, Any]
    gateway_inputs: int


def container_env(settings: Settings) -> dict[str, str]:
    """The container's environment: the deployer's settings as one value (key excluded), caches."""
    return {"LLMODAL_SETTINGS": handoff(settings, host="0.0.0.0", port=PORT), "HF_HOME": HF_CACHE_PATH,
            "VLLM_CACHE_ROOT": VLLM_CACHE_PATH, "PYTHONUNBUFFERED": "1", **IMAGE_ENV}


def concurrent_inputs(settings: Settings) -> int:
    """Modal's per-container concurrency: LLMODAL_MAX_CONCURRENT_INPUTS when set; else, when the queue limit
    is known (``llmodal deploy`` passes the plan's), half as much again as that limit, so a burst reaches
    the guard and is told 429 at once instead of waiting in Modal's queue; else the profile's."""
    from llmodal.plan.profiles import PROFILES

    if "max_concurrent_inputs" in settings.model_fields_set:
        return settings.max_concurrent_inputs
    if settings.queue_limit:
        return min(1000, settings.queue_limit + settings.queue_limit // 2)
    return PROFILES[settings.profile].concurrent_inputs


def deploy_settings(settings: Settings) -> Settings:
    """The settings every deploy path sends (``modal deploy modal_vllm.py``, ``llmodal deploy``, its dry run):
    every hub adapter at a commit (the one ``llmodal download`` recorded, else the one its revision names now,
    recorded: ``adapter_pins``; a folder adapter is refused), and the plan's queue limit stated, so Modal's
    concurrency and the gateway's limits derive from one number. A plan that cannot be made here is left to the
    container, which refuses with its reason."""
    if settings.adapters:  # the guide's path has no preflight: without this it sent branches, fetched at each start
        from llmodal.modal.adapter_pins import pinned_modules

        settings = settings.model_copy(update={"lora_modules": pinned_modules(settings.adapters, fresh=False)})
    if settings.queue_limit is not None:
        return settings
    from llmodal.core.errors import LlmodalError
    from llmodal.engine.prepare import queue_limit_for
    from llmodal.plan.planner import plan_for_settings

    try:
        res = plan_for_settings(settings)
    except LlmodalError:
        return settings
    return settings.model_copy(update={"queue_limit": queue_limit_for(res.chosen)})


def gateway_limit(settings: Settings) -> int:
    """Generations the gateway relays at once: what every GPU container takes in (its queue limit, never more
    than Modal routes to it), so a burst is told 429 here instead of waiting in Modal's queue."""
    per_gpu = concurrent_inputs(settings)
    if settings.queue_limit:
        per_gpu = min(per_gpu, settings.queue_limit)
    return per_gpu * max(1, settings.max_containers)


def check_drain(settings: Settings) -> None:
    """A drain Modal would cut is refused where the deploy starts: its exit hook has MODAL_EXIT_GRACE_S in all."""
    if settings.drain_timeout_s > MAX_DRAIN_S:
        from llmodal.core.errors import ConfigError

        raise ConfigError(f"LLMODAL_DRAIN_TIMEOUT={settings.drain_timeout_s} is invalid on Modal: expected 0 to "
                          f"{MAX_DRAIN_S} seconds (Modal kills a container {MODAL_EXIT_GRACE_S} s after its exit hook "
                          f"starts, on scale-down and on preemption; the drain and vLLM's stop, "
                          f"{STOP_MARGIN_S + KILL_S} s more, must fit in that; `llmodal serve` takes up to 600)")


def app_spec(settings: Settings) -> AppSpec:
    check_drain(settings)
    gpu = settings.gpu if settings.gpu_count == 1 else f"{settings.gpu}:{settings.gpu_count}"
    return AppSpec(
        app_name=settings.app_name,
        gpu=gpu,
        function_kwargs=dict(
            gpu=gpu,
            timeout=settings.timeout_s,
            scaledown_window=settings.scaledown_window_s,
            min_containers=settings.min_containers,
            max_containers=settings.max_containers,
        ),
        concurrent_inputs=concurrent_inputs(settings),
        web_port=PORT,
        startup_timeout=settings.startup_timeout_s,
        container_env=container_env(settings),
        web_label=f"{settings.app_name}-{C.WEB_LABEL}",
        gpu_label=f"{settings.app_name}-{C.WEB_LABEL}-gpu",
        gateway_kwargs=dict(timeout=settings.timeout_s, scaledown_window=settings.scaledown_window_s,
                            min_containers=0, max_containers=max(1, settings.max_containers), cpu=1.0, memory=1024),
        gateway_inputs=min(1000, GATEWAY_INPUTS_FACTOR * gateway_limit(settings)),
        snapshot_kwargs=dict(enable_memory_snapshot=True, experimental_options={"enable_gpu_snapshot": True})
        if settings.snapshot else {},
    )


def gateway_image() -> Any:
    import modal

    return (modal.Image.debian_slim(python_version=PYTHON_VERSION).pip_install(*GATEWAY_REQUIREMENTS)
            .add_local_python_source("llmodal"))


def resources(settings: Settings) -> tuple[Any, dict[str, Any], list[Any]]:
    """The Modal image, volume mounts and secrets for ``settings``."""
    import modal

    image = (
        modal.Image.debian_slim(python_version=PYTHON_VERSION)
        .pip_install(*IMAGE_REQUIREMENTS)
        .add_local_python_source("llmodal")
    )
    volumes = {
        HF_CACHE_PATH: modal.Volume.from_name(C.HF_CACHE_VOLUME, create_if_missing=True),
        VLLM_CACHE_PATH: modal.Volume.from_name(C.VLLM_CACHE_VOLUME, create_if_missing=True),
    }
    return image, volumes, [modal.Secret.from_name(settings.secret_name)]
