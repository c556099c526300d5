"""The embedded default: a tiny Llama-architecture model made on this machine.

Random weights, a byte-level BPE tokenizer trained on the spot with ``tokenizers`` and a
Llama-3-style chat template. It answers nonsense, but through the real vLLM engine, the real
OpenAI routes and the real streaming path, offline and in under a minute on two CPU cores.
Shapes are parameters so the planner's accuracy benchmark can make models of several sizes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from platformdirs import user_cache_dir

# Llama 3.1's specials, <|python_tag|> included: vLLM's llama3_json tool parser requires it.
SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
                  "<|end_header_id|>", "<|python_tag|>", "<|eom_id|>"]
# Llama 3.1's own layout, tools included: tool definitions go in an ipython system turn, the
# assistant calls a tool as {"name": ..., "parameters": ...} (what vLLM's llama3_json parser reads),
# results come back in ipython turns. Bump TEMPLATE_VERSION when it changes: cached models are
# keyed by it.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if tools %}<|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n"
    "You can call these functions. To call one, answer with JSON "
    "{\"name\": function name, \"parameters\": an object of its arguments}.\n"
    "{% for t in tools %}{{ t | tojson }}\n{% endfor %}<|eot_id|>{% endif %}"
    "{%- for m in messages %}"
    "{%- if m['role'] == 'assistant' and m.get('tool_calls') %}<|start_header_id|>assistant<|end_header_id|>\n\n"
    "{% for tc in m['tool_calls'] %}{\"name\": \"{{ tc['function']['name'] }}\", \"parameters\": "
    "{{ tc['function']['arguments'] if tc['function']['arguments'] is string "
    "else tc['function']['arguments'] | tojson }}}{% endfor %}<|eot_id|>"
    "{%- elif m['role'] in ('tool', 'ipython') %}<|start_header_id|>ipython<|end_header_id|>\n\n"
    "{{ m['content'] if m['content'] is string else m['content'] | tojson }}<|eot_id|>"
    "{%- else %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] if m['content'] is string else m['content'] | map(attribute='text') | join('') }}<|eot_id|>"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
TEMPLATE_VERSION = 2
SERVED_NAME = "llmodal/tiny-llama"
_CORPUS = (
    "llmodal serves your own open model behind a private OpenAI-compatible endpoint. "
    "vLLM runs the model; Modal runs the GPU; the planner says whether it fits before you pay. "
    "The quick brown fox jumps over the lazy dog. Hello, please introduce yourself. "
    "你好，请介绍一下你自己。我是一个语言模型。部署 推理 服务 模型 显存 量化 "
)


@dataclass(frozen=True)
class TinyShape:
    # head_dim ≥ 32: vLLM's CPU attention rejects 16.
    hidden: int = 256
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 64
    layers: int = 2
    intermediate: int = 512
    vocab: int = 1024
    max_position: int = 4096
    experts: int = 0  # > 0: a Mixtral (MoE) of this many experts, two per token

    @property
    def slug(self) -> str:
        return (f"l{self.layers}-h{self.hidden}-a{self.heads}-kv{self.kv_heads}-d{self.head_dim}-v{self.vocab}"
                + (f"-e{self.experts}" if self.experts else ""))


def model_dir(shape: TinyShape = TinyShape(), root: Path | None = None) -> Path:
    kind = "mixtral" if shape.experts else "llama"
    return (root or default_dir()) / f"tiny-{kind}-{shape.slug}-t{TEMPLATE_VERSION}"


def default_dir() -> Path:
    return Path(os.environ.get("LLMODAL_CACHE_DIR") or user_cache_dir("llmodal")) / "models"


def _train_tokenizer(vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [_CORPUS] * 50 + [f"sentence number {i}: {_CORPUS[i % 200:]}" for i in range(500)]
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL_TOKENS[0], eos_token=SPECIAL_TOKENS[2],
                                 pad_token=SPECIAL_TOKENS[1])
    hf.chat_template = CHAT_TEMPLATE
    return hf


def llama_config(shape: TinyShape, bos: int, eos: int, vocab: int) -> dict:
    if shape.experts:  # Mixtral: Llama's attention, the MLP replaced by experts (w1, w3, w2) and a router
        llama = llama_config(TinyShape(**{**asdict(shape), "experts": 0}), bos, eos, vocab)
        for k in ("attention_bias", "mlp_bias"):
            llama.pop(k)
        return {**llama, "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
                "num_local_experts": shape.experts, "num_experts_per_tok": 2, "router_aux_loss_coef": 0.0}
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": shape.hidden, "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers, "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads, "head_dim": shape.head_dim, "vocab_size": vocab,
        "max_position_embeddings": shape.max_position, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "bos_token_id": bos, "eos_token_id": eos,
    }


@contextmanager
def staged_dir(out: Path):
    """A fresh folder beside ``out`` that replaces ``out`` only when the block succeeds: never half-written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_model(out: Path, shape: TinyShape = TinyShape(), seed: int = 0) -> Path:
    """Write a complete model directory (config, safetensors weights, tokenizer) to ``out`` atomically."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM

    out = Path(out)
    with staged_dir(out) as tmp:
        hf = _train_tokenizer(shape.vocab)
        hf.save_pretrained(tmp)
        cfg = llama_config(shape, hf.bos_token_id, hf.eos_token_id, len(hf))
        torch.manual_seed(seed)
        kind = (MixtralForCausalLM, MixtralConfig) if shape.experts else (LlamaForCausalLM, LlamaConfig)
        model = kind[0](kind[1](**cfg)).to(torch.bfloat16)
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))  # ours, not transformers' rewrite
        (tmp / "generation_config.json").write_text(json.dumps({"bos_token_id": cfg["bos_token_id"],
                                                                  "eos_token_id": cfg["eos_token_id"]}))
        (tmp / "llmodal-shape.json").write_text(json.dumps(asdict(shape)))
    return out


def ensure_tiny_model(shape: TinyShape = TinyShape(), root: Path | None = None) -> Path:
    """The cached tiny model's directory, generating it on first use."""
    out = model_dir(shape, root)
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    return write_model(out, shape)
