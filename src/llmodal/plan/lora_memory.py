"""What vLLM 0.32 allocates for LoRA when it starts, per GPU, by its LoRA layer class: the planner's LoRA charge.

vLLM wraps every linear layer of the model (and the embedding and LM head) in a LoRA layer that holds
``--max-loras`` slots at ``--max-lora-rank``, in the model's dtype, whatever the adapters target
(``vllm/lora/model_manager.py``: ``_create_lora_modules``; each class's ``create_lora_weights`` in
``vllm/lora/layers``). The shapes, per slot and per rank, for a Llama-style decoder (h hidden, q = heads × head
dim, kv = KV heads × head dim, I intermediate, V vocabulary; "/tp": the share of one GPU):

- ``MergedQKVParallelLinearWithLoRA`` (qkv): A 3 × h (three slices, whole), B q/tp + 2 × kv/tp
- ``RowParallelLinearWithLoRA`` (o_proj, down_proj): A the input/tp, B the whole output
- ``MergedColumnParallelLinearWithLoRA`` (gate_up): A 2 × h, B 2 × I/tp
- ``VocabParallelEmbeddingWithLoRA``: A V, B h; ``LogitsProcessorWithLoRA`` (LM head): A h, B V — only where the
  model class lists them in ``embedding_modules`` (``EMBEDDING_LORA``)

A Mixtral-style MoE (``vllm/lora/layers/fused_moe.py``, ``FusedMoEWithLoRA``, gated: w1 and w3 are two slices)
has instead of gate_up and down, per layer: the router ``gate`` (``ReplicatedLinearWithLoRA``: A h, B E) and
the experts, each with its own slots: w13 A 2 × E × h, w2 A E × I/tp, w13 B 2 × E × I/tp, w2 B E × h, plus an
int32 flag per slot and one more (``adapter_enabled``). ``benchmarks/lora_memory.py`` measures these on the CPU
engine, class by class.

Beside the weights, each LoRA matmul takes an fp32 buffer of (slices × tokens × rank) for the step
(``punica_gpu.add_lora_linear``): charged once, at three slices of ``max_num_batched_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmodal.plan.model_spec import ModelSpec


# vLLM 0.32 wraps the embedding and the LM head only where the model class names them in ``embedding_modules``
# (vllm/model_executor/models/*.py; vllm/lora/utils.py: get_supported_lora_modules): Llama, Qwen3 and Mixtral do,
# Mistral, Qwen2 and Gemma 2 do not (``{}``). An architecture not listed is charged both: the larger charge.
EMBEDDING_LORA = {"LlamaForCausalLM": True, "Qwen3ForCausalLM": True, "MixtralForCausalLM": True,
                  "MistralForCausalLM": False, "Qwen2ForCausalLM": False, "Gemma2ForCausalLM": False}


def embedding_lora(spec: ModelSpec) -> bool:
    """Whether vLLM gives this model's embedding and LM head LoRA slots (and serves adapters on them)."""
    return EMBEDDING_LORA.get(spec.arch, True)


@dataclass(frozen=True)
class LoraSlots:
    """What vLLM sizes its LoRA memory by: adapters resident at once (--max-loras) at the highest rank."""

    adapters: int
    max_loras: int
    max_rank: int


def lora_weights(spec: ModelSpec, lora: LoraSlots, tp: int, dtype_bytes: int = 2) -> dict[str, int]:
    """Per GPU: bytes of the LoRA tensors vLLM allocates at start, by its LoRA layer class."""
    n, r = lora.max_loras, lora.max_rank
    h, v, e, layers = spec.hidden, spec.vocab, spec.experts, spec.layers
    q = spec.heads * spec.head_dim // tp
    kv = spec.head_dim * max(1, spec.kv_heads // tp)  # vLLM replicates KV heads past tp = kv_heads
    inter = spec.intermediate // tp

    def slots(per_rank: int) -> int:  # elements per slot and rank → bytes of every slot of every layer
        return n * r * per_rank * dtype_bytes

    out = {"MergedQKVParallelLinearWithLoRA": layers * slots(3 * h + q + 2 * kv),
           "RowParallelLinearWithLoRA": layers * slots(q + h)}  # o_proj
    if embedding_lora(spec):
        out.update(VocabParallelEmbeddingWithLoRA=slots(v + h), LogitsProcessorWithLoRA=slots(h + v))
    if e > 1:
        out["ReplicatedLinearWithLoRA"] = layers * slots(h + e)  # the router
        out["FusedMoEWithLoRA"] = layers * (slots(e * (2 * h + inter + 2 * inter + h)) + (n + 1) * 4)
    else:
        out["RowParallelLinearWithLoRA"] += layers * slots(inter + h)  # down_proj
        out["MergedColumnParallelLinearWithLoRA"] = layers * slots(2 * h + 2 * inter)
    return out


def lora_buffer_bytes(lora: LoraSlots, max_num_batched_tokens: int) -> int:
    """The step's fp32 shrink buffer: three slices (qkv) of every token at the rank."""
    return max_num_batched_tokens * lora.max_rank * 3 * 4


def lora_bytes(spec: ModelSpec, lora: LoraSlots, tp: int, max_num_batched_tokens: int, dtype_bytes: int = 2) -> int:
    """Per GPU: what the planner takes out of the KV budget for LoRA (weights and the step's buffer)."""
    return sum(lora_weights(spec, lora, tp, dtype_bytes).values()) + lora_buffer_bytes(lora, max_num_batched_tokens)
