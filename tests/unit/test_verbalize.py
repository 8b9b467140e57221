"""The verbalizer: shared prefix ids per member and task, history budgets,
and the errors a caller gets for bad input. The demo model's tokenizer only
(no weights); token budgets are derived from it in the test, not hard-coded."""

from __future__ import annotations

import dataclasses

import pytest

from brew import defaults
from brew.errors import (
    EmptyCandidatesError,
    PromptTooLongError,
    TemplateFieldError,
    UnknownTaskError,
)
from brew.tasks import load_tasks
from brew.types import Interaction, Item, Member, TaskRequest
from brew.verbalize import HistoryOutcome, Verbalizer
from brew.wire import parse_request_json, request_from_proto

TEMPLATE = (
    "{% block context %}member: {{ profile.title }}\n"
    "{% for line in history %}{{ line }}\n{% endfor %}{% endblock %}"
    "{% block history_item %}{{ action }} {{ item.title }}"
    "{% if item.description is defined %}. {{ item.description }}{% endif %}{% endblock %}"
    "{% block candidate %}job: {{ candidate.title }}\nanswer:  \n{% endblock %}"
)
LONG_DESCRIPTION = " ".join(["python sql statistics spark pandas tableau"] * 8)


def config(max_tokens: int, max_item_tokens: int = 8, max_candidate_tokens: int = 128) -> str:
    return (
        f"max_candidate_tokens = {max_candidate_tokens}\n"
        '[labels]\nwords = [" Yes", " No"]\n'
        f"[history]\nmax_item_tokens = {max_item_tokens}\nmax_tokens = {max_tokens}\n"
    )


def job(item_id: str, title: str, **fields: str) -> Item:
    return Item(item_id, "job", {"title": title, **fields})


MEMBER = Member(
    member_id="m-1",
    profile={"title": "data analyst"},
    history=(
        Interaction("viewed", job("j-1", "data analyst"), 1.0),
        Interaction("applied", job("j-2", "ml engineer"), 2.0),
        Interaction("viewed", job("j-3", "data scientist", description=LONG_DESCRIPTION), 3.0),
        Interaction("liked", job("j-4", "sales manager"), 4.0),
    ),
)
CANDIDATES = (job("c-1", "ml engineer"), job("c-2", "data scientist"), job("c-3", "ux designer"))


@pytest.fixture(scope="module")
def verbalizer(shipped_tasks, demo_tokenizer) -> Verbalizer:
    return Verbalizer(shipped_tasks, demo_tokenizer, max_model_len=1024)


@pytest.fixture(scope="module")
def example():
    return request_from_proto(parse_request_json(defaults.EXAMPLE_REQUEST.read_text(encoding="utf-8")))


def own_verbalizer(write_prompts, demo_tokenizer, max_model_len: int = 1024, **budgets: int) -> Verbalizer:
    prompts = write_prompts(t=(config(**budgets), TEMPLATE))
    return Verbalizer(load_tasks(prompts), demo_tokenizer, max_model_len=max_model_len)


# --- shared prefixes ------------------------------------------------------------------

def test_every_candidate_of_a_member_starts_with_the_same_prefix(verbalizer, example, demo_tokenizer):
    for request in example.tasks:
        prepared = verbalizer.prepare(example.member, request)
        group = prepared.group
        assert group.prefix_ids[: len(demo_tokenizer.bos_ids)] == demo_tokenizer.bos_ids
        assert group.num_candidates == len(request.candidates) >= 2
        prompts = [group.prompt_ids(i) for i in range(group.num_candidates)]
        assert all(prompt[: len(group.prefix_ids)] == group.prefix_ids for prompt in prompts)
        assert all(len(prompt) > len(group.prefix_ids) for prompt in prompts)
        assert prepared.item_ids == tuple(item.item_id for item in request.candidates)


def test_the_prefix_does_not_depend_on_the_candidates(verbalizer, example):
    # What makes the prefix cache hit across requests of the same member.
    request = example.tasks[0]
    whole = verbalizer.prepare(example.member, request)
    last_only = verbalizer.prepare(example.member, TaskRequest(request.task, request.candidates[-1:]))
    assert last_only.group.prefix_ids == whole.group.prefix_ids
    assert last_only.group.suffix_ids == whole.group.suffix_ids[-1:]
    for item in request.candidates:
        assert item.fields["title"] not in whole.context.text.split("history:")[0]


