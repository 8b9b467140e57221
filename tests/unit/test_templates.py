"""Task templates: three blocks, rendered alone, in an immutable sandbox with
StrictUndefined."""

from __future__ import annotations

import jinja2
import pytest
from jinja2.exceptions import SecurityError

from jinja2.sandbox import ImmutableSandboxedEnvironment

from brew import defaults
from brew import tasks as tasks_module
from brew.demo.world import World
from brew.errors import TaskConfigError, TemplateFieldError
from brew.templates import TaskTemplate, make_environment
from brew.types import Item
from brew.verbalize import _history_variables

# A minimal valid task template: every block, one field each.
MINIMAL_TEMPLATE = (
    "{% block context %}member: {{ profile.title }}{% endblock %}"
    "{% block history_item %}{{ action }} {{ item.title }}{% endblock %}"
    "{% block candidate %}job: {{ candidate.title }}{% endblock %}"
)
PROFILE = {
    "title": "data analyst",
    "seniority": "mid",
    "location": "berlin",
    "skills": "sql, python",
    "company": "acme",
    "school": "tum",
}
JOB = {"title": "ml engineer", "seniority": "mid", "location": "berlin", "company": "hooli",
       "remote": "yes", "skills": "python"}


def template_from(tmp_path, source: str, name: str = "t.jinja") -> TaskTemplate:
    (tmp_path / name).write_text(source, encoding="utf-8")
    return TaskTemplate.from_file(tmp_path / name, make_environment(tmp_path))


def with_context(expression: str) -> str:
    return (
        "{% block context %}" + expression + "{% endblock %}"
        "{% block history_item %}-{% endblock %}{% block candidate %}-{% endblock %}"
    )


# --- the shipped template, block by block ----------------------------------------

def test_the_context_block_renders_profile_and_history(shipped_tasks):
    text = shipped_tasks["job_apply"].template.render_block(
        "context",
        {"profile": PROFILE, "history": ["viewed job: mid ml engineer, berlin", "liked post: video on ai"],
         "task": "job_apply"},
    )
    assert text == (
        "task: job apply, answer applied, viewed, dismissed or none\n"
        "member: mid data analyst at acme, berlin, tum\n"
        "skills: sql, python\n"
        "history:\n"
        "viewed job: mid ml engineer, berlin\n"
        "liked post: video on ai\n"
    )


def test_the_history_item_block_renders_one_interaction(shipped_tasks):
    template = shipped_tasks["feed_engagement"].template
    job = {"action": "viewed", "entity_type": "job", "item": {"title": "ml engineer", "seniority": "mid",
                                                               "location": "berlin"}}
    post = {"action": "liked", "entity_type": "post",
            "item": {"format": "video", "topic": "ai", "author": "colleague", "description": "a long text"}}
    assert template.render_block("history_item", job) == "viewed job: mid ml engineer, berlin"
    assert template.render_block("history_item", post) == "liked post: video on ai by colleague. a long text"


def test_the_history_partial_writes_a_type_without_a_branch_generically(shipped_tasks):
    template = shipped_tasks["job_apply"].template
    group = {"action": "joined", "entity_type": "group",
             "item": {"name": "data engineers", "members": "1200", "description": "meetups in berlin"}}
    assert template.render_block("history_item", group) == "joined group: members 1200, name data engineers. meetups in berlin"
    empty = {"action": "joined", "entity_type": "group", "item": {}}
    assert template.render_block("history_item", empty) == "joined group: "


def test_the_history_partial_writes_each_known_type_as_the_demo_model_read_it(shipped_tasks):
    """The demo model was trained on these lines: a known type's line never changes."""
    template = shipped_tasks["pymk_connect"].template
    member = {"action": "connected", "entity_type": "member",
              "item": {"title": "data scientist", "company": "acme", "school": "eth", "seniority": "senior"}}
    assert template.render_block("history_item", member) == "connected member: data scientist at acme, eth"


