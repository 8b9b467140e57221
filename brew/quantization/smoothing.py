"""SmoothQuant (Xiao et al., 2023): move activation outliers into the weights
before both are rounded to int8.

Per-token int8 activations lose precision when a few input channels are
much larger than the rest. For every RMSNorm whose output feeds linear
layers (a Llama-style decoder: input_layernorm -> q/k/v_proj,
post_attention_layernorm -> gate/up_proj), channel j of the norm's weight
is divided by s_j and column j of each following weight multiplied by it;
the model computes exactly the same function, with

    s_j = max|x_j| ** alpha / max|W_:,j| ** (1 - alpha)

from the activations seen on the calibration prompts. This is the
smoothing llmcompressor's int8 W8A8 recipe applies (its SmoothQuantModifier,
the same mappings and formula).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from brew.quantization.schemes import DEFAULT_SMOOTHING_ALPHA

# The norm -> linears pairs of one Llama-style decoder layer (attribute paths).
MAPPINGS = (
    ("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
)
DEFAULT_ALPHA = DEFAULT_SMOOTHING_ALPHA


@dataclass(frozen=True)
class SmoothGroup:
    """One norm and the linear layers that read its output."""

    name: str
    norm: nn.Module
    linears: tuple[nn.Linear, ...]


def smooth_groups(model: nn.Module) -> list[SmoothGroup]:
    """Every norm -> linears group of the model's decoder layers; ValueError
    if the model is not a Llama-style decoder (the layers smoothing knows)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise ValueError("smoothing needs a decoder with model.layers (Llama, Mistral, Qwen2 style)")
    groups = []
    for index, layer in enumerate(layers):
        for norm_name, linear_names in MAPPINGS:
            try:
                norm = layer.get_submodule(norm_name)
                linears = tuple(layer.get_submodule(name) for name in linear_names)
            except AttributeError as error:
                raise ValueError(f"layer {index}: {error}; smoothing knows Llama-style decoder layers "
                                 f"({', '.join(n for n, _ in MAPPINGS)} and the linears they feed)") from None
            groups.append(SmoothGroup(f"model.layers.{index}.{norm_name}", norm, linears))
    return groups


@torch.inference_mode()
def activation_maxima(model: nn.Module, groups: Sequence[SmoothGroup],
                      prompts: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Per group, the largest |activation| of each channel of the norm's
    output over every token of `prompts` (one forward pass per prompt)."""
    maxima = [torch.zeros(group.linears[0].in_features) for group in groups]

    def hook(index: int):  # type: ignore[no-untyped-def]
        def record(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            # output: [batch, tokens, hidden]
            seen = output.detach().abs().reshape(-1, output.shape[-1]).amax(dim=0).float().cpu()
            torch.maximum(maxima[index], seen, out=maxima[index])
        return record

    handles = [group.norm.register_forward_hook(hook(i)) for i, group in enumerate(groups)]
    try:
        device = next(model.parameters()).device
        for prompt in prompts:
            model(input_ids=torch.tensor([list(prompt)], device=device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return maxima


def smoothing_scales(activation_max: torch.Tensor, weight_max: torch.Tensor, alpha: float) -> torch.Tensor:
    """s_j = max|x_j|^alpha / max|W_:,j|^(1-alpha), 1 where a channel was never active."""
    activation_max = activation_max.clamp(min=1e-5)
    scales = activation_max.pow(alpha) / weight_max.clamp(min=1e-5).pow(1 - alpha)
    return torch.where(torch.isfinite(scales) & (scales > 0), scales, torch.ones_like(scales))


@torch.inference_mode()
def smooth(model: nn.Module, prompts: Sequence[Sequence[int]], alpha: float = DEFAULT_ALPHA) -> Iterator[str]:
    """Smooth every group in place; yields one line per group for the log."""
    groups = smooth_groups(model)
    maxima = activation_maxima(model, groups, prompts)
    for group, activation_max in zip(groups, maxima):
        weight_max = torch.stack([linear.weight.abs().amax(dim=0).float() for linear in group.linears]).amax(dim=0)
        scales = smoothing_scales(activation_max, weight_max.cpu(), alpha)
        group.norm.weight.div_(scales.to(group.norm.weight))
        for linear in group.linears:
            linear.weight.mul_(scales.to(linear.weight).unsqueeze(0))
        yield (f"{group.name}: activation max {activation_max.max():.3g}, "
               f"scales {scales.min():.3g}..{scales.max():.3g}")
