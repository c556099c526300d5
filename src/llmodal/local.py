"""``llmodal serve`` on this machine: pick the model, plan it, start vLLM, supervise it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from . import _constants as C
from ._exceptions import DoesNotFit, LlmodalError, ServerStartError
from .config import Settings
from .diagnostics import diagnose
from .envfile import mask, read_env
from .envfile import write_env as write_env_file
from .server import VLLMProcess
from .state import cache_dir, last_local_server, local_api_key, save_local_server
from .vllm_args import Launch, build_launch

# On the CPU engine --gpu-memory-utilization is a fraction of RAM; 0.95 would starve the machine.
CPU_MEMORY_FRACTION = 0.2


@dataclass
class Prepared:
    launch: Launch
    served_name: str
    api_key: str
    key_is_new: bool
    log_path: Path
    summary: str
    drain_s: int  # vLLM's --shutdown-timeout: how long a stop waits for in-flight requests


def _model_configured(settings: Settings, model_given: bool, env_file: str | None) -> bool:
    from .tiny_model import SERVED_NAME

    if settings.model == SERVED_NAME:  # the client .env `serve` wrote for the tiny model
        return False
    return model_given or "VLLM_MODEL" in os.environ or (bool(env_file) and "VLLM_MODEL" in read_env(env_file))


def prepare_local(settings: Settings, *, model_given: bool, gpu: bool, force: bool, console: Console,
                  env_file: str | None = ".env") -> Prepared:
    """Decide what to serve and build its launch. Refuses a plan that does not fit unless forced."""
    key = settings.api_key()
    key_is_new = False
    if key is None:
        key, key_is_new = local_api_key()
    update: dict = {}
    checkpoint, quant = None, None
    if not gpu:
        if "gpu_memory_utilization" not in settings.model_fields_set:
            update["gpu_memory_utilization"] = CPU_MEMORY_FRACTION
        if not _model_configured(settings, model_given, env_file):
            from .tiny_model import SERVED_NAME, TinyShape, ensure_tiny_model

            with console.status("generating the embedded tiny model (first use only)…"):
                path = ensure_tiny_model()
            update.update(model=str(path), max_model_len=min(settings.max_model_len, TinyShape().max_position))
            served = SERVED_NAME
            summary = f"embedded tiny Llama ({path}) on the CPU engine"
        else:
            served = settings.model
            summary = f"{settings.model} on the CPU engine (no GPU found; the planner is for GPUs)"
    else:
        from .plan import plan_for_settings
        from .render import plan_table

        res = plan_for_settings(settings)
        if not res.chosen.fits:
            plan_table(res.chosen, res.asked, res.suggestions, console)
            if not force:
                raise DoesNotFit(f"the plan does not fit: {res.chosen.reason} (use --force to start anyway)")
        checkpoint, quant, served = res.chosen.checkpoint, res.chosen.vllm_quantization, settings.model
        summary = f"{served} from {checkpoint} on {res.chosen.gpu_count}× GPU ({res.chosen.reason})"
    settings = settings.model_copy(update=update)
    launch = build_launch(settings, checkpoint=checkpoint, served_model_name=served, quantization=quant,
                          api_key=key)
    log_path = cache_dir() / "logs" / f"serve-{launch.port}.log"
    return Prepared(launch, served, key, key_is_new, log_path, summary, settings.drain_timeout_s)


def _wait(proc: VLLMProcess, console: Console, timeout: float) -> float:
    with console.status("starting vLLM…") as status:
        def tick(elapsed: float, line: str) -> None:
            status.update(f"starting vLLM… {elapsed:4.0f} s  [dim]{line[-100:]}[/]")
        return proc.wait_ready(timeout, on_tick=tick)


def supervise(prep: Prepared, *, console: Console, max_restarts: int, startup_timeout: float,
              write_env: Path | None = None) -> None:
    """Start vLLM, show where it listens, restart it (bounded, with backoff) if the engine dies."""
    console.print(f"serving {prep.summary}")
    console.print(f"[dim]log: {prep.log_path}[/]")
    proc = VLLMProcess(prep.launch, prep.log_path)
    restarts = 0
    try:
        proc.start()
        took = _wait(proc, console, startup_timeout)
        base = prep.launch.base_url
        save_local_server(base, prep.served_name)
        console.print(f"[green]ready[/] after {took:.0f} s at [bold]{base}[/]")
        if prep.key_is_new:
            console.print(f"generated an API key for local servers (shown once; kept in "
                          f"{os.environ.get('LLMODAL_CONFIG_DIR') or 'the llmodal config dir'}):\n  {prep.api_key}")
        values = {"VLLM_BASE_URL": base, "VLLM_MODEL": prep.served_name, "VLLM_API_KEY": prep.api_key}
        if write_env:
            write_env_file(write_env, values)
            console.print(f"client settings written to {write_env}")
        console.print("client settings (`llmodal env --write .env` writes them):")
        for k, v in values.items():
            console.print(f"  {k}={mask(v) if k == 'VLLM_API_KEY' else v}")
        console.print("[dim]Ctrl-C stops the server.[/]")
        while True:
            time.sleep(1.0)
            if proc.alive():
                continue
            cause = diagnose(proc.tail()).message
            if restarts >= max_restarts:
                raise ServerStartError(f"vLLM exited and {max_restarts} restarts are used up: {cause}")
            restarts += 1
            delay = min(60, 2**restarts)
            console.print(f"[yellow]vLLM exited[/] ({cause}); restart {restarts}/{max_restarts} in {delay} s")
            time.sleep(delay)
            proc.start()
            took = _wait(proc, console, startup_timeout)
            console.print(f"[green]ready again[/] after {took:.0f} s")
    except KeyboardInterrupt:
        console.print("stopping vLLM (draining in-flight requests)…")
    finally:
        proc.stop(grace=prep.drain_s + 15.0)
    console.print("stopped")


def modal_url(settings: Settings, workspace: str) -> str:
    return f"https://{workspace}--{settings.app_name}-{C.WEB_LABEL}.modal.run/v1"


def client_values(settings: Settings, *, base_url: str | None = None, workspace: str | None = None,
                  api_key: str | None = None, model: str | None = None) -> dict[str, str]:
    """What a client's .env needs, for a Modal deployment (``workspace``) or the local server."""
    last = {} if workspace else last_local_server()
    if workspace:
        base = modal_url(settings, workspace)
    else:
        base = base_url or last.get("base_url") or f"http://{settings.host}:{settings.port}/v1"
    if not base.rstrip("/").endswith("/v1"):
        raise LlmodalError(f"--base-url {base!r} must end in /v1")
    key = api_key or settings.api_key()
    if key is None and not workspace:
        key = local_api_key()[0]
    values = {"VLLM_BASE_URL": base.rstrip("/"), "VLLM_MODEL": model or last.get("model") or settings.model}
    if key:
        values["VLLM_API_KEY"] = key
    return values
