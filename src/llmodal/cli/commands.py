"""The ``llmodal`` command. Type hints are the interface; ``--help`` is the manual.

This layer parses flags and prints; the work lives in the modules it calls. The Modal commands
are in ``cli_modal``, registered on the same app.
"""

from __future__ import annotations

import json
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer

from llmodal.core import constants as C
from llmodal.cli._app import EnvFile, app, console, err, fail
from llmodal.core.errors import ConfigError, LlmodalError
from llmodal.core.config import load_settings


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
    dry_run: Annotated[bool, typer.Option(help="print the plan, the vLLM command and its environment; start nothing")] = False,
    gpu: Annotated[Optional[bool], typer.Option(help="plan for a GPU (default: whether this machine has one)")] = None,
    max_restarts: Annotated[int, typer.Option(help="restarts after the engine dies, with backoff")] = 3,
    startup_timeout: Annotated[float, typer.Option(help="seconds to wait for /health")] = C.LOCAL_STARTUP_TIMEOUT_S,
    write_env: Annotated[Optional[Path], typer.Option(help="also write the client settings to this .env")] = None,
    env_file: EnvFile = ".env",
) -> None:
    """Run the real vLLM server here, wait for /health, print the client settings. Ctrl-C stops it."""
    from llmodal.plan.gpus import has_gpu
    from llmodal.run.local import prepare_local, supervise
    from llmodal.engine.prepare import dry_run_lines

    try:
        settings = load_settings(env_file, model=model, host=host, port=port, max_model_len=max_model_len,
                                 gpu_memory_utilization=gpu_memory_utilization, force=force or None)
        local = prepare_local(settings, model_given=model is not None, gpu=has_gpu() if gpu is None else gpu,
                              console=console, env_file=env_file, dry_run=dry_run)
        if dry_run:
            for line in dry_run_lines(local.prep):
                console.print(line, markup=False, highlight=False, soft_wrap=True)
            return
        supervise(local, console=console, max_restarts=max_restarts, startup_timeout=startup_timeout,
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
    from llmodal.core.envfile import mask, render, write_env
    from llmodal.run.local import client_values

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
    """The guide's tests against any OpenAI-compatible endpoint: models, chat, streaming, tools, 401s."""
    from llmodal.core.checks import checks_table
    from llmodal.tools.client import resolve_endpoint
    from llmodal.tools.smoke import run_smoke

    try:
        ep = resolve_endpoint(base_url, api_key, model, env_file)
    except LlmodalError as e:
        fail(e)
    console.print(f"smoke test of {ep.base_url} (model: {ep.model or 'first served'})")
    checks = run_smoke(ep, max_tokens=max_tokens)
    console.print(checks_table(checks, timed=True))
    passed = sum(c.ok is True for c in checks)
    console.print(f"{passed}/{len(checks)} checks passed")
    raise typer.Exit(0 if passed == len(checks) else 1)


@app.command()
def plan(
    model: Annotated[Optional[str], typer.Option(help="model id or directory (default: VLLM_MODEL)")] = None,
    gpu: Annotated[Optional[str], typer.Option(help="Modal GPU type (default: LLMODAL_GPU, A100-80GB)")] = None,
    gpus: Annotated[Optional[int], typer.Option(min=1, max=8, help="GPU count (default: LLMODAL_GPU_COUNT)")] = None,
    max_model_len: Annotated[Optional[int], typer.Option(help="context length (VLLM_MAX_MODEL_LEN)")] = None,
    gpu_memory_utilization: Annotated[Optional[float], typer.Option(help="in (0, 1]")] = None,
    quantization: Annotated[Optional[str], typer.Option(help="auto, none, fp8, int8, awq, gptq or w4a16")] = None,
    bench: Annotated[Optional[Path], typer.Option(help="a `llmodal bench --out` file: add $ per 1M output tokens")] = None,
    rps: Annotated[Optional[float], typer.Option(
        min=0.001, help="with --bench: containers and $/day for this many requests/s, beside a public API")] = None,
    discover: Annotated[bool, typer.Option(
        help="read the hub's model tree for quantized builds even when the catalog knows the model")] = False,
    compare: Annotated[bool, typer.Option(
        help="every GPU × build × TP that fits, with predicted speed and $/1M tokens, sorted by $/1M")] = False,
    mix: Annotated[Optional[str], typer.Option(
        help="token mix IN:OUT for predicted speed and $/1M (default 1024:256, scaled down to fit the context)")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="with --compare: a PNG of $/1M against predicted tok/s")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    env_file: EnvFile = ".env",
) -> None:
    """Will it fit, how much KV cache, how many users, what it costs and how fast — before anyone pays."""
    from llmodal.tools.bench.levels import costs_from_file
    from llmodal.plan.planner import plan_for_settings
    from llmodal.plan.view import fast_boot_row, plan_table

    from llmodal.plan.compare import compare as compare_all
    from llmodal.plan.compare import default_mix, lora_doc, lora_speed_of, parse_mix, speed_of
    from llmodal.plan.profiles import Batching
    from llmodal.plan.speed import TTFT_AT_LOAD_ERRORS, ttft_note

    try:
        settings = load_settings(env_file, model=model, gpu=gpu, gpu_count=gpus, max_model_len=max_model_len,
                                 gpu_memory_utilization=gpu_memory_utilization, quantization=quantization)
        try:
            token_mix = parse_mix(mix) if mix is not None else None
        except ValueError as e:
            raise ConfigError(str(e)) from None
        res = plan_for_settings(settings, discover=discover)
        mix_note = ""
        if token_mix is None:
            token_mix, mix_note = default_mix(res.chosen.max_model_len if not compare else settings.max_model_len)
        if compare:
            doc = compare_all(res.spec, max_model_len=settings.max_model_len,
                              gpu_memory_utilization=settings.gpu_memory_utilization, mix=token_mix, rps=rps,
                              model=settings.model, profile=settings.profile,
                              batching=Batching(settings.max_num_batched_tokens, settings.max_num_seqs),
                              lora=res.chosen.lora)
            if mix_note:
                doc["mix_note"] = mix_note
            _print_compare(doc, as_json)
            if plot:
                from llmodal.plan.compare_plot import plot_compare

                try:
                    plot_compare(doc, plot)
                except ImportError:
                    raise ConfigError("--plot needs matplotlib: pip install 'llmodal[bench]'") from None
                if not as_json:
                    console.print(f"plot: {plot}")
            raise typer.Exit(0)
        speed = speed_of(res.chosen, res.spec, token_mix) if res.chosen.fits else None
        lora_speed = lora_speed_of(res.chosen, res.spec, token_mix, base=speed) if speed else None
        costs = costs_from_file(bench, res.chosen.price_per_hour) if bench else None
        if plot is not None and not compare:
            raise ConfigError("--plot draws the --compare options: add --compare")
        if rps is not None and bench is None and not compare:
            raise ConfigError("--rps needs --bench FILE (a `llmodal bench --slo … --out FILE` result)")
        cap = _capacity(bench, rps, res.chosen.price_per_hour, settings.model) if rps else None
    except LlmodalError as e:
        fail(e)
    small_ttft = ttft_note(res.spec) if speed else ""
    if as_json:
        speed_doc = speed.to_dict() if speed else None
        if speed_doc is not None:
            speed_doc["ttft_note"] = small_ttft or None
        if speed_doc is not None and lora_speed:
            speed_doc["with_lora"] = lora_speed.to_dict()
        out = {"plan": res.chosen.to_dict(), "speed": speed_doc, "lora": lora_doc(res.chosen.lora),
               "mix_note": mix_note or None,
               "as_configured": res.asked.to_dict(),
               "suggestions": [{"label": s.label, "plan": s.plan.to_dict()} for s in res.suggestions],
               "fast_boot": fast_boot_row(res.chosen, settings.snapshot),
               "hub": None if res.discovery is None else {
                   "ranked": [asdict(c) for c in res.discovery.ranked],
                   "rejected": [{"repo": r, "why": w} for r, w in res.discovery.rejected]}}
        if costs is not None:
            out["cost_per_million_output_tokens"] = costs
        if cap is not None:
            out["capacity"] = asdict(cap)
        print(json.dumps(out, indent=2))
    else:
        plan_table(res.chosen, res.asked, res.suggestions, console, snapshot=settings.snapshot, found=res.discovery)
        if speed:
            n_in, n_out = speed.mix
            console.print(f"predicted speed ({n_in}:{n_out} tokens, docs/BENCHMARKS.md 'Planner speed model'): "
                          f"{speed.single_stream_tok_s:.0f} tok/s one stream, TTFT {speed.ttft_s * 1000:.0f} ms, "
                          f"{speed.saturated_out_tok_s:,.0f} out tok/s at {speed.concurrency} streams "
                          f"(batch up to {speed.max_batch}) → ${speed.cost_per_1m_tokens:.3f} per 1M tokens",
                          markup=False)
            if mix_note:
                console.print(f"  {mix_note}", markup=False)
            if speed.band:
                console.print(f"  error band: {speed.band.text()}", markup=False)
            if small_ttft:
                console.print(f"  {small_ttft}", markup=False)
            if speed.api_text():
                console.print(f"  {speed.api_text()}", markup=False)
            if lora_speed:
                console.print(f"  {lora_speed.text()}", markup=False)
            lo, hi = TTFT_AT_LOAD_ERRORS
            console.print(f"  mean TTFT at {speed.concurrency} streams {speed.ttft_at_load_s:,.1f} s (prompts wait for "
                          f"prefill chunks; not validated to a band: {lo:+.0%} to {hi:+.0%} on the stored runs)",
                          markup=False)
        for row in costs or []:
            usd = row["usd_per_million_output_tokens"]
            console.print(f"at {row['label']}: {row['output_tok_s']:.0f} output tok/s → "
                          + (f"${usd:.2f} per 1M output tokens" if usd else "no completed output"), markup=False)
        if cap is not None:
            console.print(_capacity_text(cap), markup=False)
    raise typer.Exit(0 if res.chosen.fits else 3)


@app.command()
def bench(
    base_url: Annotated[Optional[str], typer.Option(help="endpoint (default: VLLM_BASE_URL from .env)")] = None,
    api_key: Annotated[Optional[str], typer.Option(help="key (default: VLLM_API_KEY from .env)")] = None,
    model: Annotated[Optional[str], typer.Option(help="model (default: VLLM_MODEL, else the first served); a LoRA "
                                                       "adapter's name measures that adapter")] = None,
    models: Annotated[Optional[str], typer.Option(
        help="a mixed run: requests take these served models in turn, comma-separated (e.g. the base and its "
             "LoRA adapters); replaces --model")] = None,
    concurrency: Annotated[str, typer.Option(help="closed-loop levels, comma-separated")] = "1,8,32",
    request_rate: Annotated[Optional[str], typer.Option(
        help="open-loop Poisson request rates (req/s), comma-separated; replaces --concurrency")] = None,
    input_len: Annotated[int, typer.Option(min=1, help="prompt tokens")] = 1024,
    output_len: Annotated[int, typer.Option(min=1, help="output tokens (fixed with ignore_eos)")] = 256,
    num_prompts: Annotated[Optional[int], typer.Option(min=1, help="requests per level (default 4 × level, ≥ 8)")] = None,
    warmup: Annotated[int, typer.Option(min=0, help="uncounted requests before each level")] = 1,
    api: Annotated[str, typer.Option(help="chat or completions")] = "chat",
    tokenizer: Annotated[Optional[str], typer.Option(help="local tokenizer dir for exact prompt lengths")] = None,
    seed: Annotated[int, typer.Option(
        help="prompt and arrival seed: a new one shares no prefix (cache) with earlier runs")] = 0,
    ignore_eos: Annotated[bool, typer.Option(help="send ignore_eos (vLLM) for a fixed output length")] = True,
    temperature: Annotated[Optional[float], typer.Option(
        min=0, max=2, help="sampling temperature to send (default: none, the server's default, as vLLM's bench)")] = None,
    price_per_hour: Annotated[Optional[float], typer.Option(help="$/h for $/1M tokens (default: the plan's)")] = None,
    health_timeout: Annotated[float, typer.Option(help="seconds to wait for a cold endpoint's /health")] = 900.0,
    request_timeout: Annotated[float, typer.Option(help="seconds per request")] = 600.0,
    slo: Annotated[Optional[str], typer.Option(
        help="find the highest load meeting e.g. \"ttft_p99<=2s,itl_p99<=100ms\": concurrency 1, 2, 4, …, or with "
             "--request-rate the rates given (goodput: open-loop Poisson arrivals)")] = None,
    max_concurrency: Annotated[int, typer.Option(min=1, max=4096, help="where --slo stops raising")] = 256,
    cold: Annotated[bool, typer.Option(
        help="time the first request after the endpoint scaled to zero (waits --idle first)")] = False,
    idle: Annotated[Optional[float], typer.Option(
        min=0, help="--cold: seconds to send nothing first (default: scale-down window + 60 s)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="write results as JSON")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="write a PNG of throughput vs latency")] = None,
    env_file: EnvFile = ".env",
) -> None:
    """Load-test any OpenAI-compatible endpoint: TTFT, ITL, throughput, errors, plot, $ per 1M tokens."""
    import asyncio

    from llmodal.tools.bench import runner as B
    from llmodal.tools.bench import levels as R
    from llmodal.tools.bench import slo as S
    from llmodal.tools.client import resolve_endpoint

    try:
        if api not in ("chat", "completions"):
            raise ConfigError(f"--api {api!r} is invalid: expected chat or completions")
        terms = S.parse(slo) if slo is not None else None
        # With --slo and --request-rate: goodput, the rates tried in rising order until a term breaks.
        levels = sorted(R.parse_levels(request_rate, float, "--request-rate")) if request_rate else \
            S.sweep_levels(max_concurrency) if terms else R.parse_levels(concurrency, int, "--concurrency")
        mixed = tuple(m.strip() for m in models.split(",") if m.strip()) if models else ()
        if models is not None and (not mixed or len(set(mixed)) != len(mixed)):
            raise ConfigError(f"--models {models!r} is invalid: expected served model names, comma-separated, "
                              "each once")
        ep = resolve_endpoint(base_url, api_key, mixed[0] if mixed else model, env_file)
        if cold:
            from llmodal.tools.bench.cold import cold_start

            idle_s = idle if idle is not None else load_settings(env_file).scaledown_window_s + 60
            doc = cold_start(ep, idle_s, output_len, request_timeout, console)
            _write(doc, out)
            raise typer.Exit(0 if doc["ok"] else 1)
        if price_per_hour is None:
            price_per_hour = _plan_price(env_file)
        with console.status(f"waiting for {ep.root}/health…"):
            waited, ep = asyncio.run(B.wait_for_endpoint(ep, health_timeout, also=mixed))
    except LlmodalError as e:
        fail(e)
    console.print(f"endpoint ready after {waited:.1f} s; model {', '.join(mixed) if mixed else ep.model}; "
                  f"{input_len} in / {output_len} out; api {api}")
    cfg = R.BenchConfig(levels, bool(request_rate), input_len, output_len, num_prompts, warmup, api, tokenizer,
                        ignore_eos, price_per_hour, request_timeout, seed, temperature, mixed)
    doc = R.run(ep, cfg, console, health_wait_s=waited, until=(lambda row: bool(S.broken(row, terms))) if terms
                else None)
    console.print(R.table(doc["levels"]))
    if terms:
        from llmodal.plan.prices import cheapest

        doc["slo"] = S.knee(doc["levels"], terms)
        doc["slo"]["api"] = S.api_beside(doc["slo"]["knee"], cheapest(ep.model or ""), input_len, output_len)
        console.print(R.slo_summary(doc["slo"]), markup=False)
    _write(doc, out)
    if plot:
        from llmodal.tools.bench.plot import plot as draw

        draw(doc, plot)
        console.print(f"plot: {plot}")
    failed = R.failed_requests(doc["levels"]) if not terms else 0  # a sweep ends by breaking the SLO
    if terms and doc["slo"]["knee"] is None:
        err.print(f"[red]error:[/] not even {doc['levels'][0]['label']} meets the SLO")
        raise typer.Exit(1)
    if failed:
        err.print(f"[red]error:[/] {failed} request(s) failed; see the failures column")
        raise typer.Exit(1)


def _print_compare(doc: dict, as_json: bool) -> None:
    from llmodal.plan.lora_speed import MEASURED_ON

    if as_json:
        print(json.dumps(doc, indent=2))
        return
    from rich.table import Table

    t = Table(title=f"every option that fits, profile {doc['profile']}, mix {doc['mix'][0]}:{doc['mix'][1]}, "
                    "each GPU and build with its TPs smallest first, cheapest first by $/1M tokens (predicted)")
    lora = doc.get("lora")
    for col in ("GPU", "build", "TP", "KV seqs", *(("LoRA GiB",) if lora else ()), "1 stream tok/s",
                "saturated out tok/s", *(("with LoRA out tok/s, $/1M",) if lora else ()), "$/h", "$/1M tok", "error band",
                "tie"):
        t.add_column(col, justify="right")
    for r in doc["rows"]:
        b = r.get("error_band") or {}
        err = f"±{b['error']:.0%} (worst {b['worst']:+.0%})" if b.get("error") is not None else "none"
        err += f" {b.get('kernel', '')}" + (" (extrapolated)" if b.get("extrapolated") else "")
        tie = {True: "≈ cheapest", False: "", None: "?"}[r.get("could_be_cheapest")]
        tp = str(r["tp"]) + ("" if r["tp_measured"] else " (unmeasured)")
        t.add_row(r["gpu"], r["build"], tp, f"{r['kv_sequences']:.1f}",
                  *((f"{r['lora_gib_per_gpu']:.2f}",) if lora else ()), f"{r['single_stream_tok_s']:.0f}",
                  f"{r['saturated_out_tok_s']:,.0f}{_api_mark(r)}",
                  *((_lora_cell(r["lora_speed"]),) if lora else ()),
                  f"{r['usd_per_hour']:.2f}", f"{r['cost_per_1m_tokens']:.3f}",
                  err, tie)
    console.print(t)
    for why in sorted({r["error_band"]["extrapolated"] for r in doc["rows"]
                       if r.get("error_band") and r["error_band"].get("extrapolated")}):
        gpus = ", ".join(sorted({f"{r['gpu']} {r['build']}" for r in doc["rows"]
                                 if (r.get("error_band") or {}).get("extrapolated") == why}))
        console.print(f"{gpus}: {why}", markup=False)
    if any(r["api_server"]["note"] or (r.get("lora_speed") or {}).get("api_server", {}).get("note")
           for r in doc["rows"]):
        console.print(f"(API −N %): vLLM's token delivery (the engine through its one API-server process), not the GPU, "
                      f"bounds that row's saturated out tok/s{' (or its figure with LoRA)' if lora else ''}, N % below "
                      f"what its engine alone would serve "
                      f"({doc['rows'][0]['api_server']['token_us']:.0f} µs a streamed token, fitted on the lent H100 "
                      f"host; another host's CPU would change it)", markup=False)
    if doc["api"]:
        console.print(f"public API, same mix: ${doc['api']['usd_per_1m_tokens']:.3f} per 1M tokens "
                      f"({doc['api']['source']})", markup=False)
    if doc.get("mix_note"):
        console.print(doc["mix_note"], markup=False)
    if lora:
        console.print(f"LoRA adapters: {lora['adapters']} served, {lora['max_loras']} resident at rank ≤ "
                      f"{lora['max_rank']}: {lora['memory']} (LoRA GiB, per GPU). {lora['speed_cost']}",
                      markup=False)
        inside = [f"{r['gpu']} {r['build']} TP {r['tp']}" for r in doc["rows"] if not r["lora_speed"]["extrapolated"]]
        console.print(f"with LoRA out tok/s, $/1M: every request on an adapter (rows stay ordered by the base's $/1M: "
                      f"a LoRA figure outside the measured setup is not a ranking); a row marked (extrapolated) is not "
                      f"{MEASURED_ON} and carries no band (--json says what differs, per row)"
                      + (f"; inside it: {', '.join(inside)}" if inside else ""), markup=False)
    console.print(doc["note"], markup=False)


def _lora_cell(s: dict) -> str:
    """A row's throughput with adapters, with its band, or marked extrapolated (the reason is printed below)."""
    tail = f" ±{s['band']['worst']:.0%}" if s["band"] else " (extrapolated)"
    return (f"{s['saturated_out_tok_s']:,.0f} ({-s['cost_vs_base']:+.0%}) ${s['cost_per_1m_tokens']:.3f}/1M"
            f"{_api_mark(s)}{tail}")


def _api_mark(speed: dict) -> str:
    """' (API −N %)' where vLLM's token delivery bounds a speed's figure (its api_server note), else ''."""
    return f" (API −{speed['api_server']['bound']:.0%})" if speed["api_server"]["note"] else ""


def _capacity(bench: Path, rps: float, price_per_hour: float, model: str):
    from llmodal.plan.prices import cheapest
    from llmodal.tools.bench.slo import capacity

    try:
        result = json.loads(bench.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"--bench {bench}: not a llmodal bench result file ({e})") from None
    return capacity(result, rps, price_per_hour, cheapest(model))


def _capacity_text(c) -> str:
    text = (f"{c.rps:g} req/s needs {c.containers} container(s) kept up at {c.per_container_rps:.2f} req/s each "
            f"(the bench's SLO knee, or its best level without --slo): ${c.usd_per_day:,.2f} per day")
    if c.api_usd_per_day is None:
        return text + "\nno public API price is listed for this model"
    cheaper = "self-hosting" if c.usd_per_day < c.api_usd_per_day else "the API"
    return (text + f"\nthe same requests at a public API: ${c.api_usd_per_day:,.2f} per day ({c.api_source})"
            f"\nbreak-even: one always-on container costs what the API does at {c.breakeven_rps:.2f} req/s"
            + (f" — more than one container holds ({c.per_container_rps:.2f}), so at this token mix the API stays"
               " cheaper" if c.breakeven_rps > c.per_container_rps else "")
            + f"; at {c.rps:g} req/s {cheaper} is cheaper")


def _write(doc: dict, out: Optional[Path]) -> None:
    if out:
        from llmodal.tools.bench.runner import dump

        dump(doc, out)
        console.print(f"results: {out}")


def _plan_price(env_file: str) -> Optional[float]:
    from llmodal.plan.planner import plan_for_settings

    try:
        return plan_for_settings(load_settings(env_file)).chosen.price_per_hour
    except LlmodalError:
        return None


from llmodal.cli import modal_commands  # noqa: E402 - its commands register on the app when imported

COMMAND_MODULES = (modal_commands,)


def main() -> None:
    # SIGTERM behaves like Ctrl-C so a supervisor's stop drains vLLM the same way.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    app()


if __name__ == "__main__":
    main()
