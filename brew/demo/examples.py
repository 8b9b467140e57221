"""Labelled examples from the synthetic world, verbalized by the real path.

Training and evaluation go through the same `Verbalizer` that serves
requests, so the model learns exactly the ids it will be asked to score.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from brew.demo.world import DEMO_TASKS, World, labeled_candidates
from brew.tasks import TaskRegistry
from brew.types import TaskRequest
from brew.verbalize import PreparedTask, Verbalizer


@dataclass(frozen=True)
class LabeledGroup:
    """One member, one task, K candidates with sampled outcomes and the truth."""

    prepared: PreparedTask
    outcomes: tuple[int, ...]  # index into the task's labels, per candidate
    true_probs: tuple[tuple[float, ...], ...]  # per candidate, in label order

    @property
    def target_ids(self) -> tuple[int, ...]:
        """The label token id of each candidate's sampled outcome."""
        labels = self.prepared.group.label_ids
        return tuple(labels[outcome] for outcome in self.outcomes)


def draw_group(world: World, verbalizer: Verbalizer, task: str, candidates: int) -> LabeledGroup:
    """A fresh member and `candidates` labelled candidates for `task`."""
    persona = world.persona()
    drawn = labeled_candidates(world, persona, task, candidates)
    request = TaskRequest(task=task, candidates=tuple(c.item for c in drawn))
    return LabeledGroup(
        prepared=verbalizer.prepare(persona.member, request),
        outcomes=tuple(c.outcome for c in drawn),
        true_probs=tuple(c.true_probs for c in drawn),
    )


def corpus_texts(world: World, tasks: TaskRegistry, members: int) -> Iterator[str]:
    """Rendered contexts and candidate blocks followed by every label word:
    the text a demo tokenizer is fitted to (no tokenizer is needed here)."""
    for index in range(members):
        persona = world.persona()
        task = tasks[DEMO_TASKS[index % len(DEMO_TASKS)]]
        lines = [
            task.template.render_block(
                "history_item",
                {"action": i.action, "entity_type": i.item.entity_type, "item": dict(i.item.fields)},
            )
            for i in persona.member.history
        ]
        yield task.template.render_block(
            "context", {"profile": dict(persona.member.profile), "history": lines, "task": task.name}
        )
        for candidate in labeled_candidates(world, persona, task.name, 4):
            block = task.template.render_block(
                "candidate",
                {
                    "candidate": dict(candidate.item.fields),
                    "entity_type": candidate.item.entity_type,
                    "profile": dict(persona.member.profile),
                    "task": task.name,
                },
            ).rstrip()
            yield from (block + label for label in task.labels)
