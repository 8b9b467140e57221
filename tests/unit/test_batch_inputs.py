"""A batch job's input: planning into shards and chunks, reading a chunk,
and a row's payload as the request message (serving.batch.inputs, rows).
Small files written in the test; no model."""

from __future__ import annotations

import json
from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from brew import defaults
from brew.errors import InvalidRequestError
from brew.wire import parse_request_json
from serving.batch.inputs import InputFormat, plan_input, read_chunk
from serving.batch.rows import parse_row


def read_all(plan):
    return [row for shard in plan.shards for chunk in shard.chunks for row in read_chunk(plan.path, plan.format, chunk)]


def test_jsonl_rows_are_lines_shards_are_index_ranges_and_blank_lines_keep_their_index(tmp_path):
    lines = [b'{"a": 0}', b'{"a": 1}', b"", b'{"a": 3}', b"  ", b'{"a": 5}', b'{"a": 6}']
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines))  # no newline after the last line
    plan = plan_input(path, shard_requests=3, chunk_requests=2)
    assert plan.format is InputFormat.JSONL
    assert [(s.index, s.rows) for s in plan.shards] == [(0, 2), (1, 2), (2, 1)]
    assert all(c.shard == s.index and c.rows <= 2 for s in plan.shards for c in s.chunks)
    rows = read_all(plan)
    assert [(r.index, r.line, r.payload) for r in rows] == [
        (0, 1, b'{"a": 0}'), (1, 2, b'{"a": 1}'), (3, 4, b'{"a": 3}'), (5, 6, b'{"a": 5}'), (6, 7, b'{"a": 6}')]
    assert plan.rows == len(rows)


def test_an_empty_jsonl_file_has_no_shards(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"")
    assert plan_input(path, 10, 5).shards == ()


def test_parquet_is_known_by_its_bytes_and_its_row_groups_are_cut_at_shard_boundaries(tmp_path):
    path = tmp_path / "requests.data"  # the name says nothing: the format is read from the file
    texts = [json.dumps({"requestId": f"r{i}"}) for i in range(10)]
    pq.write_table(pa.table({"request": texts}), path, row_group_size=4)
    plan = plan_input(path, shard_requests=3, chunk_requests=100)
    assert plan.format is InputFormat.PARQUET
    assert [(s.index, s.rows) for s in plan.shards] == [(0, 3), (1, 3), (2, 3), (3, 1)]
    chunks = [(c.row_group, c.start, c.end, c.first_index) for s in plan.shards for c in s.chunks]
    assert chunks == [(0, 0, 3, 0), (0, 3, 4, 3), (1, 0, 2, 4), (1, 2, 4, 6), (2, 0, 1, 8), (2, 1, 2, 9)]
    rows = read_all(plan)
    assert [(r.index, r.line, r.payload) for r in rows] == [(i, None, texts[i]) for i in range(10)]


def test_a_parquet_row_of_columns_reads_as_the_same_request_as_its_json(tmp_path):
    """Maps as Arrow maps, times as Arrow timestamps."""
    example = json.loads(defaults.EXAMPLE_REQUEST.read_text(encoding="utf-8"))
    strings = pa.map_(pa.string(), pa.string())
    item = pa.struct([("itemId", pa.string()), ("entityType", pa.string()), ("fields", strings)])
    schema = pa.schema([
        ("requestId", pa.string()),
        ("member", pa.struct([
            ("memberId", pa.string()), ("profile", strings),
            ("history", pa.list_(pa.struct([("action", pa.string()), ("item", item), ("time", pa.timestamp("s", tz="UTC"))]))),
        ])),
        ("tasks", pa.list_(pa.struct([("task", pa.string()), ("candidates", pa.list_(item))]))),
    ])

    def as_map(record):  # Arrow builds a map column from key/value pairs
        return {**record, "fields": list(record.get("fields", {}).items())}

    def when(text):
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    member = example["member"]
    row = {
        "requestId": example["requestId"],
        "member": {**member, "profile": list(member["profile"].items()),
                   "history": [{**h, "item": as_map(h["item"]), "time": when(h["time"])} for h in member["history"]]},
        "tasks": [{**t, "candidates": [as_map(c) for c in t["candidates"]]} for t in example["tasks"]],
    }
    path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist([row], schema=schema), path)
    (read,) = read_all(plan_input(path, 10, 10))
    assert parse_row(read.payload) == parse_request_json(defaults.EXAMPLE_REQUEST.read_text(encoding="utf-8"))


@pytest.mark.parametrize(("payload", "says"), [
    (b'{"requestId": "\xff"}', "not UTF-8"),
    (b'{"requestId": ', "does not match brew.v1.ScoreCandidatesRequest"),
    ('{"requestId": 3, "nope": 1}', "does not match brew.v1.ScoreCandidatesRequest"),
    ({"member": {"memberId": ["not", "a", "string"]}}, "does not match brew.v1.ScoreCandidatesRequest"),
])
def test_a_row_that_is_no_request_says_why(payload, says):
    with pytest.raises(InvalidRequestError, match=says):
        parse_row(payload)
