"""Adapters checked against the base before anyone pays: each ``adapter_config.json`` and its weights'
shapes, from a folder or the hub (only the config file and the safetensors header, never the weights).

What a wrong adapter does otherwise: vLLM starts, then refuses the adapter (rank above ``--max-lora-rank``,
a module the base lacks) or serves it against the wrong base, on a GPU already paid for. Offline, an
adapter on the hub is read from the local cache (``HF_HUB_OFFLINE``, a container with pinned weights),
else it is left unchecked and said so — the hub's being unreachable is not the adapter's fault.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from llmodal.core.errors import ConfigError
from llmodal.core.lora import RANKS, Adapter, rank_slot
from llmodal.plan.lora_memory import embedding_lora
from llmodal.plan.model_spec import ModelSpec

DEFAULT_RANK = 16  # vLLM's --max-lora-rank when nothing says otherwise
# The decoder families the catalog knows name their linear layers as Llama does.
LLAMA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_KEY = re.compile(r"layers\.(\d+)\.(?:[\w.]+\.)?(\w+)\.lora_([AB])(?:\.default)?\.weight$")
# Outside the layers: the embedding (PEFT's lora_embedding_A/B) and the LM head, where vLLM takes LoRA on them.
EMBEDDING_TARGETS = ("embed_tokens", "lm_head")
_EMBED_KEY = re.compile(r"(?:^|\.)(embed_tokens|lm_head)\.lora_(?:embedding_)?([AB])(?:\.default)?(?:\.weight)?$")


@dataclass(frozen=True)
class AdapterFacts:
    adapter: Adapter
    config: dict | None  # adapter_config.json; None: not readable from here (said in ``unread``)
    shapes: dict[str, list[int]] | None = None  # tensor → shape, from the safetensors header
    unread: str = ""

    @property
    def rank(self) -> int | None:
        """The rank vLLM sizes this adapter by: max(r, *rank_pattern.values()) (PEFTHelper.validate_legal);
        None when r or a rank_pattern value is not a positive integer (``true`` is not rank 1)."""
        cfg = self.config or {}
        pattern = cfg.get("rank_pattern") or {}
        ranks = [cfg.get("r"), *(pattern.values() if isinstance(pattern, dict) else [None])]
        if not all(type(r) is int and r >= 1 for r in ranks):
            return None
        return max(ranks)


@dataclass(frozen=True)
class LoraSetup:
    """What the planner and the launch need: the checked adapters and vLLM's two limits."""

    facts: list[AdapterFacts]
    max_loras: int
    max_rank: int
    notes: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [f.adapter.name for f in self.facts]


def _header(path: Path) -> dict[str, list[int]]:
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        meta = json.loads(f.read(n))
    return {k: v["shape"] for k, v in meta.items() if k != "__metadata__"}


def read(adapter: Adapter) -> AdapterFacts:
    """The adapter's config and tensor shapes, from its folder, from the local snapshot of its pinned commit (a
    commit never changes: the hub is not asked, as a container with the adapter in its volume must not), or from
    the hub (or its local cache)."""
    if adapter.is_folder:
        return _read_dir(adapter, adapter.folder)
    snap = cached_snapshot(adapter)
    return _read_dir(adapter, snap) if snap else _read_hub(adapter)


def cached_snapshot(adapter: Adapter) -> Path | None:
    """The local hub cache's snapshot of a hub adapter pinned to a commit (what ``download`` put in the volume)."""
    if adapter.is_folder or not adapter.pinned:
        return None
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(adapter.source, "adapter_config.json", revision=adapter.revision)
    return Path(hit).parent if isinstance(hit, str) else None


def _read_dir(adapter: Adapter, d: Path) -> AdapterFacts:
    cfg_path = d / "adapter_config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"VLLM_LORA_MODULES: adapter {adapter.name!r}: {d} has no adapter_config.json "
                          "(expected a PEFT adapter folder: adapter_config.json and adapter_model.safetensors)")
    try:
        cfg = json.loads(cfg_path.read_text())
        st = d / "adapter_model.safetensors"
        shapes = _header(st) if st.is_file() else None
    except (OSError, ValueError, struct.error) as e:
        raise ConfigError(f"VLLM_LORA_MODULES: adapter {adapter.name!r}: {d} is unreadable ({e})") from None
    return AdapterFacts(adapter, cfg, shapes)


