"""Registers the multi-item model and attention backend with vLLM.

Called by Brew's vLLM plugin (brew.engines.vllm_plugin), which vLLM loads in
every process it starts (engine core, workers) before it resolves the
model: that is how the multi-item classes reach the engine-core process.
Registration is by import path, so it imports nothing heavy, and repeating
it is harmless.
"""

from __future__ import annotations

_PACKAGE = "brew.engines.vllm_multi_item"


def register() -> None:
    from vllm import ModelRegistry
    from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

    from brew.engines.vllm_multi_item.names import ARCHITECTURES, BACKEND_NAME

    if BACKEND_NAME not in AttentionBackendEnum.__members__:
        register_backend(BACKEND_NAME, f"{_PACKAGE}.attention.MultiItemAttentionBackend")
    supported = set(ModelRegistry.get_supported_archs())
    for name in ARCHITECTURES.values():
        if name not in supported:
            ModelRegistry.register_model(name, f"{_PACKAGE}.model:{name}")
