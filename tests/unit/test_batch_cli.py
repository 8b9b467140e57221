"""`brew batch`'s command line: its flags come from the settings' declarations,
and a job that cannot start says why with exit status 2 before any model
is loaded. In-process; no model."""

from __future__ import annotations

import pytest

from brew.cli import build_parser, main
from serving.batch.settings import BatchSettings


def test_the_job_flags_and_brew_serves_engine_batching_and_limit_flags_are_there():
    args = build_parser().parse_args([
        "batch", "--input", "in.jsonl", "--output", "out", "--engine", "torch", "--max-batch-candidates", "512",
        "--max-candidates-per-request", "64", "--shard-requests", "5", "--max-errors", "3", "--ray", "--actors", "4",
    ])
    assert (args.engine, getattr(args, "batching.max_batch_candidates"), getattr(args, "limits.max_candidates_per_request")) \
        == ("torch", 512, 64)
    assert (getattr(args, "job.shard_requests"), getattr(args, "job.max_errors"), getattr(args, "job.ray"),
            getattr(args, "job.actors")) == (5, 3, True, 4)


def test_a_missing_input_is_named(tmp_path, capsys):
    assert main(["batch", "--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "out")]) == 2
    assert "--input" in capsys.readouterr().err


def test_an_output_directory_of_another_job_is_refused(tmp_path, capsys):
    requests = tmp_path / "in.jsonl"
    requests.write_text("\n", encoding="utf-8")  # a blank line: no row, no engine work
    out = tmp_path / "out"
    assert main(["batch", "--input", str(requests), "--output", str(out), "--engine", "torch", "--no-progress"]) == 0
    assert main(["batch", "--input", str(requests), "--output", str(out), "--engine", "naive", "--no-progress"]) == 2
    assert "holds the output of another job (it differs in: engine)" in capsys.readouterr().err


def test_an_invalid_job_setting_says_which(tmp_path, capsys):
    requests = tmp_path / "in.jsonl"
    requests.write_text("\n", encoding="utf-8")
    with pytest.raises(SystemExit):
        main(["batch", "--input", str(requests), "--output", str(tmp_path), "--actors", "zero"])
    assert "--actors" in capsys.readouterr().err
    assert main(["batch", "--input", str(requests), "--output", str(tmp_path / "o"), "--shard-requests", "0"]) == 2
    assert "shard_requests" in capsys.readouterr().err
    assert BatchSettings().shard_requests == 10_000
