"""The engine-wide settings: which engine, on which checkpoint, and how.

Declared once (brew.settings): `brew serve` (serving.config.ServerConfig
extends EngineSettings) and `brew score`/`brew eval` read the same fields,
the same TOML keys and the same flags.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brew import defaults
from brew.engines import ENGINES, EngineKind
from brew.engines.multi_item_rule import MultiItemMode, PackingRule
from brew.engines.options import DTYPES, TorchOptions, VllmOptions
from brew.quantization.schemes import LoadScheme, load_scheme_problems
from brew.settings import Settings, section, setting


@dataclass(frozen=True)
class EngineSettings(Settings):
    """Which engine scores, on which checkpoint, and how: everything that
    decides a score. `brew serve` (serving.config.ServerConfig extends this)
    and `brew score`/`brew eval` read the same settings, so a one-off score
    reproduces a server's engine exactly."""

    engine: EngineKind = setting(EngineKind.VLLM, top_level=True,
                                 help="scoring engine: vllm (production), torch (reference), naive (baseline)")
    model: Path = setting(defaults.DEMO_MODEL_DIR, top_level=True,
                          help="Hugging Face checkpoint directory")
    dtype: str = setting("float32", top_level=True, choices=DTYPES,
                         help="the weights' dtype; label log-probabilities are read in fp32 (the torch "
                              "engines keep an fp32 copy of the head)")
    device: str = setting("cpu", top_level=True, help="torch device of the torch engines (vLLM picks its own)")
    quantization: str | None = setting(
        None, top_level=True, choices=tuple(s.value for s in LoadScheme),
        help="quantize the model as it loads, every linear layer but the LM head (read in fp32): torch and "
             "naive int8-weight or int8-dynamic (torchao; the quantize extra), fp8 on CUDA only (torch, and "
             "vLLM on a GPU). Not needed for a checkpoint written by brew quantize, which every engine reads "
             "as it is (docs/quantization.md)")
    multi_item: MultiItemMode = setting(
        MultiItemMode.AUTO, top_level=True,
        help="exact multi-item scoring, a member's candidates packed behind their shared context (torch: in few "
             "forward passes; vllm: one request per member and task), the same scores either way: on packs every "
             "group that fits [packing] max_row_tokens, off none, auto each group whose shape gains from it "
             "([packing]; on vllm where its multi-item attention runs on vLLM's CPU kernel, else none there)")
    packing: PackingRule = section(PackingRule, help="which groups multi_item packs")
    vllm: VllmOptions = section(VllmOptions, help="how vLLM is started")
    torch: TorchOptions = section(TorchOptions, help="how the torch engine runs its forward passes")

    def cross_checks(self) -> Iterator[str]:
        if not (self.model / "config.json").is_file():
            yield f"model {self.model} is not a checkpoint directory (no config.json); pass --model DIR"
        if self.multi_item is MultiItemMode.ON and not ENGINES[self.engine].multi_item:
            with_it = [kind.value for kind, spec in ENGINES.items() if spec.multi_item]
            yield (f"multi_item: engine {self.engine.value} has no multi-item scoring; use engine {with_it}, "
                   "or multi_item auto or off")
        packs = self.engine is EngineKind.TORCH and self.multi_item is not MultiItemMode.OFF
        if self.torch.compile and not packs:
            yield ("torch.compile compiles the torch engine's packed passes: use engine torch with "
                   "multi_item on or auto, or leave compile off")
        if self.quantization in tuple(LoadScheme):  # another value is refused by its choices
            yield from load_scheme_problems(self.engine.value, LoadScheme(self.quantization), self.device)

    def engine_options(self) -> dict[str, Any]:
        """The keyword arguments of create_engine/build_ranker besides kind and model."""
        return {"dtype": self.dtype, "device": self.device, "vllm": self.vllm, "torch": self.torch,
                "multi_item": self.multi_item, "packing": self.packing, "quantization": self.quantization}
