"""Scoring engines: the one registry of engine kinds and the one way to start them.

`ENGINES` is read by the CLI (choices and help), the server configuration
(validation) and the benchmarks (which systems to run): a new engine is one
entry here. Engine modules are imported when their kind is started: importing
vLLM takes seconds and is pointless for the torch engines (and vLLM may not
even be installed where only those run).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from brew.engines.base import CallerOutcome, CallerWork, ScoringEngine
from brew.engines.multi_item_rule import MultiItemMode, PackingRule
from brew.engines.options import TorchOptions, VllmOptions
from brew.errors import EngineConfigError
from brew.quantization.schemes import LoadScheme, load_scheme_problems


class EngineKind(StrEnum):
    """The engines `create_engine` can start, as the CLI spells them."""

    VLLM = "vllm"
    TORCH = "torch"
    NAIVE = "naive"


@dataclass(frozen=True)
class EngineStart:
    """Everything any engine may need to start; each reads its own part."""

    model_dir: Path
    dtype: str
    device: str
    vllm: VllmOptions
    torch: TorchOptions
    multi_item: MultiItemMode
    packing: PackingRule
    quantization: str | None = None  # brew.quantization.schemes.LoadScheme, applied at load


async def _start_vllm(start: EngineStart) -> ScoringEngine:
    from brew.engines.vllm_engine import VllmEngine

    # vLLM picks its own device; `device` is for the torch engines.
    return await VllmEngine.start(start.model_dir, start.vllm, dtype=start.dtype, multi_item=start.multi_item,
                                  packing=start.packing, quantization=start.quantization)


async def _start_torch(start: EngineStart) -> ScoringEngine:
    from brew.engines.torch_engine import TorchEngine

    return await TorchEngine.start(start.model_dir, dtype=start.dtype, device=start.device, options=start.torch,
                                   multi_item=start.multi_item, packing=start.packing,
                                   quantization=start.quantization)


async def _start_naive(start: EngineStart) -> ScoringEngine:
    from brew.engines.naive import NaiveTorchEngine

    return await NaiveTorchEngine.start(start.model_dir, dtype=start.dtype, device=start.device,
                                        quantization=start.quantization)


@dataclass(frozen=True)
class EngineSpec:
    kind: EngineKind
    description: str
    start: Callable[[EngineStart], Awaitable[ScoringEngine]]
    multi_item: bool = False  # has exact multi-item scoring (candidates packed behind their prefix)
    # multi_item auto chooses per group (else auto is the per-candidate path);
    # vLLM's does where its pooling model runs fast (brew.engines.vllm_engine)
    packs_per_group: bool = False


ENGINES: dict[EngineKind, EngineSpec] = {
    spec.kind: spec
    for spec in (
        EngineSpec(EngineKind.VLLM, "vLLM's engine core (its own processes) fed by Brew's client, "
                                    "prefix caching (production)", _start_vllm, multi_item=True,
                   packs_per_group=True),
        EngineSpec(EngineKind.TORCH, "transformers, prefix KV computed once per group (reference)", _start_torch,
                   multi_item=True, packs_per_group=True),
        EngineSpec(EngineKind.NAIVE, "one plain forward pass per candidate (baseline)", _start_naive),
    )
}


# How benchmarks name an engine run with multi-item forced on, or left to the rule.
VARIANT_SUFFIXES = {MultiItemMode.OFF: "", MultiItemMode.ON: "-mis", MultiItemMode.AUTO: "-auto"}


@dataclass(frozen=True)
class EngineVariant:
    """One way to run an engine: its kind, and its multi-item mode."""

    kind: EngineKind
    multi_item: MultiItemMode = MultiItemMode.OFF

    @property
    def name(self) -> str:
        """How benchmarks name it: the kind (off), `<kind>-mis` (on), `<kind>-auto` (auto)."""
        return self.kind.value + VARIANT_SUFFIXES[self.multi_item]


def engine_variants() -> dict[str, EngineVariant]:
    """Every engine kind with multi-item off; each kind that can pack once more
    with it on, and once auto where auto chooses per group (elsewhere auto is off)."""

    def modes(spec: EngineSpec) -> tuple[MultiItemMode, ...]:
        if not spec.multi_item:
            return (MultiItemMode.OFF,)
        return tuple(MultiItemMode) if spec.packs_per_group else (MultiItemMode.OFF, MultiItemMode.ON)

    variants = [EngineVariant(kind, mode) for kind, spec in ENGINES.items() for mode in modes(spec)]
    return {variant.name: variant for variant in variants}


async def create_engine(
    kind: EngineKind | str,
    model_dir: str | Path,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    vllm: VllmOptions | None = None,
    torch: TorchOptions | None = None,
    multi_item: MultiItemMode | str = MultiItemMode.OFF,
    packing: PackingRule | None = None,
    quantization: str | None = None,
) -> ScoringEngine:
    """Start an engine of `kind` on the checkpoint in `model_dir`.
    `multi_item` (brew.engines.multi_item_rule): off, on (exact multi-item
    scoring for every group that fits `packing.max_row_tokens`) or auto (the
    groups `packing` packs); auto on an engine that cannot pack, or cannot
    choose per group here (vLLM off its CPU build, see
    brew.engines.vllm_engine), is the per-candidate path. `quantization` (brew.quantization.schemes.LoadScheme)
    quantizes the model as it loads, the LM head left out; EngineConfigError
    if this engine cannot (brew.quantization.schemes.LOAD_SCHEMES)."""
    kind = EngineKind(kind)
    spec = ENGINES[kind]
    multi_item = MultiItemMode(multi_item)
    if multi_item is MultiItemMode.ON and not spec.multi_item:
        with_it = [k.value for k, s in ENGINES.items() if s.multi_item]
        raise EngineConfigError(f"engine {kind.value} has no multi-item scoring; engines with it: {with_it}")
    if not spec.multi_item:
        multi_item = MultiItemMode.OFF
    problems = list(load_scheme_problems(kind.value, None if quantization is None else LoadScheme(quantization),
                                         device))
    if problems:
        raise EngineConfigError("; ".join(problems))
    start = EngineStart(Path(model_dir), dtype, device, vllm or VllmOptions(), torch or TorchOptions(), multi_item,
                        packing or PackingRule(), quantization)
    return await spec.start(start)


__all__ = [
    "ENGINES", "CallerOutcome", "CallerWork", "EngineKind", "EngineSpec", "EngineVariant", "MultiItemMode",
    "PackingRule", "ScoringEngine", "TorchOptions", "VllmOptions", "create_engine", "engine_variants",
]
