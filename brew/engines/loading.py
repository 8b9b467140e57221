"""Load a Hugging Face causal LM from a local checkpoint directory.

Shared by the two transformers engines so that both read exactly the same
weights in exactly the same dtype; parity between engines depends on it.
Nothing is fetched from a hub: serving must never download at start-up.
`probe_model` is both engines' health check.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

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
    only; with `attention`, running that attention kernel (transformers'
    `attn_implementation`). flex_attention is refused on CPU: torch's
    inductor fails to compile its CPU kernel once shapes vary."""
    if attention == "flex_attention" and torch.device(device).type == "cpu":
        raise EngineConfigError(FLEX_ON_CPU_REFUSED)
    from brew.engines.quantization import checkpoint_load_options

    extra = {} if attention is None else {"attn_implementation": attention}
    extra.update(checkpoint_load_options(model_dir))
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch_dtype_from_name(dtype), local_files_only=True, **extra
    )
    return model.to(device).eval()
