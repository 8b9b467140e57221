"""The packed forward pass compiled with `torch.compile` (`[torch] compile`).

Eager transformers launch one kernel per operation and pay Python's cost for
each; a compiled decoder fuses them, and on CUDA ("reduce-overhead") replays
each shape as a CUDA graph, so the host no longer paces a small pass. A
compiled function is specialised to its input shapes (`dynamic=False`): the
packed passes are therefore padded to steady shapes (TorchOptions.bucket_tokens
in length, brew.engines.torch_multi_item.ROW_BUCKET in rows), so a server
compiles a handful of shapes in its first requests and then reuses them.
Pads attend only to themselves (brew.engines.torch_multi_item.pad_pass), so
scores are unchanged (tests/integration/test_compiled.py checks them
against the naive engine). Only the packed path is compiled; the per-group
path (a KV cache copied per chunk) stays eager.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import PreTrainedModel


def compiled_decoder(model: PreTrainedModel) -> Callable[..., Any]:
    """The model's decoder, compiled for fixed shapes; CUDA graphs on CUDA."""
    mode = "reduce-overhead" if model.device.type == "cuda" else None
    return torch.compile(model.get_decoder(), dynamic=False, mode=mode)
