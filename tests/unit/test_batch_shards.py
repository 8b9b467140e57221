"""Outcomes -> shards, errors.jsonl and the manifest, and what a rerun finds
(serving.batch.shards): the rules that leave exactly one row per candidate
and one line per bad row whenever a job was killed. Files only; no model."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from serving.batch.columns import COLUMNS, Failed, Scored
from serving.batch.inputs import ShardPlan
from serving.batch.shards import ERRORS, MANIFEST, OutputError, ShardBook, TooManyErrors, open_output, part_name

JOB = {"input": "/data/in.jsonl", "input_bytes": 123, "shard_requests": 2, "engine": "torch"}
TASKS = {"job_apply": {"version": "v1", "labels": [" applied", " none"]}}


def scored(index: int, candidates: int = 2) -> Scored:
    return Scored(index, tuple(
        (index, f"r{index}", 0, "job_apply", f"item-{index}-{c}", 0.5, [0.5, 0.5], [-1.0, -1.0], "v1", "m", 5, 12)
        for c in range(candidates)))


def failed(index: int) -> Failed:
    return Failed(index, index + 1, f"r{index}", "invalid_argument", f"row {index} is bad")


def shards(*rows: int) -> list[ShardPlan]:
    return [ShardPlan(index, count, ()) for index, count in enumerate(rows)]


def test_a_shard_is_committed_once_all_its_rows_are_in_with_rows_in_input_order(tmp_path):
    book = ShardBook(tmp_path, open_output(tmp_path, JOB, TASKS), shards(2, 2), shard_requests=2)
    assert book.record(scored(3)) is None
    assert book.record(scored(1)) is None
    assert book.record(failed(2)) == 1
    book.commit(1)
    assert book.record(scored(0, candidates=3)) == 0
    book.commit(0)
    assert [r["request_index"] for r in pq.read_table(tmp_path / part_name(0)).to_pylist()] == [0, 0, 0, 1, 1]
    second = pq.read_table(tmp_path / part_name(1))
    assert second.column_names == list(COLUMNS)
    assert second.column("item_id").to_pylist() == ["item-3-0", "item-3-1"]
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["shards"] == {part_name(0): {"requests": 2, "candidates": 5, "errors": 0},
                                  part_name(1): {"requests": 2, "candidates": 2, "errors": 1}}
    errors = (tmp_path / ERRORS).read_text().splitlines()
    assert [json.loads(line) for line in errors] == [
        {"request_index": 2, "line": 3, "request_id": "r2", "reason": "invalid_argument", "message": "row 2 is bad"}]
    assert manifest["errors_bytes"] == (tmp_path / ERRORS).stat().st_size


def test_a_rerun_keeps_what_the_manifest_names_and_drops_the_rest_of_a_killed_run(tmp_path):
    book = ShardBook(tmp_path, open_output(tmp_path, JOB, TASKS), shards(2, 2, 2), shard_requests=2)
    book.record(scored(0))
    book.record(failed(1))
    book.commit(0)
    kept = (tmp_path / ERRORS).read_bytes()
    # What a kill leaves: a shard renamed before its manifest, a half-written
    # file, errors appended past the manifest's length.
    (tmp_path / part_name(1)).write_bytes(b"complete but not in the manifest")
    (tmp_path / (part_name(2) + ".tmp")).write_bytes(b"half")
    with (tmp_path / ERRORS).open("ab") as errors:
        errors.write(b'{"request_index": 3}\n')

    manifest = open_output(tmp_path, JOB, TASKS)
    assert set(manifest.shards) == {0}
    assert sorted(p.name for p in tmp_path.iterdir()) == [ERRORS, MANIFEST, part_name(0)]
    assert (tmp_path / ERRORS).read_bytes() == kept


def test_another_job_in_the_output_directory_is_refused_naming_the_difference(tmp_path):
    open_output(tmp_path, JOB, TASKS)
    with pytest.raises(OutputError, match="differs in: engine, input"):
        open_output(tmp_path, {**JOB, "engine": "vllm", "input": "/data/other.jsonl"}, TASKS)
    with pytest.raises(OutputError, match="template versions"):
        open_output(tmp_path, JOB, {"job_apply": {"version": "v2", "labels": [" applied", " none"]}})


def test_a_directory_with_other_files_and_no_manifest_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        open_output(tmp_path, JOB, TASKS)


def test_max_errors_counts_earlier_runs_and_a_stopped_job_still_lists_its_bad_rows(tmp_path):
    book = ShardBook(tmp_path, open_output(tmp_path, JOB, TASKS), shards(2, 2), shard_requests=2)
    book.record(failed(0))
    book.record(scored(1))
    book.commit(0)
    rerun = ShardBook(tmp_path, open_output(tmp_path, JOB, TASKS), shards(2, 2)[1:], shard_requests=2,
                      max_errors=1)
    with pytest.raises(TooManyErrors, match="2 rows failed, over --max-errors 1"):
        rerun.record(failed(2))
    rerun.flush_errors()
    assert [json.loads(line)["request_index"] for line in (tmp_path / ERRORS).read_text().splitlines()] == [0, 2]
    assert set(open_output(tmp_path, JOB, TASKS).shards) == {0}  # the stopped shard is done again
    assert [json.loads(line)["request_index"] for line in (tmp_path / ERRORS).read_text().splitlines()] == [0]


def test_an_empty_shard_is_complete_at_once(tmp_path):
    book = ShardBook(tmp_path, open_output(tmp_path, JOB, TASKS), shards(0, 1), shard_requests=2)
    assert book.empty_shards() == [0]
    book.commit(0)
    assert pq.read_table(tmp_path / part_name(0)).num_rows == 0