def test_the_candidate_block_ends_at_the_answer(shipped_tasks):
    text = shipped_tasks["job_apply"].template.render_block(
        "candidate", {"candidate": JOB, "entity_type": "job", "profile": PROFILE, "task": "job_apply"}
    )
    assert text == (
        "job: mid ml engineer at hooli, berlin, remote\nskills: python\n"
        "fit: same level, same city, 1 skills in common\noutcome:\n"
    )


def _render(task: str, tasks, candidate: dict, profile: dict = PROFILE) -> str:
    entity = {"job_apply": "job", "pymk_connect": "member"}[task]
    return tasks[task].template.render_block(
        "candidate", {"candidate": candidate, "entity_type": entity, "profile": profile, "task": task}
    )


@pytest.mark.parametrize(("seniority", "level"), [("lead", "2 above"), ("junior", "1 below"), ("mid", "same")])
def test_the_job_fit_line_compares_the_job_with_the_member(shipped_tasks, seniority, level):
    job = dict(JOB, seniority=seniority, location="paris", skills="golang, rust")
    assert f"fit: {level} level, other city, 0 skills in common\n" in _render("job_apply", shipped_tasks, job)


def test_the_job_fit_line_leaves_out_a_level_it_cannot_order(shipped_tasks):
    text = _render("job_apply", shipped_tasks, dict(JOB, seniority="principal"))
    assert "fit: same city, 1 skills in common\n" in text


def test_the_pymk_candidate_says_what_the_two_members_share(shipped_tasks):
    other = {"title": "ml engineer", "seniority": "mid", "location": "paris", "company": "hooli", "school": "tum"}
    text = _render("pymk_connect", shipped_tasks, other, dict(PROFILE, company="hooli"))
    assert "in common: same company, same school, other city\nconnects:\n" in text


def test_request_data_is_a_value_never_template_code(shipped_tasks):
    profile = dict(PROFILE, title="{{ 7 * 7 }}", company="{% raw %}")
    text = shipped_tasks["job_apply"].template.render_block(
        "context", {"profile": profile, "history": ["{{ profile }}"], "task": "job_apply"}
    )
    assert "member: mid {{ 7 * 7 }} at {% raw %}, berlin, tum\n" in text
    assert "{{ profile }}\n" in text and "49" not in text


# --- the sandbox -----------------------------------------------------------------

@pytest.mark.parametrize(
    ("expression", "attribute"),
    [
        ("{{ ''.__class__.__mro__ }}", "__class__"),
        ("{{ profile.__init__.__globals__ }}", "__init__"),
        ("{{ profile.update(title='x') }}", "update"),  # the immutable sandbox: no mutation
        ("{{ [].append(1) }}", "append"),
        ("{{ profile.title.__class__ }}", "__class__"),  # a str's private attribute: no shortcut
        ("{{ '{0.__class__}'.format(profile.title) }}", "__class__"),  # str.format stays sandboxed
    ],
)
def test_unsafe_template_code_is_refused(tmp_path, expression, attribute):
    template = template_from(tmp_path, with_context(expression))
    with pytest.raises(TaskConfigError, match=f"attribute '{attribute}'.*unsafe") as caught:
        template.render_block("context", {"profile": dict(PROFILE)})
    assert isinstance(caught.value.__cause__, SecurityError)


SHORTCUT_EXPRESSIONS = [
    "{{ d.title }}",
    "{{ d.title.split(', ') | list }} {{ d.title.upper() }} {{ d.title.missing is defined }}",
    "{{ d['items'] }} {{ d.items() | list | length }}",  # d.items is the dict's method, as in Jinja
    "{{ d.keys | string | truncate(9, True, '') }} {{ d.missing is defined }}",
    "{{ '{0}!'.format(d.title) }} {{ d.title.startswith('data') }}",
]


@pytest.mark.parametrize("expression", SHORTCUT_EXPRESSIONS)
def test_the_sandbox_shortcuts_answer_as_the_stock_sandbox(tmp_path, expression):
    variables = {"profile": {"d": 0}, "d": {"title": "data, analyst", "items": "a key named items"}}
    (tmp_path / "t.jinja").write_text(with_context(expression), encoding="utf-8")
    stock = TaskTemplate.from_file(tmp_path / "t.jinja", ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(tmp_path)), undefined=jinja2.StrictUndefined))
    fast = template_from(tmp_path, with_context(expression))
    assert fast.render_block("context", variables) == stock.render_block("context", variables)


