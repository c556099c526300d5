"""``llmodal deploy | status | logs | stop | doctor``: the Modal app, from the same settings."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Annotated, Optional

import typer

from llmodal.cli._app import EnvFile, app, console, err, fail, settings_or_fail
from llmodal.core.errors import LlmodalError


# The app ships inside the package: `llmodal deploy` sends it from any folder.
APP_MODULE = "llmodal.modal.app"


@app.command()
def deploy(
    force: Annotated[bool, typer.Option(help="deploy even if the plan does not fit (containers start anyway)")] = False,
    public: Annotated[bool, typer.Option(help="allow an endpoint without a server key")] = False,
    dry_run: Annotated[bool, typer.Option(help="show what would be sent to Modal; send nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="with --dry-run: machine-readable")] = False,
    env_file: EnvFile = ".env",
) -> None:
    """Preflight (plan fits, key set, Modal token), then `modal deploy -m llmodal.modal.app` (the app the
    guide's `modal_vllm.py` imports), from this folder."""
    from llmodal.modal.preflight import deployed_url, modal_cli, modal_url, preflight, rehearse, run_streaming
    from llmodal.core.envfile import mask

    settings = settings_or_fail(env_file, force=force or None, public=public or None)
    try:
        res = preflight(settings, need_token=not dry_run, env_file=env_file or None)
        shown = rehearse(settings, res) if dry_run else None
    except LlmodalError as e:
        fail(e)
    if shown is not None:
        if as_json:
            print(json.dumps(shown, indent=2))
        else:
            notes = shown.pop("vllm_env_notes")
            for k, v in shown.items():
                if k == "vllm_env":  # one variable a line, with when it is set
                    console.print("vllm_env (every variable vLLM gets in the GPU container):", markup=False)
                    for name, value in v.items():
                        note = f"  ({notes[name]})" if name in notes else ""
                        console.print(f"  {name}={value}{note}", markup=False, highlight=False, soft_wrap=True)
                    console.print(f"  ({notes['*']})", markup=False, highlight=False, soft_wrap=True)
                    continue
                if k == "adapters" and v:  # one adapter a line: the commit the deploy pins it to, and why
                    console.print("adapters (each at the commit `llmodal deploy` sends):", markup=False)
                    for a in v:
                        console.print(f"  {a['name']} = {a['source']}@{a['commit']}  ({a['pinned']})", markup=False,
                                      highlight=False, soft_wrap=True)
                    continue
                console.print(f"{k}: {v if isinstance(v, str) else json.dumps(v)}", markup=False, highlight=False,
                              soft_wrap=True)
            console.print("dry run: nothing was sent to Modal", markup=False)
        return
    if res is not None:
        console.print(f"plan: {res.chosen.checkpoint} on {res.chosen.gpu_count}× {res.chosen.gpu} — {res.chosen.reason}")
    try:
        env = _app_env(settings, res, env_file, force=force, public=public)
    except LlmodalError as e:
        fail(e)
    # Wide enough that Modal's CLI prints each URL on one line (its console wraps at 80 columns when piped).
    code, out = run_streaming(modal_cli("deploy", "-m", APP_MODULE), console.print, env={**env, "COLUMNS": "400"})
    if code != 0:
        err.print(f"[red]error:[/] modal deploy failed (exit {code})")
        raise typer.Exit(code)
    url = deployed_url(out, settings)
    console.print("client .env (`llmodal env --workspace WS --write .env` writes it with the real key):")
    console.print(f"  VLLM_BASE_URL={url + '/v1' if url else modal_url(settings, 'WORKSPACE')}")
    console.print(f"  VLLM_MODEL={settings.model}")
    console.print(f"  VLLM_API_KEY={mask(settings.api_key())}")


def _app_env(settings, res, env_file: str, *, force: bool = False, public: bool = False,
             fresh_adapters: bool = False) -> dict[str, str]:
    """What the `modal deploy`/`modal run` subprocess needs to plan exactly what this preflight showed: the
    settings file (resolved once, here, to an absolute path), the two command-line choices, a build
    found on the hub pinned (``download`` and ``deploy`` pin the same one), and every hub adapter at the
    commit ``download`` fetched (``fresh_adapters``: download asks the hub now)."""
    from llmodal.modal.adapter_pins import pinned_modules

    env = {"LLMODAL_ENV_FILE": str(Path(env_file).resolve()) if env_file else "",
           **({"LLMODAL_FORCE": "true"} if force else {}), **({"LLMODAL_PUBLIC": "true"} if public else {})}
    if res is not None and res.discovery is not None and not settings.checkpoint:
        env["VLLM_CHECKPOINT"] = res.chosen.checkpoint
    if res is not None and settings.queue_limit is None:
        # The plan's queue limit, stated: the app sizes Modal's per-container concurrency from it.
        from llmodal.engine.prepare import queue_limit_for

        env["LLMODAL_QUEUE_LIMIT"] = str(queue_limit_for(res.chosen))
    modules = pinned_modules(settings.adapters, fresh=fresh_adapters)
    if modules:
        env["VLLM_LORA_MODULES"] = modules
    return env


@app.command()
def download(
    env_file: EnvFile = ".env",
) -> None:
    """Fill the weights volume once with the build `llmodal deploy` will serve (`modal run … ::download`)."""
    from llmodal.modal.preflight import modal_cli, modal_token_configured, run_streaming
    from llmodal.plan.planner import plan_for_settings

    settings = settings_or_fail(env_file)
    try:
        res = plan_for_settings(settings)
    except LlmodalError as e:
        fail(e)
    if not modal_token_configured():
        fail(LlmodalError("no Modal token: run `modal token new` (or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET)"))
    try:
        env = _app_env(settings, res, env_file, fresh_adapters=True)
    except LlmodalError as e:
        fail(e)
    console.print(f"downloading {res.chosen.checkpoint} ({res.chosen.weights_gib_total:.1f} GiB) into the volume")
    if env.get("VLLM_LORA_MODULES"):
        console.print(f"and the adapters, pinned: {env['VLLM_LORA_MODULES']}", markup=False)
    code, _ = run_streaming(modal_cli("run", "-m", f"{APP_MODULE}::download"), console.print,
                            env={**env, "COLUMNS": "400"})
    if code != 0:
        err.print(f"[red]error:[/] modal run … ::download failed (exit {code})")
        raise typer.Exit(code)


@app.command()
def status(
    probe: Annotated[bool, typer.Option(help="also GET /health and /v1/models (this may start a GPU container "
                                             "on a scaled-to-zero app, which costs money)")] = False,
    base_url: Annotated[Optional[str], typer.Option(help="endpoint for --probe (default: VLLM_BASE_URL)")] = None,
    api_key: Annotated[Optional[str], typer.Option(help="key for --probe (default: VLLM_API_KEY)")] = None,
    env_file: EnvFile = ".env",
) -> None:
    """The app's state as Modal reports it (no request reaches the app), and the plan it runs."""
    from llmodal.modal.preflight import modal_cli
    from llmodal.plan.planner import plan_for_settings

    settings = settings_or_fail(env_file)
    ok = True
    try:
        out = subprocess.run(modal_cli("app", "list", "--json"), capture_output=True, text=True, timeout=60)
        apps = [a for a in json.loads(out.stdout or "[]") if a.get("Description") == settings.app_name]
        if out.returncode != 0:
            raise ValueError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}")
        for a in apps:
            console.print(f"app {settings.app_name}: {a.get('State')}, running containers: {a.get('Tasks')}")
        if not apps:
            console.print(f"app {settings.app_name}: not deployed in this Modal workspace")
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:
        ok = False
        console.print(f"could not ask Modal for the app's state: {str(e)[:200]}", markup=False)
    if probe:
        ok = _probe(base_url, api_key, env_file) and ok
    try:
        p = plan_for_settings(settings).chosen
        console.print(f"plan: {p.checkpoint} on {p.gpu_count}× {p.gpu}: {p.reason}; ${p.price_per_hour:.2f}/h")
    except LlmodalError as e:
        console.print(f"plan: {e}")
    raise typer.Exit(0 if ok else 1)


