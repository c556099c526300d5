"""What runs inside the Modal containers: the GPU server's lifecycle hooks, the gateway's body and the
one-time weight download.

The packaged app (``llmodal.modal.app``) calls these from its ``@modal.enter`` / ``@modal.exit`` hooks;
the rehearsal (tests/modal_hooks.py) calls the same hooks, in Modal's order, on the CPU engine. They
read llmodal's settings from the one value the deploy carried in (``LLMODAL_SETTINGS``).

Failures are loud: a start that cannot serve raises ``SystemExit`` with its reason (Modal marks the
container failed and starts another); a vLLM that dies unasked ends the container non-zero from the
watcher thread, so Modal replaces it instead of routing traffic to a dead engine.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from llmodal.core.errors import ConfigError, DoesNotFit, LlmodalError
from llmodal.core.config import Settings, from_handoff
from llmodal.plan.gpus import has_gpu
from llmodal.plan.planner import Resolution, plan_for_settings
from llmodal.engine.prepare import Prepared, dry_run_lines, prepare
from llmodal.modal.fast_boot import FastBoot, keys_file
from llmodal.modal.spec import STOP_MARGIN_S
from llmodal.modal.weights import WEIGHT_FORMATS, download_ignore, vllm_formats, weight_format
from llmodal.run.supervisor import Supervisor, say

PINS_FILE = "llmodal-pins.json"


def _hf_home() -> Path:
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))


def read_pins() -> dict[str, str]:
    try:
        return json.loads((_hf_home() / PINS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _snapshot_files(repo: str, commit: str) -> list[str]:
    snap = _hf_home() / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    return [p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()] if snap.is_dir() else []


def pinned_snapshot(repo: str, commit: str) -> tuple[bool, dict[str, str]]:
    """Whether the pinned checkpoint is complete in the volume, and the formats vLLM would choose online for it, read
    from its snapshot (which keeps every file the choice looks at): offline vLLM cannot list the repo and would
    choose others (modal/weights.py). One walk of the volume's snapshot."""
    files = _snapshot_files(repo, commit)
    cached = "config.json" in files and weight_format(files) is not None
    return cached, (vllm_formats(files) if cached else {})


def weights_cached(repo: str, commit: str) -> bool:
    return pinned_snapshot(repo, commit)[0]


# What the guide's secret holds (`modal secret create vllm-secrets …`). vLLM inherits the names llmodal does not
# keep to itself (engine.launch.private_env): the hub token.
SECRET_NAMES = ("HUGGING_FACE_HUB_TOKEN", "VLLM_SERVER_API_KEY", "MODAL_PROXY_TOKEN_ID", "MODAL_PROXY_TOKEN_SECRET")
# Set when the pinned weights are in the volume: vLLM loads them and never asks the hub.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1"}


def token_env(environ: Mapping[str, str]) -> dict[str, str]:
    # The guide's secret names HUGGING_FACE_HUB_TOKEN; current huggingface_hub reads HF_TOKEN first.
    token = environ.get("HUGGING_FACE_HUB_TOKEN")
    return {"HF_TOKEN": token} if token and not environ.get("HF_TOKEN") else {}


def _token_env() -> None:
    os.environ.update(token_env(os.environ))


def hook_env(environ: Mapping[str, str], *, fast_boot: bool, weights_offline: bool) -> dict[str, str]:
    """What the GPU container's hooks add to their environment, which vLLM inherits, given the environment Modal
    started them with: the hub token under huggingface_hub's name, the restore-safe settings around a
    snapshot (``start_fast_boot``), HF_HUB_OFFLINE when the pinned weights are in the volume
    (``container_prepare``). The dry run shows vLLM's environment from this."""
    return {**token_env(environ), **(SNAPSHOT_ENV if fast_boot else {}), **(OFFLINE_ENV if weights_offline else {})}


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
    if not gpu and not os.environ.get("LLMODAL_CPU_REHEARSAL"):
        # Never serve a GPU deployment from the CPU engine by accident: say why and stop.
        raise ConfigError(f"this container asks for {settings.gpu_count}× {settings.gpu} but `nvidia-smi -L` "
                          "lists no GPU (driver missing, or the GPU was not attached): refusing to start")
    kf = keys_file(settings, fast_boot)
    if not gpu:  # the rehearsal here: the CPU engine serves whatever VLLM_MODEL names
        return prepare(settings, gpu=False, keys_file=kf, control_key=fast_boot, fetch_adapters=True)
    res = resolve(settings)
    plan = res.chosen
    pin = read_pins().get(plan.checkpoint)
    revision = pin or (settings.model_revision if plan.checkpoint == settings.model else None)
    missing = adapters_missing(settings)
    cached, formats = pinned_snapshot(plan.checkpoint, pin) if pin else (False, {})
    if cached and not missing:
        os.environ.update(OFFLINE_ENV)
        say(f"weights for {plan.checkpoint}@{pin[:12]} are in the volume; hub offline")
    elif cached:
        say(f"adapters {', '.join(missing)} are not in the volume at their commits; they are fetched before vLLM "
            "starts (run `llmodal download` once to make cold starts load-only)")
    else:
        say(f"{plan.checkpoint} is not in the volume yet; vLLM will download it "
            "(run `modal run modal_vllm.py::download` once to make cold starts load-only)")
    return prepare(settings, gpu=True, revision=revision, sleep_mode=sleep_mode, keys_file=kf,
                   control_key=fast_boot, resolution=res, fetch_adapters=True, formats=formats)


