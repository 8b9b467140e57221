"""Build tiny random checkpoint directories (Llama, Qwen2, Qwen3) for engine tests.

The engines only see token ids, so a random model checks what matters to
them (that they compute the same function as a plain forward pass) in
seconds, with no trained model and no hub. The directory has everything a
real Hugging Face checkpoint has: config, safetensors weights, tokenizer.

Shapes respect vLLM's CPU attention (head_dim 64; 16 is unsupported), and the
weights are initialised wider than usual so that next-token distributions
are far from uniform and a wrong position or mask shows up as a large gap.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

VOCAB_SIZE = 512
SPECIAL_TOKENS = ("<s>", "</s>", "<pad>")

_WORDS = (
    "the a member job post city team data model engineer senior junior remote office "
    "applied viewed liked shared connected with from in at for to of and about new "
    "machine learning sales marketing design product manager school company video "
    "poll article hiring growth paris london berlin tokyo austin role skills python"
).split()


def synthetic_lines(count: int = 400, seed: int = 0) -> list[str]:
    """English-ish lines from a small word list: enough for BPE merges."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 16))) + "." for _ in range(count)]


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with VOCAB_SIZE entries, specials first (ids 0, 1, 2)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(synthetic_lines(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


_CONFIGS: dict[str, type[PretrainedConfig]] = {
    "llama": LlamaConfig,
    "qwen2": Qwen2Config,
    "qwen3": Qwen3Config,
}
MODEL_TYPES = tuple(_CONFIGS)


def build_tiny_causal_lm(
    out_dir: str | Path, model_type: str = "llama", *, attention_heads: int = 2, kv_heads: int = 2,
    **config_overrides: object,
) -> Path:
    """Save a seeded random fp32 causal LM of `model_type` (head_dim 64; fewer
    key/value heads than attention heads for grouped-query attention; any
    config field overridden, e.g. the RoPE parameters) and its tokenizer to
    `out_dir`."""
    out = Path(out_dir)
    tokenizer = build_tokenizer()
    config = _CONFIGS[model_type](
        vocab_size=VOCAB_SIZE,
        hidden_size=64 * attention_heads,
        intermediate_size=128 * attention_heads,
        num_hidden_layers=2,
        num_attention_heads=attention_heads,
        num_key_value_heads=kv_heads,
        head_dim=64,
        max_position_embeddings=512,
        initializer_range=0.2,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
        **config_overrides,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(torch.float32).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_llama(out_dir: str | Path) -> Path:
    """Save a seeded random fp32 LlamaForCausalLM and its tokenizer to `out_dir`."""
    return build_tiny_causal_lm(out_dir, "llama")
