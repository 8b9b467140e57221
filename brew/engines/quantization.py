"""The torch engines' quantization at load (`quantization` engine setting):
torchao rewrites the loaded model's linear layers in place, all but the LM
head, whose label rows are read in fp32 (docs/design/decisions.md, 15).

    int8-weight   Int8WeightOnlyConfig: int8 weights, one scale per output
                  channel; activations and matmuls stay in the model's dtype
    int8-dynamic  Int8DynamicActivationInt8WeightConfig: int8 weights, int8
                  activations per token computed at run time, int8 matmuls
    fp8           Float8DynamicActivationFloat8WeightConfig, on CUDA only

A checkpoint written by `brew quantize` needs none of this: transformers
reads its compressed-tensors `quantization_config` when it loads it
(`checkpoint_load_options`): the int8 weights are dequantized at load (the
torch engines call the decoder directly, past the hook that would otherwise
dequantize them on the first full forward pass), and compressed-tensors
rounds each token's activations to int8 and back before every quantized
layer, as vLLM's int8 kernel does. The numbers are the checkpoint's; the
speed and memory are the model dtype's (the int8 speed is vLLM's).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from torch import nn

from brew.errors import EngineConfigError
from brew.quantization.schemes import FP8_ON_CPU, LoadScheme

log = logging.getLogger(__name__)

# Never quantized: the label log-probabilities come from its rows (fp32).
HEAD_MODULE = "lm_head"


def keeps_head(module: nn.Module, name: str) -> bool:
    """torchao's filter_fn: every linear layer but the LM head."""
    return isinstance(module, nn.Linear) and name != HEAD_MODULE and not name.endswith(f".{HEAD_MODULE}")


def torchao_config(scheme: LoadScheme):  # type: ignore[no-untyped-def]
    """torchao's configuration for `scheme` (imports torchao: the quantize extra)."""
    try:
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig, Int8DynamicActivationInt8WeightConfig,
            Int8WeightOnlyConfig,
        )
    except ImportError:
        raise EngineConfigError(
            f"quantization {scheme.value} needs torchao: pip install -e '.[quantize]'") from None
    configs = {LoadScheme.INT8_WEIGHT: Int8WeightOnlyConfig,
               LoadScheme.INT8_DYNAMIC: Int8DynamicActivationInt8WeightConfig,
               LoadScheme.FP8: Float8DynamicActivationFloat8WeightConfig}
    return configs[scheme]()


def quantize_loaded(model: nn.Module, scheme: LoadScheme | str | None) -> nn.Module:
    """`model` with its linear layers but the LM head quantized to `scheme`
    (nothing if None); EngineConfigError if `scheme` cannot run on the model's device."""
    if scheme is None:
        return model
    scheme = LoadScheme(scheme)
    device = next(model.parameters()).device
    if scheme is LoadScheme.FP8 and device.type != "cuda":
        raise EngineConfigError(f"quantization fp8 on device {device}: {FP8_ON_CPU}")
    from torchao.quantization import quantize_

    quantize_(model, torchao_config(scheme), filter_fn=keeps_head)
    return model


def checkpoint_load_options(model_dir: str | Path) -> dict[str, Any]:
    """from_pretrained's extra options for a compressed-tensors checkpoint
    (weights dequantized at load), none for any other."""
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    if config.get("quantization_config", {}).get("quant_method") != "compressed-tensors":
        return {}
    from transformers import CompressedTensorsConfig

    log.warning("%s is a compressed-tensors checkpoint: the torch engines compute it in the model's dtype, "
                "its int8 weights dequantized at load (int8 matmuls: the vLLM engine)", model_dir)
    return {"quantization_config": CompressedTensorsConfig(dequantize=True)}
