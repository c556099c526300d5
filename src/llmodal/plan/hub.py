"""The hub's model tree: which 4-bit and FP8 builds of a base model exist, and which to trust.

For a model the catalog does not know (or with ``llmodal plan --discover``), the planner asks the
hub for the base model's quantized children (``base_model:quantized:<repo>``), reads each
child's own ``config.json`` and keeps those whose declared quantization is 4-bit AWQ/GPTQ/W4A16
or FP8 and whose architecture and shape match the base. A name is not evidence: a build called
"-AWQ" whose config declares no quantization is rejected and says so. Ranking: publishers known
for quantized builds first, then downloads. ``HF_ENDPOINT`` points all of it at another hub (the
tests run a fake one); one short attempt each, so an offline machine falls back in seconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import httpx

from llmodal.plan.model_config import TIMEOUT_S, _headers, endpoint, fetch_config, quant_of

# Publishers whose quantized builds vLLM's own docs and model cards point to, and model makers
# that publish their own; a base model's own organization is trusted too.
TRUSTED = ("hugging-quants", "neuralmagic", "RedHatAI", "Qwen", "meta-llama", "mistralai", "google",
           "deepseek-ai", "nvidia", "casperhansen")
KEEP = ("awq", "gptq", "w4a16", "fp8")


@dataclass(frozen=True)
class Candidate:
    repo: str
    quant: str
    downloads: int
    trusted: bool


@dataclass(frozen=True)
class Discovery:
    """What the hub showed for ``base``: kept builds best first, and the rejected with why."""

    base: str
    ranked: list[Candidate] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)

    def best(self) -> dict[str, str]:
        """quantization → the best-ranked repo of that quantization."""
        out: dict[str, str] = {}
        for c in self.ranked:
            out.setdefault(c.quant, c.repo)
        return out

    def why(self, repo: str) -> str:
        c = next(c for c in self.ranked if c.repo == repo)
        who = "a trusted publisher" if c.trusted else "not a listed publisher"
        return f"{c.quant.upper()} declared in its config.json, architecture matches, {who}, {c.downloads:,} downloads"


def _children(base: str, limit: int) -> list[dict] | None:
    try:
        r = httpx.get(f"{endpoint()}/api/models", headers=_headers(), timeout=TIMEOUT_S,
                      params={"filter": f"base_model:quantized:{base}", "sort": "downloads", "limit": str(limit)})
        return r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def _shape(cfg: dict) -> tuple:
    c = cfg.get("text_config", cfg)
    return (tuple(cfg.get("architectures") or ()), c.get("hidden_size"), c.get("num_hidden_layers"))


def _shown(cfg: dict) -> str:
    arch, hidden, layers = _shape(cfg)
    return f"{'/'.join(arch) or 'an unnamed architecture'} with {layers} layers × {hidden}"


def discover(base: str, base_cfg: dict, limit: int = 30) -> Discovery | None:
    """The base model's quantized children that can be planned, ranked; None when the hub is not
    reachable (the caller falls back to the catalog)."""

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return None
    kids = _children(base, limit)
    if kids is None:
        return None
    org = base.split("/")[0]
    ranked, rejected = [], []
    for kid in kids:
        repo = kid.get("id") or kid.get("modelId")
        if not repo:
            continue
        cfg = fetch_config(repo)
        if cfg is None:
            rejected.append((repo, "its config.json could not be read"))
            continue
        q = quant_of(cfg)
        if _shape(cfg) != _shape(base_cfg):
            rejected.append((repo, f"it is {_shown(cfg)}, the base is {_shown(base_cfg)}"))
        elif q not in KEEP:
            rejected.append((repo, f"its config.json declares {q if q != 'bf16' else 'no'} quantization "
                                   "(not 4-bit AWQ/GPTQ/W4A16 or FP8)"))
        else:
            owner = repo.split("/")[0]
            ranked.append(Candidate(repo, q, int(kid.get("downloads") or 0), owner in TRUSTED or owner == org))
    ranked.sort(key=lambda c: (not c.trusted, -c.downloads))
    return Discovery(base, ranked, rejected)
