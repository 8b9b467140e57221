"""`brew prompts lint`: each error class caught on a deliberately broken
prompts directory, with its file and line; warnings for prefix-cache-hostile
choices; the shipped prompts lint clean. The demo tokenizer only, no weights."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from brew import defaults
from brew.cli import main
from brew.prompt_lint import Finding, Severity, lint_prompts
from brew.tasks import load_tasks

CONFIG = (
    "max_candidate_tokens = 32\n"
    '[labels]\nwords = [" Yes", " No"]\n'
    "[history]\nmax_item_tokens = 16\nmax_tokens = 64\n"
)
TEMPLATE = (
    "{% block context %}\n"
    "task: test, answer Yes or No\n"
    "member: {{ profile.title }}\n"
    "{% for line in history %}\n"
    "{{ line }}\n"
    "{% endfor %}\n"
    "{% endblock %}\n"
    "{% block history_item %}{{ action }} {{ item.title }}{% endblock %}\n"
    "{% block candidate %}\n"
    "job: {{ candidate.title }}\n"
    "answer:\n"
    "{% endblock %}\n"
)


def example(profile: dict[str, str] | None = None, task: str = "t") -> str:
    job = lambda item_id, title: {"itemId": item_id, "entityType": "job", "fields": {"title": title}}  # noqa: E731
    return json.dumps({
        "member": {
            "memberId": "m-1",
            "profile": profile or {"title": "data analyst"},
            "history": [
                {"action": "viewed", "item": job("j-1", "ml engineer"), "time": "2026-01-01T00:00:00Z"},
                {"action": "applied", "item": job("j-2", "data scientist"), "time": "2026-01-02T00:00:00Z"},
            ],
        },
        "tasks": [{"task": task, "candidates": [job("c-1", "ux designer"), job("c-2", "sales manager")]}],
    })


def lint(write_prompts, demo_tokenizer, config=CONFIG, template=TEMPLATE, files=None, max_model_len=1024,
         with_example=True) -> list[Finding]:
    files = dict(files or {})
    if with_example:
        files.setdefault("examples/t.json", example())
    prompts = write_prompts(files, t=(config, template))
    return lint_prompts(prompts, demo_tokenizer, max_model_len)


def only(findings: list[Finding], check: str) -> Finding:
    matching = [f for f in findings if f.check == check]
    assert len(matching) == 1, findings
    return matching[0]


def test_the_shipped_prompts_lint_clean(demo_tokenizer):
    assert lint_prompts(defaults.PROMPTS_DIR, demo_tokenizer, 1024) == []


def test_the_fixture_task_lints_clean(write_prompts, demo_tokenizer):
    assert lint(write_prompts, demo_tokenizer) == []


# --- errors ---------------------------------------------------------------------------

def test_a_template_syntax_error_has_its_file_and_line(write_prompts, demo_tokenizer):
    broken = TEMPLATE.replace("answer:\n", "answer: {{ candidate.title }\n")
    finding = only(lint(write_prompts, demo_tokenizer, template=broken), "syntax")
    assert (finding.severity, finding.path.name, finding.line) == (Severity.ERROR, "t.jinja", 11)


def test_a_broken_partial_is_reported_once_at_its_line(write_prompts, demo_tokenizer):
    template = TEMPLATE.replace("member: {{ profile.title }}\n", '{% include "_member.jinja" %}\n')
    files = {"_member.jinja": "member:\n{% if profile.title %}{{ profile.title }}\n"}
    finding = only(lint(write_prompts, demo_tokenizer, template=template, files=files), "syntax")
    assert (finding.severity, finding.path.name) == (Severity.ERROR, "_member.jinja")
    assert finding.line is not None


def test_invalid_toml_has_its_line(write_prompts, demo_tokenizer):
    finding = only(lint(write_prompts, demo_tokenizer, config=CONFIG.replace("max_tokens = 64", "max_tokens = ")),
                   "config")
    assert (finding.severity, finding.path.name, finding.line) == (Severity.ERROR, "t.toml", 6)


def test_a_field_the_examples_lack_is_an_error_at_its_template_line(write_prompts, demo_tokenizer):
    template = TEMPLATE.replace("job: {{ candidate.title }}", "job: {{ candidate.title }}, {{ candidate.salary }}")
    finding = only(lint(write_prompts, demo_tokenizer, template=template), "fields")
    assert (finding.severity, finding.path.name, finding.line) == (Severity.ERROR, "t.jinja", 10)
    assert "salary" in finding.message and "t.json" in finding.message


def test_a_field_missing_in_a_partial_points_into_the_partial(write_prompts, demo_tokenizer):
    template = TEMPLATE.replace("{{ action }} {{ item.title }}", '{% include "_item.jinja" %}')
    files = {"_item.jinja": "{# one item #}\n{{ action }} {{ item.title }} at {{ item.company }}"}
    finding = only(lint(write_prompts, demo_tokenizer, template=template, files=files), "fields")
    assert (finding.path.name, finding.line) == ("_item.jinja", 2)
    # The message says the same place as the finding, and which item of which example lacks the field.
    assert finding.message == (
        "t.json: task t (tasks[0]), history item j-1: the template _item.jinja line 2 (included from t.jinja "
        "line 8) reads field 'company', which the history item does not have (its fields: title)"
    )


def shipped_partial_task(history_types: list[str]) -> dict[str, str]:
    """A task whose history block includes the shipped _history_item.jinja, and
    an example whose history holds one item of each type."""
    fields = {"job": {"title": "analyst", "seniority": "mid", "location": "berlin"},
              "post": {"format": "video", "topic": "ai", "author": "colleague"},
              "member": {"title": "analyst", "company": "acme", "school": "tum"}}
    request = json.loads(example())
    request["member"]["history"] = [
        {"action": "viewed", "item": {"itemId": f"{kind}-{n}", "entityType": kind,
                                      "fields": fields.get(kind, {"name": "analysts", "city": "berlin"})},
         "time": f"2026-01-0{n + 1}T00:00:00Z"}
        for n, kind in enumerate(history_types)
    ]
    partial = (defaults.PROMPTS_DIR / "_history_item.jinja").read_text(encoding="utf-8")
    return {"_history_item.jinja": partial, "examples/t.json": json.dumps(request)}


def test_an_entity_type_without_a_branch_is_a_warning_at_the_partials_branches(write_prompts, demo_tokenizer):
    template = TEMPLATE.replace("{{ action }} {{ item.title }}", '{% include "_history_item.jinja" %}')
    files = shipped_partial_task(["job", "group", "post", "group", "event"])
    findings = lint(write_prompts, demo_tokenizer, template=template, files=files)
    assert all(f.severity is Severity.WARNING for f in findings), findings
    warnings = [f for f in findings if f.check == "entities"]
    partial_line = next(n for n, line in enumerate(files["_history_item.jinja"].splitlines(), 1)
                        if "entity_type ==" in line)
    assert [(f.path.name, f.line) for f in warnings] == [("_history_item.jinja", partial_line)] * 2
    assert warnings[0].message == (
        "t.json: task t (tasks[0]), history item group-1: entity type 'group' has no branch in "
        "_history_item.jinja (it has: job, member, post), so history item(s) group-1, group-3 render with its "
        "generic branch; add {% elif entity_type == \"group\" %} with the fields worth reading "
        "(prompts/README.md, \"A new entity type\")"
    )
    assert "entity type 'event'" in warnings[1].message


def test_entity_types_with_a_branch_are_no_warning(write_prompts, demo_tokenizer):
    template = TEMPLATE.replace("{{ action }} {{ item.title }}", '{% include "_history_item.jinja" %}')
    files = shipped_partial_task(["job", "post", "member"])
    assert lint(write_prompts, demo_tokenizer, template=template, files=files) == []


def test_a_candidate_type_without_a_branch_is_a_warning_too(write_prompts, demo_tokenizer):
    template = TEMPLATE.replace("job: {{ candidate.title }}",
                                '{% if entity_type in ["job", "post"] %}job{% else %}item{% endif %}: {{ candidate.title }}')
    request = json.loads(example())
    request["tasks"][0]["candidates"][1]["entityType"] = "course"
    finding = only(lint(write_prompts, demo_tokenizer, template=template,
                        files={"examples/t.json": json.dumps(request)}), "entities")
    assert (finding.severity, finding.path.name, finding.line) == (Severity.WARNING, "t.jinja", 10)
    assert finding.message.startswith("t.json: task t (tasks[0]), candidate c-2: entity type 'course' has no "
                                      "branch in t.jinja (it has: job, post)")


def test_a_block_that_does_not_branch_on_the_entity_type_is_no_warning(write_prompts, demo_tokenizer):
    files = shipped_partial_task(["group"])
    files["examples/t.json"] = files["examples/t.json"].replace('"name"', '"title"')
    assert lint(write_prompts, demo_tokenizer, files=files) == []


def test_a_task_without_an_example_is_an_error(write_prompts, demo_tokenizer):
    finding = only(lint(write_prompts, demo_tokenizer, with_example=False), "examples")
    assert finding.severity is Severity.ERROR and "examples/t.json" in finding.message


def test_an_example_that_is_not_a_request_is_an_error(write_prompts, demo_tokenizer):
    files = {"examples/t.json": '{"member": {"memberId": "m"}, "tasks": [{"task": "t", "oops": 1}]}'}
    findings = [f for f in lint(write_prompts, demo_tokenizer, files=files) if f.check == "examples"]
    assert [(f.severity, f.path.name) for f in findings] == [(Severity.ERROR, "t.json"), (Severity.ERROR, "t.toml")]
    assert "does not match brew.v1.ScoreCandidatesRequest" in findings[0].message


def test_a_label_of_several_tokens_is_an_error_at_the_words_line(write_prompts, demo_tokenizer):
    config = CONFIG.replace('" No"', '" zebra"')
    finding = only(lint(write_prompts, demo_tokenizer, config=config), "labels")
    assert (finding.severity, finding.path.name, finding.line) == (Severity.ERROR, "t.toml", 3)
    assert "zebra" in finding.message


def test_candidate_data_in_the_context_is_an_error(write_prompts, demo_tokenizer):
    template = TEMPLATE.replace(
        "member: {{ profile.title }}\n",
        "member: {{ profile.title }}\n{% if candidate is defined %}{{ candidate.title }}{% endif %}\n",
    )
    findings = lint(write_prompts, demo_tokenizer, template=template)
    prefix = [f for f in findings if f.check == "prefix"]
    assert prefix and all(f.severity is Severity.ERROR and f.line == 4 for f in prefix)


def test_a_label_that_merges_with_the_text_before_it_is_an_error(write_prompts, demo_tokenizer):
    # "engag" + "es" tokenizes as one token "engages": the label never stands alone there.
    config = CONFIG.replace('[" Yes", " No"]', '["es", "ed"]')
    template = TEMPLATE.replace("answer:\n", "engag\n")
    findings = lint(write_prompts, demo_tokenizer, config=config, template=template)
    answer = [f for f in findings if f.check == "answer" and f.severity is Severity.ERROR]
    assert answer and "'es'" in answer[0].message


def test_a_worst_case_prompt_over_the_model_length_is_an_error(write_prompts, demo_tokenizer):
    finding = only(lint(write_prompts, demo_tokenizer, max_model_len=100), "length")
    assert (finding.severity, finding.path.name, finding.line) == (Severity.ERROR, "t.toml", 6)
    assert "max_tokens 64" in finding.message and "max_candidate_tokens 32" in finding.message


def test_the_worst_case_counts_every_budget(write_prompts, demo_tokenizer):
    fits = lint(write_prompts, demo_tokenizer, max_model_len=200)
    assert fits == []
    config = CONFIG.replace("max_tokens = 64", "max_tokens = 190")
    assert only(lint(write_prompts, demo_tokenizer, config=config, max_model_len=200), "length")


# --- warnings -------------------------------------------------------------------------

def warnings(findings: list[Finding], check: str) -> list[Finding]:
    assert all(f.severity is Severity.WARNING for f in findings), findings
    return [f for f in findings if f.check == check]


def test_a_per_request_value_in_the_context_is_a_cache_warning(write_prompts, demo_tokenizer):
    template = TEMPLATE.replace("member: {{ profile.title }}\n", "member: {{ profile.title }}\nnow: {{ profile.current_time }}\n")
    files = {"examples/t.json": example({"title": "analyst", "current_time": "2026-01-01T10:00:00Z"})}
    [finding] = warnings(lint(write_prompts, demo_tokenizer, template=template, files=files), "cache")
    assert finding.line == 4 and "profile.current_time" in finding.message


def test_member_data_in_the_candidate_block_is_a_cache_warning(write_prompts, demo_tokenizer):
    template = TEMPLATE.replace("job: {{ candidate.title }}", "job: {{ candidate.title }} for {{ profile.title }}")
    [finding] = warnings(lint(write_prompts, demo_tokenizer, template=template), "cache")
    assert finding.line == 10 and "profile.title" in finding.message


def test_comparing_member_data_in_the_candidate_block_is_no_warning(write_prompts, demo_tokenizer):
    template = TEMPLATE.replace(
        "job: {{ candidate.title }}",
        'job: {{ candidate.title }}, {{ "same" if candidate.title == profile.title else "other" }} title'
        '{% if profile.title is defined %}.{% endif %}{% if profile.title %}!{% endif %}'
        '{% set known = profile.title in ["analyst"] %}'
        '{{ candidate.title.split(" ") | select("in", profile.title.split(" ")) | list | length }}',
    )
    assert warnings(lint(write_prompts, demo_tokenizer, template=template), "cache") == []


@pytest.mark.parametrize("written", ["{{ profile.title | upper }}", '{{ profile.title if candidate.title else "" }}'])
def test_member_data_written_through_a_filter_or_condition_is_a_cache_warning(write_prompts, demo_tokenizer, written):
    template = TEMPLATE.replace("job: {{ candidate.title }}", "job: {{ candidate.title }} " + written)
    [finding] = warnings(lint(write_prompts, demo_tokenizer, template=template), "cache")
    assert finding.line == 10 and "profile.title" in finding.message


def test_a_context_that_starts_with_member_data_is_a_cache_warning(write_prompts, demo_tokenizer):
    template = TEMPLATE.replace("task: test, answer Yes or No\nmember: {{ profile.title }}\n",
                                "{{ profile.title }}\ntask: test, answer Yes or No\n")
    [finding] = warnings(lint(write_prompts, demo_tokenizer, template=template), "cache")
    assert finding.line == 2 and "instruction first" in finding.message


def test_blanks_after_the_answer_cue_are_a_warning(write_prompts, demo_tokenizer):
    [finding] = warnings(lint(write_prompts, demo_tokenizer, template=TEMPLATE.replace("answer:\n", "answer:  \n")),
                         "answer")
    assert "'answer:'" in finding.message


def test_a_candidate_block_ending_with_data_is_a_warning(write_prompts, demo_tokenizer):
    template = TEMPLATE.replace("job: {{ candidate.title }}\nanswer:\n", "answer for job {{ candidate.title }}:\n")
    [finding] = warnings(lint(write_prompts, demo_tokenizer, template=template), "answer")
    assert "last line differs" in finding.message


def test_a_label_without_a_leading_space_is_a_warning(write_prompts, demo_tokenizer):
    config = CONFIG.replace('[" Yes", " No"]', '["Yes", " No"]')
    [finding] = warnings(lint(write_prompts, demo_tokenizer, config=config), "labels")
    assert finding.path.name == "t.toml" and "'Yes'" in finding.message


def test_a_template_without_a_config_is_a_warning(write_prompts, demo_tokenizer):
    [finding] = warnings(lint(write_prompts, demo_tokenizer, files={"typo.jinja": TEMPLATE}), "config")
    assert finding.path.name == "typo.jinja"


# --- the command ----------------------------------------------------------------------

def test_the_command_exits_non_zero_and_prints_file_and_line(write_prompts, capsys):
    prompts = write_prompts({"examples/t.json": example()}, t=(CONFIG, TEMPLATE.replace("}}\nanswer", "}\nanswer")))
    assert main(["prompts", "lint", "--prompts", str(prompts)]) == 1
    out = capsys.readouterr().out
    assert f"{prompts / 't.jinja'}:10: error: [syntax]" in out
    assert "1 error(s), 0 warning(s)" in out


def test_the_command_passes_the_shipped_prompts(capsys):
    assert main(["prompts", "lint"]) == 0
    assert "0 error(s), 0 warning(s)" in capsys.readouterr().out


def test_strict_fails_on_warnings(write_prompts, capsys):
    config = CONFIG.replace('[" Yes", " No"]', '["Yes", " No"]')
    prompts = write_prompts({"examples/t.json": example()}, t=(config, TEMPLATE))
    assert main(["prompts", "lint", "--prompts", str(prompts)]) == 0
    assert main(["prompts", "lint", "--prompts", str(prompts), "--strict"]) == 1


def test_the_guides_example_task_lints_clean(tmp_path, demo_tokenizer):
    """prompts/README.md walks through adding job_saved: its files lint clean."""
    guide = (defaults.PROMPTS_DIR / "README.md").read_text(encoding="utf-8")
    prompts = tmp_path / "prompts"
    shutil.copytree(defaults.PROMPTS_DIR, prompts)
    (prompts / "job_saved.toml").write_text(re.search(r"```toml\n(.*?)```", guide, re.S).group(1))
    (prompts / "job_saved.jinja").write_text(re.search(r"```jinja\n(.*?)```", guide, re.S).group(1))
    job_apply = (prompts / "examples" / "job_apply.json").read_text(encoding="utf-8")
    (prompts / "examples" / "job_saved.json").write_text(job_apply.replace("job_apply", "job_saved"))
    assert lint_prompts(prompts, demo_tokenizer, 1024) == []
    assert load_tasks(prompts)["job_saved"].labels == (" Yes", " No")
