"""What vLLM allocates for LoRA on the CPU engine, class by class, against what the planner charges; and which
adapters vLLM itself accepts, against llmodal's adapter check.

    .venv/bin/python benchmarks/lora_memory.py --out benchmarks/results/cpu-2026-12-07-lora-memory

For each base (the tiny Llama; the same weights as a MistralForCausalLM, whose embedding and LM head vLLM does not
wrap; a tiny Mixtral, 4 experts) the LoRA flags are the ones llmodal's own launch
carries (``prepare``, as ``llmodal serve`` builds it, with ``VLLM_LORA_MODULES`` listing 4 rank-16 adapters made
here). vLLM's engine is then started in a child process with those flags (in-process engine core, so a function
can walk the worker's model): every tensor held by a ``BaseLayerWithLoRA`` is summed by its class (a storage
counted once), the punica wrapper's own tensors apart. ``plan/lora_memory.lora_weights`` must give the same bytes
per class. Each adapter is then handed to vLLM (``add_lora``, the check vLLM makes before serving it) and to
llmodal's check (``plan.adapters``): both must accept or refuse it. The CPU engine allocates LoRA exactly as a GPU
does (the same ``create_lora_weights``) but cannot run the MoE LoRA kernels (Triton), so the Mixtral's adapters are
loaded, not served.

Why not KV tokens: llmodal hands the CPU engine its KV size in bytes (``--kv-cache-memory-bytes``), so the KV tokens
there never depend on the LoRA charge; comparing them could not fail.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
KV_BYTES = 64 << 20  # the engine needs some KV cache; its size plays no part here


def _probe(model: str, max_loras: int, max_rank: int, adapters: dict[str, str]) -> dict:
    """In the child: start the engine, measure its LoRA tensors, offer it each adapter."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the worker in this process: collective_rpc takes a function
    from vllm import LLM
    from vllm.lora.request import LoRARequest

    llm = LLM(model=model, enable_lora=True, max_loras=max_loras, max_lora_rank=max_rank, max_cpu_loras=max_loras,
              max_model_len=2048, kv_cache_memory_bytes=KV_BYTES, enforce_eager=True)
    sizes = llm.collective_rpc(_lora_tensor_bytes)[0]
    verdicts = {}
    for i, (name, path) in enumerate(adapters.items(), start=1):
        try:
            verdicts[name] = {"accepted": bool(llm.llm_engine.add_lora(LoRARequest(name, i, path)))}
            llm.llm_engine.remove_lora(i)
        except Exception as e:  # noqa: BLE001 - vLLM's refusal, kept as it said it
            verdicts[name] = {"accepted": False, "error": f"{type(e).__name__}: {str(e)[:300]}"}
    return {**sizes, "adapters": verdicts}


def _lora_tensor_bytes(worker) -> dict:
    import torch
    from vllm.lora.layers import BaseLayerWithLoRA

    seen: set[int] = set()

    def walk(obj) -> int:
        if isinstance(obj, torch.Tensor):
            ptr = obj.untyped_storage().data_ptr()
            if ptr in seen:
                return 0
            seen.add(ptr)
            return obj.untyped_storage().nbytes()
        if isinstance(obj, (list, tuple)):
            return sum(walk(x) for x in obj)
        return 0

    by_class: dict[str, int] = {}
    for _, m in worker.model_runner.model.named_modules():
        if isinstance(m, BaseLayerWithLoRA):
            held = sum(walk(v) for k, v in vars(m).items() if k not in ("base_layer", "_modules", "_parameters"))
            by_class[type(m).__name__] = by_class.get(type(m).__name__, 0) + held
    manager = worker.model_runner.lora_manager._adapter_manager
    punica = sum(walk(v) for w in manager.punica_wrapper_mapping.values() for v in vars(w).values())
    return {"by_class": by_class, "punica_wrapper_bytes": punica}


