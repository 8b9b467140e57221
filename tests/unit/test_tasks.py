"""Loading tasks: the shipped ones, the registry, and every way a task
directory can be broken."""

from __future__ import annotations

import re
import shutil

import pytest

from brew import defaults
from brew.errors import TaskConfigError, UnknownTaskError
from brew.history import Downsample
from brew.tasks import load_tasks

TEMPLATE = (
    "{% block context %}member: {{ profile.title }}{% endblock %}"
    "{% block history_item %}{{ action }} {{ item.title }}{% endblock %}"
    "{% block candidate %}job: {{ candidate.title }}{% endblock %}"
)
LABELS = '[labels]\nwords = [" Yes", " No"]\n'


# --- the shipped tasks ------------------------------------------------------------

def test_four_tasks_ship_with_their_labels(shipped_tasks):
    assert list(shipped_tasks) == ["feed_engagement", "job_apply", "pymk_connect", "rerank"]
    job = shipped_tasks["job_apply"]
    assert job.labels == (" applied", " viewed", " dismissed", " none")
    assert job.positive_label == " applied" and job.positive_index == 0
    for name in ("feed_engagement", "pymk_connect", "rerank"):
        assert shipped_tasks[name].labels == (" Yes", " No")
        assert shipped_tasks[name].positive_label == " Yes"


def test_the_shipped_configs_are_read_in_full(shipped_tasks):
    assert {name: task.max_candidate_tokens for name, task in shipped_tasks.items()} == {
        "feed_engagement": 32, "job_apply": 48, "pymk_connect": 48, "rerank": 256,
    }
    policy = shipped_tasks["job_apply"].history
    assert (policy.max_item_tokens, policy.max_tokens, policy.max_items) == (16, 192, 24)
    assert policy.action_priority == ("applied", "connected", "liked", "viewed", "dismissed", "impression")
    assert policy.downsample == (Downsample("impression", 0.4),)
    assert "P(applied)" in shipped_tasks["job_apply"].description


def test_versions_are_short_content_hashes(shipped_tasks):
    versions = [task.version for task in shipped_tasks.values()]
    assert all(re.fullmatch(r"[0-9a-f]{12}", version) for version in versions)
    assert len(set(versions)) == 4


def test_an_unknown_task_names_the_known_ones(shipped_tasks):
    with pytest.raises(UnknownTaskError, match="unknown task 'job_aply'; known tasks: feed_engagement, "
                                               "job_apply, pymk_connect, rerank"):
        shipped_tasks["job_aply"]
    assert "job_aply" not in shipped_tasks and "job_apply" in shipped_tasks
    assert shipped_tasks.get("job_aply") is None
    assert len(shipped_tasks) == 4


# --- a task of our own --------------------------------------------------------------

def test_a_minimal_task_gets_the_defaults(write_prompts):
    task = load_tasks(write_prompts(t=(LABELS, TEMPLATE)))["t"]
    assert task.labels == (" Yes", " No") and task.positive_label == " Yes"
    assert task.max_candidate_tokens == 128 and task.description == ""
    assert task.slo_ms is None and task.slo_seconds is None  # the server's SLO applies
    assert (task.history.max_item_tokens, task.history.max_tokens, task.history.max_items) == (32, 256, 50)


def test_a_config_can_name_its_template_and_pin_its_version(write_prompts):
    prompts = write_prompts(files={"shared.jinja": TEMPLATE})
    (prompts / "t.toml").write_text('template = "shared.jinja"\nversion = "v7"\n' + LABELS, encoding="utf-8")
    task = load_tasks(prompts)["t"]
    assert task.version == "v7" and task.template.name == "shared.jinja"


def test_a_task_can_name_its_own_slo(write_prompts):
    task = load_tasks(write_prompts(t=("slo_ms = 250\n" + LABELS, TEMPLATE)))["t"]
    assert task.slo_ms == 250.0 and task.slo_seconds == pytest.approx(0.25)


def test_the_positive_label_need_not_come_first(write_prompts):
    config = '[labels]\nwords = [" No", " Yes"]\npositive = " Yes"\n'
    task = load_tasks(write_prompts(t=(config, TEMPLATE)))["t"]
    assert task.positive_index == 1


# --- content versions ---------------------------------------------------------------

def copy_of_shipped_prompts(tmp_path):
    return shutil.copytree(defaults.PROMPTS_DIR, tmp_path / "prompts")


def test_the_same_files_give_the_same_versions_anywhere(shipped_tasks, tmp_path):
    copied = load_tasks(copy_of_shipped_prompts(tmp_path))
    assert {n: t.version for n, t in copied.items()} == {n: t.version for n, t in shipped_tasks.items()}


def test_changing_a_template_changes_only_its_task_version(shipped_tasks, tmp_path):
    prompts = copy_of_shipped_prompts(tmp_path)
    path = prompts / "job_apply.jinja"
    path.write_text(path.read_text(encoding="utf-8").replace("outcome:", "result:"), encoding="utf-8")
    changed = load_tasks(prompts)
    assert changed["job_apply"].version != shipped_tasks["job_apply"].version
    assert changed["feed_engagement"].version == shipped_tasks["feed_engagement"].version


