"""What runs inside the Modal container: the serve body and the one-time weight download.

Both can run on any machine (the tests run ``start_server`` on the CPU engine with the tiny
model): they read llmodal's settings from the environment ``modal_vllm.py`` carried in.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from llmodal.core.errors import ConfigError, DoesNotFit, LlmodalError
from llmodal.core.config import Settings, from_handoff
from llmodal.plan.gpus import has_gpu
from llmodal.plan.planner import Resolution, plan_for_settings
from llmodal.engine.prepare import Prepared, dry_run_lines, prepare
from llmodal.modal.fast_boot import FastBoot, keys_file
from llmodal.run.supervisor import Supervisor, say

PINS_FILE = "llmodal-pins.json"


def _hf_home() -> Path:
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))


def read_pins() -> dict[str, str]:
    try:
        return json.loads((_hf_home() / PINS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def weights_cached(repo: str, commit: str) -> bool:
    snap = _hf_home() / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    return (snap / "config.json").is_file() and any(snap.glob("*.safetensors"))


def _token_env() -> None:
    # The guide's secret names HUGGING_FACE_HUB_TOKEN; current huggingface_hub reads HF_TOKEN first.
    if os.environ.get("HUGGING_FACE_HUB_TOKEN") and not os.environ.get("HF_TOKEN"):
        os.environ["HF_TOKEN"] = os.environ["HUGGING_FACE_HUB_TOKEN"]


def container_settings() -> Settings:
    """The deployer's settings (one handed-over value) plus the secret's key, re-validated here."""
    return from_handoff(os.environ.get("LLMODAL_SETTINGS"))


def keyless_refusal(settings: Settings) -> str:
    return (f"refusing to start: the secret `{settings.secret_name}` has no VLLM_SERVER_API_KEY, so every route "
            f"would be public. Fix: modal secret create {settings.secret_name} --force "
            "HUGGING_FACE_HUB_TOKEN=hf_... VLLM_SERVER_API_KEY=$(python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'), or deploy with `llmodal deploy --public` (LLMODAL_PUBLIC=true) "
            "for an endpoint without a key")


def resolve(settings: Settings) -> Resolution:
    res = plan_for_settings(settings)
    if not res.chosen.fits and not settings.force:
        raise DoesNotFit(f"the plan does not fit: {res.chosen.reason}. Run `llmodal plan` where you "
                         "deploy; deploy with --force (LLMODAL_FORCE=true) to start anyway")
    for note in res.chosen.notes:
        say(note)
    return res


def container_prepare(settings: Settings, *, gpu: bool | None = None, sleep_mode: bool = False,
                      fast_boot: bool = False) -> Prepared:
    """The container's launch: the same ``serving.prepare`` as ``llmodal serve``, with the revision
    ``download`` pinned (then the hub is not contacted at all). Refuses a keyless start unless public."""
    if settings.api_key() is None and not settings.public:
        raise ConfigError(keyless_refusal(settings))
    for warning in settings.key_warnings():
        say(warning)
    gpu = has_gpu() if gpu is None else gpu
    kf = keys_file(settings, fast_boot)
    if not gpu:  # the rehearsal here: the CPU engine serves whatever VLLM_MODEL names
        return prepare(settings, gpu=False, keys_file=kf, control_key=fast_boot)
    res = resolve(settings)
    plan = res.chosen
    pin = read_pins().get(plan.checkpoint)
    revision = pin or (settings.model_revision if plan.checkpoint == settings.model else None)
    if pin and weights_cached(plan.checkpoint, pin):
        os.environ["HF_HUB_OFFLINE"] = "1"
        say(f"weights for {plan.checkpoint}@{pin[:12]} are in the volume; hub offline")
    else:
        say(f"{plan.checkpoint} is not in the volume yet; vLLM will download it "
            "(run `modal run modal_vllm.py::download` once to make cold starts load-only)")
    return prepare(settings, gpu=True, revision=revision, sleep_mode=sleep_mode, keys_file=kf,
                   control_key=fast_boot, resolution=res)


def start_server(settings: Settings | None = None, *, exit_on_death: bool = True) -> Supervisor:
    """Start vLLM in the background and return; Modal's web_server waits for the port.

    The supervisor copies vLLM's output to the container log; if vLLM dies, a watcher prints a
    one-line diagnosis and (in the container) exits the process non-zero, so Modal replaces an
    unhealthy container instead of routing traffic to a dead engine. SIGINT/SIGTERM (Modal's
    preemption) drain in-flight requests, then exit."""
    _token_env()
    try:
        settings = settings or container_settings()
        prep = container_prepare(settings)
    except LlmodalError as e:
        say(str(e))
        if exit_on_death:
            os._exit(e.exit_code)
        raise
    for line in dry_run_lines(prep):
        say(line)
    sup = Supervisor(prep.launch, echo=sys.stdout)
    sup.start()
    threading.Thread(target=_watch, args=(sup, exit_on_death), daemon=True).start()
    if exit_on_death and threading.current_thread() is threading.main_thread():
        _drain_on_signals(sup, settings.drain_timeout_s)
    return sup


_stopping = threading.Event()  # a signal is draining: vLLM's exit is expected, not a death


def _drain_on_signals(sup: Supervisor, drain_s: int) -> None:
    def handler(signum, _frame):
        if _stopping.is_set():
            return
        _stopping.set()
        say(f"signal {signal.Signals(signum).name}: draining in-flight requests (up to {drain_s} s)")
        code = sup.stop(grace=drain_s + 3)
        os._exit(0 if code in (0, -signal.SIGTERM, None) else 1)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _watch(sup: Supervisor, exit_on_death: bool) -> None:
    code = sup.wait_exit()
    if _stopping.is_set() or sup.stopping:
        return
    say(f"vLLM exited with code {code}: {sup.diagnosis()}")
    if exit_on_death:
        os._exit(1)  # nobody asked it to stop: a death, whatever its code


def start_fast_boot(settings: Settings | None = None) -> FastBoot:
    """``@modal.enter(snap=True)`` of the fast-boot server: start asleep-ready, warm up, sleep."""
    _token_env()
    try:
        settings = settings or container_settings()
        gpu = has_gpu()
        boot = FastBoot(container_prepare(settings, gpu=gpu, sleep_mode=gpu, fast_boot=True), gpu=gpu)
    except LlmodalError as e:
        say(str(e))
        os._exit(e.exit_code)
    for line in dry_run_lines(boot.prep):
        say(line)
    boot.prepare_snapshot(settings.startup_timeout_s)
    threading.Thread(target=_watch, args=(boot.sup, True), daemon=True).start()
    return boot


def start_gateway(gpu_url) -> object:
    """The body of ``serve_vllm``, the CPU function that owns the guide's URL: the same guard as the GPU
    server, with the keys this container's secret holds, in front of a relay to ``gpu_url()``.
    A keyless secret (and public not chosen) accepts no key at all: closed, not open."""
    from llmodal.modal.gateway import make_gateway

    settings = container_settings()
    guard = {"LLMODAL_METRICS_PUBLIC": "1" if settings.metrics_public else "0",
             "LLMODAL_MAX_BODY_BYTES": str(settings.max_body_bytes), "LLMODAL_API_KEYS": ",".join(settings.api_keys())}
    if not settings.api_keys() and not settings.public:
        say(keyless_refusal(settings))
        guard["LLMODAL_API_KEYS_FILE"] = "/nonexistent/llmodal-no-key"  # no key opens anything
    for warning in settings.key_warnings():
        say(warning)
    return make_gateway(gpu_url, guard)


def restore_fast_boot(boot: FastBoot) -> None:
    """``@modal.enter(snap=False)``: serve the keys the secret holds now, then wake."""
    keys = from_handoff(os.environ.get("LLMODAL_SETTINGS")).api_keys()
    if not keys and not boot.prep.settings.public:
        say("fast boot: the secret has no VLLM_SERVER_API_KEY at restore: every client request gets 401")
    boot.restore(keys=keys)


def main() -> None:
    """``python -m llmodal.modal.container [--fast-boot]``: the container's serve body as a foreground
    process (what the rehearsal runs): start (with --fast-boot: the snapshot steps, then the restore
    steps), then wait until vLLM exits or a signal drains it."""
    if "--fast-boot" in sys.argv:
        boot = start_fast_boot()
        restore_fast_boot(boot)
        _drain_on_signals(boot.sup, boot.prep.settings.drain_timeout_s)
    else:
        start_server()
    while True:
        time.sleep(3600)


def download_weights(commit: Callable[[], None] | None = None) -> str:
    """Download the planned checkpoint into the HF cache volume and pin its exact commit."""
    from huggingface_hub import HfApi, snapshot_download

    _token_env()
    settings = container_settings()
    plan = resolve(settings).chosen
    revision = settings.model_revision if plan.checkpoint == settings.model else None
    sha = HfApi().model_info(plan.checkpoint, revision=revision).sha
    print(f"llmodal: downloading {plan.checkpoint}@{sha} ({plan.weights_gib_total:.1f} GiB of weights)", flush=True)
    snapshot_download(plan.checkpoint, revision=sha, ignore_patterns=["original/*", "*.pth", "*.bin", "*.pt"])
    pins = read_pins()
    pins[plan.checkpoint] = sha
    (_hf_home() / PINS_FILE).write_text(json.dumps(pins, indent=2))
    if commit:
        commit()
    print(f"llmodal: pinned {plan.checkpoint} at {sha}", flush=True)
    return sha


if __name__ == "__main__":
    main()
