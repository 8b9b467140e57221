"""Brew's vLLM plugin (entry point `vllm.general_plugins`, named `brew`).

vLLM loads general plugins in every process it starts (its engine core,
its workers, the process that starts it) before it resolves the model, and
may load them more than once, so everything here is idempotent. It adds, by
vLLM's own extension points:
- the multi-item model and attention backend (brew.engines.vllm_multi_item);
- the engine-core method that adds many scoring requests from one message
  (brew.engines.vllm_core_batch), which Brew's engine client uses on every
  path.

Both lean on vLLM's internals, so on any vLLM release but the supported one
(brew.engines.vllm_version) the plugin registers nothing and logs why, in
one line. It does not raise: vLLM calls plugins unguarded, and an error
here would stop every vLLM command of the environment (`vllm serve`
included), not only Brew's engine, which refuses to start with the same
message before it starts vLLM.
"""

from __future__ import annotations

import logging

from brew.engines.vllm_version import installed_vllm_version, unsupported_vllm_message

log = logging.getLogger(__name__)


def register() -> None:
    refusal = unsupported_vllm_message(installed_vllm_version())
    if refusal is not None:
        log.warning("Brew's vLLM plugin registers nothing: %s", refusal)
        return

    from brew.engines import vllm_core_batch
    from brew.engines.vllm_multi_item import plugin as multi_item

    multi_item.register()
    vllm_core_batch.install()
