"""How plans and results look in a terminal (rich) — kept apart from the arithmetic."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from llmodal.plan.planner import Plan, Suggestion


def fast_boot_row(plan: Plan, snapshot: bool) -> dict:
    """KV tokens with and without fast boot. The planner sets the KV size (--kv-cache-memory-bytes),
    so vLLM's sleep mode cannot shrink it: an H100 gave 106,672 KV tokens with and without it."""
    return {"snapshot": snapshot, "kv_tokens_with": plan.kv_tokens, "kv_tokens_without": plan.kv_tokens,
            "host_gib_asleep_at_least": round(plan.weights_gib_per_gpu, 1)}


def discovery_lines(found, chosen: str) -> list[str]:
    """What the hub's model tree showed: builds kept (best first, why the chosen one) and rejected."""
    if found is None:
        return []
    out = [f"hub model tree of {found.base}: {len(found.ranked)} build(s) kept, {len(found.rejected)} rejected"]
    for i, c in enumerate(found.ranked):
        mark = "→" if c.repo == chosen else " "
        out.append(f"  {mark} {i + 1}. {c.repo} ({c.quant}, {c.downloads:,} downloads"
                   f"{', trusted publisher' if c.trusted else ''})")
    if any(c.repo == chosen for c in found.ranked):
        out.append(f"  chosen: {chosen}: {found.why(chosen)}; pin another with VLLM_CHECKPOINT")
    out += [f"  ✗ {repo}: {why}" for repo, why in found.rejected]
    return out


def plan_table(plan: Plan, asked: Plan | None, sugg: list[Suggestion], console: Console,
               snapshot: bool = False, found=None) -> None:
    if asked is not None and asked.checkpoint != plan.checkpoint:
        console.print(f"[bold]As configured[/] ({asked.checkpoint}, {asked.quantization}): "
                      f"[red]does not fit[/] — {asked.reason}.")
    verdict = "[green]fits[/]" if plan.fits else "[red]does not fit[/]"
    console.print(f"[bold]Plan[/]: serve [cyan]{plan.model}[/] from [cyan]{plan.checkpoint}[/] "
                  f"({plan.quantization}) on {plan.gpu_count}× {plan.gpu}, TP {plan.tensor_parallel_size}: {verdict}")
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="dim")
    t.add_column()
    t.add_row("parameters", f"{plan.params_b:.1f} B")
    t.add_row("weights per GPU", f"{plan.weights_gib_per_gpu:.1f} GiB ({plan.weights_gib_total * 1.073741824:.1f} GB"
              f" total)")
    t.add_row("usable per GPU", f"{plan.budget_gib_per_gpu:.1f} GiB at utilization {plan.gpu_memory_utilization}")
    t.add_row("headroom", f"activations {plan.activation_gib:.2f} (with margin) + CUDA graphs "
              f"{plan.cuda_graph_gib:.2f} + non-torch {plan.non_torch_gib:.2f} GiB")
    if plan.lora:
        t.add_row("LoRA adapters", f"{plan.lora.adapters} served, {plan.lora.max_loras} resident at once (--max-loras) "
                  f"at rank ≤ {plan.lora.max_rank}: {plan.lora_gib_per_gpu:.2f} GiB per GPU, taken before the KV cache")
    kv_bits = 8 if plan.flags and plan.flags.kv_cache_dtype == "fp8" else 16
    t.add_row("KV per token", f"{plan.kv_bytes_per_token / 1024:.0f} KiB ({kv_bits}-bit KV, all layers)")
    f = plan.flags
    if f:
        shown = {"--max-num-seqs": f.max_num_seqs, "--max-num-batched-tokens": f.max_num_batched_tokens,
                 "--kv-cache-dtype": f.kv_cache_dtype, "--dtype": f.dtype, "VLLM_DISABLED_KERNELS": f.disabled_kernels}
        t.add_row(f"profile {plan.profile}", " ".join(f"{k} {v}" for k, v in shown.items() if v) or "vLLM's defaults")
        if g := f.cudagraph_capture_sizes:
            t.add_row("CUDA graphs", f"{len(g)} sizes, {' '.join(map(str, g))} (vLLM's default: one every 8 or 16)")
    t.add_row("KV cache per GPU", f"{plan.kv_gib_per_gpu:.1f} GiB = {plan.kv_tokens:,} tokens "
              f"(--kv-cache-memory-bytes {plan.kv_cache_bytes})")
    fb = fast_boot_row(plan, snapshot)
    t.add_row("fast boot", f"{'snapshot' if fb['snapshot'] else 'off'}: {fb['kv_tokens_with']:,} KV tokens with it, "
              f"{fb['kv_tokens_without']:,} without (KV size set, not profiled); asleep it holds ≥ "
              f"{fb['host_gib_asleep_at_least']:.1f} GiB of host memory")
    t.add_row(f"full {plan.max_model_len:,}-token chats", f"{plan.full_length_sequences:.1f} at once")
    t.add_row("decode ceiling", f"{plan.decode_ceiling_tok_s:.0f} tok/s single stream (bandwidth ÷ weights)")
    t.add_row("cost", f"${plan.price_per_hour:.2f}/h · ${plan.idle_tail_cost:.2f} idle tail per cold start · "
              f"${plan.day_cost:.0f} per 24 h")
    t.add_row("price source", plan.price_source)
    console.print(t)
    console.print(f"verdict: {plan.reason}")
    for line in discovery_lines(found, plan.checkpoint):
        console.print(line, markup=False, highlight=False)
    for n in plan.notes:
        console.print(f"[yellow]note[/]: {n}")
    if sugg and not (asked is not None and asked.checkpoint != plan.checkpoint) and not plan.fits:
        console.print("[bold]Suggestions that fit, cheapest first:[/]")
    elif sugg:
        console.print("[bold]Other options that fit, cheapest first:[/]")
    for s in sugg:
        p = s.plan
        console.print(f"  • {s.label}: {p.kv_tokens:,} KV tokens ({p.full_length_sequences:.1f} × {p.max_model_len:,}),"
                      f" ${p.price_per_hour:.2f}/h")
