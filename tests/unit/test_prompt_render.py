"""`brew prompts render`: the ids it reports are the verbalizer's, its parts
add up to the prompt, and its history table is the policy's own account.
The demo tokenizer only, no weights."""

from __future__ import annotations

import json

import pytest

from brew import defaults
from brew.cli import main
from brew.errors import InvalidRequestError, TemplateFieldError, UnknownTaskError
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
    assert main(["prompts", "render", "--task", task, "--request", str(defaults.EXAMPLE_REQUEST), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    request = next(t for t in example.tasks if t.task == task)
    group = verbalizer.prepare(example.member, request).group
    assert [tuple(report["context"]["token_ids"]) + tuple(c["token_ids"]) for c in report["candidates"]] == [
        group.prompt_ids(i) for i in range(group.num_candidates)
    ]


def test_the_command_prints_every_part(capsys):
    assert main(["prompts", "render", "--task", "job_apply", "--request", str(defaults.EXAMPLE_REQUEST)]) == 0
    out = capsys.readouterr().out
    for text in ("=== context:", "=== candidate 3/3 job-103", "outcome:", "dropped_by_policy", "shared by candidates"):
        assert text in out


def test_the_command_names_an_unknown_task_with_the_known_ones(capsys):
    assert main(["prompts", "render", "--task", "job_aply"]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'job_aply'; known tasks: feed_engagement, job_apply, pymk_connect" in err
    assert "no candidates" not in err


# --- which request is rendered --------------------------------------------------------

@pytest.mark.parametrize("task", TASKS)
def test_without_a_request_the_tasks_own_example_is_rendered(task, shipped_tasks, demo_tokenizer):
    """The file `brew prompts lint` renders for the task, whatever examples/request.json holds."""
    render, _ = render_request_file(defaults.PROMPTS_DIR, defaults.DEMO_MODEL_DIR, None, task)
    own = request_from_proto(parse_request_json(
        (defaults.PROMPTS_DIR / "examples" / f"{task}.json").read_text(encoding="utf-8")))
    request = next(t for t in own.tasks if t.task == task)
    group = Verbalizer(shipped_tasks, demo_tokenizer, max_model_len=1024).prepare(own.member, request).group
    assert render.prepared.item_ids == tuple(c.item_id for c in request.candidates)
    assert render.prepared.group == group


def job_saved_prompts(write_prompts, item_id: str):
    """A prompts directory with one task, job_saved, whose own example has one candidate, `item_id`."""
    config = '[labels]\nwords = [" Yes", " No"]\n'
    template = ("{% block context %}task: save\n{% endblock %}{% block history_item %}{{ action }}{% endblock %}"
                "{% block candidate %}{{ candidate.title }}\nsaves:{% endblock %}")
    example = {"member": {"memberId": "m-1"},
               "tasks": [{"task": "job_saved", "candidates": [{"itemId": item_id, "fields": {"title": "analyst"}}]}]}
    return write_prompts({"examples/job_saved.json": json.dumps(example)}, job_saved=(config, template))


def test_a_task_of_another_prompts_directory_renders_its_own_example(write_prompts):
    prompts = job_saved_prompts(write_prompts, "j-1")
    render, _ = render_request_file(prompts, defaults.DEMO_MODEL_DIR, None, "job_saved")
    assert render.prepared.candidate_texts == ("analyst\nsaves:",)


def test_the_command_without_a_request_renders_the_tasks_own_example(write_prompts, capsys):
    """`brew prompts render --prompts DIR --task T`: DIR/examples/T.json, never examples/request.json
    (which has no candidates for a new task)."""
    prompts = job_saved_prompts(write_prompts, "j-9")
    assert main(["prompts", "render", "--prompts", str(prompts), "--task", "job_saved", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [c["item_id"] for c in report["candidates"]] == ["j-9"]


def test_an_unknown_task_is_named_with_the_known_ones_before_any_request_is_read(tmp_path):
    missing = tmp_path / "no-such-request.json"
    for request in (None, missing, defaults.EXAMPLE_REQUEST):
        with pytest.raises(UnknownTaskError, match="^unknown task 'job_aply'; known tasks: feed_engagement, "
                                                   "job_apply, pymk_connect, rerank$"):
            render_request_file(defaults.PROMPTS_DIR, defaults.DEMO_MODEL_DIR, request, "job_aply")


def test_a_task_without_an_example_asks_for_one_or_a_request(write_prompts):
    config = '[labels]\nwords = [" Yes", " No"]\n'
    template = "{% block context %}-{% endblock %}{% block history_item %}-{% endblock %}{% block candidate %}-{% endblock %}"
    prompts = write_prompts(t=(config, template))
    with pytest.raises(InvalidRequestError, match=r"task t has no example request: .*examples/t.json does not "
                                                  r"exist; .*pass --request FILE"):
        render_request_file(prompts, defaults.DEMO_MODEL_DIR, None, "t")


def test_a_render_error_names_the_tasks_place_in_the_request_file(tmp_path):
    text = json.loads(defaults.EXAMPLE_REQUEST.read_text(encoding="utf-8"))
    index = next(n for n, t in enumerate(text["tasks"]) if t["task"] == "pymk_connect")
    del text["tasks"][index]["candidates"][0]["fields"]["school"]
    request = tmp_path / "r.json"
    request.write_text(json.dumps(text), encoding="utf-8")
    item_id = text["tasks"][index]["candidates"][0]["itemId"]
    with pytest.raises(TemplateFieldError, match=rf"^task pymk_connect \(tasks\[{index}\]\), candidate {item_id}: "
                                                 rf"the template pymk_connect.jinja line \d+ reads field 'school'"):
        render_request_file(defaults.PROMPTS_DIR, defaults.DEMO_MODEL_DIR, request, "pymk_connect")
