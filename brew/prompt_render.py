"""Show a prompt exactly as the model reads it, part by part, with token counts.

`brew prompts render` is the prompt author's view of one (member, task): the
shared context and each candidate block, how many tokens each line, history
item and candidate costs, what the history policy did to every interaction,
and how much of the work the prefix cache saves. Everything comes from the
serving path itself (`Verbalizer.prepare`, `HistoryPolicy.explain`), so the
report shows the same ids the engine is given and cannot drift from them.

Token attribution: the context and each candidate block are tokenized as
wholes (as served); each token is counted in the part where its first
character lies, so the parts add up to the exact prompt length.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path

from brew.errors import InvalidRequestError
from brew.model_limits import max_model_len
from brew.tasks import TaskRegistry, example_file, load_tasks
from brew.tokenization import PromptTokenizer
from brew.types import Interaction, Member, TaskRequest
from brew.verbalize import HistoryLine, HistoryOutcome, PreparedTask, Verbalizer
from brew.wire import parse_request_json, request_from_proto


class PartKind(str, Enum):
    """Where a piece of the prompt comes from."""

    BOS = "bos"
    HEADER = "header"  # context text before the first history item: instruction, profile
    HISTORY = "history"  # one history item as it stands in the context
    FOOTER = "footer"  # context text after the last history item
    CANDIDATE = "candidate"  # a line of a candidate block


@dataclass(frozen=True)
class Segment:
    """A piece of the prompt: its text, its token ids, and for a history item,
    its index in the rendered history (`HistoryRow.index`)."""

    kind: PartKind
    text: str
    token_ids: tuple[int, ...]
    history_index: int | None = None


@dataclass(frozen=True)
class HistoryRow:
    """One interaction of the request and what the task's policy did with it.

    `outcome` is the verbalizer's own HistoryOutcome value, or "dropped_by_policy"
    for interactions the policy left out before any budget (dedupe, downsample,
    max_items); `item_tokens` is the item's own token count (the budgets count
    these), `None` when it was never rendered."""

    index: int
    interaction: Interaction
    outcome: str
    reason: str
    text: str
    item_tokens: int | None


@dataclass(frozen=True)
class CandidateRender:
    item_id: str
    text: str
    token_ids: tuple[int, ...]
    lines: tuple[Segment, ...]


@dataclass(frozen=True)
class PromptRender:
    """Everything `brew prompts render` shows for one (member, task)."""

    prepared: PreparedTask
    context_segments: tuple[Segment, ...]
    history: tuple[HistoryRow, ...]
    candidates: tuple[CandidateRender, ...]
    max_model_len: int

    @property
    def prefix_ids(self) -> tuple[int, ...]:
        return self.prepared.group.prefix_ids

    @property
    def total_prompt_tokens(self) -> int:
        """Tokens of all N prompts together, as if nothing were cached."""
        return sum(len(self.prefix_ids) + len(c.token_ids) for c in self.candidates)

    @property
    def shared_tokens(self) -> int:
        """Tokens a prefix cache does not recompute: the prefix, for every
        candidate after the first."""
        return len(self.prefix_ids) * (len(self.candidates) - 1)

    @property
    def shared_share(self) -> float:
        """prefix tokens x (N - 1) / total tokens of all N prompts: the share
        of prompt tokens an ideal prefix cache saves for this request. (vLLM
        caches whole KV blocks, 16 tokens by default, so it saves up to 15
        tokens less per candidate.)"""
        total = self.total_prompt_tokens
        return self.shared_tokens / total if total else 0.0


POLICY_DROPPED = "dropped_by_policy"


def render_prompt(verbalizer: Verbalizer, member: Member, request: TaskRequest,
                  index: int | None = None) -> PromptRender:
    """Prepare one task request the way serving does and explain the result;
    `index` is the task's place in its request, for error messages."""
    prepared = verbalizer.prepare(member, request, index)
    tokenizer = verbalizer.tokenizer
    history = history_rows(prepared, member)
    context_segments = split_context(tokenizer, prepared, history)
    candidates = tuple(
        CandidateRender(item_id, text, ids, tuple(split_lines(tokenizer, text, PartKind.CANDIDATE)))
        for item_id, text, ids in zip(prepared.item_ids, prepared.candidate_texts, prepared.group.suffix_ids)
    )
    return PromptRender(prepared, context_segments, history, candidates, verbalizer.max_model_len)


def render_request_file(
    prompts_dir: Path,
    model_dir: Path,
    request_path: Path | None,
    task_name: str,
    max_length: int | None = None,
) -> tuple[PromptRender, PromptTokenizer]:
    """Load what `brew prompts render` needs (tasks, the tokenizer, no
    weights) and render the request file's member for one of its tasks.

    Without a request file, the task's own example in the prompts directory
    (`<prompts>/examples/<task>.json`, the one `brew prompts lint` renders).
    A task the directory does not define is refused with the ones it does,
    before any request is read."""
    tasks = load_tasks(prompts_dir)
    task = tasks[task_name]  # UnknownTaskError: "unknown task 'x'; known tasks: ..."
    request_path = request_path_for(prompts_dir, task_name, request_path)
    request = request_from_proto(parse_request_json(request_path.read_text(encoding="utf-8")))
    found = [(index, t) for index, t in enumerate(request.tasks) if t.task == task_name]
    if not found:
        named = ", ".join(t.task for t in request.tasks) or "no tasks"
        raise InvalidRequestError(f"{request_path} has no candidates for task {task_name!r}; it has: {named}")
    index, task_request = found[0]
    tokenizer = PromptTokenizer.from_pretrained(model_dir)
    limit = max_length or max_model_len(model_dir)
    verbalizer = Verbalizer(TaskRegistry({task_name: task}), tokenizer, limit)
    return render_prompt(verbalizer, request.member, task_request, index), tokenizer


def request_path_for(prompts_dir: Path, task_name: str, request_path: Path | None) -> Path:
    """The request file `brew prompts render` reads: the one given, else the
    task's example in the prompts directory, which must exist."""
    if request_path is not None:
        return request_path
    example = example_file(prompts_dir, task_name)
    if not example.is_file():
        raise InvalidRequestError(
            f"task {task_name} has no example request: {example} does not exist; write one (a "
            f"ScoreCandidatesRequest in the proto's JSON mapping, as brew prompts lint needs) "
            f"or pass --request FILE"
        )
    return example


def history_rows(prepared: PreparedTask, member: Member) -> tuple[HistoryRow, ...]:
    """Every interaction of the member, oldest first: the verbalizer's records
    for the ones the policy selected, the policy's reasons for the others."""
    policy = prepared.task.history
    lines: dict[int, HistoryLine] = {id(line.interaction): line for line in prepared.context.history}
    reasons = {id(d.interaction): d.reason for d in policy.explain(member.history).dropped}
    rows = []
    for index, interaction in enumerate(sorted(member.history, key=lambda i: i.timestamp)):
        line = lines.get(id(interaction))
        if line is None:
            rows.append(HistoryRow(index, interaction, POLICY_DROPPED, reasons.get(id(interaction), ""), "", None))
            continue
        reason = {
            HistoryOutcome.KEPT: "",
            HistoryOutcome.TRUNCATED: f"cut to max_item_tokens={policy.max_item_tokens}",
            HistoryOutcome.DROPPED_FOR_BUDGET: f"oldest over the history max_tokens={policy.max_tokens}",
        }[line.outcome]
        rows.append(HistoryRow(index, interaction, line.outcome.value, reason, line.text, line.tokens))
    return tuple(rows)