def test_every_shipped_template_renders_as_in_the_stock_sandbox(shipped_tasks, monkeypatch):
    """The shortcuts change no prompt: every block of every shipped task, on
    seeded synthetic members and candidates, against the stock sandbox."""
    monkeypatch.setattr(tasks_module, "make_environment", lambda prompts_dir: stock_environment(prompts_dir))
    stock_tasks = tasks_module.load_tasks(defaults.PROMPTS_DIR)
    world = World(seed=3)
    draws = {"job_apply": world.job, "feed_engagement": world.post, "pymk_connect": world.profile_item,
             "rerank": lambda persona: Item("0", "document", {"text": world.post(persona).fields["topic"]})}
    compared = 0
    for _ in range(20):
        persona = world.persona()
        member = persona.member
        for name, task in shipped_tasks.items():
            stock = stock_tasks[name].template
            profile = {"query": member.profile["title"]} if name == "rerank" else dict(member.profile)
            context = {"profile": profile, "history": ["a line"], "task": name}
            assert task.template.render_block("context", context) == stock.render_block("context", context)
            for interaction in member.history[:3]:
                item = _history_variables(interaction)
                assert task.template.render_block("history_item", item) == stock.render_block("history_item", item)
            for _ in range(4):
                candidate = draws[name](persona)
                variables = {"candidate": dict(candidate.fields), "entity_type": candidate.entity_type,
                             "profile": profile, "task": name}
                assert task.template.render_block("candidate", variables) == stock.render_block("candidate", variables)
                compared += 1
    assert compared == 20 * len(shipped_tasks) * 4


def stock_environment(prompts_dir) -> ImmutableSandboxedEnvironment:
    """make_environment's settings on Jinja's own immutable sandbox."""
    shortcut = make_environment(prompts_dir)
    return ImmutableSandboxedEnvironment(loader=shortcut.loader, undefined=shortcut.undefined, autoescape=False,
                                         trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False)


# --- StrictUndefined -----------------------------------------------------------------

def test_a_missing_field_is_said_in_plain_words_with_its_line(tmp_path):
    template = template_from(tmp_path, MINIMAL_TEMPLATE)
    with pytest.raises(TemplateFieldError) as caught:
        template.render_block("candidate", {"candidate": {"location": "berlin", "company": "acme"}})
    assert str(caught.value) == (
        "the template t.jinja line 1 reads field 'title', which the candidate does not have "
        "(its fields: company, location)"
    )
    assert isinstance(caught.value.__cause__, jinja2.UndefinedError)


@pytest.mark.parametrize(
    ("block", "variable", "data"),
    [("context", "profile", "the member's profile"), ("history_item", "item", "the history item"),
     ("candidate", "candidate", "the candidate")],
)
def test_each_block_names_the_data_that_lacks_the_field(tmp_path, block, variable, data):
    source = "{% block context %}-{% endblock %}{% block history_item %}-{% endblock %}{% block candidate %}-{% endblock %}"
    source = source.replace(f"{{% block {block} %}}-", f"{{% block {block} %}}\n\n{{{{ {variable}.salary }}}}")
    template = template_from(tmp_path, source)
    with pytest.raises(TemplateFieldError, match=rf"^the template t.jinja line 3 reads field 'salary', which "
                                                 rf"{data} does not have \(it has no fields\)$"):
        template.render_block(block, {variable: {}})


