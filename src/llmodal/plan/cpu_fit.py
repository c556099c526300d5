"""Will a model fit this machine's RAM on vLLM's CPU engine? Asked before ``llmodal serve`` starts.

The guide's ``.env`` names the 70B model; on a laptop without a GPU ``llmodal serve`` would start
the CPU engine on it: a 141 GB download into a machine with a fraction of that memory. The CPU
engine holds the weights in RAM at the checkpoint's precision, plus a KV cache of
``--gpu-memory-utilization`` × RAM (on the CPU engine that flag is a fraction of RAM), plus the
runtime itself.
"""

from __future__ import annotations

import os

from dataclasses import dataclass

from llmodal.core.errors import PlanError
from llmodal.plan.gpus import GiB

RUNTIME_GIB = 2.0  # Python, torch and vLLM's processes before any weights (≈1.6 GiB measured here)


@dataclass(frozen=True)
class CpuFit:
    fits: bool
    weights_gib: float
    kv_gib: float
    ram_gib: float
    reason: str


def _ram_bytes() -> tuple[int, int]:
    """(total, available now) RAM in bytes, from the OS (no third-party package needed)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return total, int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return total, total


def cpu_fit(model: str, revision: str | None, kv_fraction: float, ram_gib: float | None = None) -> CpuFit | None:
    """The verdict against the machine's RAM (not what is free this second: other programs come and
    go, and a refusal must be certain), or None when the model's shape cannot be known here."""
    from llmodal.plan.catalog import lookup

    try:
        spec = lookup(model, revision)
    except PlanError:
        return None
    ram = _ram_bytes()[0] / GiB if ram_gib is None else ram_gib
    weights = spec.weight_bytes() / GiB
    kv = kv_fraction * ram
    need = weights + kv + RUNTIME_GIB
    reason = (f"{model} on the CPU engine needs {weights:.1f} GiB of weights ({spec.quant}) + {kv:.1f} GiB of KV "
              f"cache ({kv_fraction} × RAM) + {RUNTIME_GIB:.0f} GiB runtime = {need:.1f} GiB; this machine has "
              f"{ram:.1f} GiB of RAM ({_ram_bytes()[1] / GiB:.1f} GiB free now)")
    return CpuFit(need <= ram, weights, kv, ram, reason)