def test_the_same_request_gives_the_same_ids(verbalizer, example):
    first = [verbalizer.prepare(example.member, request).group for request in example.tasks]
    again = [verbalizer.prepare(example.member, request).group for request in example.tasks]
    assert first == again


def test_the_tasks_differ_in_prefix_and_labels(verbalizer, example, demo_tokenizer):
    groups = {r.task: verbalizer.prepare(example.member, r).group for r in example.tasks}
    assert len({g.prefix_ids for g in groups.values()}) == 3
    assert groups["job_apply"].label_ids == tuple(
        demo_tokenizer.encode(word)[0] for word in (" applied", " viewed", " dismissed", " none")
    )
    assert groups["feed_engagement"].label_ids == groups["pymk_connect"].label_ids
    assert verbalizer.label_ids("pymk_connect") == groups["pymk_connect"].label_ids


def test_candidate_blocks_lose_trailing_whitespace(write_prompts, demo_tokenizer):
    prepared = own_verbalizer(write_prompts, demo_tokenizer, max_tokens=100).prepare(
        MEMBER, TaskRequest("t", CANDIDATES)
    )
    assert prepared.candidate_texts == ("job: ml engineer\nanswer:", "job: data scientist\nanswer:",
                                        "job: ux designer\nanswer:")


def test_the_example_history_is_deduped_before_it_is_shown(verbalizer, example):
    prepared = verbalizer.prepare(example.member, example.tasks[0])
    shown = [(line.interaction.item.item_id, line.interaction.action) for line in prepared.context.history]
    assert ("job-7", "applied") in shown and ("job-7", "viewed") not in shown
    assert [line.interaction.timestamp for line in prepared.context.history] == sorted(
        line.interaction.timestamp for line in prepared.context.history
    )
    assert "applied job: mid ml engineer, berlin\n" in prepared.context.text


# --- history budgets ---------------------------------------------------------------

def test_history_outcomes_kept_truncated_and_dropped(write_prompts, demo_tokenizer):
    request = TaskRequest("t", CANDIDATES[:1])
    unbounded = own_verbalizer(write_prompts, demo_tokenizer, max_tokens=10_000).prepare(MEMBER, request)
    counts = [line.tokens for line in unbounded.context.history]
    assert [line.outcome for line in unbounded.context.history] == [
        HistoryOutcome.KEPT, HistoryOutcome.KEPT, HistoryOutcome.TRUNCATED, HistoryOutcome.KEPT,
    ]
    assert counts[2] == 8  # cut to max_item_tokens

    # A budget for the three most recent items: the oldest goes.
    budget = sum(counts[1:])
    lines = own_verbalizer(write_prompts, demo_tokenizer, max_tokens=budget).prepare(MEMBER, request).context
    assert [line.outcome for line in lines.history] == [
        HistoryOutcome.DROPPED_FOR_BUDGET, HistoryOutcome.KEPT, HistoryOutcome.TRUNCATED, HistoryOutcome.KEPT,
    ]
    full_line = f"viewed data scientist. {LONG_DESCRIPTION}"
    truncated = demo_tokenizer.decode(demo_tokenizer.encode(full_line)[:8])
    assert lines.history[2].text == truncated and full_line.startswith(truncated)
    assert lines.text == f"member: data analyst\napplied ml engineer\n{truncated}\nliked sales manager\n"

    # One token less and the next oldest goes too.
    tighter = own_verbalizer(write_prompts, demo_tokenizer, max_tokens=budget - 1)
    lines = tighter.prepare(MEMBER, request).context
    assert [line.outcome for line in lines.history][:2] == [HistoryOutcome.DROPPED_FOR_BUDGET] * 2
    assert "applied ml engineer" not in lines.text


def test_a_zero_history_budget_shows_no_history(write_prompts, demo_tokenizer):
    prepared = own_verbalizer(write_prompts, demo_tokenizer, max_tokens=0).prepare(
        MEMBER, TaskRequest("t", CANDIDATES[:1])
    )
    assert {line.outcome for line in prepared.context.history} == {HistoryOutcome.DROPPED_FOR_BUDGET}
    assert prepared.context.text == "member: data analyst\n"