def _probe(base_url: Optional[str], api_key: Optional[str], env_file: str) -> bool:
    import httpx

    from llmodal.tools.client import resolve_endpoint
    from llmodal.run.health import health_url

    try:
        ep = resolve_endpoint(base_url, api_key, None, env_file)
    except LlmodalError as e:
        fail(e)
    console.print(f"endpoint: {ep.base_url} (probing: a scaled-to-zero app starts a container for this)")
    try:
        h = httpx.get(health_url(ep.root), timeout=10)
        r = httpx.get(f"{ep.base_url}/models", headers=ep.headers, timeout=10)
    except httpx.HTTPError as e:
        console.print(f"[red]unreachable[/]: {type(e).__name__}")
        return False
    models = [m["id"] for m in r.json().get("data", [])] if r.status_code == 200 else []
    console.print(f"/health: HTTP {h.status_code}; models: {', '.join(models) or f'HTTP {r.status_code}'}")
    return h.status_code == 200


@app.command()
def logs(env_file: EnvFile = ".env") -> None:
    """`modal app logs vllm-llama70b` (follows the app's logs)."""
    from llmodal.modal.preflight import modal_cli

    raise typer.Exit(subprocess.call(modal_cli("app", "logs", settings_or_fail(env_file).app_name)))


@app.command()
def stop(env_file: EnvFile = ".env") -> None:
    """`modal app stop vllm-llama70b`: stop the app (and its GPU bill)."""
    from llmodal.modal.preflight import modal_cli

    raise typer.Exit(subprocess.call(modal_cli("app", "stop", settings_or_fail(env_file).app_name)))


