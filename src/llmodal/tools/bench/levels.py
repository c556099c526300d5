"""``llmodal bench`` as a procedure: levels in order, a summary per level, the table, the cost.

``bench`` holds the streaming client and the statistics; this module runs them level after
level and renders what they found. The CLI only parses flags and calls ``run``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from llmodal.tools.bench import runner as B
from llmodal.core.errors import ConfigError
from llmodal.tools.client import Endpoint
from llmodal.tools.bench.prompts import Counter, calibrate, check_lengths


@dataclass(frozen=True)
class BenchConfig:
    levels: list[float]
    open_loop: bool  # levels are request rates, not concurrencies
    input_len: int
    output_len: int
    num_prompts: int | None
    warmup: int
    api: str
    tokenizer: str | None
    ignore_eos: bool
    price_per_hour: float | None
    request_timeout: float
    seed: int = 0  # prompts differ by seed: runs against one server with different seeds share no prefix
    temperature: float | None = None  # None: the server's default sampling, as vLLM's bench sends
    models: tuple[str, ...] = ()  # a mixed run: requests spread over these served models in turn


def parse_levels(text: str, kind: type, flag: str) -> list:
    try:
        vals = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        vals = []
    if not vals or any(v <= 0 for v in vals):
        raise ConfigError(f"{flag} {text!r} is invalid: expected positive numbers separated by commas, e.g. 1,8,32")
    return vals


def prompts_per_level(num_prompts: int | None, level: float) -> int:
    return num_prompts or max(8, int(4 * level))


async def _run_levels(ep: Endpoint, cfg: BenchConfig, prompts: B.Prompts, console: Console,
                      until: Callable[[dict], bool] | None = None) -> list[dict]:
    """Each level in order; stop after the first level for which ``until(row)`` is true."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    runner = B.Runner(ep, api=cfg.api, output_len=cfg.output_len, ignore_eos=cfg.ignore_eos, temperature=cfg.temperature,
                      timeout=cfg.request_timeout, models=cfg.models)
    rows = []
    try:
        # Redrawn on each completion, not by a refresh thread: the client shares the CPU (and
        # the GIL) with its own timestamps, and on a small machine with the engine too.
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, auto_refresh=False) as prog:
            at = 0  # every level gets prompts of its own: a reused prompt would hit vLLM's prefix cache
            for i, lv in enumerate(cfg.levels):
                n = prompts_per_level(cfg.num_prompts, lv)
                conc, rate = (None, lv) if cfg.open_loop else (int(lv), None)
                label = f"{lv} req/s" if rate else f"c={int(lv)}"
                if cfg.warmup:
                    await runner.level(prompts.texts[at:at + cfg.warmup],
                                       concurrency=min(cfg.warmup, conc or cfg.warmup), rate=None, on_done=lambda: None)
                    at += cfg.warmup
                task = prog.add_task(label, total=n)
                started = _now()  # the level's own start, to line its figures up with the server's counters
                # Arrivals of their own per level and per --seed: one shared draw gave every level of an
                # H200 sweep the same gaps, all 4.4 % longer than the rate asked for.
                res, dur = await runner.level(prompts.texts[at:at + n], concurrency=conc, rate=rate,
                                              on_done=lambda: (prog.advance(task), prog.refresh()),
                                              seed=cfg.seed * 1009 + i)
                at += n
                row = B.summarize(res, dur, n, cfg.price_per_hour)
                row.update(label=label, concurrency=conc, request_rate=rate,
                           achieved_rate=runner.achieved_rate() if rate else None, started_at=started)
                row.update(B.held(row, cfg.price_per_hour))
                rows.append(row)
                if until and until(row):
                    break
    finally:
        await runner.aclose()
    return rows