def adapters_missing(settings: Settings) -> list[str]:
    """The hub adapters whose pinned snapshot is not in the volume (names)."""
    from huggingface_hub import try_to_load_from_cache

    return [a.name for a in settings.adapters if not a.is_folder and not (
        a.pinned and isinstance(try_to_load_from_cache(a.source, "adapter_config.json", revision=a.revision), str))]


def start_server(settings: Settings | None = None, *, volumes: Mapping | None = None) -> Supervisor:
    """``@modal.enter()`` of the GPU server: plan, start vLLM in the background, return once it listens
    (Modal's web_server waits for the port). ``volumes``: reloaded first, so a start sees what another
    container committed (weights, compile cache)."""
    _token_env()
    reload_volumes(volumes)
    prep = _prepared(settings)
    sup = Supervisor(prep.launch, echo=sys.stdout)
    sup.start()
    threading.Thread(target=_watch, args=(sup,), daemon=True).start()
    return sup


def stop_server(sup: Supervisor, settings: Settings | None = None) -> int | None:
    """``@modal.exit()``: SIGTERM → vLLM drains in-flight requests for LLMODAL_DRAIN_TIMEOUT, then stops; all of it
    inside Modal's exit grace (``spec.check_drain`` refused a longer drain at deploy)."""
    drain = (settings or container_settings()).drain_timeout_s
    say(f"stopping: draining in-flight requests (up to {drain} s)")
    code = sup.stop(grace=drain + STOP_MARGIN_S)
    say(f"vLLM stopped (code {code})")
    return code


def _prepared(settings: Settings | None, **kw) -> Prepared:
    try:
        settings = settings or container_settings()
        prep = container_prepare(settings, **kw)
    except LlmodalError as e:
        say(str(e))
        raise SystemExit(e.exit_code) from None
    for line in dry_run_lines(prep):
        say(line)
    return prep


def _watch(sup: Supervisor) -> None:
    code = sup.wait_dead()
    if sup.stopping:
        return
    say(f"vLLM exited with code {code}: {sup.diagnosis()}")
    # A death nobody asked for, whatever its code: end the container so Modal replaces it. This runs in
    # a watcher thread, which cannot raise into Modal's main thread; _exit is the one way out.
    os._exit(1)


def reload_volumes(volumes: Mapping | None) -> None:
    for path, vol in (volumes or {}).items():
        try:
            vol.reload()
            say(f"volume {path}: reloaded")
        except Exception as e:  # noqa: BLE001 - a read-only start still works; say so
            say(f"volume {path}: reload failed ({type(e).__name__}: {e}); using what is mounted")


def commit_volumes(volumes: Mapping | None) -> None:
    """Before the snapshot: what this start wrote (compile cache, weights fetched while serving) is saved,
    so a restore never points at a file the volume does not have."""
    for path, vol in (volumes or {}).items():
        vol.commit()
        say(f"volume {path}: committed")


# What Modal's GPU snapshot examples set for a restore: NCCL must not keep sockets or an async error
# watchdog from before the snapshot (reported as a TCPStore broken pipe on restore).
SNAPSHOT_ENV = {"NCCL_ASYNC_ERROR_HANDLING": "0", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "0",
                "NCCL_SOCKET_IFNAME": "lo", "TORCHINDUCTOR_COMPILE_THREADS": "1"}


