"""What serving LoRA adapters costs in speed: time added to each engine step whose batch uses an adapter.

**Why a fixed cost per layer.** With an adapter in the batch, vLLM 0.32 runs its punica kernels (shrink, then
expand) in every layer it wrapped for LoRA: qkv, o, gate_up and down in each decoder layer (a MoE's router and
experts instead of the MLP's two) and, where its model class takes LoRA there, the embedding and the LM head
(``lora_memory.embedding_lora``). The arithmetic is no cost: a rank-16 adapter of an 8B model is 84 MB and
about 0.1 % of its FLOPs per token; yet on the H100 one stream's step went from 6.29 to 8.00 ms. What it pays is
two more dependent kernels per wrapped layer, once per step whatever the batch, so a step with an adapter in
use takes, per wrapped layer:

    GRAPHED_US  where vLLM replays the step as a CUDA graph (tokens ≤ its largest capture size: decode steps)
    EAGER_US    where it runs the step eagerly (a prompt chunk above that size), kernels launched from Python

Both are fitted on one run (one adapter, one stream: its time per output token and its TTFT against requests to
the base on the same server) and checked on the runs held out (64 streams, four adapters in turn) by
``benchmarks/lora_speed_validation.py`` → ``benchmarks/results/lora-speed-validation.md``. The step then runs
through the same scheduler simulation as the base's (``speed.predict``): every request uses an adapter.

Requests to the base on a server started with --enable-lora run the same steps without the kernels: 1 % slower
at one stream there, not modelled. Outside the measured setup (``MEASURED_ON``) the constants are carried
unchanged and the prediction says so, with no band.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from llmodal.plan.lora_memory import LoraSlots, embedding_lora
from llmodal.plan.model_spec import ModelSpec
from llmodal.plan.speed import L8, Engine, Speed, predict, same_shape

# Per wrapped layer per step, µs: the fit printed by benchmarks/lora_speed_validation.py (its first table).
GRAPHED_US = 13.2
EAGER_US = 270.0
# Held out: |error| of the predicted LoRA/base throughput ratio on the runs not fitted, the worst of them.
HELD_OUT_WORST = 0.054
HELD_OUT_RUNS = 3
SOURCE = "benchmarks/results/lora-speed-validation.md"

MEASURED_8B = L8  # the shape the LoRA runs served (speed.py's 8B)
MEASURED_ON = "measured on an H100 with an 8B BF16 base at rank 16"
# The streams the LoRA runs held (lora-8b*-c1/-c64.json): a load above it was never measured with adapters,
# and the cost's mix there (how many steps are eager prompt chunks) is the model's guess.
MEASURED_STREAMS = 64
DEFAULT_GRAPH_MAX = 512  # vLLM 0.32's largest capture size when none is set (max_cudagraph_capture_size)


def lora_layers(spec: ModelSpec) -> int:
    """Layers vLLM wraps for LoRA, each running the kernels once a step: 4 per decoder layer (+ embedding, LM head)."""
    return 4 * spec.layers + (2 if embedding_lora(spec) else 0)


@dataclass(frozen=True)
class LoraEngine:
    """The base engine's step plus the LoRA kernels of every wrapped layer; ``speed.predict`` takes it as an Engine."""

    base: Engine
    graph_max: int = DEFAULT_GRAPH_MAX
    graphed_us: float = GRAPHED_US
    eager_us: float = EAGER_US

    def step_seconds(self, tokens: int, kv_read: int, attn_pairs: int) -> float:
        us = self.graphed_us if tokens <= self.graph_max else self.eager_us
        return self.base.step_seconds(tokens, kv_read, attn_pairs) + lora_layers(self.base.spec) * us / 1e6

    @property
    def token_s(self) -> float:  # the API server streams the same tokens, adapters or not
        return self.base.token_s

    @property
    def first_s(self) -> float:
        return self.base.first_s


# The rest of the measured setup (benchmarks/results/h100-2026-12-07/serve.json and the bench files): four adapters
# resident (--max-loras 4), CUDA graphs up to 512 tokens (the balanced profile), the 1,024:256 token mix.
MEASURED_MAX_LORAS, MEASURED_GRAPH_MAX, MEASURED_MIX = 4, 512, (1024, 256)


