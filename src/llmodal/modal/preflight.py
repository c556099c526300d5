"""Preflight, deploy, status, logs, stop and doctor for the Modal app.

Every paid action is preceded by checks that cost nothing: the plan fits, a server key is
configured, a Modal token exists. Refusals name the fix and send nothing anywhere.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from llmodal.core.errors import LlmodalError, PreflightError
from llmodal.core.checks import Check
from llmodal.core.config import Settings
from llmodal.core.envfile import read_env
from llmodal.core import constants as C
from llmodal.core.constants import HF_CACHE_VOLUME, VLLM_CACHE_VOLUME, WEB_LABEL
from llmodal.modal.spec import check_drain
from llmodal.modal.weights import FORMAT_NOTES
from llmodal.plan.planner import Resolution, plan_for_settings

MODAL_ENTRY = "modal_vllm.py"


def modal_token_configured() -> bool:
    if os.environ.get("MODAL_TOKEN_ID") and os.environ.get("MODAL_TOKEN_SECRET"):
        return True
    path = Path(os.environ.get("MODAL_CONFIG_PATH") or Path.home() / ".modal.toml")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False
    profiles = [v for v in data.values() if isinstance(v, dict)]
    return any(p.get("token_id") and p.get("token_secret") for p in profiles)


def _plan_check(settings: Settings) -> tuple[Check, Resolution | None]:
    try:
        res = plan_for_settings(settings)
    except LlmodalError as e:
        return Check("plan fits", False, str(e), "run `llmodal plan` and fix the model or GPU"), None
    p = res.chosen
    if p.fits:
        return Check("plan fits", True, f"{p.checkpoint} on {p.gpu_count}× {p.gpu}: {p.reason}"), res
    return Check("plan fits", False, p.reason, "run `llmodal plan` for options that fit, or pass --force"), res


PROXY_TOKEN_NAMES = ("MODAL_PROXY_TOKEN_ID", "MODAL_PROXY_TOKEN_SECRET")
PROXY_TOKEN_URL = "https://modal.com/settings/proxy-auth-tokens"


def missing_proxy_token(env_file: str | None) -> list[str]:
    """The proxy-token names set neither here (environment) nor in ``env_file``, or not shaped like a proxy
    token (``wk-…``/``ws-…``, no whitespace). The gateway needs the pair
    from the Modal secret to reach the GPU server; a secret's values cannot be read from here, so, like the
    server key, the pair is stated here too and checked before anything is sent."""
    file_env = read_env(env_file) if env_file and Path(env_file).is_file() else {}
    prefix = dict(zip(PROXY_TOKEN_NAMES, ("wk-", "ws-")))  # what Modal's proxy auth tokens look like
    values = {n: os.environ.get(n) or file_env.get(n) or "" for n in PROXY_TOKEN_NAMES}
    return [n for n, v in values.items() if not v.startswith(prefix[n]) or any(c.isspace() for c in v)]


def proxy_token_fix(settings: Settings, missing: list[str]) -> str:
    return (f"{' and '.join(missing)} not set (or not a wk-…/ws-… value): make a proxy auth token at {PROXY_TOKEN_URL}, add the pair to the "
            f"Modal secret `{settings.secret_name}` (modal secret create {settings.secret_name} --force ... "
            "MODAL_PROXY_TOKEN_ID=wk-... MODAL_PROXY_TOKEN_SECRET=ws-...) and here (environment or .env); "
            "without it the gateway cannot reach the GPU server and answers every request 500")


def preflight(settings: Settings, *, need_token: bool = True, env_file: str | None = ".env") -> Resolution | None:
    """Refuse (PreflightError) before anything is sent if any check fails. ``settings.force`` and
    ``settings.public`` are the deployer's explicit choices; they travel to the container too."""
    problems = []
    plan_check, res = _plan_check(settings)
    if not plan_check.ok and not settings.force:
        problems.append(f"the plan does not fit: {plan_check.detail} ({plan_check.fix})")
    if settings.api_key() is None and not settings.public:
        problems.append("no server key: set VLLM_SERVER_API_KEY here and in the Modal secret "
                        f"`{settings.secret_name}` (same value), or pass --public for a keyless endpoint")
    missing = missing_proxy_token(env_file)
    if missing:
        problems.append(proxy_token_fix(settings, missing))
    try:
        check_drain(settings)
    except LlmodalError as e:
        problems.append(str(e))
    folders = [a for a in settings.adapters if a.is_folder]
    if folders:
        problems.append(f"VLLM_LORA_MODULES: adapter {folders[0].name!r} is a folder on this machine "
                        f"({folders[0].source}), which the container does not have: push it to the hub and list it "
                        "as name=owner/repo")
    if need_token and not modal_token_configured():
        problems.append("no Modal token: run `modal token new` (or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET)")
    if problems:
        raise PreflightError("refusing to deploy, nothing was sent:\n  - " + "\n  - ".join(problems))
    return res


def modal_url(settings: Settings, workspace: str) -> str:
    return C.modal_url(settings.app_name, workspace)


