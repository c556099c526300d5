"""Where a speed prediction's error band holds: the held-out error per (architecture, format, kernel, model
shape), the GPUs and shapes each kernel's runs were held out on, and what those runs had (profile, token mix,
batch caps). ``band()`` gives the band, or none and why the figure is an extrapolation. The figures come from
``benchmarks/speed_validation.py`` (docs/BENCHMARKS.md, "Planner speed model"); the step model is ``speed``.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmodal.plan.gpus import GPU
from llmodal.plan.model_spec import ModelSpec
from llmodal.plan.speed import (ARCH, FITS, L3, L8, MEASURED, MEASURED_TP, Band, family, kernel, measured_shape,
                                same_shape)

# Held-out throughput error per (architecture, format family, kernel, model shape), from that script's summary:
# the |error| 90 % of the held-out runs stay within, the worst one, and how many runs (each held out when its
# profile was left out of the fit, and when its GPU was, where the kernel ran on both GPUs). These are the
# results *with* the repeated-prompts rule (the runs that re-sent prompts are simulated with vLLM's prefix cache
# serving them): the rule was written after a held-out miss had been seen, then judged first seen on a run made to
# test it (+5.6 %: docs/BENCHMARKS.md, "Planner speed model"). A band holds only where HELD_OUT_AT
# has runs of the kernel (GPU and model shape), at the measured TP: band() gives none elsewhere.
BANDS: dict[tuple[str, str, str, str], tuple[float, float, int]] = {
    ("Hopper", "4-bit", "machete", "Llama-3.1-70B"): (0.092, -0.110, 48),
    ("Hopper", "4-bit", "marlin", "Llama-3.1-70B"): (0.080, -0.114, 11),
    ("Hopper", "bf16", "dense-16bit", "Llama-3.1-8B"): (0.133, -0.143, 18),
    ("Hopper", "bf16", "dense-16bit", "Llama-3.2-3B"): (0.073, 0.092, 11),
    ("Hopper", "fp8", "fp8-w8a8", "Llama-3.1-70B"): (0.145, -0.152, 38),
    ("Hopper", "fp8", "fp8-w8a8", "Llama-3.1-8B"): (0.140, 0.140, 8),
}
# Where each kernel's runs were held out, as (GPU, model shape): a band holds only there (band()).
HELD_OUT_AT: dict[str, tuple[tuple[str, ModelSpec], ...]] = {
    "machete": (("H100", MEASURED), ("H200", MEASURED)),
    "marlin": (("H100", MEASURED), ("H200", MEASURED)),
    "fp8-w8a8": (("H100", MEASURED), ("H200", MEASURED), ("H100", L8)),
    "dense-16bit": (("H100", L8), ("H100", L3)),
}


@dataclass(frozen=True)
class Scope:
    """What a shape's throughput runs had; its band holds only there, and says so (band())."""

    profile: str | None  # the one profile its runs had; None: every profile (its runs were held out by profile)
    prompts: tuple[int, int]  # prompt tokens, from-to
    outputs: tuple[int, int]  # output tokens, from-to
    max_num_seqs: tuple[int, int] | None = None  # batch caps its runs had (None: the profile's own only)
    max_num_batched_tokens: tuple[int, int] | None = None  # step budgets its runs had (likewise)
    # the most KV cache its runs' running batch asked for at once: min(streams, max_num_seqs) × tokens a request ÷
    # KV tokens, rounded up. Above 1 requests wait or are preempted for cache; the band holds only as far as they did.
    kv_demand: float = 0.0

    def text(self) -> str:
        (a, b), (c, d) = self.prompts, self.outputs
        tokens = f"{a:,}:{c} tokens" if (a, c) == (b, d) else f"prompts of {a:,}-{b:,} tokens, outputs of {c:,}-{d:,}"
        if self.profile:
            return f"{self.profile} profile, {tokens} only"
        span = lambda r: f"{r[0]:,}" if r[0] == r[1] else f"{r[0]:,}-{r[1]:,}"  # noqa: E731
        limits = [f"{span(r)} {what}" for r, what in ((self.max_num_seqs, "sequences"),
                                                      (self.max_num_batched_tokens, "tokens a step")) if r]
        return tokens + (f", batch caps of {' and '.join(limits)}" if limits else "")

    def differs(self, profile: str | None, mix: tuple[int, int] | None, batching: tuple[tuple[str, int], ...],
                kv_demand: float | None = None):
        """What of this prediction's setup its runs did not have (``None``: not known, not judged)."""
        out = [f"{profile} profile"] if profile is not None and self.profile and profile != self.profile else []
        if kv_demand is not None and kv_demand > self.kv_demand:
            out.append(f"streams asking {kv_demand:.2f}× the KV cache at once, its runs at most "
                       f"{self.kv_demand:.2f}×")
        for name, value in batching:
            ran = getattr(self, name)
            if ran is None or not ran[0] <= value <= ran[1]:
                out.append(f"{name} {value}")
        if mix is not None and not (self.prompts[0] <= mix[0] <= self.prompts[1]
                                    and self.outputs[0] <= mix[1] <= self.outputs[1]):
            out.append(f"{mix[0]:,}:{mix[1]} tokens")
        return out


