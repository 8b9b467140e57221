"""Scoring engines and the one way to start them.

Engine modules are imported when their kind is asked for: importing vLLM
takes seconds and is pointless for the torch engines (and vLLM may not even
be installed where only those run).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path

from brew.engines.base import ScoringEngine


class EngineKind(StrEnum):
    """The engines `create_engine` can start, as the CLI spells them."""

    VLLM = "vllm"
    TORCH = "torch"
    NAIVE = "naive"


async def _start_vllm(model_dir: Path, dtype: str, device: str, vllm_options: object | None) -> ScoringEngine:
    from brew.engines.vllm_engine import VllmEngine, VllmOptions

    if vllm_options is None:
        vllm_options = VllmOptions(dtype=dtype)
    if not isinstance(vllm_options, VllmOptions):
        raise TypeError(f"vllm_options must be VllmOptions, got {type(vllm_options).__name__}")
    # vLLM picks its own device; `device` is for the torch engines.
    return await VllmEngine.start(model_dir, vllm_options)


async def _start_torch(model_dir: Path, dtype: str, device: str, vllm_options: object | None) -> ScoringEngine:
    from brew.engines.torch_engine import TorchEngine

    return await TorchEngine.start(model_dir, dtype=dtype, device=device)


async def _start_naive(model_dir: Path, dtype: str, device: str, vllm_options: object | None) -> ScoringEngine:
    from brew.engines.naive import NaiveTorchEngine

    return await NaiveTorchEngine.start(model_dir, dtype=dtype, device=device)


_STARTERS: dict[EngineKind, Callable[[Path, str, str, object | None], Awaitable[ScoringEngine]]] = {
    EngineKind.VLLM: _start_vllm,
    EngineKind.TORCH: _start_torch,
    EngineKind.NAIVE: _start_naive,
}


async def create_engine(
    kind: EngineKind | str,
    model_dir: str | Path,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    vllm_options: object | None = None,
) -> ScoringEngine:
    """Start an engine of `kind` on the checkpoint in `model_dir`.

    `dtype` applies to every engine unless `vllm_options` (a VllmOptions,
    typed loosely here so that this module does not import vLLM) is given,
    which then decides the vLLM engine's dtype.
    """
    return await _STARTERS[EngineKind(kind)](Path(model_dir), dtype, device, vllm_options)


__all__ = ["EngineKind", "ScoringEngine", "create_engine"]