# --- errors: each names the task, its index, the item, the field, the template line ---

def line_of(template_file: str, text: str) -> int:
    """The line of a shipped template that holds `text`, so a test survives an edit above it."""
    lines = (defaults.PROMPTS_DIR / template_file).read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, 1) if text in line)


def test_an_unknown_task_is_refused_with_the_known_ones(verbalizer, example):
    with pytest.raises(UnknownTaskError, match="^unknown task 'job_search'; known tasks: feed_engagement"):
        verbalizer.prepare(example.member, TaskRequest("job_search", example.tasks[0].candidates))
    with pytest.raises(UnknownTaskError, match=r"^tasks\[2\]: unknown task 'job_search'; known tasks: "
                                               r"feed_engagement, job_apply, pymk_connect, rerank$"):
        verbalizer.prepare(example.member, TaskRequest("job_search", example.tasks[0].candidates), 2)
    with pytest.raises(UnknownTaskError):
        verbalizer.label_ids("job_search")


def test_a_task_without_candidates_is_refused(verbalizer, example):
    with pytest.raises(EmptyCandidatesError, match="^task job_apply: candidates is empty; send at least one$"):
        verbalizer.prepare(example.member, TaskRequest("job_apply", ()))
    with pytest.raises(EmptyCandidatesError, match=r"^task job_apply \(tasks\[1\]\): candidates is empty"):
        verbalizer.prepare(example.member, TaskRequest("job_apply", ()), 1)


def test_a_candidate_without_a_template_field_is_named(verbalizer, example):
    candidates = example.tasks[0].candidates
    broken = dataclasses.replace(candidates[1], fields={k: v for k, v in candidates[1].fields.items() if k != "skills"})
    with pytest.raises(TemplateFieldError) as caught:
        verbalizer.prepare(example.member, TaskRequest("job_apply", (candidates[0], broken)), 0)
    line = line_of("job_apply.jinja", "{{ candidate.skills }}")
    assert str(caught.value) == (
        f"task job_apply (tasks[0]), candidate {broken.item_id}: the template job_apply.jinja line {line} "
        f"reads field 'skills', which the candidate does not have "
        f"(its fields: {', '.join(sorted(broken.fields))})"
    )


def test_a_profile_without_a_template_field_is_named_in_its_partial(verbalizer, example):
    profile = {k: v for k, v in example.member.profile.items() if k != "school"}
    member = dataclasses.replace(example.member, profile=profile)
    with pytest.raises(TemplateFieldError) as caught:
        verbalizer.prepare(member, example.tasks[2], 2)
    task = example.tasks[2].task
    assert str(caught.value) == (
        f"task {task} (tasks[2]), member m-42: the template _member.jinja line "
        f"{line_of('_member.jinja', '{{ profile.school }}')} (included from {task}.jinja line "
        f"{line_of(f'{task}.jinja', '_member.jinja')}) reads field 'school', which the member's profile "
        f"does not have (its fields: {', '.join(sorted(profile))})"
    )


def test_a_profile_field_read_by_the_candidate_block_names_the_candidate(write_prompts, demo_tokenizer):
    template = TEMPLATE.replace("job: {{ candidate.title }}\n", "job: {{ candidate.title }}\n"
                                "same city: {{ candidate.city == profile.city }}\n")
    verbalizer = Verbalizer(load_tasks(write_prompts(t=(config(max_tokens=100), template))), demo_tokenizer, 1024)
    with pytest.raises(TemplateFieldError, match=r"^task t \(tasks\[1\]\), candidate c-1: the template t.jinja "
                                                 r"line 4 reads field 'city', which the candidate does not have "
                                                 r"\(its fields: title\)$"):
        verbalizer.prepare(MEMBER, TaskRequest("t", CANDIDATES), 1)
    candidates = tuple(dataclasses.replace(c, fields={**c.fields, "city": "berlin"}) for c in CANDIDATES)
    with pytest.raises(TemplateFieldError, match=r"^task t \(tasks\[1\]\), candidate c-1: the template t.jinja "
                                                 r"line 4 reads field 'city', which the member's profile does not "
                                                 r"have \(its fields: title\)$"):
        verbalizer.prepare(MEMBER, TaskRequest("t", candidates), 1)


