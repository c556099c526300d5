"""What runs inside the Modal container: the serve body and the one-time weight download.

Both can run on any machine (the tests run ``start_server`` on the CPU engine with the tiny
model): they read llmodal's settings from the environment ``modal_vllm.py`` carried in.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from ._exceptions import DoesNotFit
from .config import Settings, load_settings
from .diagnostics import diagnose
from .plan import Plan, plan_for_settings
from .vllm_args import Launch, build_launch

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


def resolve(settings: Settings) -> Plan:
    res = plan_for_settings(settings)
    if not res.chosen.fits and os.environ.get("LLMODAL_FORCE") != "1":
        raise DoesNotFit(f"llmodal: the plan does not fit: {res.chosen.reason}. Run `llmodal plan` where you "
                         "deploy; set LLMODAL_FORCE=1 to start anyway")
    for note in res.chosen.notes:
        print(f"llmodal: {note}", flush=True)
    return res.chosen


def container_launch(settings: Settings) -> Launch:
    """The same argv builder as ``llmodal serve``, with the checkpoint the planner chose and the
    revision ``download`` pinned (then the hub is not contacted at all)."""
    plan = resolve(settings)
    pin = read_pins().get(plan.checkpoint)
    revision = pin or (settings.model_revision if plan.checkpoint == settings.model else None)
    if pin and weights_cached(plan.checkpoint, pin):
        os.environ["HF_HUB_OFFLINE"] = "1"
        print(f"llmodal: weights for {plan.checkpoint}@{pin[:12]} are in the volume; hub offline", flush=True)
    else:
        print(f"llmodal: {plan.checkpoint} is not in the volume yet; vLLM will download it "
              "(run `modal run modal_vllm.py::download` once to make cold starts load-only)", flush=True)
    return build_launch(settings, checkpoint=plan.checkpoint, served_model_name=settings.model,
                        quantization=plan.vllm_quantization, revision=revision)


def start_server(settings: Settings | None = None, *, exit_on_death: bool = True) -> subprocess.Popen[bytes]:
    """Start vLLM in the background and return; Modal's web_server waits for the port.

    A watcher copies vLLM's output to the container log and, if vLLM dies, prints a one-line
    diagnosis and (in the container) exits the process, so Modal replaces an unhealthy
    container instead of routing traffic to a dead engine."""
    _token_env()
    settings = settings or load_settings(None)
    launch = container_launch(settings)
    print(f"llmodal: starting {launch.shell()}", flush=True)
    proc = subprocess.Popen(launch.argv, env=launch.child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    threading.Thread(target=_watch, args=(proc, exit_on_death), daemon=True).start()
    return proc


def _watch(proc: subprocess.Popen[bytes], exit_on_death: bool) -> None:
    tail: collections.deque[str] = collections.deque(maxlen=300)
    assert proc.stdout
    for raw in proc.stdout:
        line = raw.decode("utf-8", "replace")
        tail.append(line.rstrip("\n"))
        sys.stdout.write(line)
        sys.stdout.flush()
    code = proc.wait()
    why = "stopped" if code == 0 else diagnose("\n".join(tail)).message
    print(f"llmodal: vLLM exited with code {code}: {why}", flush=True)
    if exit_on_death:
        os._exit(1)


def download_weights(commit: Callable[[], None] | None = None) -> str:
    """Download the planned checkpoint into the HF cache volume and pin its exact commit."""
    from huggingface_hub import HfApi, snapshot_download

    _token_env()
    settings = load_settings(None)
    plan = resolve(settings)
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
