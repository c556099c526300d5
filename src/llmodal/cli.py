"""The ``llmodal`` command. Type hints are the interface; ``--help`` is the manual."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from . import _constants as C
from ._exceptions import LlmodalError
from .config import load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Your own open LLM behind a private OpenAI-compatible endpoint: vLLM on Modal or here.")
# Wide tables stay readable when output is piped or captured (rich assumes 80 columns then).
console = Console(width=None if sys.stdout.isatty() else 150)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 150)

EnvFile = Annotated[str, typer.Option("--env-file", help="settings file to read (.env)")]


def fail(e: LlmodalError) -> None:
    err.print(f"[red]error:[/] {e}")
    raise typer.Exit(e.exit_code)


def _settings_or_fail(env_file: str):
    try:
        return load_settings(env_file)
    except LlmodalError as e:
        fail(e)


def has_gpu() -> bool:
    if not shutil.which("nvidia-smi"):
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


@app.command()
def serve(
    model: Annotated[Optional[str], typer.Option(help="model id or directory (default: VLLM_MODEL; on a machine "
                                                       "without a GPU and no model set: the embedded tiny model)")] = None,
    host: Annotated[Optional[str], typer.Option(help="address to bind (default 127.0.0.1)")] = None,
    port: Annotated[Optional[int], typer.Option(help="port (default 8000)")] = None,
    max_model_len: Annotated[Optional[int], typer.Option(help="context length (VLLM_MAX_MODEL_LEN)")] = None,
    gpu_memory_utilization: Annotated[Optional[float], typer.Option(
        help="fraction of GPU memory (of CPU RAM on the CPU engine)")] = None,
    force: Annotated[bool, typer.Option(help="start even if the plan says it does not fit")] = False,
    max_restarts: Annotated[int, typer.Option(help="restarts after the engine dies, with backoff")] = 3,
    startup_timeout: Annotated[float, typer.Option(help="seconds to wait for /health")] = C.LOCAL_STARTUP_TIMEOUT_S,
    write_env: Annotated[Optional[Path], typer.Option(help="also write the client settings to this .env")] = None,
    env_file: EnvFile = ".env",
) -> None:
    """Run the real vLLM server here, wait for /health, print the client settings. Ctrl-C stops it."""
    from .local import prepare_local, supervise

    try:
        settings = load_settings(env_file, model=model, host=host, port=port, max_model_len=max_model_len,
                                 gpu_memory_utilization=gpu_memory_utilization)
        prep = prepare_local(settings, model_given=model is not None, gpu=has_gpu(), force=force, console=console,
                             env_file=env_file)
        supervise(prep, console=console, max_restarts=max_restarts, startup_timeout=startup_timeout,
                  write_env=write_env)
    except LlmodalError as e:
        fail(e)


@app.command()
def env(
    base_url: Annotated[Optional[str], typer.Option(help="endpoint ending in /v1 (default: the last local serve, "
                                                          "or the Modal URL with --workspace)")] = None,
    workspace: Annotated[Optional[str], typer.Option(help="Modal workspace: use the deployed app's URL")] = None,
    api_key: Annotated[Optional[str], typer.Option(help="key for the client (default: the server's key)")] = None,
    model: Annotated[Optional[str], typer.Option(help="model name clients send (default: VLLM_MODEL)")] = None,
    write: Annotated[Optional[Path], typer.Option(help="write into this .env, keeping its other lines")] = None,
    show_key: Annotated[bool, typer.Option(help="print the key in full (it is masked otherwise)")] = False,
    env_file: EnvFile = ".env",
) -> None:
    """Print or write VLLM_BASE_URL, VLLM_MODEL and VLLM_API_KEY for a client."""
    from .envfile import mask, render, write_env
    from .local import client_values

    try:
        values = client_values(load_settings(env_file), base_url=base_url, workspace=workspace, api_key=api_key,
                               model=model)
    except LlmodalError as e:
        fail(e)
    if write:
        write_env(write, values)
        console.print(f"wrote {', '.join(values)} to {write} (mode 600)")
        return
    shown = dict(values)
    if not show_key and shown.get("VLLM_API_KEY"):
        shown["VLLM_API_KEY"] = mask(shown["VLLM_API_KEY"])
    sys.stdout.write(render(shown))


@app.command()
def smoke(
    base_url: Annotated[Optional[str], typer.Option(help="endpoint (default: VLLM_BASE_URL from .env)")] = None,
    api_key: Annotated[Optional[str], typer.Option(help="key (default: VLLM_API_KEY from .env)")] = None,
    model: Annotated[Optional[str], typer.Option(help="model (default: VLLM_MODEL, else the first served)")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="max_tokens of the test requests")] = C.GUIDE_MAX_TOKENS,
    env_file: EnvFile = ".env",
) -> None:
    """The guide's tests against any OpenAI-compatible endpoint: models, chat, streaming, 401s."""
    from rich.table import Table

    from .client import resolve_endpoint
    from .smoke import run_smoke

    try:
        ep = resolve_endpoint(base_url, api_key, model, env_file)
    except LlmodalError as e:
        fail(e)
    console.print(f"smoke test of {ep.base_url} (model: {ep.model or 'first served'})")
    checks = run_smoke(ep, max_tokens=max_tokens)
    t = Table("check", "result", "detail", "s")
    for c in checks:
        t.add_row(c.name, "[green]pass[/]" if c.ok else "[red]FAIL[/]", c.detail, f"{c.seconds:.1f}")
    console.print(t)
    passed = sum(c.ok for c in checks)
    console.print(f"{passed}/{len(checks)} checks passed")
    raise typer.Exit(0 if passed == len(checks) else 1)


