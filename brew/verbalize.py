"""Verbalize a request into scoring groups: text per part, ids per part.

For each (member, task) the context is rendered ONCE: history selected by the
task's policy, each item rendered and cut to its token budget, the oldest
dropped until the history fits, then the context block. Each candidate block
is rendered and tokenized on its own, and the prompt of a candidate is
`BOS + context ids + candidate ids`. Every candidate of a member therefore
shares the exact same prefix ids, which is what lets the engine's prefix cache
compute a member's history once.

An error about request data names its culprit the way a person searches for
it: `task job_apply (tasks[0]), candidate job-102: the template
job_apply.jinja line 11 reads field 'company', which the candidate does not
have (its fields: title, location)`. The template layer says what was read
where; this module puts the task, its index in the request, and the
candidate, history item or member in front.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from brew.context_cache import ContextCache, member_digest
from brew.errors import (
    EmptyCandidatesError,
    PromptTooLongError,
    TaskConfigError,
    TemplateFieldError,
    UnknownTaskError,
)
from brew.history import fit_token_budget, truncate_tokens
from brew.tasks import Task, TaskRegistry
from brew.tokenization import PromptTokenizer
from brew.types import Interaction, Item, Member, ScoringGroup, TaskRequest


class HistoryOutcome(str, Enum):
    """What the history budget did to one selected item."""

    KEPT = "kept"
    TRUNCATED = "truncated"
    DROPPED_FOR_BUDGET = "dropped_for_budget"


@dataclass(frozen=True)
class HistoryLine:
    """One rendered history item and what its budget did to it."""

    interaction: Interaction
    text: str
    tokens: int
    outcome: HistoryOutcome


@dataclass(frozen=True)
class RenderedContext:
    """The shared part of one (member, task): its text and how it was built."""

    text: str
    history: tuple[HistoryLine, ...]


@dataclass(frozen=True)
class PreparedTask:
    """A task request turned into the group an engine scores."""

    task: Task
    item_ids: tuple[str, ...]
    group: ScoringGroup
    context: RenderedContext
    candidate_texts: tuple[str, ...]


class Verbalizer:
    """Turns (member, task request) into token ids with one tokenizer and one
    set of tasks. Label words are checked against the tokenizer when the
    verbalizer is built, so a bad label fails at start-up, not per request.
    With a `context_cache` (brew.context_cache) a member's rendered and
    tokenized context is reused for as long as the cache keeps it."""

    def __init__(self, tasks: TaskRegistry, tokenizer: PromptTokenizer, max_model_len: int,
                 label_ids: Mapping[str, tuple[int, ...]] | None = None,
                 context_cache: ContextCache[tuple[RenderedContext, tuple[int, ...]]] | None = None) -> None:
        self.tasks = tasks
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.context_cache = context_cache
        self._label_ids = dict(label_ids) if label_ids is not None else task_label_ids(tasks, tokenizer)

    def label_ids(self, task_name: str) -> tuple[int, ...]:
        self.tasks[task_name]  # raises UnknownTaskError with the known names
        return self._label_ids[task_name]

    def prepare(self, member: Member, request: TaskRequest, index: int | None = None) -> PreparedTask:
        """Render and tokenize one task request (CPU work; no engine call).
        `index` is the task's place in the request (`tasks[index]`), which
        errors name."""
        try:
            task = self.tasks[request.task]
        except UnknownTaskError as error:
            if index is None:
                raise
            raise UnknownTaskError(f"tasks[{index}]: {error}") from None
        if not request.candidates:
            raise EmptyCandidatesError(
                f"{task_label(task.name, index)}: candidates is empty; send at least one"
            )
        context, prefix_ids = self._context(member, task, index)
        candidate_texts = tuple(
            self.render_candidate(member, task, item, index) for item in request.candidates
        )
        suffixes = tuple(tuple(ids) for ids in self.tokenizer.encode_many(candidate_texts))
        item_ids = tuple(item.item_id for item in request.candidates)
        self._check_lengths(task, index, item_ids, prefix_ids, suffixes)
        return PreparedTask(
            task=task,
            item_ids=item_ids,
            group=ScoringGroup(prefix_ids, suffixes, self._label_ids[task.name]),
            context=context,
            candidate_texts=candidate_texts,
        )

    def _context(
        self, member: Member, task: Task, index: int | None
    ) -> tuple[RenderedContext, tuple[int, ...]]:
        """The shared context and its ids (BOS first), from the cache when it has them."""

        def render() -> tuple[RenderedContext, tuple[int, ...]]:
            context = self.render_context(member, task, index)
            return context, self.tokenizer.bos_ids + tuple(self.tokenizer.encode(context.text))

        if self.context_cache is None:
            return render()
        return self.context_cache.get_or_make((task.name, task.version, member_digest(member)), render)

    def render_context(self, member: Member, task: Task, index: int | None = None) -> RenderedContext:
        """The shared context text; sees the member, never a candidate."""
        history = self._budget_history(task, index, task.history.select(member.history))
        text = _render(
            task, index, "member", member.member_id, "context",
            {
                "profile": dict(member.profile),
                "history": [line.text for line in history if line.outcome != HistoryOutcome.DROPPED_FOR_BUDGET],
                "task": task.name,
            },
        )
        return RenderedContext(text=text, history=tuple(history))

    def render_candidate(self, member: Member, task: Task, item: Item, index: int | None = None) -> str:
        """The candidate block. Trailing whitespace is removed: the label word
        carries its own leading space (' Yes')."""
        text = _render(
            task, index, "candidate", item.item_id, "candidate",
            {
                "candidate": dict(item.fields),
                "entity_type": item.entity_type,
                "profile": dict(member.profile),
                "task": task.name,
            },
        )
        return text.rstrip()

    def _budget_history(
        self, task: Task, index: int | None, selected: Sequence[Interaction]
    ) -> list[HistoryLine]:
        policy = task.history
        texts = [
            _render(task, index, "history item", interaction.item.item_id, "history_item",
                    _history_variables(interaction))
            for interaction in selected
        ]
        lines: list[HistoryLine] = []
        for interaction, text, ids in zip(selected, texts, self.tokenizer.encode_many(texts)):
            if len(ids) > policy.max_item_tokens:
                ids = truncate_tokens(ids, policy.max_item_tokens)
                lines.append(HistoryLine(interaction, self.tokenizer.decode(ids), len(ids), HistoryOutcome.TRUNCATED))
            else:
                lines.append(HistoryLine(interaction, text, len(ids), HistoryOutcome.KEPT))
        first_kept = fit_token_budget([line.tokens for line in lines], policy.max_tokens)
        for index in range(first_kept):
            line = lines[index]
            lines[index] = HistoryLine(line.interaction, line.text, line.tokens, HistoryOutcome.DROPPED_FOR_BUDGET)
        return lines

    def check_lengths(self, prepared: PreparedTask, index: int | None = None) -> None:
        """`prepare`'s length checks against this verbalizer's model length,
        for a group rendered by another verbalizer with the same tasks and
        tokenizer before the engine's limit was known (brew batch on Ray
        renders in CPU tasks, the engine's actor checks)."""
        group = prepared.group
        self._check_lengths(prepared.task, index, prepared.item_ids, group.prefix_ids, group.suffix_ids)

    def _check_lengths(
        self,
        task: Task,
        index: int | None,
        item_ids: Sequence[str],
        prefix_ids: tuple[int, ...],
        suffixes: Sequence[tuple[int, ...]],
    ) -> None:
        for item_id, suffix in zip(item_ids, suffixes):
            if not suffix:
                raise PromptTooLongError(
                    f"{culprit(task.name, index, 'candidate', item_id)}: renders to an empty block"
                )
            if len(suffix) > task.max_candidate_tokens:
                raise PromptTooLongError(
                    f"{culprit(task.name, index, 'candidate', item_id)}: {len(suffix)} tokens, over "
                    f"the task's max_candidate_tokens={task.max_candidate_tokens}; shorten its fields"
                )
            # One position stays free: the engine reads the logits of the next token.
            if len(prefix_ids) + len(suffix) >= self.max_model_len:
                raise PromptTooLongError(
                    f"{culprit(task.name, index, 'candidate', item_id)}: makes a prompt of "
                    f"{len(prefix_ids) + len(suffix)} tokens; the model accepts fewer than "
                    f"{self.max_model_len}; lower the task's history budget"
                )


