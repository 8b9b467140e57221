"""Outcomes -> Parquet shards, errors.jsonl and the manifest: what makes a job resumable.

The output directory of a job:

    manifest.json           the job (input, shard size, what decides a score),
                            each task's labels, and every finished shard
    part-00000.parquet      the candidates of shard 0 (serving.batch.columns),
    part-00001.parquet      in input order; one file per finished shard
    errors.jsonl            one line per bad row: request_index, line (JSONL),
                            request_id, reason and message

A shard is committed when every row of it has an outcome, in this order:
its Parquet file is written under a temporary name and renamed (atomic),
its bad rows are appended to errors.jsonl, then the manifest is rewritten
the same way, naming the shard and errors.jsonl's length after it. Only
the manifest says what is done. A rerun of the same job reads it, cuts
errors.jsonl back to the recorded length, removes the files of unfinished
shards and runs only those: whenever a job was killed, its output ends with
exactly one row per candidate and one line per bad row.

A job that stops early (`--max-errors`, or a failure) still appends the bad
rows it found in unfinished shards to errors.jsonl, so they can be read; a
rerun cuts them off and finds them again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brew.errors import BrewError
from serving.batch.columns import Failed, Outcome, Row, Scored, to_table
from serving.batch.inputs import ShardPlan

MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
MANIFEST_VERSION = 1


class OutputError(BrewError):
    """The output directory holds another job, or cannot be written."""

    reason = "output"


class TooManyErrors(BrewError):
    """More rows failed than --max-errors allows."""

    reason = "max_errors"


def part_name(shard: int) -> str:
    return f"part-{shard:05d}.parquet"


@dataclass
class Manifest:
    """manifest.json: the job it belongs to and the shards it finished."""

    job: dict[str, Any]
    tasks: dict[str, Any]
    shards: dict[int, dict[str, int]] = field(default_factory=dict)
    errors_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"version": MANIFEST_VERSION, "job": self.job, "tasks": self.tasks,
                "shards": {part_name(k): v for k, v in sorted(self.shards.items())},
                "errors_bytes": self.errors_bytes}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Manifest:
        shards = {int(name.removeprefix("part-").removesuffix(".parquet")): dict(counts)
                  for name, counts in raw["shards"].items()}
        return cls(dict(raw["job"]), dict(raw["tasks"]), shards, int(raw["errors_bytes"]))

    def totals(self) -> dict[str, int]:
        return {key: sum(counts[key] for counts in self.shards.values()) for key in ("requests", "candidates", "errors")}


def open_output(out_dir: Path, job: dict[str, Any], tasks: dict[str, Any]) -> Manifest:
    """The manifest to continue: a new one for an empty or new directory, the
    finished shards of the same job in it, else OutputError. Whatever the
    manifest does not name (a shard file, errors past its length, temporary
    files of a killed run) is removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / MANIFEST
    if path.exists():
        try:
            manifest = Manifest.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise OutputError(f"{path}: cannot read the manifest of the job there ({error}); "
                              "give another --output or remove that directory") from None
        if manifest.job != job or manifest.tasks != tasks:
            different = sorted(k for k in {**job, **manifest.job} if job.get(k) != manifest.job.get(k))
            what = ", ".join(different) if different else "the tasks' template versions or labels"
            raise OutputError(f"{out_dir} holds the output of another job (it differs in: {what}); rerun that "
                              "job to resume it, or give another --output")
    elif any(out_dir.iterdir()):
        raise OutputError(f"{out_dir} is not empty and holds no {MANIFEST}; give an empty or new --output")
    else:
        manifest = Manifest(job, tasks)
    done = {part_name(k) for k in manifest.shards}
    for stale in out_dir.iterdir():
        if stale.name.endswith(".tmp") or (stale.name.startswith("part-") and stale.name not in done):
            stale.unlink()
    with (out_dir / ERRORS).open("ab") as errors:
        errors.truncate(manifest.errors_bytes)
    _write_json(path, manifest.to_json())
    return manifest


@dataclass
class _OpenShard:
    plan: ShardPlan
    scored: list[Scored] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return len(self.scored) + len(self.failed) == self.plan.rows


class ShardBook:
    """Collects outcomes by shard and commits each shard once all its rows are in.

    `max_errors` counts the bad rows of the whole job, finished shards of an
    earlier run included; one more raises TooManyErrors from `record`.
    """

    def __init__(self, out_dir: Path, manifest: Manifest, shards: Iterable[ShardPlan],
                 shard_requests: int, max_errors: int | None = None) -> None:
        self._dir = out_dir
        self.manifest = manifest
        self._shard_requests = shard_requests
        self._open = {plan.index: _OpenShard(plan) for plan in shards}
        self._max_errors = max_errors
        self.errors = manifest.totals()["errors"]
        self.committed: list[int] = []

    def empty_shards(self) -> list[int]:
        """Shards without a row (a JSONL stretch of blank lines): complete at once."""
        return [k for k, shard in self._open.items() if shard.complete]

    def record(self, outcome: Outcome) -> int | None:
        """File an outcome; the shard it completes, if any (to `commit`)."""
        shard = self._open[outcome.request_index // self._shard_requests]
        if isinstance(outcome, Failed):
            shard.failed.append(outcome)
            self.errors += 1
            if self._max_errors is not None and self.errors > self._max_errors:
                raise TooManyErrors(f"{self.errors} rows failed, over --max-errors {self._max_errors}; "
                                    f"see {self._dir / ERRORS}")
        else:
            shard.scored.append(outcome)
        return shard.plan.index if shard.complete else None

    def commit(self, index: int) -> None:
        """Write the shard's Parquet file, its bad rows, then the manifest."""
        import pyarrow.parquet as pq

        shard = self._open.pop(index)
        rows: list[Row] = [row for scored in sorted(shard.scored, key=lambda s: s.request_index) for row in scored.rows]
        final = self._dir / part_name(index)
        temporary = final.with_name(final.name + ".tmp")
        pq.write_table(to_table(rows), temporary)
        os.replace(temporary, final)
        errors_bytes = self._append_errors(shard.failed)
        self.manifest.shards[index] = {"requests": shard.plan.rows, "candidates": len(rows),
                                       "errors": len(shard.failed)}
        self.manifest.errors_bytes = errors_bytes
        _write_json(self._dir / MANIFEST, self.manifest.to_json())
        self.committed.append(index)

    def flush_errors(self) -> None:
        """A job that stops: the bad rows of its unfinished shards, for reading
        (the manifest does not count them; a rerun cuts them off)."""
        self._append_errors([failed for shard in self._open.values() for failed in shard.failed])

    def _append_errors(self, failed: list[Failed]) -> int:
        with (self._dir / ERRORS).open("ab") as errors:
            for outcome in sorted(failed, key=lambda f: f.request_index):
                errors.write((json.dumps(outcome.record(), ensure_ascii=False) + "\n").encode("utf-8"))
            errors.flush()
            os.fsync(errors.fileno())
            return errors.tell()


def _write_json(path: Path, content: Mapping[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