@pytest.mark.parametrize("partial", ["_member.jinja", "_history_item.jinja"])
def test_changing_a_partial_changes_every_version(shipped_tasks, tmp_path, partial):
    prompts = copy_of_shipped_prompts(tmp_path)
    with (prompts / partial).open("a", encoding="utf-8") as file:
        file.write("{# edited #}")
    changed = load_tasks(prompts)
    assert all(changed[name].version != shipped_tasks[name].version for name in shipped_tasks)


def test_changing_a_config_changes_its_version(shipped_tasks, tmp_path):
    prompts = copy_of_shipped_prompts(tmp_path)
    path = prompts / "pymk_connect.toml"
    path.write_text(path.read_text(encoding="utf-8").replace("max_tokens = 192", "max_tokens = 128"),
                    encoding="utf-8")
    changed = load_tasks(prompts)
    assert changed["pymk_connect"].history.max_tokens == 128
    assert changed["pymk_connect"].version != shipped_tasks["pymk_connect"].version


# --- broken task directories --------------------------------------------------------

@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('title = "x"\n' + LABELS, r"top level: unknown key\(s\) \['title'\]; known keys: \['description'"),
        # a top-level key written after a table belongs to that table
        (LABELS + 'description = "late"\n',
         r"\[labels\]: unknown key\(s\) \['description'\].*before the first \[table\]"),
        (LABELS + "[history]\nmax_item = 3\n", r"\[history\]: unknown key\(s\) \['max_item'\]"),
        ('[labels]\nwords = [" Yes", " No"]\npositive = " yes"\n',
         r"\[labels\] positive ' yes' is not one of words \[' Yes', ' No'\]"),
        ('[labels]\nwords = [" Yes"]\n', r"\[labels\] words needs at least two label words"),
        ("description = 'no labels'\n", r"\[labels\] words"),
        ('[labels]\nwords = [" Yes", " No", " Yes"]\n', r"\[labels\] words repeats a word"),
        (LABELS + "[history]\nmax_tokens = -5\n", r"\[history\]: history max_tokens must be >= 0, got -5"),
        (LABELS + '[history]\ndownsample = [{ action = "impression", keep_rate = 2.0 }]\n',
         r"\[history\]: downsample keep_rate must be in \[0, 1\], got 2.0"),
        ("[labels\nwords = 1\n", r"invalid TOML"),
        ("slo_ms = 0\n" + LABELS, r"slo_ms must be a positive number of milliseconds, got 0"),
        ('slo_ms = "fast"\n' + LABELS, r"slo_ms must be a positive number of milliseconds, got 'fast'"),
    ],
)
def test_a_broken_config_is_refused_with_the_reason(write_prompts, config, message):
    prompts = write_prompts(t=(config, TEMPLATE))
    with pytest.raises(TaskConfigError, match=message) as caught:
        load_tasks(prompts)
    assert "t.toml" in str(caught.value)


def test_a_missing_template_file_is_named(write_prompts):
    prompts = write_prompts()
    (prompts / "t.toml").write_text(LABELS, encoding="utf-8")
    with pytest.raises(TaskConfigError, match=r"t.toml: template file t.jinja not found"):
        load_tasks(prompts)


def test_a_broken_template_fails_the_load(write_prompts):
    with pytest.raises(TaskConfigError, match="lacks block"):
        load_tasks(write_prompts(t=(LABELS, "{% block context %}{% endblock %}")))


def test_an_empty_prompts_directory_is_refused(tmp_path):
    with pytest.raises(TaskConfigError, match=r"no task configs \(\*.toml\) in"):
        load_tasks(tmp_path)


def test_label_words_given_as_a_string_are_refused(write_prompts):
    # A string is iterable: tuple(" Yes") would be four one-character labels.
    with pytest.raises(TaskConfigError, match=r"\[labels\] words must be a list of strings, got ' Yes'"):
        load_tasks(write_prompts(t=('[labels]\nwords = " Yes"\n', TEMPLATE)))


def test_a_downsample_rule_without_its_action_is_a_task_config_error(write_prompts):
    config = LABELS + "[history]\ndownsample = [{ keep_rate = 0.4 }]\n"
    with pytest.raises(TaskConfigError, match="action"):
        load_tasks(write_prompts(t=(config, TEMPLATE)))


def test_a_non_integer_budget_is_a_task_config_error(write_prompts):
    config = 'max_candidate_tokens = "many"\n' + LABELS
    with pytest.raises(TaskConfigError, match="max_candidate_tokens"):
        load_tasks(write_prompts(t=(config, TEMPLATE)))


def test_an_action_priority_given_as_a_string_is_refused(write_prompts):
    config = LABELS + '[history]\naction_priority = "applied"\n'
    with pytest.raises(TaskConfigError, match="action_priority"):
        load_tasks(write_prompts(t=(config, TEMPLATE)))