def measure(model: Path, adapters: dict[str, Path], timeout: int = 900) -> dict:
    """llmodal's launch for ``model`` with ``adapters``; vLLM's LoRA tensors and verdicts (a child process);
    the planner's charge for the same flags; llmodal's verdict on each adapter."""
    from llmodal.core.config import load_settings
    from llmodal.core.errors import ConfigError
    from llmodal.core.lora import Adapter
    from llmodal.engine.prepare import prepare
    from llmodal.plan.adapters import check, read
    from llmodal.plan.catalog import lookup
    from llmodal.plan.lora_memory import LoraSlots, lora_buffer_bytes, lora_weights

    served = lookup(str(model))
    good = ",".join(f"{n}={p}" for n, p in adapters.items() if n.startswith("ok"))  # what llmodal's launch serves
    settings = load_settings(None, max_model_len=2048, lora_modules=good)
    argv = prepare(settings, gpu=False, tiny_model=str(model), tiny_name="tiny", api_key="k").launch.argv
    max_loras, max_rank = (int(argv[argv.index(f) + 1]) for f in ("--max-loras", "--max-lora-rank"))
    llmodal_says = {}
    for name, path in adapters.items():
        try:
            check(read(Adapter(name, str(path))), served, model="tiny", served="tiny", quant="bf16",
                  checkpoint="tiny", max_rank=max_rank, any_base=True)
            llmodal_says[name] = {"accepted": True}
        except ConfigError as e:
            llmodal_says[name] = {"accepted": False, "error": str(e)}
    r = subprocess.run([sys.executable, str(HERE), "--probe", str(model), str(max_loras), str(max_rank),
                        json.dumps({n: str(p) for n, p in adapters.items()})],
                       capture_output=True, text=True, timeout=timeout)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("PROBE ")]
    if r.returncode != 0 or not line:
        raise RuntimeError(f"the vLLM probe failed (exit {r.returncode}):\n{r.stderr[-4000:]}")
    vllm = json.loads(line[-1][len("PROBE "):])
    slots = LoraSlots(len(adapters), max_loras, max_rank)
    return {"model": str(model), "arch": served.arch, "experts": served.experts, "max_loras": max_loras,
            "max_lora_rank": max_rank, "vllm_by_class": vllm["by_class"],
            "vllm_punica_wrapper_bytes": vllm["punica_wrapper_bytes"],
            "planner_by_class": lora_weights(served, slots, tp=1),
            "planner_buffer_bytes": lora_buffer_bytes(slots, 2048),
            "vllm_adapters": vllm["adapters"], "llmodal_adapters": llmodal_says}


def bases(root: Path) -> dict[str, tuple[Path, dict[str, Path]]]:
    """The three bases and the adapters offered to each: four good ones (rank 16; on the Mixtral, every module vLLM
    wraps, experts included); on each, one on the embedding and the LM head too; on the Llama and the Mistral one
    naming its targets by path (self_attn.q_proj); on the Mixtral the experts alone, under their names and under the
    Llama names vLLM's Mixtral loader renames, and two vLLM must refuse (an expert the base lacks; a Llama MLP)."""
    from llmodal.engine.tiny_adapter import LLAMA_MODULES, MIXTRAL_MODULES, write_adapter
    from llmodal.engine.tiny_model import TinyShape, ensure_tiny_model

    out = {}
    llama = ensure_tiny_model(TinyShape())
    # The tiny Llama's weights under MistralForCausalLM: the same layers, but vLLM gives its embedding and LM head
    # no LoRA slots.
    mistral = _as_arch(llama, root / "tiny-mistral", "MistralForCausalLM", "mistral")
    for kind, model, modules in (("llama", llama, LLAMA_MODULES), ("mistral", mistral, LLAMA_MODULES),
                                 ("mixtral", ensure_tiny_model(TinyShape(experts=4)), MIXTRAL_MODULES)):
        ads = {f"ok{i}": write_adapter(root / kind / f"ok{i}", model, rank=16, targets=tuple(modules), seed=i + 1)
               for i in range(4)}
        # LoRA on the embedding and the LM head: vLLM takes it on the Llama and the Mixtral, not on the Mistral
        ads["embedding-lm-head"] = write_adapter(root / kind / "embedding-lm-head", model, rank=8,
                                                 targets=("q_proj", "embed_tokens", "lm_head"), seed=12)
        if kind != "mixtral":  # targets written as module paths, as PEFT also matches them
            ads["path-targets"] = _configured(ads["ok0"], root / kind / "path-targets", target_modules=[
                f"{block}.{m}" for m, (block, _, _) in modules.items()])
        if kind == "mixtral":
            ads["experts-only"] = write_adapter(root / kind / "experts-only", model, rank=8,
                                                targets=("w1", "w2", "w3"), seed=10)
            ads["experts-as-gate-up-down"] = _renamed(ads["experts-only"], root / kind / "experts-as-gate-up-down",
                                                      {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"})
            ads["expert-5-of-4"] = write_adapter(root / kind / "bad-expert", model, rank=8, targets=("w1",),
                                                 experts=5, seed=9)
            ads["llama-mlp"] = write_adapter(root / kind / "llama-mlp", llama, rank=8,
                                             targets=("gate_proj", "up_proj", "down_proj"), seed=11)
        out[kind] = (model, ads)
    return out


def _as_arch(model: Path, out: Path, arch: str, model_type: str) -> Path:
    """A copy of ``model`` whose config.json names another architecture (of the same layers and weights)."""
    import shutil

    shutil.copytree(model, out, dirs_exist_ok=True)
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "architectures": [arch], "model_type": model_type}, indent=2))
    return out


