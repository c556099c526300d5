"""GPU facts in one table: memory as the engine sees it, bandwidth, and Modal's hourly price.

Memory is the total torch reports (what vLLM multiplies by ``--gpu-memory-utilization``),
not the marketing figure: an "80 GB" card shows about 79.2 GiB. Prices are Modal's
list prices; each carries its source so a stale one is easy to spot, and
``LLMODAL_GPU_PRICE_PER_HOUR`` overrides it.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmodal.core.constants import GPU_NAMES, canonical_gpu
from llmodal.core.errors import PlanError

GiB = 1024**3

# techbytes.app "Serverless GPU Pricing Matrix", prices verified 2026-05-07 from modal.com/pricing.
_SRC_2026_05 = "modal.com/pricing, as verified 2026-05-07 (techbytes.app pricing matrix)"
# Per-second rates from modal.com/pricing not re-checked against a dated source here.
_SRC_UNCHECKED = "modal.com/pricing per-second rate, not re-verified: override with LLMODAL_GPU_PRICE_PER_HOUR"


@dataclass(frozen=True)
class GPU:
    name: str  # Modal's GPU string
    memory_gib: float  # total memory as torch reports it
    bandwidth_tbs: float  # HBM/GDDR bandwidth, TB/s (10**12 B/s)
    price_per_hour: float  # USD, one GPU
    price_source: str
    fp8: bool  # native FP8 tensor cores (Ada/Hopper/Blackwell)
    memory_note: str = "typical torch-reported capacity"
    bf16_tflops: float = 0.0  # dense BF16/FP16 tensor-core peak (no sparsity)
    fp8_tflops: float = 0.0  # dense FP8 tensor-core peak; 0 without FP8 tensor cores


# Dense (no 2:4 sparsity) tensor-core peaks as NVIDIA's product datasheets state them (A100, H100 SXM,
# H200, L40S, L4, T4, B200 HGX), transcribed 2026-12-02; the A10G is the A10's figure. Bandwidths above
# are the same datasheets'. Only the ratios between formats and GPUs matter to the speed model: its
# efficiencies are fitted to this repo's own measurements (speed.py).
_PEAKS = {"T4": (65, 0), "L4": (121, 242), "A10G": (125, 0), "L40S": (362, 733), "A100-40GB": (312, 0),
          "A100-80GB": (312, 0), "H100": (989, 1979), "H200": (989, 1979), "B200": (2250, 4500)}
PEAK_SOURCE = "NVIDIA datasheets (dense, no sparsity), transcribed 2026-12-02"

GPUS: dict[str, GPU] = {
    g.name: g
    for g in (
        GPU("T4", 14.75, 0.320, 0.5904, _SRC_2026_05, False),
        GPU("L4", 22.03, 0.300, 0.7992, _SRC_2026_05, True),
        GPU("A10G", 22.06, 0.600, 1.10, _SRC_UNCHECKED, False),
        GPU("L40S", 44.39, 0.864, 1.9512, _SRC_2026_05, True),
        GPU("A100-40GB", 39.39, 1.555, 2.10, _SRC_UNCHECKED, False),
        GPU("A100-80GB", 79.15, 2.039, 2.4984, _SRC_2026_05, False),
        GPU("H100", 79.18, 3.35, 3.9492, _SRC_2026_05, True,
            "79.18 GiB measured by vLLM 0.26.0 on an H100 80GB HBM3 (shared/measurements)"),
        GPU("H200", 139.8, 4.8, 4.54, _SRC_UNCHECKED, True),
        GPU("B200", 178.4, 8.0, 6.25, _SRC_UNCHECKED, True),
    )
}
GPUS = {n: GPU(**{**g.__dict__, "bf16_tflops": _PEAKS[n][0], "fp8_tflops": _PEAKS[n][1]}) for n, g in GPUS.items()}

assert tuple(GPUS) == GPU_NAMES, "core.constants.GPU_NAMES and this table must name the same GPUs"


def gpu_names() -> list[str]:
    return list(GPUS)


def get_gpu(name: str) -> GPU:
    """Look a GPU up by Modal's name (case-insensitive); raise PlanError naming the choices."""
    known = canonical_gpu(name)
    if known is not None:
        return GPUS[known]
    raise PlanError(f"unknown GPU {name!r}: allowed values are {', '.join(GPUS)}")


def has_gpu() -> bool:
    """Whether this machine has an NVIDIA GPU vLLM can use (nvidia-smi lists one)."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout
