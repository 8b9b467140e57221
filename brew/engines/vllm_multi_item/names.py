"""Names shared by Brew's engine and the vLLM plugin (no vLLM import)."""

BACKEND_NAME = "BREW_MULTI_ITEM"
# The stock vLLM architecture each multi-item model class wraps.
ARCHITECTURES = {
    "LlamaForCausalLM": "BrewMultiItemLlamaForCausalLM",
    "Qwen2ForCausalLM": "BrewMultiItemQwen2ForCausalLM",
    "Qwen3ForCausalLM": "BrewMultiItemQwen3ForCausalLM",
}
# PoolingParams.extra_kwargs key holding the label ids a request reads.
LABEL_IDS_KEY = "brew_label_ids"
# The pooling task multi-item requests run under.
POOLING_TASK = "token_classify"