def split_context(
    tokenizer: PromptTokenizer, prepared: PreparedTask, history: Sequence[HistoryRow]
) -> tuple[Segment, ...]:
    """The prefix as segments: BOS, header lines, one segment per history item
    shown, footer lines. A history item is found by its exact text in the
    context (the template writes `{{ line }}`); its segment runs to the end of
    its line. If a template transforms the lines, they count as plain lines."""
    text = prepared.context.text
    ids, offsets = tokenizer.encode_with_offsets(text)
    bos = tokenizer.bos_ids
    if bos + tuple(ids) != prepared.group.prefix_ids:
        raise RuntimeError("the context tokenized with offsets differs from the verbalizer's ids")
    spans: list[tuple[int, int, int]] = []  # (start, end, history index)
    cursor = 0
    for row in history:
        if row.outcome in (POLICY_DROPPED, HistoryOutcome.DROPPED_FOR_BUDGET.value) or not row.text:
            continue
        start = text.find(row.text, cursor)
        if start < 0:
            spans = []
            break
        end = _end_of_line(text, start + len(row.text))
        spans.append((start, end, row.index))
        cursor = end
    # Template text between two items (a separator) counts with the item before it.
    spans = [(start, spans[n + 1][0] if n + 1 < len(spans) else end, index)
             for n, (start, end, index) in enumerate(spans)]
    pieces: list[tuple[int, int, PartKind, int | None]] = []
    position = 0
    for start, end, index in spans:
        pieces += [(a, b, PartKind.HEADER, None) for a, b in _line_spans(text, position, start)]
        pieces.append((start, end, PartKind.HISTORY, index))
        position = end
    tail_kind = PartKind.FOOTER if spans else PartKind.HEADER
    pieces += [(a, b, tail_kind, None) for a, b in _line_spans(text, position, len(text))]
    starts = [offset[0] for offset in offsets]
    segments = [Segment(PartKind.BOS, "", bos)] if bos else []
    for start, end, kind, index in pieces:
        first, last = bisect.bisect_left(starts, start), bisect.bisect_left(starts, end)
        segments.append(Segment(kind, text[start:end], tuple(ids[first:last]), index))
    return tuple(segments)


def split_lines(tokenizer: PromptTokenizer, text: str, kind: PartKind) -> list[Segment]:
    """A text part (tokenized whole, as served) as one segment per line."""
    ids, offsets = tokenizer.encode_with_offsets(text)
    starts = [offset[0] for offset in offsets]
    segments = []
    for start, end in _line_spans(text, 0, len(text)):
        first, last = bisect.bisect_left(starts, start), bisect.bisect_left(starts, end)
        segments.append(Segment(kind, text[start:end], tuple(ids[first:last])))
    return segments


def _end_of_line(text: str, position: int) -> int:
    """`position` moved past trailing blanks and one newline, if only blanks
    stand between them."""
    newline = text.find("\n", position)
    if newline >= 0 and not text[position:newline].strip():
        return newline + 1
    return position


def _line_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans = []
    while start < end:
        newline = text.find("\n", start, end)
        stop = end if newline < 0 else newline + 1
        spans.append((start, stop))
        start = stop
    return spans


# --- output -------------------------------------------------------------------------

def _visible(text: str) -> str:
    """One line as printed: a final newline as '⏎', trailing blanks as '·'."""
    newline = text.endswith("\n")
    body = text[:-1] if newline else text
    stripped = body.rstrip(" \t")
    body = stripped + "·" * (len(body) - len(stripped))
    return body.replace("\n", "⏎") + ("⏎" if newline else "")


def _time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_text(render: PromptRender, tokenizer: PromptTokenizer) -> str:
    """The human report: every line of the prompt with its token count."""
    prepared = render.prepared
    task = prepared.task
    group = prepared.group
    n = len(render.candidates)
    labels = ", ".join(f"{word!r}={token}" for word, token in zip(task.labels, group.label_ids))
    out = [
        f"task {task.name}  version {task.version}  max model length {render.max_model_len} tokens",
        f"labels {labels}  (positive {task.positive_label!r})",
        "",
        f"=== context: {len(group.prefix_ids)} tokens, shared by all {n} candidate(s) ===",
    ]
    for segment in render.context_segments:
        tag = f"H{segment.history_index}" if segment.kind is PartKind.HISTORY else segment.kind.value
        text = "<BOS>" if segment.kind is PartKind.BOS else _visible(segment.text)
        out.append(f"{len(segment.token_ids):5} {tag:>7} | {text}")
    for number, candidate in enumerate(render.candidates, 1):
        prompt = len(group.prefix_ids) + len(candidate.token_ids)
        out.append(f"=== candidate {number}/{n} {candidate.item_id}: {len(candidate.token_ids)} tokens "
                   f"(prompt {prompt} of {render.max_model_len}) ===")
        out += [f"{len(line.token_ids):5}         | {_visible(line.text)}" for line in candidate.lines]
        out.append(f"{'':14}| ^ the label token is read right after this")
    out += ["", f"=== history: {len(render.history)} interaction(s), oldest first ==="]
    out.append(f"{'':4}{'time':<21}{'action':<12}{'item':<14}{'outcome':<19}{'tokens':>6}  reason".rstrip())
    for row in render.history:
        interaction = row.interaction
        tokens = "" if row.item_tokens is None else str(row.item_tokens)
        out.append(f"H{row.index:<3}{_time(interaction.timestamp):<21}{interaction.action:<12}"
                   f"{interaction.item.item_id:<14}{row.outcome:<19}{tokens:>6}  {row.reason}".rstrip())
    counts = part_token_counts(render)
    history_total = sum(count for kind, _, count in counts if kind is PartKind.HISTORY)
    shown = sum(1 for kind, _, _ in counts if kind is PartKind.HISTORY)
    out += [
        "",
        "=== token counts ===",
        f"  context  {len(group.prefix_ids):5}  = bos {_sum(counts, PartKind.BOS)} + header (instruction, profile) "
        f"{_sum(counts, PartKind.HEADER)} + history {history_total} ({shown} items) + footer {_sum(counts, PartKind.FOOTER)}",
    ]
    out += [f"  {c.item_id:<14}{len(c.token_ids):>4}" for c in render.candidates]
    out += [
        f"  all {n} prompts {render.total_prompt_tokens} tokens; with the prefix cache "
        f"{render.total_prompt_tokens - render.shared_tokens} computed",
        f"  shared by candidates: {len(group.prefix_ids)} prefix x ({n} - 1) / {render.total_prompt_tokens} "
        f"= {render.shared_share:.1%} of prompt tokens",
    ]
    return "\n".join(out)


