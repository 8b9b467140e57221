"""Which quantization runs where: one table, read by the settings' checks,
the engines and `brew quantize`, so every refusal names the same choices.

Two kinds of scheme:
- a checkpoint scheme is written once by `brew quantize` (int8-w8a8: int8
  weights per output channel, int8 activations per token, computed at run
  time; the compressed-tensors format vLLM reads);
- a load scheme is applied by an engine to an fp32/bf16 checkpoint as it
  loads it (`quantization` engine setting).

The LM head is never quantized by either: label probabilities are read
from its rows in fp32 (docs/design/decisions.md, 3 and 15).
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum


# SmoothQuant's migration strength for `brew quantize` (brew.quantization.smoothing).
DEFAULT_SMOOTHING_ALPHA = 0.5


class CheckpointScheme(StrEnum):
    """What `brew quantize --scheme` writes."""

    INT8_W8A8 = "int8-w8a8"


class LoadScheme(StrEnum):
    """What an engine quantizes at load (`--quantization`)."""

    INT8_WEIGHT = "int8-weight"  # torchao: int8 weights, fp32 activations and matmuls
    INT8_DYNAMIC = "int8-dynamic"  # torchao: int8 weights and int8 activations per token, int8 matmuls
    FP8 = "fp8"  # fp8 weights and activations: NVIDIA GPUs only


# Which engine runs which load scheme, and on which devices ("cuda" only, or any).
# vLLM quantizes at load only to fp8 (its own online fp8, lm_head left out);
# its int8 comes from a checkpoint written by `brew quantize`.
LOAD_SCHEMES: dict[str, dict[LoadScheme, str]] = {
    "vllm": {LoadScheme.FP8: "cuda"},
    "torch": {LoadScheme.INT8_WEIGHT: "any", LoadScheme.INT8_DYNAMIC: "any", LoadScheme.FP8: "cuda"},
    "naive": {LoadScheme.INT8_WEIGHT: "any", LoadScheme.INT8_DYNAMIC: "any", LoadScheme.FP8: "cuda"},
}

FP8_ON_CPU = ("fp8 runs on NVIDIA GPUs only (x86 CPUs have no fp8 matmul); on this CPU serve an int8 "
              "checkpoint written by `brew quantize --scheme int8-w8a8`, or --quantization int8-weight or "
              "int8-dynamic on the torch engine")


def load_scheme_problems(engine: str, scheme: LoadScheme | None, device: str) -> Iterator[str]:
    """Why `engine` cannot quantize to `scheme` at load on `device` (torch's
    device name; vLLM's own device is checked when it starts), or nothing."""
    if scheme is None:
        return
    supported = LOAD_SCHEMES.get(engine, {})
    if scheme not in supported:
        names = ", ".join(supported) or "none"
        hint = (" (vLLM serves int8 from a checkpoint: brew quantize --scheme int8-w8a8, then "
                "--model that directory)" if engine == "vllm" else "")
        yield f"quantization {scheme.value}: engine {engine} quantizes at load to {names}{hint}"
    elif supported[scheme] == "cuda" and engine != "vllm" and not device.startswith("cuda"):
        yield f"quantization {scheme.value} on device {device}: {FP8_ON_CPU}"


def checkpoint_scheme(name: str) -> CheckpointScheme:
    """The scheme called `name`; ValueError naming the supported ones (and
    why fp8 is not one of them here)."""
    try:
        return CheckpointScheme(name)
    except ValueError:
        supported = ", ".join(s.value for s in CheckpointScheme)
        why = f"; {FP8_ON_CPU}" if "fp8" in name.lower() else ""
        raise ValueError(f"scheme {name!r} is not supported: brew quantize writes {supported}{why}") from None
