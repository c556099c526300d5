"""Will a model fit this machine's RAM on vLLM's CPU engine? Asked before ``llmodal serve`` starts.

The guide's ``.env`` names the 70B model; on a laptop without a GPU ``llmodal serve`` would start
the CPU engine on it: a 141 GB download into a machine with a fraction of that memory. The CPU
engine holds the weights in RAM at the checkpoint's precision, plus a KV cache of
``VLLM_GPU_MEMORY_UTILIZATION`` × RAM, plus the runtime itself.

vLLM 0.32's CPU engine reads its ``--gpu-memory-utilization`` differently: that share of NUMA node 0's
memory must hold the whole process — weights, runtime and KV (``v1/worker/cpu_worker.py``: KV = that share
− the process's RSS). By that formula 0.2 of a 16 GiB laptop leaves nothing for a 1.5B model in 16-bit
(3.1 GB; worked out, not run); on a VM whose node 0 held 11.0 of 23.5 GiB the tiny model was refused at
0.05 ("requested memory for kv" below zero, seen). So llmodal passes the KV size itself
(``kv_cache_bytes``, vLLM's ``--kv-cache-memory-bytes``): the fraction means what this check counts.
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


def kv_cache_bytes(kv_fraction: float) -> int:
    """The CPU engine's KV cache: that share of the machine's RAM."""
    return int(kv_fraction * _ram_bytes()[0])


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
