"""The rollout file `brew cluster` reads at SIGHUP: what it asks the new
replicas to run, and what it refuses before any replica is touched."""

from __future__ import annotations

import pytest

from serving.cluster_run import RolloutError, read_rollout_file


def test_no_file_keeps_the_replicas_flags(tmp_path):
    assert read_rollout_file(tmp_path / "rollout.toml") == ()


def test_model_and_prompts_become_the_new_replicas_flags(tmp_path):
    (tmp_path / "model-v2").mkdir()
    (tmp_path / "prompts-v2").mkdir()
    path = tmp_path / "rollout.toml"
    path.write_text(f'prompts = "{tmp_path / "prompts-v2"}"\nmodel = "{tmp_path / "model-v2"}"\n')
    assert read_rollout_file(path) == ("--model", str(tmp_path / "model-v2"), "--prompts", str(tmp_path / "prompts-v2"))
    path.write_text(f'prompts = "{tmp_path / "prompts-v2"}"\n')
    assert read_rollout_file(path) == ("--prompts", str(tmp_path / "prompts-v2"))


@pytest.mark.parametrize(("text", "message"), [
    ('prompt = "x"\n', r"unknown key\(s\) \['prompt'\]; known: \['model', 'prompts'\]"),
    ('model = "/no/such/dir"\n', r"model = '/no/such/dir' is not a directory"),
    ("prompts = 3\n", r"prompts = 3 is not a directory"),
    ("model = \n", r"cannot read rollout file"),
])
def test_a_bad_rollout_file_is_refused_with_the_reason(tmp_path, text, message):
    path = tmp_path / "rollout.toml"
    path.write_text(text)
    with pytest.raises(RolloutError, match=message):
        read_rollout_file(path)