@app.command()
def plan(
    model: Annotated[Optional[str], typer.Option(help="model id or directory (default: VLLM_MODEL)")] = None,
    gpu: Annotated[Optional[str], typer.Option(help="Modal GPU type (default: LLMODAL_GPU, A100-80GB)")] = None,
    gpus: Annotated[Optional[int], typer.Option(min=1, max=8, help="GPU count (default: LLMODAL_GPU_COUNT)")] = None,
    max_model_len: Annotated[Optional[int], typer.Option(help="context length (VLLM_MAX_MODEL_LEN)")] = None,
    gpu_memory_utilization: Annotated[Optional[float], typer.Option(help="in (0, 1]")] = None,
    quantization: Annotated[Optional[str], typer.Option(help="auto, none, fp8, int8, awq or gptq")] = None,
    bench: Annotated[Optional[Path], typer.Option(help="a `llmodal bench --out` file: add $ per 1M output tokens")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    env_file: EnvFile = ".env",
) -> None:
    """Will it fit, how much KV cache, how many users, what it costs — before anyone pays."""
    from .plan import plan_for_settings
    from .render import plan_table

    try:
        settings = load_settings(env_file, model=model, gpu=gpu, gpu_count=gpus, max_model_len=max_model_len,
                                 gpu_memory_utilization=gpu_memory_utilization, quantization=quantization)
        res = plan_for_settings(settings)
        costs = _bench_costs(bench, res.chosen.price_per_hour) if bench else None
    except LlmodalError as e:
        fail(e)
    if as_json:
        out = {"plan": res.chosen.to_dict(), "as_configured": res.asked.to_dict(),
               "suggestions": [{"label": s.label, "plan": s.plan.to_dict()} for s in res.suggestions]}
        if costs is not None:
            out["cost_per_million_output_tokens"] = costs
        print(json.dumps(out, indent=2))
    else:
        plan_table(res.chosen, res.asked, res.suggestions, console)
        for row in costs or []:
            console.print(f"at concurrency {row['concurrency']}: {row['output_tok_s']:.0f} output tok/s → "
                          f"${row['usd_per_million_output_tokens']:.2f} per 1M output tokens")
    raise typer.Exit(0 if res.chosen.fits else 3)


def _repo_root() -> Path:
    here = Path.cwd()
    for d in (here, *here.parents):
        if (d / "modal_vllm.py").is_file():
            return d
    raise typer.BadParameter("modal_vllm.py not found here or above: run from the llmodal checkout")


@app.command()
def deploy(
    force: Annotated[bool, typer.Option(help="deploy even if the plan does not fit")] = False,
    public: Annotated[bool, typer.Option(help="allow an endpoint without a server key")] = False,
    env_file: EnvFile = ".env",
) -> None:
    """Preflight (plan fits, key set, Modal token), then `modal deploy modal_vllm.py`."""
    from .deploy import deployed_url, modal_cli, preflight, run_streaming
    from .envfile import mask
    from .local import modal_url

    try:
        settings = load_settings(env_file)
        res = preflight(settings, force=force, public=public)
    except LlmodalError as e:
        fail(e)
    if res is not None:
        console.print(f"plan: {res.chosen.checkpoint} on {res.chosen.gpu_count}× {res.chosen.gpu} — {res.chosen.reason}")
    code, out = run_streaming(modal_cli("deploy", "modal_vllm.py"), console.print, cwd=str(_repo_root()))
    if code != 0:
        err.print(f"[red]error:[/] modal deploy failed (exit {code})")
        raise typer.Exit(code)
    url = deployed_url(out, settings)
    console.print("client .env (`llmodal env --workspace WS --write .env` writes it with the real key):")
    console.print(f"  VLLM_BASE_URL={url + '/v1' if url else modal_url(settings, 'WORKSPACE')}")
    console.print(f"  VLLM_MODEL={settings.model}")
    console.print(f"  VLLM_API_KEY={mask(settings.api_key())}")


@app.command()
def status(
    base_url: Annotated[Optional[str], typer.Option(help="endpoint (default: VLLM_BASE_URL from .env)")] = None,
    api_key: Annotated[Optional[str], typer.Option(help="key (default: VLLM_API_KEY from .env)")] = None,
    env_file: EnvFile = ".env",
) -> None:
    """The endpoint's URL, /health, served models, and the plan it runs."""
    import httpx

    from .client import resolve_endpoint
    from .plan import plan_for_settings

    try:
        settings = load_settings(env_file)
        ep = resolve_endpoint(base_url, api_key, None, env_file)
    except LlmodalError as e:
        fail(e)
    console.print(f"endpoint: {ep.base_url}")
    ok = True
    try:
        h = httpx.get(f"{ep.root}/health", timeout=10)
        console.print(f"/health: HTTP {h.status_code}")
        ok = h.status_code == 200
        r = httpx.get(f"{ep.base_url}/models", headers={"Authorization": f"Bearer {ep.api_key or ''}"}, timeout=10)
        models = [m["id"] for m in r.json().get("data", [])] if r.status_code == 200 else []
        console.print(f"models: {', '.join(models) or f'HTTP {r.status_code}'}")
    except httpx.HTTPError as e:
        ok = False
        console.print(f"[red]unreachable[/]: {type(e).__name__} (a scaled-to-zero Modal app answers after a cold start)")
    try:
        p = plan_for_settings(settings).chosen
        console.print(f"plan: {p.checkpoint} on {p.gpu_count}× {p.gpu}: {p.reason}; ${p.price_per_hour:.2f}/h")
    except LlmodalError as e:
        console.print(f"plan: {e}")
    raise typer.Exit(0 if ok else 1)


@app.command()
def logs(env_file: EnvFile = ".env") -> None:
    """`modal app logs vllm-llama70b` (follows the app's logs)."""
    from .deploy import modal_cli

    raise typer.Exit(subprocess.call(modal_cli("app", "logs", _settings_or_fail(env_file).app_name)))


@app.command()
def stop(env_file: EnvFile = ".env") -> None:
    """`modal app stop vllm-llama70b`: stop the app (and its GPU bill)."""
    from .deploy import modal_cli

    raise typer.Exit(subprocess.call(modal_cli("app", "stop", _settings_or_fail(env_file).app_name)))


@app.command()
def doctor(env_file: EnvFile = ".env") -> None:
    """Check what the guide's troubleshooting list checks by hand, and say the fix for each failure."""
    from rich.table import Table

    from .deploy import doctor_checks

    try:
        checks = doctor_checks(load_settings(env_file), env_file)
    except LlmodalError as e:
        fail(e)
    t = Table("check", "result", "detail", "fix")
    for c in checks:
        mark = "[green]ok[/]" if c.ok else ("[yellow]skipped[/]" if c.ok is None else "[red]FAIL[/]")
        t.add_row(c.name, mark, c.detail, c.fix)
    console.print(t)
    raise typer.Exit(1 if any(c.ok is False for c in checks) else 0)


@app.command()
def bench(
    base_url: Annotated[Optional[str], typer.Option(help="endpoint (default: VLLM_BASE_URL from .env)")] = None,
    api_key: Annotated[Optional[str], typer.Option(help="key (default: VLLM_API_KEY from .env)")] = None,
    model: Annotated[Optional[str], typer.Option(help="model (default: VLLM_MODEL, else the first served)")] = None,
    concurrency: Annotated[str, typer.Option(help="closed-loop levels, comma-separated")] = "1,8,32",
    request_rate: Annotated[Optional[str], typer.Option(
        help="open-loop Poisson request rates (req/s), comma-separated; replaces --concurrency")] = None,
    input_len: Annotated[int, typer.Option(min=1, help="prompt tokens")] = 1024,
    output_len: Annotated[int, typer.Option(min=1, help="output tokens (fixed with ignore_eos)")] = 256,
    num_prompts: Annotated[Optional[int], typer.Option(min=1, help="requests per level (default 4 × concurrency, ≥ 8)")] = None,
    warmup: Annotated[int, typer.Option(min=0, help="uncounted requests before each level")] = 1,
    api: Annotated[str, typer.Option(help="chat or completions")] = "chat",
    tokenizer: Annotated[Optional[str], typer.Option(help="local tokenizer dir for exact prompt lengths")] = None,
    ignore_eos: Annotated[bool, typer.Option(help="send ignore_eos (vLLM) for a fixed output length")] = True,
    price_per_hour: Annotated[Optional[float], typer.Option(help="$/h for $/1M tokens (default: the plan's)")] = None,
    health_timeout: Annotated[float, typer.Option(help="seconds to wait for a cold endpoint's /health")] = 900.0,
    request_timeout: Annotated[float, typer.Option(help="seconds per request")] = 600.0,
    out: Annotated[Optional[Path], typer.Option(help="write results as JSON")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="write a PNG of throughput vs latency")] = None,
    env_file: EnvFile = ".env",
) -> None:
    """Load-test any OpenAI-compatible endpoint: TTFT, ITL, throughput, errors, plot, $ per 1M tokens."""
    import asyncio
    import datetime

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from . import bench as B
    from ._exceptions import ConfigError
    from .client import resolve_endpoint

    try:
        if api not in ("chat", "completions"):
            raise ConfigError(f"--api {api!r} is invalid: expected chat or completions")
        levels = _parse_levels(request_rate, float, "--request-rate") if request_rate else \
            _parse_levels(concurrency, int, "--concurrency")
        ep = resolve_endpoint(base_url, api_key, model, env_file)
        if price_per_hour is None:
            price_per_hour = _plan_price(env_file)
        with console.status(f"waiting for {ep.root}/health…"):
            waited, ep = asyncio.run(B.wait_for_endpoint(ep, health_timeout))
    except LlmodalError as e:
        fail(e)
    tok = tokenizer or (ep.model if ep.model and Path(ep.model).is_dir() else None)
    console.print(f"endpoint ready after {waited:.1f} s; model {ep.model}; {input_len} in / {output_len} out; "
                  f"api {api}")
    total = max(int(_n(num_prompts, lv)) for lv in levels) + warmup
    prompts = B.make_prompts(total, input_len, tok)
    console.print(f"prompt lengths: {prompts.source}")

    async def run_all() -> list[dict]:
        runner = B.Runner(ep, api=api, output_len=output_len, ignore_eos=ignore_eos, timeout=request_timeout)
        rows = []
        try:
            # Redrawn on each completion, not by a refresh thread: the client shares the CPU (and
            # the GIL) with its own timestamps, and on a small machine with the engine too.
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console, auto_refresh=False) as prog:
                for lv in levels:
                    n = _n(num_prompts, lv)
                    conc, rate = (None, lv) if request_rate else (lv, None)
                    label = f"{lv} req/s" if rate else f"c={lv}"
                    if warmup:
                        await runner.level(prompts.texts[:warmup], concurrency=min(warmup, conc or warmup), rate=None,
                                           on_done=lambda: None)
                    task = prog.add_task(label, total=n)
                    res, dur = await runner.level(prompts.texts[warmup:warmup + n], concurrency=conc, rate=rate,
                                                  on_done=lambda: (prog.advance(task), prog.refresh()))
                    row = B.summarize(res, dur, n, price_per_hour)
                    row.update(label=label, concurrency=conc, request_rate=rate)
                    rows.append(row)
        finally:
            await runner.aclose()
        return rows

    rows = asyncio.run(run_all())
    t = Table("level", "ok/sent", "failed", "out tok/s", "total tok/s", "req/s", "TTFT p50/p99 ms",
              "ITL p50/p99 ms", "TPOT p50 ms", "E2E p50 ms", "$/1M out")
    for r in rows:
        usd = r["usd_per_million_output_tokens"]
        t.add_row(r["label"], f"{r['completed']}/{r['sent']}",
                  ", ".join(f"{k}:{v}" for k, v in r["failures"].items()) or "0",
                  f"{r['output_tok_s']:.1f}", f"{r['total_tok_s']:.1f}", f"{r['requests_s']:.2f}",
                  f"{r['ttft_ms']['p50']:.0f}/{r['ttft_ms']['p99']:.0f}",
                  f"{r['itl_ms']['p50']:.1f}/{r['itl_ms']['p99']:.1f}", f"{r['tpot_ms']['p50']:.1f}",
                  f"{r['e2el_ms']['p50']:.0f}", f"{usd:.2f}" if usd else "-")
    console.print(t)
    meta = {"base_url": ep.base_url, "model": ep.model, "api": api, "input_len": input_len, "output_len": output_len,
            "ignore_eos": ignore_eos, "warmup": warmup, "prompt_lengths": prompts.source,
            "health_wait_s": waited, "price_per_hour": price_per_hour,
            "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    doc = B.result_doc(meta, rows)
    if out:
        B.dump(doc, out)
        console.print(f"results: {out}")
    if plot:
        B.plot(doc, plot)
        console.print(f"plot: {plot}")
    failed = sum(r["failed"] + r["lost"] for r in rows)
    if failed:
        err.print(f"[red]error:[/] {failed} request(s) failed; see the failures column")
        raise typer.Exit(1)


def _n(num_prompts: Optional[int], level: float) -> int:
    return num_prompts or max(8, int(4 * level))


def _parse_levels(text: str, kind: type, flag: str) -> list:
    from ._exceptions import ConfigError

    try:
        vals = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        vals = []
    if not vals or any(v <= 0 for v in vals):
        raise ConfigError(f"{flag} {text!r} is invalid: expected positive numbers separated by commas, e.g. 1,8,32")
    return vals


def _plan_price(env_file: str) -> Optional[float]:
    from .plan import plan_for_settings

    try:
        return plan_for_settings(load_settings(env_file)).chosen.price_per_hour
    except LlmodalError:
        return None


def _bench_costs(path: Path, price_per_hour: float) -> list[dict]:
    from ._exceptions import ConfigError

    try:
        data = json.loads(path.read_text())
        levels = data["levels"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"--bench {path}: not a llmodal bench result file ({e})") from None
    rows = []
    for lv in levels:
        tps = float(lv.get("output_tok_s") or 0)
        rows.append({"concurrency": lv.get("concurrency"), "output_tok_s": tps,
                     "usd_per_million_output_tokens": price_per_hour / (tps * 3600) * 1e6 if tps > 0 else None})
    return rows


def main() -> None:
    # SIGTERM behaves like Ctrl-C so a supervisor's stop drains vLLM the same way.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    app()


if __name__ == "__main__":
    main()
