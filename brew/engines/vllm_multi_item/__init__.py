"""Multi-item scoring on vLLM: one engine request per (member, task) group.

vLLM 0.32 has no multi-item scoring; this package adds it through vLLM's
extension points only, no fork:

- `layout`: the packed prompt (prefix | nonce | candidates | trailer) and the
  per-token positions and attention rule it spells (no vLLM import);
- `model`: vLLM's own Llama/Qwen2/Qwen3 classes as pooling models that read
  label log-probabilities at every candidate's end, positions and rule
  carried by vLLM's M-RoPE channel;
- `attention`: an attention backend (paged KV cache, plain torch) applying
  the rule;
- `plugin`: the `vllm.general_plugins` entry point registering both.

Brew's engine (`brew.engines.vllm_engine`, `multi_item=True`) packs groups,
starts vLLM with `engine_overrides` and reads the results.
"""
