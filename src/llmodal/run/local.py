"""``llmodal serve`` on this machine: pick the model, plan it, start vLLM, supervise it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from llmodal.core.errors import LlmodalError, ServerStartError
from llmodal.core.config import Settings
from llmodal.core.constants import modal_url
from llmodal.core.envfile import mask, read_env
from llmodal.core.envfile import write_env as write_env_file
from llmodal.engine.prepare import Prepared, prepare
from llmodal.core.state import cache_dir, last_local_server, local_api_key, save_local_server
from llmodal.run.supervisor import Supervisor


@dataclass
class Local:
    prep: Prepared
    api_key: str
    key_is_new: bool
    log_path: Path


def _model_configured(settings: Settings, model_given: bool, env_file: str | None) -> bool:
    from llmodal.engine.tiny_model import SERVED_NAME

    if settings.model == SERVED_NAME:  # the client .env `serve` wrote for the tiny model
        return False
    return model_given or "VLLM_MODEL" in os.environ or (bool(env_file) and "VLLM_MODEL" in read_env(env_file))


def prepare_local(settings: Settings, *, model_given: bool, gpu: bool, console: Console,
                  env_file: str | None = ".env", dry_run: bool = False) -> Local:
    """Decide what to serve and build its launch (``serving.prepare``). A local server always has
    a key: the configured one, else one generated and kept in llmodal's config dir."""
    key = settings.api_key()
    key_is_new = False
    if key is None:
        key, key_is_new = ("<generated on first serve>", False) if dry_run else local_api_key()
    tiny = tiny_name = None
    if not gpu and not _model_configured(settings, model_given, env_file):
        from llmodal.engine.tiny_model import SERVED_NAME, TinyShape, ensure_tiny_model, model_dir

        if dry_run:
            path = model_dir()
        else:
            with console.status("generating the embedded tiny model (first use only)…"):
                path = ensure_tiny_model()
        settings = settings.model_copy(update={"max_model_len": min(settings.max_model_len,
                                                                      TinyShape().max_position)})
        tiny, tiny_name = str(path), SERVED_NAME
    try:
        # Every configured key (rotation); the first is what llmodal's own clients send.
        served_keys = ",".join(settings.api_keys()) or key
        prep = prepare(settings, gpu=gpu, tiny_model=tiny, tiny_name=tiny_name, api_key=served_keys,
                       fetch_adapters=not dry_run)
    except LlmodalError:
        if gpu:
            from llmodal.plan.planner import plan_for_settings
            from llmodal.plan.view import plan_table

            try:
                res = plan_for_settings(settings)
                plan_table(res.chosen, res.asked, res.suggestions, console)
            except LlmodalError:
                pass
        raise
    for warning in settings.key_warnings():
        console.print(warning, style="yellow", markup=False, highlight=False)
    log_path = cache_dir() / "logs" / f"serve-{prep.launch.port}.log"
    return Local(prep, key, key_is_new, log_path)


def _wait(proc: Supervisor, console: Console, timeout: float) -> float:
    with console.status("starting vLLM…") as status:
        def tick(elapsed: float, line: str) -> None:
            status.update(f"starting vLLM… {elapsed:4.0f} s  [dim]{line[-100:]}[/]")
        return proc.wait_ready(timeout, on_tick=tick)


def supervise(local: Local, *, console: Console, max_restarts: int, startup_timeout: float,
              write_env: Path | None = None) -> None:
    """Start vLLM, show where it listens, restart it (bounded, with backoff) if the engine dies."""
    prep = local.prep
    console.print(f"serving {prep.summary}")
    console.print(f"[dim]log: {local.log_path}[/]")
    proc = Supervisor(prep.launch, local.log_path, die_with_parent=True)
    restarts = 0
    try:
        proc.start()
        took = _wait(proc, console, startup_timeout)
        base = prep.launch.base_url
        save_local_server(base, prep.served_name)
        console.print(f"[green]ready[/] after {took:.0f} s at [bold]{base}[/]")
        if local.key_is_new:
            console.print(f"generated an API key for local servers (shown once; kept in "
                          f"{os.environ.get('LLMODAL_CONFIG_DIR') or 'the llmodal config dir'}):\n  {local.api_key}")
        values = {"VLLM_BASE_URL": base, "VLLM_MODEL": prep.served_name, "VLLM_API_KEY": local.api_key}
        if write_env:
            write_env_file(write_env, values)
            console.print(f"client settings written to {write_env}")
        console.print("client settings (`llmodal env --write .env` writes them):")
        for k, v in values.items():
            console.print(f"  {k}={mask(v) if k == 'VLLM_API_KEY' else v}")
        console.print("[dim]Ctrl-C stops the server.[/]")
        while True:
            proc.wait_dead()
            cause = proc.diagnosis()
            if restarts >= max_restarts:
                raise ServerStartError(f"vLLM exited and {max_restarts} restarts are used up: {cause}")
            restarts += 1
            delay = min(60, 2**restarts)
            console.print(f"[yellow]vLLM exited[/] ({cause}); restart {restarts}/{max_restarts} in {delay} s")
            time.sleep(delay)
            proc.stop(grace=5)  # the old process group first: an orphaned engine would hold the port and memory
            proc.start()
            took = _wait(proc, console, startup_timeout)
            console.print(f"[green]ready again[/] after {took:.0f} s")
    except KeyboardInterrupt:
        console.print("stopping vLLM (draining in-flight requests)…")
    finally:
        proc.stop(grace=prep.settings.drain_timeout_s + 15.0)
    console.print("stopped")


def client_values(settings: Settings, *, base_url: str | None = None, workspace: str | None = None,
                  api_key: str | None = None, model: str | None = None) -> dict[str, str]:
    """What a client's .env needs, for a Modal deployment (``workspace``) or the local server."""
    last = {} if workspace else last_local_server()
    if workspace:
        base = modal_url(settings.app_name, workspace)
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