def _hub_config(repo: str, rev: str | None) -> str:
    """adapter_config.json from the hub, or from the local cache where the hub does not answer. One HEAD first, with
    no retries: hf_hub_download retries an unanswered hub for ~23 s (huggingface_hub's backoff), each adapter."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    try:
        get_hf_file_metadata(hf_hub_url(repo, "adapter_config.json", revision=rev), timeout=5)
    except HfHubHTTPError:
        pass  # the hub answered (404, gated, …): hf_hub_download raises its precise error below
    except Exception:  # noqa: BLE001 - unreachable or offline: the local cache only, no retries
        return hf_hub_download(repo, "adapter_config.json", revision=rev, local_files_only=True)
    return hf_hub_download(repo, "adapter_config.json", revision=rev, etag_timeout=5)


def _read_hub(adapter: Adapter) -> AdapterFacts:
    import os

    from huggingface_hub import HfApi
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    repo, rev = adapter.source, adapter.revision
    try:
        cfg = json.loads(Path(_hub_config(repo, rev)).read_text())
    except LocalEntryNotFoundError:  # before EntryNotFoundError, its parent: the hub was not asked
        why = "offline (HF_HUB_OFFLINE) and not in the local cache" if os.environ.get("HF_HUB_OFFLINE") == "1" \
            else "the hub did not answer and it is not in the local cache"
        return AdapterFacts(adapter, None, unread=why)
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
        if isinstance(e, GatedRepoError):
            return AdapterFacts(adapter, None, unread=f"{repo} is gated: accept its license, set HF_TOKEN")
        what = ("revision " + repr(rev) + " does not exist" if isinstance(e, RevisionNotFoundError) else
                "has no adapter_config.json (not a PEFT adapter)" if isinstance(e, EntryNotFoundError) else
                "does not exist (or needs HF_TOKEN)")
        raise ConfigError(f"VLLM_LORA_MODULES: adapter {adapter.name!r}: {repo} {what}") from None
    except (OSError, ValueError) as e:
        why = "offline (HF_HUB_OFFLINE) and not in the local cache" if os.environ.get("HF_HUB_OFFLINE") == "1" \
            else f"the hub did not answer ({type(e).__name__})"
        return AdapterFacts(adapter, None, unread=why)
    shapes = None
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        try:  # the header only (a range request), not the weights
            meta = HfApi().parse_safetensors_file_metadata(repo, "adapter_model.safetensors", revision=rev, timeout=5)
            shapes = {k: list(v.shape) for k, v in meta.tensors.items()}
        except Exception:  # noqa: BLE001 - the config was read; shapes are a bonus check
            shapes = None
    return AdapterFacts(adapter, cfg, shapes)


def module_dims(spec: ModelSpec) -> dict[str, tuple[int, int]] | None:
    """(in, out) features of each module an adapter may target on this base, as vLLM 0.32 names them; None for
    an architecture not known here (then its adapters are checked by vLLM alone)."""
    q, kv = spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim
    h, i = spec.hidden, spec.intermediate
    attention = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h)}
    if spec.experts > 1 and spec.arch in ("", *ARCH_LIKE_MIXTRAL):
        # vLLM's MixtralForCausalLM: the router (gate) and each expert's w1, w3 (h → I) and w2 (I → h)
        return {**attention, "gate": (h, spec.experts), "w1": (h, i), "w3": (h, i), "w2": (i, h)}
    if not spec.arch or spec.arch in ARCH_LIKE_LLAMA:
        return {**attention, "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    return None


def _canonical(module: str, dims: dict[str, tuple[int, int]]) -> str:
    """vLLM's name for ``module`` on this base: MixtralModel.hf_to_vllm_mapper loads an expert's gate_proj,
    up_proj and down_proj as w1, w3 and w2."""
    return EXPERT_ALIASES.get(module, module) if "w1" in dims else module


def _same_base(named: str, model: str, served: str, spec: ModelSpec, model_dir: str | None) -> bool:
    from llmodal.plan.catalog import canonical

    def norm(s: str) -> str:  # one spelling per model: a folder resolved, a repo by the catalog's name for it
        p = Path(s).expanduser()
        return str(p.resolve()) if s.startswith(("/", ".", "~")) else canonical(s.strip().strip("/")).lower()

    same = {norm(model), norm(served), *(norm(c) for c in spec.checkpoints.values()), norm(spec.name)}
    if model_dir:
        same.add(norm(model_dir))
    return norm(named) in same


def _head(a: Adapter) -> str:
    return f"VLLM_LORA_MODULES: adapter {a.name!r} ({a.source})"


def check(facts: AdapterFacts, spec: ModelSpec, *, model: str, served: str, quant: str, checkpoint: str,
          max_rank: int | None, any_base: bool, model_dir: str | None = None) -> list[str]:
    """Refuse (ConfigError) what vLLM would refuse or serve wrongly; return notes on what is allowed."""
    a, cfg = facts.adapter, facts.config
    head = _head(a)
    if cfg is None:
        return [f"adapter {a.name}: adapter_config.json not checked: {facts.unread}"]
    notes: list[str] = []
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise ConfigError(f"{head} is a {cfg.get('peft_type')} adapter; vLLM serves LoRA adapters only")
    if cfg.get("use_dora"):
        raise ConfigError(f"{head} is a DoRA adapter (use_dora); vLLM serves plain LoRA only: merge it or retrain")
    if cfg.get("modules_to_save"):
        raise ConfigError(f"{head} saves whole modules {cfg['modules_to_save']} (modules_to_save); vLLM serves "
                          "LoRA weights only")
    _refuse_unsupported(head, cfg)
    rank = facts.rank
    if rank is None:
        raise ConfigError(f"{head}: adapter_config.json's rank must be a positive integer: r={cfg.get('r')!r}, "
                          f"rank_pattern={cfg.get('rank_pattern')!r}; fix the adapter's config (PEFT writes an "
                          "integer)")
    _refuse_above_largest(head, rank, cfg)
    if max_rank is not None and rank > max_rank:
        raise ConfigError(f"{head} has rank {rank}, above VLLM_MAX_LORA_RANK={max_rank}: raise it to "
                          f"{rank_slot(rank)} or unset it (default: the highest adapter rank)")
    dims = module_dims(spec)
    targets = cfg.get("target_modules")
    if isinstance(targets, list) and dims is not None:
        # PEFT matches an entry against the end of a module's path at a "." ("self_attn.q_proj" is q_proj).
        names = {t: _canonical(str(t).rsplit(".", 1)[-1], dims) for t in targets}
        _refuse_embedding(head, spec, sorted(t for t, n in names.items() if n in EMBEDDING_TARGETS))
        unknown = sorted(t for t, n in names.items() if n not in dims and n not in EMBEDDING_TARGETS)
        if unknown:
            also = f"; and {', '.join(EMBEDDING_TARGETS)}" if embedding_lora(spec) else ""
            raise ConfigError(f"{head} targets {unknown}, which {spec.arch or spec.name} does not have (its linear "
                              f"modules: {', '.join(dims)}{also})")
    elif isinstance(targets, str) and targets != "all-linear":
        notes.append(f"adapter {a.name}: target_modules is a pattern ({targets!r}); checked by its weights only")
    if facts.shapes and dims is not None:
        _check_shapes(head, facts.shapes, dims, spec, cfg)
    named = str(cfg.get("base_model_name_or_path") or "")
    if not named:
        notes.append(f"adapter {a.name}: adapter_config.json names no base model; not compared with VLLM_MODEL")
    elif not _same_base(named, model, served, spec, model_dir):
        if not any_base:
            raise ConfigError(f"{head} was trained on {named!r}, not on VLLM_MODEL={model!r}: its answers would be "
                              "wrong. Serve it on its own base, or set LLMODAL_LORA_ANY_BASE=true if it is the same "
                              "model under another name")
        notes.append(f"adapter {a.name}: trained on {named!r}, served on {model} (LLMODAL_LORA_ANY_BASE)")
    if quant not in ("bf16", "fp16"):
        notes.append(f"adapter {a.name}: served on the {quant.upper()} build {checkpoint}; it was trained on "
                     f"{named or 'its base'} (LoRA runs beside quantized weights; answers differ slightly from the "
                     "16-bit base's)")
    return notes


# PEFT features vLLM 0.32 refuses at load (vllm/lora/peft_helper.py: PEFTHelper._validate_features and
# validate_legal): field, the value(s) it serves, why and the fix.
_INITS_SERVED = ("gaussian", "eva", "orthogonal", "mica", "lora_ga")
_REFUSED = (
    ("bias", lambda v: v == "none", "vLLM serves no adapter bias", "retrain with bias=\"none\""),
    ("lora_bias", lambda v: not v, "vLLM serves no LoRA bias", "retrain with lora_bias=false"),
    ("init_lora_weights", lambda v: not isinstance(v, str) or v.lower() in _INITS_SERVED,
     "this init (PiSSA, OLoRA, CorDA, LoftQ) changes the base weights",
     "convert it with PEFT's path_initial_model_for_weight_conversion"),
    ("alora_invocation_tokens", lambda v: not v, "vLLM does not serve Activated LoRA (aLoRA)", "use a plain LoRA"),
    ("layer_replication", lambda v: not v, "vLLM does not serve layer_replication", "use a plain LoRA"),
    ("use_bdlora", lambda v: not v, "vLLM does not serve block-diagonal LoRA (BD-LoRA)", "use a plain LoRA"),
    ("use_qalora", lambda v: not v, "vLLM does not serve QALoRA", "use a plain LoRA"),
)


def _refuse_unsupported(head: str, cfg: dict) -> None:
    for key, served, why, fix in _REFUSED:
        if key in cfg and not served(cfg[key]):
            raise ConfigError(f"{head}: adapter_config.json has {key}={cfg[key]!r}; {why}: {fix}")
    missing = [k for k in ("r", "lora_alpha", "target_modules") if k not in cfg]
    if missing:  # PEFTHelper.from_dict requires them
        raise ConfigError(f"{head}: adapter_config.json lacks {', '.join(missing)}, which vLLM requires; "
                          "save the adapter with PEFT (save_pretrained) to write them")


def _refuse_above_largest(head: str, rank: int, cfg: dict) -> None:
    if rank > RANKS[-1]:
        src = f"r={cfg.get('r')!r}" + (f", rank_pattern={cfg['rank_pattern']!r}" if cfg.get("rank_pattern") else "")
        raise ConfigError(f"{head} has rank {rank} ({src}), above vLLM's largest LoRA rank {RANKS[-1]}: "
                          f"retrain it at rank {RANKS[-1]} or lower")


ARCH_LIKE_LLAMA = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
                   "Gemma2ForCausalLM"}
ARCH_LIKE_MIXTRAL = {"MixtralForCausalLM"}
EXPERT_ALIASES = {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}
MOE_EXPERT_MODULES = ("w1", "w2", "w3")


def _module_rank(head: str, cfg: dict, key: str) -> int:
    """The rank PEFT (and vLLM's get_rank_and_scaling) gives this tensor's module: the first rank_pattern key
    that is a suffix of the module's name at a "." boundary, else r."""
    module = key.removeprefix("base_model.model.").split(".lora_")[0]
    for pat, r in (cfg.get("rank_pattern") or {}).items():
        try:
            hit = re.match(rf"(.*\.)?({pat})$", module)
        except re.error:
            raise ConfigError(f"{head}: adapter_config.json's rank_pattern key {pat!r} is not a pattern vLLM can "
                              "match; write the module's name") from None
        if hit:
            return r
    return cfg["r"]


def _refuse_embedding(head: str, spec: ModelSpec, targets: list[str]) -> None:
    if targets and not embedding_lora(spec):
        raise ConfigError(f"{head} targets {targets}: vLLM serves no LoRA on {spec.arch or spec.name}'s embedding or "
                          "LM head (its model class takes none there): retrain it without them")


def _check_embedding(head: str, key: str, shape: list[int], spec: ModelSpec, cfg: dict) -> None:
    """The embedding's pair is [rank, vocab] and [hidden, rank]; the LM head's [rank, hidden] and [vocab, rank]."""
    module, ab = _EMBED_KEY.search(key).groups()
    _refuse_embedding(head, spec, [module])
    rank, h, v = _module_rank(head, cfg, key), spec.hidden, spec.vocab
    want = {("embed_tokens", "A"): [rank, v], ("embed_tokens", "B"): [h, rank],
            ("lm_head", "A"): [rank, h], ("lm_head", "B"): [v, rank]}[(module, ab)]
    if list(shape) != want:
        raise ConfigError(f"{head}: {key} has shape {list(shape)}, the base's {module} needs {want} (rank {rank}, "
                          f"vocabulary {v}, hidden {h}): an adapter of another model")


def _check_shapes(head: str, shapes: dict[str, list[int]], dims: dict[str, tuple[int, int]], spec: ModelSpec,
                  cfg: dict) -> None:
    for key, shape in shapes.items():
        if _EMBED_KEY.search(key) and len(shape) == 2:
            _check_embedding(head, key, shape, spec, cfg)
            continue
        m = _KEY.search(key)
        if not m or _canonical(m.group(2), dims) not in dims or len(shape) != 2:
            continue
        layer, module, ab = int(m.group(1)), _canonical(m.group(2), dims), m.group(3)
        if layer >= spec.layers:
            raise ConfigError(f"{head}: {key} is for layer {layer}, but the base has {spec.layers} layers: an "
                              "adapter of another model")
        if module in MOE_EXPERT_MODULES:
            _check_expert(head, key, module, spec.experts)
        fin, fout = dims[module]
        rank = _module_rank(head, cfg, key)
        want = [rank, fin] if ab == "A" else [fout, rank]
        if list(shape) != want:
            raise ConfigError(f"{head}: {key} has shape {list(shape)}, the base's {module} needs {want} "
                              f"(rank {rank}, {fin} in, {fout} out): an adapter of another model")


def _check_expert(head: str, key: str, module: str, experts: int) -> None:
    """vLLM loads an expert's weights as ``experts.N.w1`` for N below the base's expert count, nothing else."""
    e = re.search(r"\.experts\.(\d+)\.", key)
    if e is None:
        raise ConfigError(f"{head}: {key} is a {module} outside the experts (vLLM serves {module} as "
                          f"experts.N.{module} only): an adapter of another model")
    if int(e.group(1)) >= experts:
        raise ConfigError(f"{head}: {key} is for expert {e.group(1)}, but the base has {experts} experts "
                          f"(0 to {experts - 1}): an adapter of another model")


def setup(adapters: list[Adapter], *, max_loras: int | None, max_rank: int | None) -> LoraSetup:
    """Read every adapter (folder or hub); vLLM's limits: all resident unless VLLM_MAX_LORAS says fewer, the
    rank limit the highest adapter rank rounded up to one vLLM takes (refused past VLLM_MAX_LORA_RANK)."""
    facts = [read(a) for a in adapters]
    for f in facts:  # before any rank is rounded to vLLM's: past its largest there is none to round to
        if f.rank:
            _refuse_above_largest(_head(f.adapter), f.rank, f.config or {})
    ranks = [f.rank for f in facts if f.rank]
    notes = []
    if max_rank is not None:
        for f in facts:
            if f.rank and f.rank > max_rank:
                raise ConfigError(f"VLLM_LORA_MODULES: adapter {f.adapter.name!r} has rank {f.rank}, above "
                                  f"VLLM_MAX_LORA_RANK={max_rank}: raise it to {rank_slot(f.rank)} or unset it "
                                  "(default: the highest adapter rank)")
    elif len(ranks) == len(facts):
        max_rank = rank_slot(max(ranks))
    else:
        max_rank = rank_slot(max(ranks + [DEFAULT_RANK]))
        notes.append(f"LoRA rank limit {max_rank}: an adapter's rank could not be read here; set "
                     "VLLM_MAX_LORA_RANK to the highest adapter rank")
    return LoraSetup(facts, max_loras or len(adapters), max_rank, notes)


def check_all(lora: LoraSetup, spec: ModelSpec, **kw) -> list[str]:
    """``check`` for every adapter of ``lora``: refusals raise, the rest are notes."""
    return [n for f in lora.facts for n in check(f, spec, max_rank=lora.max_rank, **kw)]