def test_a_history_item_without_a_template_field_is_named_in_the_partial(verbalizer, example):
    item = Item("job-1", "job", {"title": "ml engineer", "seniority": "mid"})
    member = dataclasses.replace(example.member, history=(Interaction("viewed", item, 1.0),))
    with pytest.raises(TemplateFieldError) as caught:
        verbalizer.prepare(member, example.tasks[0], 0)
    task = example.tasks[0].task
    assert str(caught.value) == (
        f"task {task} (tasks[0]), history item job-1: the template _history_item.jinja line "
        f"{line_of('_history_item.jinja', '{{ action }}')} (included from {task}.jinja line "
        f"{line_of(f'{task}.jinja', '_history_item.jinja')}) reads field 'location', which the history item "
        f"does not have (its fields: seniority, title)"
    )
    assert "dict object" not in str(caught.value)


def test_a_history_item_of_a_type_without_a_branch_renders_generically(verbalizer, example):
    group = Item("group-3", "group", {"name": "analysts", "city": "berlin"})
    member = dataclasses.replace(example.member, history=(Interaction("joined", group, 1.0),))
    for index, request in enumerate(example.tasks):
        prepared = verbalizer.prepare(member, request, index)
        assert [line.text for line in prepared.context.history] == ["joined group: city berlin, name analysts"]
        assert [line.outcome for line in prepared.context.history] == [HistoryOutcome.KEPT]


def test_an_id_that_would_not_read_as_one_is_quoted(verbalizer, example):
    for item_id, shown in (("", "''"), ("job 7", "'job 7'"), ("job-7", "job-7")):
        item = Item(item_id, "job", {"title": "ml engineer"})
        member = dataclasses.replace(example.member, history=(Interaction("viewed", item, 1.0),))
        with pytest.raises(TemplateFieldError, match=rf"^task job_apply, history item {shown}: "):
            verbalizer.prepare(member, TaskRequest("job_apply", example.tasks[0].candidates))


def test_a_prompt_over_the_model_length_is_refused(verbalizer, shipped_tasks, demo_tokenizer, example):
    request = example.tasks[0]
    group = verbalizer.prepare(example.member, request).group
    longest = max(len(group.prompt_ids(i)) for i in range(group.num_candidates))
    # One position stays free for the answer token.
    Verbalizer(shipped_tasks, demo_tokenizer, max_model_len=longest + 1).prepare(example.member, request)
    tight = Verbalizer(shipped_tasks, demo_tokenizer, max_model_len=longest)
    with pytest.raises(PromptTooLongError, match=rf"^task {request.task}, candidate \S+: makes a prompt of "
                                                 rf"{longest} tokens; the model accepts fewer than {longest}; "
                                                 rf"lower the task's history budget$"):
        tight.prepare(example.member, request)


def test_a_candidate_over_its_token_budget_is_refused(write_prompts, demo_tokenizer):
    long_title = job("c-9", " ".join(["senior data scientist"] * 20))
    verbalizer = own_verbalizer(write_prompts, demo_tokenizer, max_tokens=100, max_candidate_tokens=16)
    with pytest.raises(PromptTooLongError, match=r"^task t \(tasks\[0\]\), candidate c-9: \d+ tokens, over the "
                                                 r"task's max_candidate_tokens=16; shorten its fields$"):
        verbalizer.prepare(MEMBER, TaskRequest("t", (CANDIDATES[0], long_title)), 0)


def test_an_empty_candidate_block_is_refused(write_prompts, demo_tokenizer):
    template = TEMPLATE.replace("job: {{ candidate.title }}\nanswer:  \n", "{{ candidate.title }}")
    prompts = write_prompts(t=(config(max_tokens=100), template))
    verbalizer = Verbalizer(load_tasks(prompts), demo_tokenizer, max_model_len=1024)
    with pytest.raises(PromptTooLongError, match="^task t, candidate c-0: renders to an empty block$"):
        verbalizer.prepare(MEMBER, TaskRequest("t", (job("c-0", "   "),)))
