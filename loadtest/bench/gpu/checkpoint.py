"""A checkpoint with Qwen3-0.6B's public configuration and random weights.

Nothing is downloaded: the numbers below are the configuration Qwen
publishes for Qwen3-0.6B (its config.json), written out here, and the
weights are drawn at random (a forward pass costs the same whatever the
weights). The tokenizer is the demo's, whose ids are a subset of the
model's 151,936-entry vocabulary, so the demo tasks' prompts render and
score on it unchanged. Saved in bf16, as the GPU proof serves it.

`TINY` is the same architecture at a size that builds and runs in seconds
on a CPU (`.ci/gpu --smoke`).
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

# Qwen3-0.6B's published configuration (the parts that decide the network).
QWEN3_0_6B = MappingProxyType({
    "vocab_size": 151936,
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 40960,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
    "attention_bias": False,
    "hidden_act": "silu",
    "use_sliding_window": False,
})

# The smoke run's shape: the same architecture, demo-sized.
TINY = MappingProxyType({**QWEN3_0_6B, "vocab_size": 1024, "hidden_size": 128, "intermediate_size": 384,
                         "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                         "head_dim": 64, "max_position_embeddings": 2048})

SHAPES = MappingProxyType({"qwen3-0.6b": QWEN3_0_6B, "tiny": TINY})


def write_qwen3_checkpoint(directory: Path, shape: str = "qwen3-0.6b", seed: int = 0,
                           dtype: str = "bfloat16", device: str = "cpu") -> Path:
    """Build the random checkpoint of `shape` (a key of SHAPES) in `directory`.
    `device`: where the weights are drawn (a GPU draws 0.6 B in well under a second)."""
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    from brew import defaults

    tokenizer = PreTrainedTokenizerFast.from_pretrained(defaults.DEMO_MODEL_DIR)
    values = dict(SHAPES[shape])
    rope_theta = values.pop("rope_theta")
    config = Qwen3Config(**values, rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    if len(tokenizer) > config.vocab_size:
        raise ValueError(f"the demo tokenizer has {len(tokenizer)} ids, more than the model's "
                         f"{config.vocab_size}")
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen3ForCausalLM(config)
    model = model.to(getattr(torch, dtype)).to("cpu")
    model.config.dtype = dtype
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