def rehearse(settings: Settings, res: Resolution | None = None) -> dict:
    """What `modal deploy modal_vllm.py` would send for these settings (secrets by name only) and
    the command the container will run, every hub adapter at the commit the deploy pins it to. Sends nothing
    to Modal (the hub is asked which commit an adapter's revision names when download recorded none). ``res``:
    the preflight's plan."""
    from llmodal.modal.spec import (HF_CACHE_PATH, IMAGE_REQUIREMENTS, PYTHON_VERSION, VLLM_CACHE_PATH, app_spec,
                                    deploy_settings)
    from llmodal.modal.fast_boot import keys_file
    from llmodal.engine.prepare import prepare
    from llmodal.modal.adapter_pins import pin

    written = settings.adapters
    adapters = pin(written, fresh=False) if written else []  # each commit as written, and where it came from
    if adapters:  # what every deploy path hands the container (deploy_settings): every hub adapter at its commit
        pinned = ",".join(a.spelled() for a, _ in adapters)
        res = res if pinned == settings.lora_modules else None  # planned again: the container plans the commits
    settings = deploy_settings(settings)  # the same commits: the pin above recorded any it resolved
    spec = app_spec(settings)
    secret_key = "<from the secret>" if settings.api_key() or not settings.public else ""
    shown = settings.model_copy(update={"server_api_key": SecretStr(secret_key) if secret_key else None})
    prep = prepare(shown, gpu=True, api_key=secret_key, sleep_mode=settings.snapshot,  # as the container starts it
                   keys_file=keys_file(shown, settings.snapshot), control_key=settings.snapshot, resolution=res,
                   adapters_in=f"{HF_CACHE_PATH}/hub")
    p = prep.resolution.chosen if prep.resolution else None
    return {
        "app": spec.app_name, "function": "Server.serve_gpu" if settings.snapshot else "serve_gpu",
        "web_label": WEB_LABEL,
        "gateway": {"function": "serve_vllm", "label": spec.web_label, "gpu": None, "checks_key": True,
                    "public": True, "max_concurrent_inputs": spec.gateway_inputs},
        "gpu_server": {"label": spec.gpu_label, "requires_proxy_auth": True},
        "fast_boot": {"mode": settings.fast_boot, "snapshot": settings.snapshot, **spec.snapshot_kwargs},
        "url": modal_url(settings, "WORKSPACE"), "gpu": spec.gpu, **{k: v for k, v in spec.function_kwargs.items()
                                                                     if k != "gpu"},
        "startup_timeout": spec.startup_timeout, "max_concurrent_inputs": spec.concurrent_inputs,
        "web_port": spec.web_port, "secrets": [settings.secret_name],
        "volumes": {HF_CACHE_PATH: HF_CACHE_VOLUME, VLLM_CACHE_PATH: VLLM_CACHE_VOLUME},
        "image": {"python": PYTHON_VERSION, "pip": IMAGE_REQUIREMENTS, "local_python_source": ["llmodal"]},
        "container_env": spec.container_env, **vllm_environment(settings, spec.container_env, prep.launch),
        "plan": {"checkpoint": p.checkpoint, "fits": p.fits, "reason": p.reason, "kv_tokens": p.kv_tokens,
                 "kv_cache_bytes": p.kv_cache_bytes, "price_per_hour": p.price_per_hour,
                 "lora_gib_per_gpu": round(p.lora_gib_per_gpu, 3)} if p else None,
        "adapters": [{"name": a.name, "source": a.source, "revision": w.revision or "main", "commit": a.revision,
                      "pinned": how} for (a, how), w in zip(adapters, written)] or None,
        "command": prep.launch.shell(), "command_added_in_container": FORMAT_NOTES,
        "command_env": prep.launch.shown_env(),
        "key": "VLLM_SERVER_API_KEY from the secret" if not settings.public else "none (public, chosen)",
    }


def vllm_environment(settings: Settings, app_env: dict[str, str], launch) -> dict:
    """Every variable vLLM gets in the GPU container, as the container makes it: the App's env and the secret's
    names (``container.SECRET_NAMES``), what the hooks add (``container.hook_env``), then the launch's own
    (``Launch.child_env``, the supervisor's, which drops llmodal's private names). Secrets masked."""
    from llmodal.core import vllm_flags as flags
    from llmodal.modal.container import OFFLINE_ENV, SECRET_NAMES, hook_env

    base = {**app_env, **{n: f"<from the secret {settings.secret_name}, hidden>" for n in SECRET_NAMES}}
    env = launch.child_env({**base, **hook_env(base, fast_boot=settings.snapshot, weights_offline=True)})
    hidden = flags.secret_env_names()
    notes = {**{k: "only when the pinned weights are in the volume (after `llmodal download`); otherwise vLLM "
                   "downloads them" for k in OFFLINE_ENV},
             "HF_TOKEN": "copied from HUGGING_FACE_HUB_TOKEN when the secret has no HF_TOKEN",
             "*": f"and any other name the secret `{settings.secret_name}` holds, and what the image and Modal's "
                  "runtime set (PATH, MODAL_*)"}
    return {"vllm_env": {k: "<set, hidden>" if k in hidden else v for k, v in sorted(env.items())},
            "vllm_env_notes": notes}