@app.command()
def doctor(env_file: EnvFile = ".env") -> None:
    """Check what the guide's troubleshooting list checks by hand, and say the fix for each failure."""
    from llmodal.core.checks import checks_table
    from llmodal.modal.preflight import doctor_checks

    checks = doctor_checks(settings_or_fail(env_file), env_file)
    console.print(checks_table(checks))
    raise typer.Exit(1 if any(c.ok is False for c in checks) else 0)


@app.command()
def init(
    force: Annotated[bool, typer.Option(help="overwrite modal_vllm.py and .env if they exist")] = False,
) -> None:
    """Write the guide's modal_vllm.py and a commented .env template into this folder; a file that exists is
    kept (said so), the missing ones are written."""
    from llmodal.modal.templates import GUIDE_APP, env_template

    from llmodal.core.envfile import read_env

    files = {Path("modal_vllm.py"): GUIDE_APP, Path(".env"): env_template()}
    for path, text in files.items():
        if path.exists() and not path.is_file():
            fail(LlmodalError(f"{path.resolve()} exists and is not a file; nothing was written there"))
        if path.exists() and not force:
            # A .env may already be the guide's client settings: never overwritten, and the rest still written.
            console.print(f"kept {path.resolve()} (it exists; --force overwrites it)")
            if path.name == ".env":
                lacks = [n for n in ("VLLM_SERVER_API_KEY", "MODAL_PROXY_TOKEN_ID", "MODAL_PROXY_TOKEN_SECRET")
                         if n not in read_env(str(path))]
                if lacks:
                    console.print(f"  it has no {', '.join(lacks)}: add them (or export them) before "
                                  "`llmodal deploy`; `llmodal init --force` writes the full commented template")
            continue
        tmp = path.with_name(path.name + ".llmodal-new")
        tmp.write_text(text)
        tmp.replace(path)
        console.print(f"wrote {path.resolve()}")
    console.print("next: fill VLLM_SERVER_API_KEY in .env, `llmodal plan`, then `llmodal deploy` "
                  "(or `modal deploy modal_vllm.py`)")