def task_label_ids(tasks: TaskRegistry, tokenizer: PromptTokenizer) -> dict[str, tuple[int, ...]]:
    """Each task's label ids; TaskConfigError if a label word is not a
    single, distinct token of this tokenizer."""
    return {name: tokenizer.label_ids(name, task.labels) for name, task in tasks.items()}


def task_label(task_name: str, index: int | None) -> str:
    """`task job_apply (tasks[0])`, or `task job_apply` with no index."""
    return f"task {task_name}" if index is None else f"task {task_name} (tasks[{index}])"


# An id written bare in a message; any other (empty, blanks, quotes) is quoted.
_PLAIN_ID = re.compile(r"[\w.:@/#+-]+")


def culprit(task_name: str, index: int | None, kind: str, item_id: str) -> str:
    """`task job_apply (tasks[0]), candidate job-102`: what an error is about."""
    shown = item_id if _PLAIN_ID.fullmatch(item_id) else repr(item_id)
    return f"{task_label(task_name, index)}, {kind} {shown}"


def _render(task: Task, index: int | None, kind: str, item_id: str, block: str,
            variables: Mapping[str, object]) -> str:
    """One block of the task's template; a render error gets its culprit in front."""
    try:
        return task.template.render_block(block, variables)
    except (TemplateFieldError, TaskConfigError) as error:
        raise type(error)(f"{culprit(task.name, index, kind, item_id)}: {error}") from error


def _history_variables(interaction: Interaction) -> Mapping[str, object]:
    return {
        "action": interaction.action,
        "entity_type": interaction.item.entity_type,
        "item": dict(interaction.item.fields),
    }