def start_fast_boot(settings: Settings | None = None, *, volumes: Mapping | None = None) -> FastBoot:
    """``@modal.enter(snap=True)`` of the fast-boot server: start, warm up, sleep, commit the volumes.
    Any failure here ends the start non-zero with its reason: no snapshot of a half-ready server."""
    _token_env()
    reload_volumes(volumes)
    os.environ.update(SNAPSHOT_ENV)
    gpu = has_gpu()
    prep = _prepared(settings, gpu=gpu, sleep_mode=gpu, fast_boot=True)
    boot = FastBoot(prep, gpu=gpu)
    try:
        boot.prepare_snapshot(prep.settings.startup_timeout_s)
        commit_volumes(volumes)
    except Exception as e:  # noqa: BLE001 - every cause ends the same way: stop vLLM, say why, fail the start
        boot.sup.stop(grace=5)
        say(f"fast boot: the snapshot-side start failed: {type(e).__name__}: {e}")
        raise SystemExit(1) from None
    threading.Thread(target=_watch, args=(boot.sup,), daemon=True).start()
    return boot


def start_gateway(gpu_url, **relay) -> object:
    """The body of ``serve_vllm``, the CPU function that owns the guide's URL: the same guard as the GPU
    server, with the keys this container's secret holds, in front of a relay to ``gpu_url()``.
    A keyless secret (and public not chosen) accepts no key at all: closed, not open. ``relay``: the
    rehearsal's scaled-down times (tests/modal_web.py)."""
    from llmodal.engine.launch import guard_env
    from llmodal.modal.gateway import make_gateway
    from llmodal.modal.gpu_leg import WEB_LIMIT_S
    from llmodal.modal.spec import gateway_limit

    settings = container_settings()
    guard = {**guard_env(settings), "LLMODAL_API_KEYS": ",".join(settings.api_keys()),
             "LLMODAL_QUEUE_LIMIT": str(gateway_limit(settings))}
    if not settings.api_keys() and not settings.public:
        say(keyless_refusal(settings))
        guard["LLMODAL_API_KEYS_FILE"] = "/nonexistent/llmodal-no-key"  # no key opens anything
    for warning in settings.key_warnings():
        say(warning)
    relay.setdefault("hops", settings.timeout_s // WEB_LIMIT_S + 2)  # as long as the GPU function may run
    return make_gateway(gpu_url, guard, **relay)


def restore_fast_boot(boot: FastBoot, *, volumes: Mapping | None = None) -> None:
    """``@modal.enter(snap=False)``: reload the volumes, serve the keys the secret holds now, wake.
    A wake that fails ends the container non-zero (Modal starts another, from the snapshot or afresh):
    serving from a half-woken engine is never an option."""
    reload_volumes(volumes)
    keys = from_handoff(os.environ.get("LLMODAL_SETTINGS")).api_keys()
    if not keys and not boot.prep.settings.public:
        say("fast boot: the secret has no VLLM_SERVER_API_KEY at restore: every client request gets 401")
    try:
        boot.restore(keys=keys)
    except Exception as e:  # noqa: BLE001
        boot.sup.stop(grace=5)
        say(f"fast boot: wake after restore failed: {type(e).__name__}: {e}")
        raise SystemExit(1) from None


def download_weights(commit: Callable[[], None] | None = None) -> str:
    """Download the planned checkpoint into the HF cache volume and pin its exact commit."""
    from huggingface_hub import HfApi, snapshot_download

    _token_env()
    settings = container_settings()
    plan = resolve(settings).chosen
    revision = settings.model_revision if plan.checkpoint == settings.model else None
    api = HfApi()
    sha = api.model_info(plan.checkpoint, revision=revision).sha
    files = api.list_repo_files(plan.checkpoint, revision=sha)
    fmt = weight_format(files)
    if fmt is None:
        raise SystemExit(f"llmodal: {plan.checkpoint}@{sha} has no weights vLLM loads ({', '.join(WEIGHT_FORMATS)} "
                         "at the top of the repo): nothing was pinned")
    say(f"downloading {plan.checkpoint}@{sha} ({plan.weights_gib_total:.1f} GiB of weights, {fmt})")
    snapshot_download(plan.checkpoint, revision=sha, ignore_patterns=download_ignore(files))
    pins = read_pins()
    pins[plan.checkpoint] = sha
    (_hf_home() / PINS_FILE).write_text(json.dumps(pins, indent=2))
    for a in settings.adapters:  # `llmodal download` handed each one over at a commit
        if not a.is_folder:
            say(f"downloading adapter {a.name} = {a.source}@{a.revision}")
            snapshot_download(a.source, revision=a.revision)
    if commit:
        commit()
    say(f"pinned {plan.checkpoint} at {sha}")
    return sha

