"""Train the demo model from scratch on the synthetic world, on CPU.

Each step draws fresh members (the world is endless, so there is no
overfitting to fight), verbalizes them with the shipped templates, packs one
context with all its candidates per row, and trains the next-token loss at
each candidate's last position towards the label. By default the target is the
world's label distribution ("truth"): the same optimum as training on sampled
actions, as a real ranker sees in its logs ("sampled"), at far less variance
per example, which matters in a CPU budget of minutes.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from brew.demo.checkpoint import ModelShape, build_model, train_tokenizer
from brew.demo.examples import corpus_texts, draw_group
from brew.demo.examples import LabeledGroup
from brew.demo.world import DEMO_TASKS, World
from brew.engines.packing import IGNORE_INDEX, PackedPass, pack_groups
from brew.tasks import load_tasks
from brew.tokenization import PromptTokenizer
from brew.verbalize import Verbalizer


@dataclass(frozen=True)
class TrainConfig:
    out_dir: Path
    prompts_dir: Path
    seed: int = 0
    steps: int = 3000
    groups_per_step: int = 12
    candidates_per_group: int = 16
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    tokenizer_members: int = 3000
    vocab_size: int = 1024
    threads: int | None = None
    # Weight of the next-token loss over prompt tokens: a dense signal that
    # teaches the network the structure of the prompts long before the sparse
    # label loss alone would.
    language_model_weight: float = 0.3
    # "sampled": learn from one sampled outcome per candidate (what a real
    # ranker sees in its logs); "truth": from the world's label distribution
    # (the same optimum, far less variance per example).
    targets: str = "truth"
    shape: ModelShape = field(default_factory=ModelShape)


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def label_targets(groups: list[LabeledGroup], vocab_size: int, kind: str) -> torch.Tensor:
    """Per-candidate targets over the vocabulary: class ids or distributions."""
    if kind == "sampled":
        return torch.tensor([t for g in groups for t in g.target_ids])
    if kind != "truth":
        raise ValueError(f"targets must be 'sampled' or 'truth', got {kind!r}")
    rows = [(g.prepared.group.label_ids, probs) for g in groups for probs in g.true_probs]
    dense = torch.zeros(len(rows), vocab_size)
    for index, (label_ids, probs) in enumerate(rows):
        dense[index, list(label_ids)] = torch.tensor(probs, dtype=torch.float32)
    return dense


def packed_logits(model: torch.nn.Module, batch: PackedPass) -> torch.Tensor:
    """fp32 logits at every position, (rows, length, vocab)."""
    output = model(
        input_ids=batch.input_ids,
        position_ids=batch.position_ids,
        attention_mask=batch.dense_mask(),
        use_cache=False,
    )
    return output.logits.float()


def training_loss(
    model: torch.nn.Module, batch: PackedPass, groups: list[LabeledGroup], config: TrainConfig
) -> torch.Tensor:
    """Label loss at each candidate's last token, plus the weighted next-token loss."""
    logits = packed_logits(model, batch)
    last = logits[batch.readout_rows, batch.readout_columns]
    loss = torch.nn.functional.cross_entropy(last, label_targets(groups, last.shape[-1], config.targets))
    if config.language_model_weight:
        language = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), batch.next_token_targets().flatten(), ignore_index=IGNORE_INDEX
        )
        loss = loss + config.language_model_weight * language
    return loss


def train_demo(config: TrainConfig, progress: bool = True) -> dict[str, object]:
    """Train and save a checkpoint directory; returns the training summary."""
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    tasks = load_tasks(config.prompts_dir)
    hf_tokenizer = train_tokenizer(
        corpus_texts(World(config.seed + 1), tasks, config.tokenizer_members), config.vocab_size
    )
    tokenizer = PromptTokenizer(hf_tokenizer)
    model = build_model(hf_tokenizer, config.shape)
    verbalizer = Verbalizer(tasks, tokenizer, config.shape.max_position_embeddings)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, betas=(0.9, 0.95)
    )
    world = World(config.seed)
    model.train()
    smoothed = None
    bar = tqdm(range(config.steps), desc="train-demo", disable=not progress, unit="step")
    for step in bar:
        groups = [
            draw_group(world, verbalizer, DEMO_TASKS[(step * config.groups_per_step + i) % len(DEMO_TASKS)],
                       config.candidates_per_group)
            for i in range(config.groups_per_step)
        ]
        batch = pack_groups([g.prepared.group for g in groups], hf_tokenizer.pad_token_id)
        loss = training_loss(model, batch, groups, config)
        for group_ in optimizer.param_groups:
            group_["lr"] = learning_rate_at(step, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        smoothed = loss.item() if smoothed is None else 0.98 * smoothed + 0.02 * loss.item()
        bar.set_postfix(loss=f"{smoothed:.4f}")
    model.eval()
    config.out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(config.out_dir)
    hf_tokenizer.save_pretrained(config.out_dir)
    summary = {
        "final_loss_smoothed": smoothed,
        "train_seconds": round(time.perf_counter() - started, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "candidates_seen": config.steps * config.groups_per_step * config.candidates_per_group,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
    }
    (config.out_dir / "brew_training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