def test_a_field_read_in_a_partial_names_the_partial_and_the_line_that_includes_it(tmp_path):
    (tmp_path / "_outer.jinja").write_text("{# outer #}\n{% include '_inner.jinja' %}", encoding="utf-8")
    (tmp_path / "_inner.jinja").write_text("a\nb\n{{ item.title }}", encoding="utf-8")
    source = MINIMAL_TEMPLATE.replace("{{ action }} {{ item.title }}", "\n{% include '_outer.jinja' %}")
    template = template_from(tmp_path, source)
    with pytest.raises(TemplateFieldError) as caught:
        template.render_block("history_item", {"action": "joined", "entity_type": "group", "item": {"name": "x"}})
    assert str(caught.value) == (
        "the template _inner.jinja line 3 (included from _outer.jinja line 2, included from t.jinja line 2) "
        "reads field 'title', which the history item does not have (its fields: name)"
    )


def test_a_long_field_list_is_cut(tmp_path):
    template = template_from(tmp_path, MINIMAL_TEMPLATE)
    fields = {f"f{n:02}": "x" for n in range(20)}
    with pytest.raises(TemplateFieldError, match=r"\(its fields: f00, f01, .*, f11, \.\.\. \(20 in all\)\)$"):
        template.render_block("candidate", {"candidate": fields})


def test_an_attribute_of_a_value_that_has_none_is_said_plainly(tmp_path):
    template = template_from(tmp_path, with_context("{{ profile.title.nothing }}"))
    with pytest.raises(TemplateFieldError, match=r"^the template t.jinja line 1 reads 'nothing' of the value "
                                                 r"'data analyst', which has no such field or attribute$"):
        template.render_block("context", {"profile": PROFILE})


def test_a_name_the_block_has_no_variable_for_is_a_template_error(tmp_path):
    template = template_from(tmp_path, with_context("[{{ nothing }}]"))
    with pytest.raises(TaskConfigError, match=r"^the template t.jinja line 1 reads 'nothing', which is not a "
                                              r"variable of the context block \(it has: profile, task\)$"):
        template.render_block("context", {"profile": PROFILE, "task": "t"})


def test_the_context_cannot_see_the_candidate(shipped_tasks, tmp_path):
    # The verbalizer renders the context with profile, history and task only.
    template = template_from(tmp_path, with_context("{{ candidate.title }}"))
    with pytest.raises(TaskConfigError, match="reads 'candidate', which is not a variable of the context block "
                                              r"\(it has: profile, history, task\)"):
        template.render_block("context", {"profile": PROFILE, "history": [], "task": "t"})


def test_is_defined_still_works_for_optional_fields(tmp_path):
    expression = "{% if profile.bio is defined %}{{ profile.bio }}{% else %}-{% endif %}"
    template = template_from(tmp_path, with_context(expression))
    assert template.render_block("context", {"profile": {}}) == "-"
    assert template.render_block("context", {"profile": {"bio": "hi"}}) == "hi"


# --- broken templates -----------------------------------------------------------------

def test_a_template_without_all_three_blocks_is_refused(tmp_path):
    source = "{% block context %}x{% endblock %}{% block candidate %}y{% endblock %}"
    with pytest.raises(TaskConfigError, match="template t.jinja lacks block.s. history_item"):
        template_from(tmp_path, source)


def test_a_syntax_error_names_file_and_line(tmp_path):
    source = "{% block context %}\nok\n{{ broken }\n{% endblock %}"
    with pytest.raises(TaskConfigError, match=r"t.jinja, line 3: syntax error") as caught:
        template_from(tmp_path, source)
    assert isinstance(caught.value.__cause__, jinja2.TemplateSyntaxError)


def test_a_missing_partial_is_a_task_config_error(tmp_path):
    template = template_from(tmp_path, with_context('{% include "_gone.jinja" %}'))
    with pytest.raises(TaskConfigError, match="include _gone.jinja not found"):
        template.render_block("context", {})


def test_partials_come_from_the_prompts_directory(tmp_path):
    (tmp_path / "_shared.jinja").write_text("shared {{ profile.title }}", encoding="utf-8")
    template = template_from(tmp_path, with_context('{% include "_shared.jinja" %}!'))
    assert template.render_block("context", {"profile": PROFILE}) == "shared data analyst!"
    assert template.source == with_context('{% include "_shared.jinja" %}!')