def run(ep: Endpoint, cfg: BenchConfig, console: Console, *, health_wait_s: float,
        until: Callable[[dict], bool] | None = None) -> dict:
    """Run the levels against a ready endpoint (stopping after one that ``until`` rejects);
    return the result document (meta + levels)."""
    started = _now()
    total = sum(prompts_per_level(cfg.num_prompts, lv) + cfg.warmup for lv in cfg.levels)
    with console.status(f"making {total} prompts of {cfg.input_len} tokens…"):
        prompts = make_prompts(ep, cfg, total)
    console.print(f"prompt lengths: {prompts.source}")
    rows = asyncio.run(_run_levels(ep, cfg, prompts, console, until))
    check = check_lengths(rows, cfg.input_len)
    if check and check["warning"]:
        console.print(f"[yellow]warning[/]: the server counted {check['server_mean']:.0f} prompt tokens per request, "
                      f"{check['deviation']:+.1%} from --input-len {cfg.input_len}: latency and $/1M figures are "
                      "for that length (pass --tokenizer DIR for exact prompts)")
    meta = {"base_url": ep.base_url, "model": ep.model, "models": list(cfg.models) or [ep.model], "api": cfg.api, "input_len": cfg.input_len,
            "output_len": cfg.output_len, "ignore_eos": cfg.ignore_eos, "warmup": cfg.warmup, "seed": cfg.seed,
            "prompt_lengths": prompts.source, "prompt_calibration": prompts.calibration, "prompt_check": check, "health_wait_s": health_wait_s, "price_per_hour": cfg.price_per_hour,
            "started_at": started, "finished_at": _now()}
    return B.result_doc(meta, rows)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def make_prompts(ep: Endpoint, cfg: BenchConfig, n: int) -> B.Prompts:
    """Exact lengths from a local tokenizer when there is one; else the server counts them."""
    tok = cfg.tokenizer or (ep.model if ep.model and Path(ep.model).is_dir() else None)
    if tok:
        return B.make_prompts(n, cfg.input_len, tok, seed=cfg.seed)
    counter = Counter(ep, cfg.api)
    try:
        texts, rec = calibrate(counter, n, cfg.input_len, seed=cfg.seed)
    finally:
        counter.close()
    how = "/tokenize" if rec["method"] == "tokenize" else "usage.prompt_tokens"
    return B.Prompts(texts, f"the server's count ({how}): {rec['counted_mean']:.0f} tokens "
                            f"({rec['deviation']:+.1%}) for --input-len {cfg.input_len}", rec)


def table(rows: list[dict]) -> Table:
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
    return t


def slo_summary(s: dict) -> str:
    k = s["knee"]
    head = f"SLO {', '.join(s['terms'])}: "
    if k is None:
        return head + f"not met even at {s['first_failing']} ({'; '.join(s['why'])})"
    usd = k["usd_per_million_output_tokens"]
    tail = (f"; {s['first_failing']} broke it ({'; '.join(s['why'])})" if s["first_failing"]
            else " (the highest level tried: raise --max-concurrency to look further)")
    api = s.get("api")
    beside = (f"\nthe same token mix at a public API: ${api['usd_per_million_output_tokens']:.2f} per 1M output "
              f"tokens ({api['source']})" if api else "")
    held = k.get("held_requests_s")
    if k.get("request_rate") and held:  # open loop: what it held, then what the finite level measured
        held_usd = k.get("held_usd_per_million_output_tokens")
        body = (f"knee at {k['label']}: {held:.2f} req/s arrived and held, {k['held_output_tok_s']:.0f} output tok/s"
                + (f", ${held_usd:.2f} per 1M output tokens" if held_usd else "")
                + f" (over the level, fill and drain included: {k['output_tok_s']:.0f} output tok/s)")
    else:
        body = (f"knee at {k['label']}: {k['requests_s']:.2f} req/s, {k['output_tok_s']:.0f} output tok/s"
                + (f", ${usd:.2f} per 1M output tokens" if usd else ""))
    return head + body + tail + beside


def failed_requests(rows: list[dict]) -> int:
    return sum(r["failed"] + r.get("unaccounted", 0) for r in rows)


def costs_from_file(path: Path, price_per_hour: float) -> list[dict]:
    """$ per 1M output tokens at each level of a saved bench result, at ``price_per_hour``."""
    try:
        data = json.loads(path.read_text())
        levels = data["levels"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"--bench {path}: not a llmodal bench result file ({e})") from None
    rows = []
    for lv in levels:
        # An open-loop level is priced at the load it held (runner.held), not its fill-and-drain figure.
        tps = float(lv.get("held_output_tok_s") or lv.get("output_tok_s") or 0)
        label = lv.get("label") or f"c={lv.get('concurrency')}"
        rows.append({"label": label, "concurrency": lv.get("concurrency"), "request_rate": lv.get("request_rate"),
                     "output_tok_s": tps,
                     "usd_per_million_output_tokens": B.usd_per_million(price_per_hour, tps)})
    return rows
