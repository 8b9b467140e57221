"""`brew quantize`: an fp32 checkpoint in, an int8 W8A8 checkpoint out, in
the compressed-tensors format vLLM loads.

The steps llmcompressor's int8 W8A8 recipe takes (SmoothQuantModifier, then
QuantizationModifier with the W8A8 preset), written with compressed-tensors
itself, the library vLLM reads the format with: llmcompressor 0.14 requires
other versions of transformers and compressed-tensors than vLLM's CPU build
pins (docs/quantization.md). The checkpoint is therefore written by the
compressed-tensors release vLLM was built against.

1. Calibration prompts: requests verbalized as served (brew.quantization.calibration).
2. Smoothing on their activations (brew.quantization.smoothing).
3. Every linear layer but `lm_head`: int8 weights, symmetric, one scale per
   output channel (max |w| / 127); activations int8 per token, symmetric,
   scaled at run time (no static scale to calibrate).
4. Saved with compressed-tensors' int-quantized format and its
   `quantization_config` in config.json; the tokenizer copied alongside;
   `brew_quantization.json` records how it was made.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from brew.quantization.calibration import calibration_prompts
from brew.quantization.schemes import CheckpointScheme
from brew.quantization.smoothing import DEFAULT_ALPHA, smooth

# Never quantized: the LM head's rows give the label log-probabilities (fp32).
IGNORED_MODULES = ("lm_head",)
PROVENANCE_FILE = "brew_quantization.json"
INT8_MAX = 127


@dataclass(frozen=True)
class QuantizeSummary:
    """What `brew quantize` did, as it prints it and records it in the checkpoint."""

    scheme: str
    source: str
    calibration: str
    calibration_prompts: int
    calibration_tokens: int
    smoothing_alpha: float
    quantized_layers: int
    weight_bytes_before: int
    weight_bytes_after: int
    seconds: float


def weight_bytes(model_dir: Path) -> int:
    """Bytes of the checkpoint's weight files (*.safetensors)."""
    return sum(path.stat().st_size for path in Path(model_dir).glob("*.safetensors"))


def _int8_w8a8_config():  # type: ignore[no-untyped-def]
    from compressed_tensors.quantization import QuantizationConfig, QuantizationStatus, preset_name_to_scheme

    return QuantizationConfig(config_groups={"group_0": preset_name_to_scheme("W8A8", ["Linear"])},
                              ignore=list(IGNORED_MODULES), quantization_status=QuantizationStatus.FROZEN)


@torch.inference_mode()
def _set_weight_scales(model: torch.nn.Module) -> int:
    """Per output channel, scale = max |w| / 127 (symmetric, zero point 0):
    the minmax observer of the W8A8 preset. Returns the layers quantized."""
    layers = 0
    for _name, module in model.named_modules():
        if getattr(module, "quantization_scheme", None) is None:
            continue
        amax = module.weight.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-8)
        module.weight_scale.copy_((amax / INT8_MAX).to(module.weight_scale.dtype))
        if hasattr(module, "weight_zero_point"):
            module.weight_zero_point.zero_()
        layers += 1
    return layers


def quantize_checkpoint(model_dir: Path, out_dir: Path, scheme: CheckpointScheme, prompts_dir: Path,
                        calibration: Path | None = None, alpha: float = DEFAULT_ALPHA,
                        log=print) -> QuantizeSummary:  # type: ignore[no-untyped-def]
    """Write the `scheme` checkpoint of `model_dir` to `out_dir` (see the module docstring)."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization.lifecycle.apply import apply_quantization_config
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert scheme is CheckpointScheme.INT8_W8A8, scheme
    started = time.perf_counter()
    prompts = calibration_prompts(model_dir, prompts_dir, calibration)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, local_files_only=True).eval()
    for line in smooth(model, prompts, alpha):
        log(f"smoothed {line}")
    apply_quantization_config(model, _int8_w8a8_config())
    layers = _set_weight_scales(model)
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format="int-quantized")
    compressor.compress_model(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    compressor.update_config(str(out_dir))
    AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True).save_pretrained(out_dir)
    summary = QuantizeSummary(
        scheme=scheme.value, source=str(model_dir), calibration=str(calibration or prompts_dir / "examples"),
        calibration_prompts=len(prompts), calibration_tokens=sum(map(len, prompts)), smoothing_alpha=alpha,
        quantized_layers=layers, weight_bytes_before=weight_bytes(model_dir),
        weight_bytes_after=weight_bytes(out_dir),
        seconds=round(time.perf_counter() - started, 1),
    )
    (out_dir / PROVENANCE_FILE).write_text(json.dumps(asdict(summary), indent=2) + "\n", encoding="utf-8")
    return summary
