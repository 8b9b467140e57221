"""FLOPs of scoring with a Llama-shaped decoder, and the machine's matmul ceiling.

The scaling benchmark reports how close an engine comes to what the machine
can compute. That needs two numbers: the work a scoring group really needs,
counted from the model's shape and the tokens processed, and the FLOP/s the
machine reaches on a large fp32 matmul (its practical compute limit).

What is counted (one multiply-add = 2 FLOPs):

- Matmuls with weights: 2 x (weight parameters) per token. Per layer the
  q, k, v, o projections and the three SwiGLU matrices; the embedding lookup
  is a gather, not a matmul, and is left out. The LM head (hidden x vocab,
  counted even when tied to the embedding) is a matmul too, but scoring only
  needs logits where a candidate ends, so the group functions count it once
  per candidate; `forward_flops` counts it for every new token by default,
  as a plain full forward pass does.
- Attention: a new token at absolute position t (1-based) attends to t keys
  under the causal mask, costing 2 x head_dim FLOPs for its scores and
  2 x head_dim for the weighted sum of values, per query head and layer.
  s new tokens after p cached ones therefore touch
  s*p + s*(s+1)/2 keys in all: the causally needed work, not the masked
  square a dense kernel may compute and throw away.
- Not counted: norms, rotary embeddings, softmax, SiLU, residual adds. They
  are elementwise and small next to the matmuls.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DecoderShape:
    """The sizes of a Llama-shaped decoder that decide its FLOPs."""

    hidden_size: int
    intermediate_size: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab_size: int

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")

    @classmethod
    def from_config(cls, config: Mapping[str, object] | object) -> DecoderShape:
        """From a Hugging Face Llama config (object or its config.json dict)."""
        get = config.get if isinstance(config, Mapping) else lambda name, default=None: getattr(
            config, name, default)
        hidden, heads = int(get("hidden_size")), int(get("num_attention_heads"))
        head_dim = get("head_dim") or hidden // heads
        return cls(
            hidden_size=hidden,
            intermediate_size=int(get("intermediate_size")),
            layers=int(get("num_hidden_layers")),
            heads=heads,
            kv_heads=int(get("num_key_value_heads") or heads),
            head_dim=int(head_dim),
            vocab_size=int(get("vocab_size")),
        )

    @property
    def layer_matmul_params(self) -> int:
        """Weights one layer multiplies each token by: attention projections and MLP."""
        q_and_o = 2 * self.hidden_size * self.heads * self.head_dim
        k_and_v = 2 * self.hidden_size * self.kv_heads * self.head_dim
        mlp = 3 * self.hidden_size * self.intermediate_size  # gate, up, down
        return q_and_o + k_and_v + mlp

    @property
    def lm_head_params(self) -> int:
        return self.hidden_size * self.vocab_size

    @property
    def attention_flops_per_key(self) -> int:
        """FLOPs for one query token and one key, summed over heads and layers."""
        return 4 * self.heads * self.head_dim * self.layers  # 2*d for q.k, 2*d for p*v


def attended_keys(new_tokens: int, cached_tokens: int = 0) -> int:
    """Query-key pairs when `new_tokens` follow `cached_tokens` under a causal mask."""
    if new_tokens < 0 or cached_tokens < 0:
        raise ValueError(f"token counts must be >= 0, got {new_tokens} new, {cached_tokens} cached")
    return new_tokens * cached_tokens + new_tokens * (new_tokens + 1) // 2


def forward_flops(shape: DecoderShape, new_tokens: int, cached_tokens: int = 0,
                  logit_tokens: int | None = None) -> int:
    """FLOPs of a forward pass over `new_tokens` with `cached_tokens` already in
    the KV cache. Logits are computed for `logit_tokens` of them (default: all)."""
    logits = new_tokens if logit_tokens is None else logit_tokens
    if not 0 <= logits <= new_tokens:
        raise ValueError(f"logit_tokens must be in [0, {new_tokens}], got {logits}")
    body = 2 * shape.layers * shape.layer_matmul_params * new_tokens
    head = 2 * shape.lm_head_params * logits
    return body + head + shape.attention_flops_per_key * attended_keys(new_tokens, cached_tokens)


def shared_group_flops(shape: DecoderShape, prefix_tokens: int, suffix_tokens: Sequence[int]) -> int:
    """A group scored with prefix sharing: the prefix once (no logits needed),
    then each candidate's suffix attending over the cached prefix, logits at its
    last token only."""
    prefix = forward_flops(shape, prefix_tokens, logit_tokens=0)
    suffixes = sum(forward_flops(shape, s, cached_tokens=prefix_tokens, logit_tokens=1)
                   for s in suffix_tokens)
    return prefix + suffixes


def naive_group_flops(shape: DecoderShape, prefix_tokens: int, suffix_tokens: Sequence[int]) -> int:
    """The same group with every candidate's whole prompt computed from scratch."""
    return sum(forward_flops(shape, prefix_tokens + s, logit_tokens=1) for s in suffix_tokens)