# Per model shape and kernel, since a band is per kernel (tests/plan/test_speed_validation.py checks each against its
# own throughput rows): the 70B's runs were held out by profile, but Machete's all had vLLM's 1,024 sequences and
# 8,192-token steps (1,024:256 and the 6,000:1,024 fills), Marlin's the latency profile's 32 / 2,048 and vLLM's
# (1,024:256 only), FP8's the throughput profile's 512 / 512 (H200 and H100) and vLLM's (1,024:256 only); the smaller
# shapes ran `balanced` with vLLM's own limits: at 1,024:256 and single streams of 256-8,000 prompt tokens with 16 out
# (BF16 2026-12-07c, FP8 2026-12-07d: the box's 8,000:256 corner was not run).
SHAPE_SCOPE: dict[tuple[str, str], Scope] = {
    (MEASURED.name, "machete"): Scope(None, (1024, 6000), (256, 1024), max_num_seqs=(1024, 1024),
                                      max_num_batched_tokens=(8192, 8192), kv_demand=1.54),
    (MEASURED.name, "marlin"): Scope(None, (1024, 1024), (256, 256), max_num_seqs=(32, 1024),
                                     max_num_batched_tokens=(2048, 8192), kv_demand=0.71),
    (MEASURED.name, "fp8-w8a8"): Scope(None, (1024, 1024), (256, 256), max_num_seqs=(512, 1024),
                                       max_num_batched_tokens=(512, 8192), kv_demand=0.99),
    (L8.name, "dense-16bit"): Scope("balanced", (256, 8000), (16, 256), kv_demand=0.35),
    (L8.name, "fp8-w8a8"): Scope("balanced", (256, 8000), (16, 256), kv_demand=0.32),
    (L3.name, "dense-16bit"): Scope("balanced", (256, 8000), (16, 256), kv_demand=0.27),
}


def band(gpu: GPU, quant: str, disabled_kernels: str | None = None, spec: ModelSpec | None = None,
         tp: int = 1, *, profile: str | None = None, mix: tuple[int, int] | None = None,
         batching: tuple[tuple[str, int], ...] = (), kv_demand: float | None = None) -> Band:
    """The held-out band for this kernel on this GPU — only where runs of this kernel on this GPU, of this
    model shape at this TP, were held out (HELD_OUT_AT), and only inside what that shape's runs of this kernel had
    (SHAPE_SCOPE: profile, token mix, ``batching`` — (max_num_seqs / max_num_batched_tokens, value) the plan sets —
    and ``kv_demand``, the KV cache its load asks for at once); anywhere else no band, and why it is an
    extrapolation. ``profile``/``mix``/``kv_demand`` None: not known, not judged."""
    k = kernel(gpu, quant, disabled_kernels, spec.group_size if spec else 128)
    f = FITS[k]
    where = HELD_OUT_AT.get(k, ())
    here = tuple(m for g, m in where if g == gpu.name)
    # the shape whose held-out runs give the band (no spec: the guide's 70B where it ran, else the one that did)
    shape = next((m for m in sorted(here, key=lambda m: m is not MEASURED) if spec is None or same_shape(spec, m)),
                 None)
    err, worst, runs = BANDS.get((ARCH.get(gpu.name, ""), family(quant), k, shape.name if shape else ""),
                                 (None, None, 0))
    borrowed = (f"{k} was never fitted; constants borrowed from {f.like}"
                + (f" (first seen: {f.first_seen}, benchmarks/results/speed-validation.md)" if f.first_seen
                   else "; never measured")) if f.like else ""
    why = []
    if not where:
        why.append(f"extrapolated: {borrowed}" if borrowed else "extrapolated: never measured")
        borrowed = ""
    elif not here:
        gpus = ", ".join(sorted({g for g, _ in where}))
        why.append(f"extrapolated: no measurement of this kernel on this GPU (measured on {gpus})")
    if here and not measured_shape(spec, tp, here):
        why.append(f"extrapolated: no measurement of this model size / tensor-parallel degree (measured with "
                   f"{k} on the {gpu.name}: {', '.join(m.name for m in here)} shape at TP "
                   f"{', '.join(map(str, MEASURED_TP))}; "
                   + ("4-bit floor scaled by the weights each GPU dequantises; " if k in ("machete", "marlin",
                      "fp8-marlin") else "")
                   + ("all-reduce term assumed" if tp > 1 else "constants carried unchanged") + ")")
    scope = ""
    if shape and not why and (shape.name, k) in SHAPE_SCOPE:
        ran = SHAPE_SCOPE[shape.name, k]
        if differs := ran.differs(profile, mix, batching, kv_demand):
            why.append(f"extrapolated: the {shape.name} shape's {k} throughput runs were {ran.text()} "
                       f"(here: {', '.join(differs)})")
        scope = f"{k} runs of this shape: {ran.text()}"
    if why:
        err, worst, runs = None, None, 0  # the band was measured elsewhere: it does not carry over
        scope = ""
    # every 4-bit run served an AWQ checkpoint: a GPTQ one runs the same kernel, but no run of one exists
    other = (f"no {quant.upper()} checkpoint was run: the band is the AWQ runs' through the same {k} kernel"
             if err is not None and family(quant) == "4-bit" and quant != "awq" else "")
    return Band(k, err, worst, runs, "; ".join(why), "; ".join(x for x in (borrowed, other, scope) if x),
                shape.name if shape and not why else "")