def differs(engine: Engine, max_rank: int, concurrency: int = 1, *, max_loras: int = MEASURED_MAX_LORAS,
            graph_max: int = MEASURED_GRAPH_MAX, mix: tuple[int, int] = MEASURED_MIX) -> list[str]:
    """What differs from the measured setup (empty: the prediction is inside what was measured)."""
    out = []
    if engine.gpu.name != "H100":
        out.append(f"GPU {engine.gpu.name}")
    if engine.kernel != "dense-16bit":
        out.append(f"kernel {engine.kernel}")
    if not same_shape(engine.spec, MEASURED_8B, vocab=False):  # the layers decide what LoRA wraps
        out.append(f"model {engine.spec.name} ({engine.spec.params / 1e9:.0f}B shape)")
    if max_rank != 16:
        out.append(f"rank {max_rank}")
    if engine.tp != 1:
        out.append(f"TP {engine.tp}")
    if concurrency > MEASURED_STREAMS:
        out.append(f"{concurrency} streams, measured at 1 and {MEASURED_STREAMS}")
    if max_loras != MEASURED_MAX_LORAS:
        out.append(f"{max_loras} adapters resident, measured with {MEASURED_MAX_LORAS}")
    if graph_max != MEASURED_GRAPH_MAX:
        out.append(f"CUDA graphs up to {graph_max} tokens, measured up to {MEASURED_GRAPH_MAX}")
    if tuple(mix) != MEASURED_MIX:
        out.append(f"token mix {mix[0]}:{mix[1]}, measured {MEASURED_MIX[0]}:{MEASURED_MIX[1]}")
    return out


@dataclass(frozen=True)
class LoraSpeed:
    speed: Speed  # with every request on an adapter
    base: Speed  # the same plan's prediction for the base model
    extrapolated: str  # "" inside the measured setup

    @property
    def cost(self) -> float:
        """Throughput lost to LoRA at the plan's load, as a fraction of the base's."""
        return 1 - self.speed.saturated_out_tok_s / self.base.saturated_out_tok_s

    def band_text(self) -> str:
        if self.extrapolated:
            return f"no band: {self.extrapolated}"
        return (f"LoRA cost band ±{HELD_OUT_WORST:.0%} on throughput (the worst of {HELD_OUT_RUNS} held-out runs' "
                f"LoRA/base ratio at 1 and 64 streams, {SOURCE}); the base speed's own error applies on top")

    def text(self) -> str:
        s = self.speed
        return (f"with LoRA adapters in use: {s.single_stream_tok_s:.0f} tok/s one stream, TTFT "
                f"{s.ttft_s * 1000:.0f} ms, {s.saturated_out_tok_s:,.0f} out tok/s at {s.concurrency} streams "
                f"({-self.cost:+.0%} vs the base) → ${s.cost_per_1m_tokens:.3f} per 1M tokens; {self.band_text()}"
                # where delivery bounds both figures, the cost vs the base is the delivery path's, not LoRA's alone
                + (f"; {s.api_text()}" if s.api_text() else ""))

    def to_dict(self) -> dict:
        d = self.speed.to_dict()
        d.pop("error_band")
        return d | {"cost_vs_base": round(self.cost, 4), "extrapolated": self.extrapolated or None,
                    "band": None if self.extrapolated else {"worst": HELD_OUT_WORST, "held_out_runs": HELD_OUT_RUNS},
                    # the band is LoRA's cost alone: the base prediction's own error (or none) applies on top
                    "base_error_band": self.base.band.to_dict() if self.base.band else None,
                    "source": SOURCE}


def predict_lora(engine: Engine, base: Speed, lora: LoraSlots, *, graph_max: int | None, **limits) -> LoraSpeed:
    """``base`` predicted again with the LoRA step; ``limits``: ``speed.predict``'s keywords, the base's own."""
    why = differs(engine, lora.max_rank, limits.get("concurrency", 1), max_loras=lora.max_loras,
                  graph_max=graph_max or DEFAULT_GRAPH_MAX, mix=limits.get("mix", MEASURED_MIX))
    with_lora = predict(LoraEngine(engine, graph_max or DEFAULT_GRAPH_MAX), **limits)  # type: ignore[arg-type]
    extrapolated = f"extrapolated: {MEASURED_ON} (here: {', '.join(why)}; constants carried unchanged)" if why else ""
    return LoraSpeed(replace(with_lora, band=None), base, extrapolated)