def _configured(src: Path, out: Path, **cfg) -> Path:
    """``src`` with these adapter_config.json keys changed, the same weights."""
    import shutil

    shutil.copytree(src, out, dirs_exist_ok=True)
    doc = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**doc, **cfg}, indent=2))
    return out


def _renamed(src: Path, out: Path, names: dict[str, str]) -> Path:
    """``src`` with its modules renamed (keys and target_modules): the same weights under other names."""
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    tensors = load_file(str(src / "adapter_model.safetensors"))
    for old, new in names.items():
        tensors = {k.replace(f".{old}.", f".{new}."): v for k, v in tensors.items()}
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((src / "adapter_config.json").read_text())
    cfg["target_modules"] = [names.get(t, t) for t in cfg["target_modules"]]
    (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    return out


def main() -> None:
    if sys.argv[1:2] == ["--probe"]:
        model, n, r, ads = sys.argv[2:6]
        print("PROBE " + json.dumps(_probe(model, int(n), int(r), json.loads(ads))), flush=True)
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["| base | LoRA layer class | vLLM allocated (bytes) | planner charges | equal |", "|---|---|---|---|---|"]
    from llmodal.core.state import cache_dir

    # Made again from their seeds on every run: no weights in the results folder.
    for kind, (model, ads) in bases(cache_dir() / "lora-memory-adapters").items():
        doc = measure(model, ads)
        (args.out / f"{kind}.json").write_text(json.dumps(doc, indent=2) + "\n")
        for cls in sorted(set(doc["vllm_by_class"]) | set(doc["planner_by_class"])):
            got, want = doc["vllm_by_class"].get(cls, 0), doc["planner_by_class"].get(cls, 0)
            lines.append(f"| {kind} | {cls} | {got:,} | {want:,} | {'yes' if got == want else 'NO'} |")
        lines.append(f"| {kind} | punica wrapper's index tensors (vLLM) / the planner's step buffer | "
                     f"{doc['vllm_punica_wrapper_bytes']:,} | {doc['planner_buffer_bytes']:,} | – |")
        for name in ads:
            v, m = doc["vllm_adapters"][name], doc["llmodal_adapters"][name]
            lines.append(f"| {kind} | adapter {name}: vLLM {'accepts' if v['accepted'] else 'refuses'}, llmodal "
                         f"{'accepts' if m['accepted'] else 'refuses'} | | | "
                         f"{'yes' if v['accepted'] == m['accepted'] else 'NO'} |")
    text = "\n".join(lines)
    (args.out / "summary.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
