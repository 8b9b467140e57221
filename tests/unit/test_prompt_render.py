"""`brew prompts render`: the ids it reports are the verbalizer's, its parts
add up to the prompt, and its history table is the policy's own account.
The demo tokenizer only, no weights."""

from __future__ import annotations

import json

import pytest

from brew import defaults
from brew.cli import main
from brew.errors import InvalidRequestError
from brew.prompt_render import POLICY_DROPPED, PartKind, render_prompt, render_request_file, to_json
from brew.tasks import load_tasks
from brew.verbalize import Verbalizer
from brew.wire import parse_request_json, request_from_proto

TASKS = ("job_apply", "feed_engagement", "pymk_connect")


@pytest.fixture(scope="module")
def example():
    return request_from_proto(parse_request_json(defaults.EXAMPLE_REQUEST.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def verbalizer(shipped_tasks, demo_tokenizer) -> Verbalizer:
    return Verbalizer(shipped_tasks, demo_tokenizer, max_model_len=1024)


def renders(verbalizer, example):
    return [render_prompt(verbalizer, example.member, request) for request in example.tasks]


def test_the_reported_ids_are_the_engines_ids(verbalizer, example):
    for request, render in zip(example.tasks, renders(verbalizer, example)):
        group = verbalizer.prepare(example.member, request).group
        report = to_json(render)
        assert tuple(report["context"]["token_ids"]) == group.prefix_ids
        assert tuple(tuple(c["token_ids"]) for c in report["candidates"]) == group.suffix_ids
        assert tuple(report["label_ids"]) == group.label_ids
        segment_ids = [i for s in report["context"]["segments"] for i in s["token_ids"]]
        assert tuple(segment_ids) == group.prefix_ids


def test_the_parts_add_up_to_every_token(verbalizer, example):
    for render in renders(verbalizer, example):
        parts = to_json(render)["parts"]
        distinct = len(render.prefix_ids) + sum(len(c.token_ids) for c in render.candidates)
        assert sum(p["tokens"] for p in parts) == distinct
        assert [p["kind"] for p in parts][:2] == ["bos", "header"]
        assert sum(1 for p in parts if p["kind"] == "candidate") == len(render.candidates)
        for candidate in render.candidates:
            assert sum(len(line.token_ids) for line in candidate.lines) == len(candidate.token_ids)


def test_the_exact_texts_are_reported(verbalizer, example):
    request = example.tasks[0]
    prepared = verbalizer.prepare(example.member, request)
    report = to_json(render_prompt(verbalizer, example.member, request))
    assert report["context"]["text"] == prepared.context.text
    assert [c["text"] for c in report["candidates"]] == list(prepared.candidate_texts)
    assert "".join(s["text"] for s in report["context"]["segments"]) == prepared.context.text


def test_each_shown_history_item_is_one_segment(verbalizer, example):
    render = renders(verbalizer, example)[0]
    shown = [row for row in render.history if row.outcome in ("kept", "truncated")]
    segments = [s for s in render.context_segments if s.kind is PartKind.HISTORY]
    assert [s.history_index for s in segments] == [row.index for row in shown]
    for segment, row in zip(segments, shown):
        assert segment.text.startswith(row.text)


def test_the_history_table_gives_the_policys_reasons(verbalizer, example):
    render = renders(verbalizer, example)[0]
    assert len(render.history) == len(example.member.history)
    dropped = [row for row in render.history if row.outcome == POLICY_DROPPED]
    # job-7 was viewed, then applied to: dedupe keeps the application.
    assert [(row.interaction.item.item_id, row.interaction.action) for row in dropped] == [("job-7", "viewed")]
    assert "duplicate" in dropped[0].reason


def test_budget_outcomes_come_from_the_verbalizer(write_prompts, demo_tokenizer, example):
    config = '[labels]\nwords = [" Yes", " No"]\n[history]\nmax_item_tokens = 3\nmax_tokens = 6\n'
    template = ("{% block context %}task\n{% for line in history %}{{ line }}\n{% endfor %}{% endblock %}"
                "{% block history_item %}{{ action }} {{ entity_type }} {{ item.title | default('') }}{% endblock %}"
                "{% block candidate %}{{ candidate.title | default('x') }}\nanswer:{% endblock %}")
    prompts = write_prompts(job_apply=(config, template))
    verbalizer = Verbalizer(load_tasks(prompts), demo_tokenizer, max_model_len=1024)
    render = render_prompt(verbalizer, example.member, example.tasks[0])
    outcomes = {row.outcome for row in render.history}
    assert {"truncated", "dropped_for_budget", POLICY_DROPPED} <= outcomes
    prepared = render.prepared
    assert [(line.interaction, line.outcome.value) for line in prepared.context.history] == [
        (row.interaction, row.outcome) for row in render.history if row.outcome != POLICY_DROPPED
    ]


def test_the_shared_share_is_the_prefix_counted_once(verbalizer, example):
    render = renders(verbalizer, example)[0]
    n = len(render.candidates)
    total = sum(len(render.prefix_ids) + len(c.token_ids) for c in render.candidates)
    assert render.shared_share == pytest.approx(len(render.prefix_ids) * (n - 1) / total)
    assert to_json(render)["prefix_cache"]["computed_with_prefix_cache"] == total - len(render.prefix_ids) * (n - 1)


def test_a_task_the_request_lacks_is_refused_with_the_ones_it_has(tmp_path):
    request = tmp_path / "r.json"
    text = json.loads(defaults.EXAMPLE_REQUEST.read_text(encoding="utf-8"))
    text["tasks"] = text["tasks"][:1]
    request.write_text(json.dumps(text), encoding="utf-8")
    with pytest.raises(InvalidRequestError, match="no candidates for task 'pymk_connect'.*job_apply"):
        render_request_file(defaults.PROMPTS_DIR, defaults.DEMO_MODEL_DIR, request, "pymk_connect")


@pytest.mark.parametrize("task", TASKS)
def test_the_command_prints_json_with_the_engines_ids(task, verbalizer, example, capsys):
    assert main(["prompts", "render", "--task", task, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    request = next(t for t in example.tasks if t.task == task)
    group = verbalizer.prepare(example.member, request).group
    assert [tuple(report["context"]["token_ids"]) + tuple(c["token_ids"]) for c in report["candidates"]] == [
        group.prompt_ids(i) for i in range(group.num_candidates)
    ]


def test_the_command_prints_every_part(capsys):
    assert main(["prompts", "render", "--task", "job_apply"]) == 0
    out = capsys.readouterr().out
    for text in ("=== context:", "=== candidate 3/3 job-103", "outcome:", "dropped_by_policy", "shared by candidates"):
        assert text in out


def test_the_command_names_an_unknown_task(capsys):
    assert main(["prompts", "render", "--task", "nope"]) == 2
    assert "no candidates for task 'nope'" in capsys.readouterr().err