def part_token_counts(render: PromptRender) -> list[tuple[PartKind, str, int]]:
    """(kind, name, tokens) per part: bos, header, each history item, footer,
    each candidate; they add up to the tokens of all prompts' distinct parts."""
    counts: list[tuple[PartKind, str, int]] = []
    for segment in render.context_segments:
        if segment.kind is PartKind.HISTORY:
            counts.append((segment.kind, f"H{segment.history_index}", len(segment.token_ids)))
        elif counts and counts[-1][0] is segment.kind:
            counts[-1] = (segment.kind, segment.kind.value, counts[-1][2] + len(segment.token_ids))
        else:
            counts.append((segment.kind, segment.kind.value, len(segment.token_ids)))
    counts += [(PartKind.CANDIDATE, c.item_id, len(c.token_ids)) for c in render.candidates]
    return counts


def _sum(counts: Sequence[tuple[PartKind, str, int]], kind: PartKind) -> int:
    return sum(count for k, _, count in counts if k is kind)


def to_json(render: PromptRender) -> dict[str, object]:
    """The same report, machine-readable: exact texts and token ids included."""
    prepared = render.prepared
    task = prepared.task
    group = prepared.group
    return {
        "task": task.name,
        "version": task.version,
        "max_model_len": render.max_model_len,
        "labels": list(task.labels),
        "label_ids": list(group.label_ids),
        "positive_label": task.positive_label,
        "context": {
            "text": prepared.context.text,
            "token_ids": list(group.prefix_ids),
            "tokens": len(group.prefix_ids),
            "segments": [
                {"kind": s.kind.value, "history_index": s.history_index, "text": s.text,
                 "tokens": len(s.token_ids), "token_ids": list(s.token_ids)}
                for s in render.context_segments
            ],
        },
        "history": [
            {"index": row.index, "item_id": row.interaction.item.item_id, "action": row.interaction.action,
             "entity_type": row.interaction.item.entity_type, "time": _time(row.interaction.timestamp),
             "outcome": row.outcome, "reason": row.reason, "text": row.text, "item_tokens": row.item_tokens}
            for row in render.history
        ],
        "candidates": [
            {"item_id": c.item_id, "text": c.text, "token_ids": list(c.token_ids), "tokens": len(c.token_ids),
             "prompt_tokens": len(group.prefix_ids) + len(c.token_ids)}
            for c in render.candidates
        ],
        "parts": [{"kind": kind.value, "name": name, "tokens": count} for kind, name, count in part_token_counts(render)],
        "prefix_cache": {
            "prefix_tokens": len(group.prefix_ids),
            "candidates": len(render.candidates),
            "total_prompt_tokens": render.total_prompt_tokens,
            "computed_with_prefix_cache": render.total_prompt_tokens - render.shared_tokens,
            "shared_share": render.shared_share,
            "definition": "prefix_tokens * (candidates - 1) / total_prompt_tokens",
        },
    }