def _median_rate(call: Callable[[], object], flops_per_call: int, seconds: float, repeats: int) -> float:
    """FLOP/s of `call`: the median over `repeats` stretches of `seconds /
    repeats` each, every stretch at least one call long."""
    rates = []
    stretch = seconds / repeats
    for _ in range(repeats):
        count, start = 0, time.perf_counter()
        while count == 0 or time.perf_counter() - start < stretch:
            call()
            count += 1
        rates.append(flops_per_call * count / (time.perf_counter() - start))
    return statistics.median(rates)


def measure_matmul_flops(threads: int, size: int = 1024, seconds: float = 2.0, repeats: int = 5) -> float:
    """The machine's fp32 matmul FLOP/s on `threads` torch threads: the median
    of `repeats` timed stretches of square `size` matmuls, after a warm-up.

    A large square matmul is the best case for the hardware; the small matmuls
    of a small model reach less, which is what the share against it shows.
    torch's thread count is restored afterwards.
    """
    if threads < 1 or size < 1 or seconds <= 0 or repeats < 1:
        raise ValueError("threads, size, seconds and repeats must be positive")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=generator)
        b = torch.randn(size, size, generator=generator)
        out = torch.empty(size, size)
        for _ in range(3):  # warm-up: thread pool start, first-touch of the output
            torch.mm(a, b, out=out)
        return _median_rate(lambda: torch.mm(a, b, out=out), 2 * size**3, seconds, repeats)
    finally:
        torch.set_num_threads(before)


def measure_cuda_matmul_flops(device: str = "cuda", size: int = 8192, seconds: float = 2.0, repeats: int = 5,
                              dtype: torch.dtype = torch.float32) -> float:
    """The GPU's matmul FLOP/s in `dtype` (fp32 by default): the median of
    `repeats` timed stretches of square `size` matmuls after a warm-up, each
    stretch timed between two synchronizations. TF32 is switched off for the
    measurement (and restored): Brew scores fp32 models in true fp32, so the
    peak they are judged against is fp32's; bf16 weights against bf16's."""
    if size < 1 or seconds <= 0 or repeats < 1:
        raise ValueError("size, seconds and repeats must be positive")
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        generator = torch.Generator(device=device).manual_seed(0)
        a = torch.randn(size, size, generator=generator, device=device).to(dtype)
        b = torch.randn(size, size, generator=generator, device=device).to(dtype)
        out = torch.empty(size, size, device=device, dtype=dtype)
        for _ in range(3):
            torch.mm(a, b, out=out)
        torch.cuda.synchronize(device)

        def four_synchronized() -> None:  # a GPU matmul is timed only once it has run
            for _ in range(4):
                torch.mm(a, b, out=out)
            torch.cuda.synchronize(device)

        return _median_rate(four_synchronized, 4 * 2 * size**3, seconds, repeats)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
