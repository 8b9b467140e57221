"""Load a Hugging Face causal LM from a local checkpoint directory.

Shared by the two transformers engines so that both read exactly the same
weights in exactly the same dtype; parity between engines depends on it.
Nothing is fetched from a hub: serving must never download at start-up.
`probe_model` is both engines' health check.

Weights in bfloat16 or float16 keep an fp32 head (decision 3: label
log-probabilities are read in fp32): the checkpoint is read in fp32, the
output projection (`lm_head`) is kept in fp32 as an `Fp32Head`, and only
then are the other parameters cast down. The hidden state is cast to fp32
before the head, so the label logits and the full-vocabulary log-softmax
are fp32 arithmetic on fp32 weights whatever the body's dtype. Buffers
(the rotary embedding's inverse frequencies) stay as `from_pretrained`
makes them, fp32, as a direct low-precision load would leave them; a
tied input embedding is cast with the body (the head is a copy).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from brew.errors import EngineConfigError

_DTYPES: dict[str, torch.dtype | str] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "auto": "auto",  # whatever the checkpoint's config says
}


def torch_dtype_from_name(name: str) -> torch.dtype | str:
    """The torch dtype for a dtype name as the CLI and vLLM spell it."""
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}: use one of {', '.join(_DTYPES)}") from None


def resolved_dtype(model_dir: str | Path, name: str) -> torch.dtype:
    """The dtype the weights will have: `name`'s, or with "auto" the checkpoint's (fp32 if it names none)."""
    dtype = torch_dtype_from_name(name)
    if isinstance(dtype, torch.dtype):
        return dtype
    config_dtype = getattr(AutoConfig.from_pretrained(str(model_dir), local_files_only=True), "dtype", None)
    if isinstance(config_dtype, str):
        config_dtype = getattr(torch, config_dtype)
    return config_dtype if isinstance(config_dtype, torch.dtype) else torch.float32


class Fp32Head(nn.Module):
    """The output projection in fp32 over a hidden state of any dtype:
    `logits = hidden.float() @ weight.T (+ bias)`, all fp32. It replaces the
    model's `lm_head` when the body runs in bfloat16 or float16, so every
    caller of the model's logits (`model(...).logits`, or the head applied
    to gathered hidden states) reads fp32 logits."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().float().clone(), requires_grad=False)  # (vocab, hidden)
        self.bias = None if bias is None else nn.Parameter(bias.detach().float().clone(), requires_grad=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(hidden.float(), self.weight, self.bias)


def cast_body_keep_fp32_head(model: PreTrainedModel, dtype: torch.dtype) -> PreTrainedModel:
    """`model` (loaded in fp32) with its parameters in `dtype` and an fp32 copy of its head."""
    head = model.get_output_embeddings()
    fp32_head = Fp32Head(head.weight, getattr(head, "bias", None))
    for parameter in model.parameters():
        parameter.data = parameter.data.to(dtype)  # parameters only: buffers stay fp32
    model.set_output_embeddings(fp32_head)
    model.config.tie_word_embeddings = False  # the head is its own fp32 copy now
    model.config.dtype = dtype  # what the body computes in (masks are built in it)
    return model


@torch.inference_mode()
def probe_model(model: PreTrainedModel) -> None:
    """One forward pass over one token: raises if the model or its device is broken."""
    model(input_ids=torch.zeros((1, 1), dtype=torch.long, device=model.device), use_cache=False)


# Why flex attention is refused on CPU, said the same wherever it is refused.
FLEX_ON_CPU_REFUSED = ("flex_attention is refused on CPU: torch's inductor fails to compile its CPU kernel "
                       "(CppCompileError) once pass shapes vary; use sdpa on CPU, flex_attention on a GPU")


def load_causal_lm(model_dir: str | Path, dtype: str = "float32", device: str = "cpu",
                   attention: str | None = None) -> PreTrainedModel:
    """The model on `device`, in eval mode (no dropout), from local files
    only, its body in `dtype` and its head in fp32; with `attention`,
    running that attention kernel (transformers' `attn_implementation`).
    flex_attention is refused on CPU: torch's inductor fails to compile its
    CPU kernel once shapes vary."""
    if attention == "flex_attention" and torch.device(device).type == "cpu":
        raise EngineConfigError(FLEX_ON_CPU_REFUSED)
    from brew.engines.quantization import checkpoint_load_options

    extra = {} if attention is None else {"attn_implementation": attention}
    weights_dtype = resolved_dtype(model_dir, dtype)
    extra.update(checkpoint_load_options(model_dir))
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, local_files_only=True, **extra
    )
    if weights_dtype != torch.float32:
        model = cast_body_keep_fp32_head(model, weights_dtype)
    return model.to(device).eval()
