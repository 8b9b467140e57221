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
from brew.errors import EngineConfigError
from brew.engines.options import TorchOptions, VllmOptions


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
    multi_item: bool


async def _start_vllm(start: EngineStart) -> ScoringEngine:
    from brew.engines.vllm_engine import VllmEngine

    # vLLM picks its own device; `device` is for the torch engines.
    return await VllmEngine.start(start.model_dir, start.vllm, dtype=start.dtype, multi_item=start.multi_item)


async def _start_torch(start: EngineStart) -> ScoringEngine:
    from brew.engines.torch_engine import TorchEngine

    return await TorchEngine.start(start.model_dir, dtype=start.dtype, device=start.device, options=start.torch,
                                   multi_item=start.multi_item)


async def _start_naive(start: EngineStart) -> ScoringEngine:
    from brew.engines.naive import NaiveTorchEngine

    return await NaiveTorchEngine.start(start.model_dir, dtype=start.dtype, device=start.device)


@dataclass(frozen=True)
class EngineSpec:
    kind: EngineKind
    description: str
    start: Callable[[EngineStart], Awaitable[ScoringEngine]]
    multi_item: bool = False  # has exact multi-item scoring (candidates packed behind their prefix)


ENGINES: dict[EngineKind, EngineSpec] = {
    spec.kind: spec
    for spec in (
        EngineSpec(EngineKind.VLLM, "vLLM's engine core (its own processes) fed by Brew's client, "
                                    "prefix caching (production)", _start_vllm, multi_item=True),
        EngineSpec(EngineKind.TORCH, "transformers, prefix KV computed once per group (reference)", _start_torch,
                   multi_item=True),
        EngineSpec(EngineKind.NAIVE, "one plain forward pass per candidate (baseline)", _start_naive),
    )
}


MULTI_ITEM_SUFFIX = "-mis"


@dataclass(frozen=True)
class EngineVariant:
    """One way to run an engine: its kind, with or without multi-item scoring."""

    kind: EngineKind
    multi_item: bool = False

    @property
    def name(self) -> str:
        """How benchmarks name it: the kind, `<kind>-mis` with multi-item scoring."""
        return self.kind.value + (MULTI_ITEM_SUFFIX if self.multi_item else "")


def engine_variants() -> dict[str, EngineVariant]:
    """Every engine kind, and each kind that has multi-item scoring once more with it on."""
    variants = [EngineVariant(kind, multi_item) for kind, spec in ENGINES.items()
                for multi_item in ((False, True) if spec.multi_item else (False,))]
    return {variant.name: variant for variant in variants}


async def create_engine(
    kind: EngineKind | str,
    model_dir: str | Path,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    vllm: VllmOptions | None = None,
    torch: TorchOptions | None = None,
    multi_item: bool = False,
) -> ScoringEngine:
    """Start an engine of `kind` on the checkpoint in `model_dir`;
    `multi_item` switches on exact multi-item scoring where the kind has it."""
    kind = EngineKind(kind)
    spec = ENGINES[kind]
    if multi_item and not spec.multi_item:
        with_it = [k.value for k, s in ENGINES.items() if s.multi_item]
        raise EngineConfigError(f"engine {kind.value} has no multi-item scoring; engines with it: {with_it}")
    start = EngineStart(Path(model_dir), dtype, device, vllm or VllmOptions(), torch or TorchOptions(), multi_item)
    return await spec.start(start)


__all__ = [
    "ENGINES", "CallerOutcome", "CallerWork", "EngineKind", "EngineSpec", "EngineVariant", "ScoringEngine",
    "TorchOptions", "VllmOptions", "create_engine", "engine_variants",
]
