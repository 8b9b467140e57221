"""A side-by-side run's settings from its command line, or from a saved run."""

from __future__ import annotations

import json

from loadtest.bench.sidebyside.command import settings_from
from loadtest.cli import build_parser
from loadtest.workload import WorkloadSpec


def parsed(tmp_path, *extra: str):
    return build_parser().parse_args(["sidebyside", "--out", str(tmp_path), *extra])


def test_the_workload_carries_the_task_candidates_and_history(tmp_path):
    settings = settings_from(parsed(tmp_path, "--tasks", "feed_engagement", "--candidates", "8",
                                    "--history", "64-96", "--prompts", str(tmp_path / "long")))
    assert settings.workload.tasks == {"feed_engagement": 1.0}
    assert settings.workload.candidates == (8, 8)
    assert settings.workload.history == (64, 96)
    assert settings.prompts == (tmp_path / "long").resolve()


def test_a_saved_run_gives_the_same_settings_and_one_saved_before_history_gets_the_default(tmp_path):
    saved = json.loads(json.dumps({"history": parsed(tmp_path, "--history", "40").history}))
    reread = parsed(tmp_path)
    vars(reread).update(saved)  # as `--report` reads a run's sidebyside.json back
    assert settings_from(reread).workload.history == (40, 40)  # a JSON list, read back as the tuple
    del vars(reread)["history"]
    assert settings_from(reread).workload.history == WorkloadSpec.history
