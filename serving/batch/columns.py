"""The output: one row per candidate, and the outcome of each input row.

Per candidate, in the response's order (tasks in request order, candidates
in task order), the columns of the Parquet shards:

    request_index       the row's place in the input (serving.batch.inputs)
    request_id          as the request gave it
    task_index          the task's place in the request (`tasks[i]`)
    task                the task's name
    item_id             the candidate's id
    score               the positive label's probability, as the server answers
    label_probs         every label's probability, in the task's label order
    label_logprobs      the raw full-vocabulary log-probabilities of the labels
    template_version    the task template's version that rendered the prompt
    model               the model that scored it
    prefix_tokens       tokens of the task's shared context (BOS included)
    prompt_tokens       the task's prompt tokens, all its candidates together
                        (the response's count; the context counted per candidate)

The labels of each task, in label_probs' order, are in the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from brew.types import ScoreResponse

COLUMNS = ("request_index", "request_id", "task_index", "task", "item_id", "score", "label_probs",
           "label_logprobs", "template_version", "model", "prefix_tokens", "prompt_tokens")

Row = tuple[Any, ...]  # one candidate, in COLUMNS order


@dataclass(frozen=True)
class Scored:
    """An input row that was scored: its candidates' output rows."""

    request_index: int
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class Failed:
    """An input row that could not be scored, and why (errors.jsonl)."""

    request_index: int
    line: int | None  # the JSONL line number; None for Parquet
    request_id: str | None  # None when the row could not be read as a request
    reason: str  # the error's class of problem (brew.errors reason), e.g. invalid_argument
    message: str  # what is wrong and how to fix it

    def record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"request_index": self.request_index}
        if self.line is not None:
            record["line"] = self.line
        if self.request_id is not None:
            record["request_id"] = self.request_id
        return {**record, "reason": self.reason, "message": self.message}


Outcome = Scored | Failed


def candidate_rows(request_index: int, response: ScoreResponse) -> tuple[Row, ...]:
    return tuple(
        (request_index, response.request_id, task_index, result.task, candidate.item_id, candidate.score,
         list(candidate.label_probs), list(candidate.label_logprobs), result.template_version, response.model,
         result.prefix_tokens, result.prompt_tokens)
        for task_index, result in enumerate(response.results)
        for candidate in result.candidates
    )


def schema():  # type: ignore[no-untyped-def]
    """The Parquet schema of COLUMNS (pyarrow is imported when a job writes)."""
    import pyarrow as pa

    return pa.schema([
        ("request_index", pa.int64()), ("request_id", pa.string()), ("task_index", pa.int32()),
        ("task", pa.string()), ("item_id", pa.string()), ("score", pa.float64()),
        ("label_probs", pa.list_(pa.float64())), ("label_logprobs", pa.list_(pa.float64())),
        ("template_version", pa.string()), ("model", pa.string()), ("prefix_tokens", pa.int64()),
        ("prompt_tokens", pa.int64()),
    ])


def to_table(rows: list[Row]):  # type: ignore[no-untyped-def]
    """The rows as one Arrow table of `schema()`."""
    import pyarrow as pa

    target = schema()
    return pa.Table.from_arrays([pa.array([row[i] for row in rows], type=column.type)
                                 for i, column in enumerate(target)], schema=target)
