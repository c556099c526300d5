"""The shape of a model, as far as memory and speed are concerned, and what each weight format costs."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmodal.core.errors import PlanError

# Quantization names the planner understands, and the bytes each linear-layer weight costs.
# 4-bit formats with group size 128 also store an fp16 scale and a 4-bit zero per group.
BYTES_PER_PARAM = {
    "bf16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "awq": 0.5 + 2 / 128 + 0.5 / 128,
    "gptq": 0.5 + 2 / 128 + 0.5 / 128,
    "w4a16": 0.5 + 2 / 128 + 0.5 / 128,  # compressed-tensors 4-bit weights, group 128
}


@dataclass(frozen=True)
class ModelSpec:
    """The shape of a decoder-only transformer, as far as memory is concerned."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = False
    quant: str = "bf16"  # how this checkpoint's linear weights are stored
    group_size: int = 128  # a 4-bit checkpoint's quantization group (-1: per channel); picks vLLM's kernel
    checkpoints: dict[str, str] = field(default_factory=dict)  # quantization -> repo id
    source: str = "catalog"
    max_position: int = 131072
    experts: int = 1  # MoE: every expert's MLP is in memory
    arch: str = ""  # config.json's architectures[0], when read from one

    @property
    def linear_params(self) -> int:
        """Parameters in the quantizable linear layers (attention and MLP)."""
        q = self.hidden * self.heads * self.head_dim
        kv = 2 * self.hidden * self.kv_heads * self.head_dim
        o = self.heads * self.head_dim * self.hidden
        mlp = 3 * self.hidden * self.intermediate * self.experts
        return self.layers * (q + kv + o + mlp)

    @property
    def embedding_params(self) -> int:
        """Input embedding plus LM head; these stay in 16-bit in every checkpoint we plan."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def params(self) -> int:
        norms = (2 * self.layers + 1) * self.hidden
        return self.linear_params + self.embedding_params + norms

    def weight_bytes(self, quant: str | None = None) -> int:
        q = quant or self.quant
        if q not in BYTES_PER_PARAM:
            raise PlanError(f"quantization {q!r} has no size model: allowed values are {', '.join(BYTES_PER_PARAM)}")
        norms = (2 * self.layers + 1) * self.hidden
        return int(self.linear_params * BYTES_PER_PARAM[q] + (self.embedding_params + norms) * 2)

    def kv_bytes_per_token(self, kv_dtype_bytes: int = 2) -> int:
        """layers × KV heads × head dim × 2 (K and V) × dtype bytes."""
        return self.layers * self.kv_heads * self.head_dim * 2 * kv_dtype_bytes
