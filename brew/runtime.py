"""Assemble a ready Ranker from a model directory, a prompts directory and an
engine choice: the start-up path shared by the CLI and the server."""

from __future__ import annotations

from pathlib import Path

from brew.context_cache import ContextCache
from brew.engines import EngineKind, create_engine
from brew.engines.multi_item_rule import MultiItemMode, PackingRule
from brew.engines.options import TorchOptions, VllmOptions
from brew.ranker import Ranker
from brew.tasks import load_tasks
from brew.tokenization import PromptTokenizer
from brew.verbalize import Verbalizer, task_label_ids


async def build_ranker(
    model_dir: Path,
    prompts_dir: Path,
    engine: EngineKind,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    vllm: VllmOptions | None = None,
    torch: TorchOptions | None = None,
    multi_item: MultiItemMode = MultiItemMode.AUTO,
    packing: PackingRule | None = None,
    quantization: str | None = None,
    context_cache: ContextCache | None = None,
) -> Ranker:
    """Load tasks and tokenizer first (fast, fail early on a bad label), then
    start the engine (slow). With `context_cache`, a member's rendered
    context is reused across requests (brew.context_cache)."""
    tasks = load_tasks(prompts_dir)
    tokenizer = PromptTokenizer.from_pretrained(model_dir)
    label_ids = task_label_ids(tasks, tokenizer)
    scoring_engine = await create_engine(engine, model_dir, dtype=dtype, device=device, vllm=vllm, torch=torch,
                                         multi_item=multi_item, packing=packing, quantization=quantization)
    verbalizer = Verbalizer(tasks, tokenizer, scoring_engine.max_model_len, label_ids, context_cache)
    return Ranker(verbalizer, scoring_engine)