def modal_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "modal", *args]


def run_streaming(argv: list[str], on_line: Callable[[str], None], cwd: str | None = None,
                  env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                            env=None if env is None else {**os.environ, **env})
    out = []
    assert proc.stdout
    for line in proc.stdout:
        out.append(line)
        on_line(line.rstrip("\n"))
    return proc.wait(), "".join(out)


_URL = re.compile(r"https://[A-Za-z0-9._-]+\.modal\.run")


_GATEWAY_URL = re.compile(r"Function serve_vllm\b[^\n]*\n[^h]*(https://[A-Za-z0-9._-]+\.modal\.run)")


def deployed_url(output: str, settings: Settings) -> str | None:
    """The gateway's URL as Modal printed it: the URL under the function ``serve_vllm`` (Modal shortens a
    label past 63 characters, so the printed URL wins over any formula), else one whose host ends in
    the guide's label (the GPU server's own URL, behind proxy auth, is not for clients)."""
    m = _GATEWAY_URL.search(output)
    if m:
        return m.group(1)
    label = f"--{settings.app_name}-{WEB_LABEL}.modal.run"
    urls = [u for u in _URL.findall(output) if u.rstrip("/").endswith(label)]
    return urls[-1] if urls else None


def doctor_checks(settings: Settings, env_file: str | None) -> list[Check]:
    """The guide's troubleshooting list, as checks that say their fix."""
    checks: list[Check] = []
    token = os.environ.get("HUGGING_FACE_HUB_TOKEN") or os.environ.get("HF_TOKEN")
    # A token that lives only in the Modal secret is a correct setup that cannot be seen from here.
    checks.append(Check("HF token here", True if token else None,
                        "HUGGING_FACE_HUB_TOKEN is set" if token else
                        f"not set here; it may be in the Modal secret `{settings.secret_name}` only",
                        "" if token else "export HUGGING_FACE_HUB_TOKEN here too so doctor can check the model's gate"))
    plan_check, res = _plan_check(settings)
    checks.append(plan_check)
    checks.append(_gate_check(res.chosen.checkpoint if res else settings.model, token))
    if res and res.chosen.checkpoint != settings.model and not Path(settings.model).exists():
        # A quantized build may be ungated while its base's license still binds its users.
        base = _gate_check(settings.model, token)
        checks.append(Check("base model license", base.ok, base.detail.replace("is reachable", "license accepted"),
                            base.fix))
    key = settings.api_key()
    client_key = os.environ.get("VLLM_API_KEY") or (read_env(env_file).get("VLLM_API_KEY") if env_file else None)
    if key is None:
        checks.append(Check("server key", False, "VLLM_SERVER_API_KEY is not set",
                            f"set it here and in the Modal secret `{settings.secret_name}`"))
    elif client_key is None:
        checks.append(Check("server key", True, "VLLM_SERVER_API_KEY is set; no client VLLM_API_KEY to compare",
                            "run `llmodal env --workspace WS --write .env`"))
    else:
        same = client_key == key
        checks.append(Check("server key", same, "the client's VLLM_API_KEY matches" if same else
                            "the client's VLLM_API_KEY differs from VLLM_SERVER_API_KEY",
                            "" if same else "run `llmodal env --workspace WS --write .env`"))
    missing = missing_proxy_token(env_file)
    checks.append(Check("Modal proxy token", not missing, "MODAL_PROXY_TOKEN_ID and MODAL_PROXY_TOKEN_SECRET are set"
                        if not missing else f"{' and '.join(missing)} not set here",
                        "" if not missing else proxy_token_fix(settings, missing)))
    has_modal = modal_token_configured()
    checks.append(Check("Modal token", has_modal, "configured" if has_modal else "missing",
                        "" if has_modal else "run `modal token new`"))
    return checks


def _gate_check(repo: str, token: str | None) -> Check:
    if Path(repo).exists():
        return Check("model access", True, f"{repo} is a local directory")
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError:
        return Check("model access", None, "huggingface_hub is not installed here")
    try:
        HfApi().model_info(repo, token=token, timeout=5)
        HfApi().auth_check(repo, token=token) if token else None
        return Check("model access", True, f"{repo} is reachable with this token")
    except GatedRepoError:
        return Check("model access", False, f"{repo} is gated and this token has no access",
                     f"accept the license at https://huggingface.co/{repo}")
    except RepositoryNotFoundError:
        return Check("model access", False, f"{repo} does not exist or needs a token",
                     "check VLLM_MODEL and HUGGING_FACE_HUB_TOKEN")
    except Exception as e:  # offline: not a failure of the user's setup
        return Check("model access", None, f"hub not reachable from here ({type(e).__name__}); not checked")
