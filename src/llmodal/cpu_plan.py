"""Will a model fit this machine's RAM on vLLM's CPU engine? Asked before ``llmodal serve`` starts.

The guide's ``.env`` names the 70B model; on a laptop without a GPU ``llmodal serve`` would start
the CPU engine on it: a 141 GB download into a machine with a fraction of that memory. The CPU
engine holds the weights in RAM at the checkpoint's precision, plus a KV cache of
``--gpu-memory-utilization`` × RAM (on the CPU engine that flag is a fraction of RAM), plus the
runtime itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._exceptions import PlanError
from .gpus import GiB

RUNTIME_GIB = 2.0  # Python, torch and vLLM's processes before any weights (≈1.6 GiB measured here)


@dataclass(frozen=True)
class CpuFit:
    fits: bool
    weights_gib: float
    kv_gib: float
    available_gib: float
    reason: str


def ram_available_gib() -> float:
    import psutil

    return psutil.virtual_memory().available / GiB


def cpu_fit(model: str, revision: str | None, kv_fraction: float, available_gib: float | None = None) -> CpuFit | None:
    """The verdict, or None when the model's shape cannot be known here (offline, not in the catalog)."""
    from .catalog import lookup

    try:
        spec = lookup(model, revision)
    except PlanError:
        return None
    import psutil

    avail = ram_available_gib() if available_gib is None else available_gib
    weights = spec.weight_bytes() / GiB
    kv = kv_fraction * psutil.virtual_memory().total / GiB
    need = weights + kv + RUNTIME_GIB
    fits = need <= avail
    reason = (f"{model} on the CPU engine needs {weights:.1f} GiB of weights ({spec.quant}) + {kv:.1f} GiB of KV "
              f"cache ({kv_fraction} × RAM) + {RUNTIME_GIB:.0f} GiB runtime = {need:.1f} GiB; "
              f"{avail:.1f} GiB of RAM is available")
    return CpuFit(fits, weights, kv, avail, reason)
