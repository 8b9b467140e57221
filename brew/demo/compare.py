"""`brew eval --compare`: the same held-out data scored by several variants of
one model (fp32, bf16, a `brew quantize` checkpoint, quantized at load), each
set against fp32, per task.

Per variant and task: AUC and lift share (brew.demo.evaluate), the largest and
the mean |dp| of a candidate's score against fp32's, and the median over
members of the Kendall tau between the member's candidate order and fp32's
(scipy's tau-b: ties in either order count as ties). The goals a quantized
variant is held to (docs/quantization.md): an AUC at most 0.002 below fp32's
and a median tau of at least 0.98.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from scipy.stats import kendalltau

from brew.quantization.schemes import CheckpointScheme, LoadScheme

AUC_DROP_GOAL = 0.002
MEDIAN_TAU_GOAL = 0.98
BASELINE = "fp32"


class VariantKind(StrEnum):
    DTYPE = "dtype"  # the model in another dtype
    CHECKPOINT = "checkpoint"  # a checkpoint written by brew quantize
    LOAD = "load"  # quantized by the engine as it loads


@dataclass(frozen=True)
class Variant:
    """One way to run the model: its name in the table and what it changes."""

    name: str
    kind: VariantKind
    dtype: str = "float32"
    quantization: str | None = None  # a LoadScheme (kind LOAD)


VARIANTS = {
    BASELINE: Variant(BASELINE, VariantKind.DTYPE),
    "bf16": Variant("bf16", VariantKind.DTYPE, dtype="bfloat16"),
    **{s.value: Variant(s.value, VariantKind.CHECKPOINT) for s in CheckpointScheme},
    **{s.value: Variant(s.value, VariantKind.LOAD, quantization=s.value) for s in LoadScheme},
}


def parse_variants(text: str) -> list[Variant]:
    """The variants named in `text` (comma-separated), fp32 first (added if
    left out: everything is compared with it); ValueError naming the known ones."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown or not names:
        raise ValueError(f"--compare {text!r}: unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    ordered = [BASELINE, *(name for name in dict.fromkeys(names) if name != BASELINE)]
    return [VARIANTS[name] for name in ordered]


def median_kendall_tau(baseline: Sequence[Sequence[float]], other: Sequence[Sequence[float]]) -> float:
    """Median over groups (members) of Kendall's tau-b between the two
    orders of a group's candidates; a group whose scores are all tied in
    both counts as 1 (the same order), in one only as 0."""
    taus = []
    for base, scores in zip(baseline, other, strict=True):
        tau = kendalltau(base, scores).statistic if len(base) > 1 else 1.0
        if math.isnan(tau):
            tau = 1.0 if len(set(base)) == 1 and len(set(scores)) == 1 else 0.0
        taus.append(float(tau))
    return statistics.median(taus)


@dataclass(frozen=True)
class VariantRow:
    """One variant on one task, set against fp32."""

    variant: str
    auc: float
    lift_share: float
    auc_drop: float  # fp32's AUC minus this one's
    max_abs_dp: float
    mean_abs_dp: float
    median_tau: float

    @property
    def meets_goals(self) -> bool:
        return self.auc_drop <= AUC_DROP_GOAL and self.median_tau >= MEDIAN_TAU_GOAL


def variant_row(variant: str, auc: float, lift_share: float, baseline_auc: float,
                baseline: Sequence[Sequence[float]], scores: Sequence[Sequence[float]]) -> VariantRow:
    """A variant's row from its per-group scores and fp32's."""
    deltas = [abs(a - b) for base, other in zip(baseline, scores, strict=True)
              for a, b in zip(base, other, strict=True)]
    return VariantRow(variant=variant, auc=auc, lift_share=lift_share, auc_drop=baseline_auc - auc,
                      max_abs_dp=max(deltas), mean_abs_dp=statistics.fmean(deltas),
                      median_tau=median_kendall_tau(baseline, scores))


def format_task_table(task: str, header: str, rows: Sequence[VariantRow]) -> str:
    """One task's table, as `brew eval --compare` prints it (markdown)."""
    lines = [f"{task}: {header}", "",
             "| variant | AUC | AUC drop | lift share | max abs dp | mean abs dp | median tau | goals |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        goals = "-" if row.variant == BASELINE else ("met" if row.meets_goals else "missed")
        lines.append(f"| {row.variant} | {row.auc:.4f} | {row.auc_drop:+.4f} | {row.lift_share:.1%} | "
                     f"{row.max_abs_dp:.4f} | {row.mean_abs_dp:.5f} | {row.median_tau:.3f} | {goals} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class TaskScores:
    """One variant's held-out scores of one task: per member, per candidate."""

    auc: float
    truth_auc: float
    lift_share: float
    candidates: int
    positives: int
    scores: list[list[float]]


async def score_variant(config, tasks: Sequence[str], members: int,  # type: ignore[no-untyped-def]
                        candidates: int) -> dict[str, TaskScores]:
    """Every task's held-out scores with the engine `config` (an EngineSettings) starts."""
    from brew.demo.evaluate import heldout_groups, heldout_scores, task_auc
    from brew.runtime import build_ranker

    ranker = await build_ranker(config.model, config.prompts, config.engine, **config.engine_options())
    try:
        out = {}
        for task in tasks:
            groups = heldout_groups(ranker.verbalizer, task, members, candidates)
            scores = await heldout_scores(ranker.engine, groups)
            report = task_auc(task, groups, [s for group in scores for s in group])
            out[task] = TaskScores(report.model_auc, report.truth_auc, report.lift_share, report.candidates,
                                   report.positives, scores)
        return out
    finally:
        await ranker.engine.close()


def compare_tables(results: dict[str, dict[str, TaskScores]]) -> dict[str, list[VariantRow]]:
    """Per task, one row per variant (in `results`' order), set against fp32's scores."""
    baseline = results[BASELINE]
    tables: dict[str, list[VariantRow]] = {}
    for task, base in baseline.items():
        tables[task] = [variant_row(name, scored[task].auc, scored[task].lift_share, base.auc, base.scores,
                                    scored[task].scores) for name, scored in results.items()]
    return tables
