"""What to serve: settings (+ the plan) → one ``Launch``, for every runner.

``llmodal serve``, the Modal container and ``--dry-run`` all call ``prepare``: on a GPU the
planner picks the checkpoint and the KV size; on the CPU engine the embedded tiny model (or
the configured one) runs with a RAM fraction. Tool-call and reasoning parsers are resolved
here too, so the printed command is the command that runs.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from dataclasses import dataclass, replace
from pathlib import Path

from llmodal.core.errors import ConfigError, DoesNotFit, LlmodalError
from llmodal.plan.catalog import tool_parser_for
from llmodal.core.config import Settings
from llmodal.engine.launch import Launch, build_launch
from llmodal.plan.cpu_fit import kv_cache_bytes
from llmodal.plan.planner import Resolution, plan_for_settings

# On the CPU engine VLLM_GPU_MEMORY_UTILIZATION is the KV cache's share of RAM (plan/cpu_fit.py);
# 0.95 would starve the machine.
CPU_MEMORY_FRACTION = 0.2


@dataclass(frozen=True)
class Prepared:
    launch: Launch
    served_name: str
    summary: str  # one line: what runs where, and the plan's verdict
    resolution: Resolution | None  # None on the CPU engine (the planner is for GPUs)
    settings: Settings


@functools.cache
def installed_parsers() -> tuple[set[str], set[str]] | None:
    """(tool parsers, reasoning parsers) the installed vLLM offers; None where vLLM is absent or its
    registry is not where this reads it (vLLM then checks the name itself when it starts).

    Read from vLLM's source, not by importing it: the import (vLLM, torch) took 9–12 s on the 2-core
    CPU, in front of every container start, before vLLM's own process imports it all again
    (benchmarks/results/cpu-2026-12-02/prepare-time.txt)."""
    spec = importlib.util.find_spec("vllm")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    tools = _registry(root / "tool_parsers" / "__init__.py", "_TOOL_PARSERS_TO_REGISTER")
    reasoning = _registry(root / "reasoning" / "__init__.py", "_REASONING_PARSERS_TO_REGISTER")
    return (tools, reasoning) if tools and reasoning else None


def _registry(path: Path, name: str) -> set[str]:
    """The string keys of the module-level dict ``name`` in ``path`` (empty if absent)."""
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return set()
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if isinstance(target, ast.Name) and target.id == name and isinstance(node.value, ast.Dict):
            return {k.value for k in node.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    return set()


def resolve_parsers(settings: Settings, *names: str) -> tuple[str | None, str | None]:
    """VLLM_TOOL_CALL_PARSER / VLLM_REASONING_PARSER → the names to pass (None: off)."""
    tool = settings.tool_call_parser
    tool = tool_parser_for(*names) if tool == "auto" else (None if tool == "none" else tool)
    reasoning = None if settings.reasoning_parser == "none" else settings.reasoning_parser
    offered = installed_parsers()
    if offered:
        tools, reasonings = offered
        if tool and tools and tool not in tools and settings.tool_call_parser != "auto":
            raise ConfigError(f"VLLM_TOOL_CALL_PARSER={tool!r} is invalid: expected auto, none or one of "
                              f"{', '.join(sorted(tools))}")
        if reasoning and reasonings and reasoning not in reasonings:
            raise ConfigError(f"VLLM_REASONING_PARSER={reasoning!r} is invalid: expected none or one of "
                              f"{', '.join(sorted(reasonings))}")
    return tool, reasoning


def prepare(settings: Settings, *, gpu: bool, tiny_model: str | None = None, tiny_name: str | None = None,
            api_key: str | None = None, revision: str | None = None, sleep_mode: bool = False,
            keys_file: str | None = None, control_key: bool = False, resolution: Resolution | None = None,
            fetch_adapters: bool = False, adapters_in: str | None = None,
            formats: dict[str, str] | None = None) -> Prepared:
    """Build the launch. On a GPU: plan, refuse a plan that does not fit (unless LLMODAL_FORCE),
    pass the planner's checkpoint and KV size (``resolution``: a plan already made for these
    settings, not made again). ``tiny_model`` serves that directory on the CPU. An adapter on the hub is
    served from the local snapshot of its commit (``llmodal deploy`` pins one), else fetched first when
    ``fetch_adapters`` (a real start; a dry run shows the repo, or with ``adapters_in``, the hub cache the
    container has, the snapshot path it will read there). ``formats``: vLLM's formats for the checkpoint's layout
    (the container's, from the pinned snapshot: modal/weights.py)."""
    if not gpu:
        update: dict = {}
        if "gpu_memory_utilization" not in settings.model_fields_set:
            update["gpu_memory_utilization"] = CPU_MEMORY_FRACTION
        if tiny_model:
            update["model"] = tiny_model
        settings = settings.model_copy(update=update)
        if not tiny_model:
            _refuse_if_ram_short(settings)
        served = tiny_name or settings.model
        tool, reasoning = resolve_parsers(settings, settings.model, served)
        kv = kv_cache_bytes(settings.gpu_memory_utilization)
        lora = _cpu_lora(settings, served)
        launch = build_launch(settings, served_model_name=served, api_key=api_key, tool_call_parser=tool,
                              reasoning_parser=reasoning, keys_file=keys_file,
                              control_key=control_key, kv_cache_bytes=kv,
                              **lora_launch(lora, served, fetch_adapters))
        what = f"embedded tiny Llama ({settings.model})" if tiny_model else settings.model
        notes = "".join(f"; {n}" for n in (lora.notes if lora else []))
        return Prepared(launch, served, f"{what} on the CPU engine (the planner is for GPUs), KV cache "
                        f"{kv / 2**30:.1f} GiB ({settings.gpu_memory_utilization} × RAM){notes}", None, settings)

    res = resolution or plan_for_settings(settings)
    p = res.chosen
    if not p.fits and not settings.force:
        raise DoesNotFit(f"the plan does not fit: {p.reason} (run `llmodal plan` for options that fit; "
                         "LLMODAL_FORCE=1 or --force starts anyway)")
    tool, reasoning = resolve_parsers(settings, settings.model, p.checkpoint)
    launch = build_launch(settings, checkpoint=p.checkpoint, served_model_name=settings.model,
                          quantization=p.vllm_quantization, revision=revision, api_key=api_key,
                          kv_cache_bytes=p.kv_cache_bytes or None, tool_call_parser=tool, reasoning_parser=reasoning,
                          sleep_mode=sleep_mode, keys_file=keys_file, control_key=control_key,
                          queue_limit=queue_limit_for(p), max_n=max(1, int(p.full_length_sequences // 2)),
                          profile=p.flags, formats=formats,
                          **lora_launch(res.lora, settings.model, fetch_adapters, adapters_in))
    summary = (f"{settings.model} from {p.checkpoint} on {p.gpu_count}× {p.gpu}, profile {p.profile}: "
               f"{'fits' if p.fits else 'DOES NOT FIT'} — {p.reason}")
    return Prepared(launch, settings.model, summary, res, settings)


def _cpu_lora(settings: Settings, served: str):
    """The adapters read and checked against the model the CPU engine serves (no GPU memory to plan)."""
    from llmodal.plan.adapters import check_all
    from llmodal.plan.catalog import lookup
    from llmodal.plan.planner import lora_setup

    lora = lora_setup(settings)
    if lora is None:
        return None
    spec = lookup(settings.model, settings.model_revision)
    notes = check_all(lora, spec, model=settings.model, served=served, quant=spec.quant, checkpoint=settings.model,
                      any_base=settings.lora_any_base)
    return replace(lora, notes=[*lora.notes, *notes])


def lora_launch(lora, served: str, fetch: bool, adapters_in: str | None = None) -> dict:
    """build_launch's LoRA arguments: each adapter as name=where vLLM reads it, the limits, the names served."""
    if lora is None:
        return {}
    clash = [n for n in lora.names if n == served]
    if clash:
        raise ConfigError(f"VLLM_LORA_MODULES: adapter name {clash[0]!r} is the served model's name: clients could not "
                          "reach the base model; name the adapter differently")
    modules = tuple(f"{f.adapter.name}={adapter_path(f.adapter, fetch, adapters_in)}" for f in lora.facts)
    return {"lora_modules": modules, "max_loras": lora.max_loras, "max_lora_rank": lora.max_rank,
            "served_models": ",".join([served, *lora.names])}


def adapter_path(adapter, fetch: bool, hub_cache: str | None = None) -> str:
    """Where vLLM reads ``adapter``: its folder; a hub adapter's local snapshot at its commit (offline: no
    hub call); else, on a real start, the snapshot fetched now at its revision (vLLM itself would fetch the
    main branch, whatever the revision said). ``hub_cache``: another machine's hub cache (the container's
    volume, for a dry run): the snapshot of the adapter's commit there, which it reads or fetches into."""
    from llmodal.plan.adapters import cached_snapshot

    if adapter.is_folder:
        return str(adapter.folder)
    if hub_cache and adapter.pinned:
        from huggingface_hub.file_download import repo_folder_name

        return f"{hub_cache}/{repo_folder_name(repo_id=adapter.source, repo_type='model')}/snapshots/{adapter.revision}"
    commit = adapter.revision if adapter.pinned else None
    snap = cached_snapshot(adapter)
    if snap is not None:
        return str(snap)
    if not fetch:
        return adapter.source + (f"@{adapter.revision}" if adapter.revision else "")
    from huggingface_hub import snapshot_download

    spelled = f"{adapter.source}@{commit or adapter.revision or 'main'}"
    try:
        return snapshot_download(adapter.source, revision=commit or adapter.revision)
    except Exception as e:  # noqa: BLE001 - unreachable hub, missing revision, gated repo: one refusal, with why
        raise LlmodalError(f"VLLM_LORA_MODULES: adapter {adapter.name!r}: could not fetch {spelled} before vLLM starts "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); nothing was started. Connect to the "
                           "hub (HF_TOKEN for a gated repo), or fetch it once with `llmodal download` (Modal) or "
                           "`huggingface-cli download` (here), or list it as a folder") from None


def queue_limit_for(plan) -> int:
    """Twice the requests of a quarter of the context that the plan's KV cache holds at once: what runs,
    plus as many waiting. Past it a request is told to retry (429) instead of queueing for minutes."""
    return max(16, 2 * int(plan.kv_tokens // max(1, plan.max_model_len // 4)))


def _refuse_if_ram_short(settings: Settings) -> None:
    from llmodal.plan.cpu_fit import cpu_fit

    fit = cpu_fit(settings.model, settings.model_revision, settings.gpu_memory_utilization)
    if fit and not fit.fits and not settings.force:
        raise DoesNotFit(f"{fit.reason}. Serve the embedded tiny model (unset VLLM_MODEL), a smaller model, or "
                         "deploy to Modal (`llmodal deploy`); LLMODAL_FORCE=1 or --force starts anyway")


def dry_run_lines(prep: Prepared) -> list[str]:
    """What --dry-run prints: the verdict, the exact command, the child's extra environment."""
    lines = [f"plan: {prep.summary}", "command:", f"  {prep.launch.shell()}", "environment added for vLLM:"]
    lines += [f"  {k}={v}" for k, v in prep.launch.shown_env().items()]
    return lines
