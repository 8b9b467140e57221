"""The input of a batch job: planned once, then read a chunk at a time.

A row is one request. Its `request_index` is its place in the file: the
line index (0-based) of a JSONL file, whose blank lines are no rows but keep
their index, so a row's index is its line number less one; the row index of
a Parquet file. Shard k holds the rows with index in
[k * shard_requests, (k + 1) * shard_requests): a shard is a fixed part of
the input, whatever ran before, which is what lets a rerun skip the shards
already written.

Planning reads the file once without parsing a request (JSONL: line
offsets; Parquet: the footer) and cuts every shard into chunks. A chunk
is what one read returns and one Ray read task handles: up to
`chunk_requests` lines of a JSONL file (a byte range), or the part of one
Parquet row group inside one shard. Only a chunk is ever held in memory, so
memory stays flat however big the input is (a Parquet file's row groups
should be no bigger than a shard).

The format is read from the file, not its name: a Parquet file starts with
the bytes `PAR1`. A Parquet input holds the proto's JSON mapping either as
text, in a string column named `request`, or as columns (`request_id`,
`member`, `tasks`, ... as nested structs and lists).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

PARQUET_MAGIC = b"PAR1"
REQUEST_COLUMN = "request"


class InputFormat(StrEnum):
    JSONL = "jsonl"
    PARQUET = "parquet"


@dataclass(frozen=True)
class Chunk:
    """Rows read together, all of one shard. JSONL: the lines in bytes
    [start, end); Parquet: rows [start, end) of row group `row_group`."""

    shard: int
    first_index: int  # request_index of the chunk's first line or row
    rows: int  # requests in it (a JSONL chunk's blank lines are none)
    start: int
    end: int
    row_group: int = 0


@dataclass(frozen=True)
class ShardPlan:
    index: int
    rows: int
    chunks: tuple[Chunk, ...]


@dataclass(frozen=True)
class InputPlan:
    path: Path
    format: InputFormat
    shards: tuple[ShardPlan, ...]

    @property
    def rows(self) -> int:
        return sum(shard.rows for shard in self.shards)


@dataclass(frozen=True)
class RawRow:
    """One row as read: a JSONL line's bytes, a Parquet `request` string, or
    a Parquet row of columns."""

    index: int
    payload: bytes | str | Mapping[str, Any]

    @property
    def line(self) -> int | None:
        """The JSONL line number (1-based) an editor shows; None for Parquet."""
        return self.index + 1 if isinstance(self.payload, bytes) else None


def input_format(path: Path) -> InputFormat:
    with path.open("rb") as file:
        return InputFormat.PARQUET if file.read(4) == PARQUET_MAGIC else InputFormat.JSONL


def plan_input(path: Path, shard_requests: int, chunk_requests: int) -> InputPlan:
    """Shards and chunks of the input (OSError if unreadable)."""
    kind = input_format(path)
    shards = _plan_parquet(path, shard_requests) if kind is InputFormat.PARQUET else _plan_jsonl(
        path, shard_requests, chunk_requests)
    return InputPlan(path, kind, tuple(shards))


def _plan_jsonl(path: Path, shard_requests: int, chunk_requests: int) -> list[ShardPlan]:
    shards: list[ShardPlan] = []
    chunks: list[Chunk] = []
    shard_rows = 0
    chunk_first = chunk_start = chunk_rows = 0
    offset = 0
    index = -1

    def close_chunk(end: int) -> None:
        nonlocal shard_rows
        if end > chunk_start:
            chunks.append(Chunk(chunk_first // shard_requests, chunk_first, chunk_rows, chunk_start, end))
            shard_rows += chunk_rows

    def close_shard(shard: int) -> None:
        nonlocal chunks, shard_rows
        shards.append(ShardPlan(shard, shard_rows, tuple(chunks)))
        chunks, shard_rows = [], 0

    with path.open("rb") as file:
        for index, line in enumerate(file):
            if index % shard_requests == 0 or (index - chunk_first) >= chunk_requests:
                close_chunk(offset)
                if index and index % shard_requests == 0:
                    close_shard(index // shard_requests - 1)
                chunk_first, chunk_start, chunk_rows = index, offset, 0
            if line.strip():
                chunk_rows += 1
            offset += len(line)
    if index >= 0:
        close_chunk(offset)
        close_shard(index // shard_requests)
    return shards


def _plan_parquet(path: Path, shard_requests: int) -> list[ShardPlan]:
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path).metadata
    per_shard: dict[int, list[Chunk]] = {}
    first = 0
    for group in range(metadata.num_row_groups):
        size = metadata.row_group(group).num_rows
        start = 0
        while start < size:
            index = first + start
            shard = index // shard_requests
            end = min(size, start + (shard + 1) * shard_requests - index)
            per_shard.setdefault(shard, []).append(Chunk(shard, index, end - start, start, end, group))
            start = end
        first += size
    return [ShardPlan(shard, sum(c.rows for c in chunks), tuple(chunks)) for shard, chunks in sorted(per_shard.items())]


def read_chunk(path: Path, kind: InputFormat, chunk: Chunk) -> list[RawRow]:
    """The rows of one chunk, in file order."""
    if kind is InputFormat.PARQUET:
        return _read_parquet(path, chunk)
    with path.open("rb") as file:
        file.seek(chunk.start)
        lines = file.read(chunk.end - chunk.start).splitlines()
    return [RawRow(chunk.first_index + number, line) for number, line in enumerate(lines) if line.strip()]


def _read_parquet(path: Path, chunk: Chunk) -> list[RawRow]:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path).read_row_group(chunk.row_group).slice(chunk.start, chunk.end - chunk.start)
    if table.column_names == [REQUEST_COLUMN]:
        texts: list[Any] = table.column(REQUEST_COLUMN).to_pylist()
        return [RawRow(chunk.first_index + n, text if isinstance(text, str) else "") for n, text in enumerate(texts)]
    return [RawRow(chunk.first_index + n, row) for n, row in enumerate(table.to_pylist())]

