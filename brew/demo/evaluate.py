"""Held-out evaluation: the model's AUC per task next to the ground truth's.

The ground truth's AUC (ranking by the hidden probabilities) is the best any
model can reach on the same sampled outcomes; `lift_share` says how much of
that lift over chance (0.5) the model captured: (AUC - 0.5) / (AUC* - 0.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sklearn.metrics import roc_auc_score

from brew.demo.examples import LabeledGroup, draw_group
from brew.demo.world import World
from brew.engines.base import ScoringEngine
from brew.scoring import label_probabilities
from brew.verbalize import Verbalizer

HELDOUT_SEED = 1_000_003  # never used for training or the tokenizer


@dataclass(frozen=True)
class TaskAuc:
    task: str
    candidates: int
    positives: int
    model_auc: float
    truth_auc: float

    @property
    def lift_share(self) -> float:
        return (self.model_auc - 0.5) / (self.truth_auc - 0.5)


def heldout_groups(
    verbalizer: Verbalizer, task: str, members: int, candidates: int, seed: int = HELDOUT_SEED
) -> list[LabeledGroup]:
    """The same held-out members and candidates every time for a given seed."""
    world = World(seed + sum(map(ord, task)))
    return [draw_group(world, verbalizer, task, candidates) for _ in range(members)]


def task_auc(task: str, groups: Sequence[LabeledGroup], model_positive: Sequence[float]) -> TaskAuc:
    """AUC of the model's and the truth's P(positive) against sampled outcomes."""
    positive = groups[0].prepared.task.positive_index
    outcomes = [int(o == positive) for g in groups for o in g.outcomes]
    truth = [probs[positive] for g in groups for probs in g.true_probs]
    return TaskAuc(
        task=task,
        candidates=len(outcomes),
        positives=sum(outcomes),
        model_auc=float(roc_auc_score(outcomes, model_positive)),
        truth_auc=float(roc_auc_score(outcomes, truth)),
    )


async def heldout_scores(engine: ScoringEngine, groups: Sequence[LabeledGroup]) -> list[list[float]]:
    """Per group (member), each candidate's P(positive) as `engine` scores it."""
    results = await engine.score([g.prepared.group for g in groups])
    positive = groups[0].prepared.task.positive_index
    return [[label_probabilities(c.label_logprobs)[positive] for c in r.candidates] for r in results]


async def evaluate_engine(
    engine: ScoringEngine,
    verbalizer: Verbalizer,
    tasks: Sequence[str],
    members: int = 400,
    candidates: int = 10,
    seed: int = HELDOUT_SEED,
) -> list[TaskAuc]:
    """Score held-out groups with `engine` and compare with the ground truth."""
    reports = []
    for task in tasks:
        groups = heldout_groups(verbalizer, task, members, candidates, seed)
        scores = await heldout_scores(engine, groups)
        reports.append(task_auc(task, groups, [s for group in scores for s in group]))
    return reports
