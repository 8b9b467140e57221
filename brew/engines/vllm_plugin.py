"""Brew's vLLM plugin (entry point `vllm.general_plugins`, named `brew`).

vLLM loads general plugins in every process it starts (its engine core,
its workers, the process that starts it) before it resolves the model, and
may load them more than once, so everything here is idempotent. It adds, by
vLLM's own extension points:
- the multi-item model and attention backend (brew.engines.vllm_multi_item);
- the engine-core method that adds many scoring requests from one message
  (brew.engines.vllm_core_batch), which Brew's engine client uses on every
  path.
"""

from __future__ import annotations


def register() -> None:
    from brew.engines import vllm_core_batch
    from brew.engines.vllm_multi_item import plugin as multi_item

    multi_item.register()
    vllm_core_batch.install()
