"""What a load test sends: seeded synthetic requests, or requests replayed from a file.

Serving cost depends on the shape of the traffic more than on its rate: the
candidates per request set the batch work, the history length sets the
shared prefix, and members seen before hit the engine's prefix cache. So a
synthetic workload is described by exactly those knobs (`WorkloadSpec`) and
drawn from the demo's synthetic world with one seed: the same spec gives the
same requests, byte for byte, so two runs differ only in the server.

- task mix: each request scores one task, drawn by weight;
- candidates per request: fixed (lo == hi) or uniform in [lo, hi];
- history length: uniform in [lo, hi] interactions, per new member;
- members: at most this many distinct members are ever sent;
- repeat share: the share of requests that reuse a member already sent (a
  prefix-cache hit on an engine that caches). Once all `members` have been
  sent every request is a repeat, so the share observed over n requests is
  at least 1 - members/n.

Replay reads one request per line in the proto's JSON mapping (the format of
examples/request.json, written on one line) and cycles through the file;
passes after the first get a `~<pass>` suffix on their request ids.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from google.protobuf import json_format

from brew.demo.world import Persona, World
from brew.errors import InvalidRequestError
from brew.types import Item, ScoreRequest, TaskRequest
from brew.v1 import ranking_pb2 as pb
from brew.wire import parse_request_json, request_to_proto

# How each demo task draws a candidate for a persona (biased towards the
# persona, as a real candidate generator is).
ITEM_DRAWS: Mapping[str, Callable[[World, Persona], Item]] = {
    "job_apply": World.job,
    "feed_engagement": World.post,
    "pymk_connect": World.profile_item,
}


class Workload(Protocol):
    def requests(self) -> Iterator[pb.ScoreCandidatesRequest]:
        """An endless (or cycling) stream of requests, the same on every call."""
        ...


def candidate_count(request: pb.ScoreCandidatesRequest) -> int:
    return sum(len(task.candidates) for task in request.tasks)


@dataclass(frozen=True)
class WorkloadSpec:
    """The shape of synthetic traffic; validated when built."""

    tasks: Mapping[str, float] = field(default_factory=lambda: {"job_apply": 1.0})
    candidates: tuple[int, int] = (16, 16)
    history: tuple[int, int] = (12, 24)
    members: int = 100
    repeat_share: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise ValueError("invalid workload:\n  - " + "\n  - ".join(problems))


def _problems(spec: WorkloadSpec) -> Iterator[str]:
    if not spec.tasks:
        yield "tasks is empty: name at least one task with a weight, e.g. job_apply=1"
    for name, weight in spec.tasks.items():
        if name not in ITEM_DRAWS:
            yield (f"task {name!r} has no synthetic candidates; use one of {sorted(ITEM_DRAWS)} "
                   "(or --replay a file of requests)")
        if not weight > 0 or not math.isfinite(weight):
            yield f"task {name!r} has weight {weight}; weights must be positive numbers"
    lo, hi = spec.candidates
    if not 1 <= lo <= hi:
        yield f"candidates per request {lo}-{hi}: need 1 <= lo <= hi"
    lo, hi = spec.history
    if not 0 <= lo <= hi:
        yield f"history length {lo}-{hi}: need 0 <= lo <= hi"
    if spec.members < 1:
        yield f"members is {spec.members}: need at least one distinct member"
    if not 0.0 <= spec.repeat_share <= 1.0:
        yield f"repeat share is {spec.repeat_share}: it is a share, in [0, 1]"


class SyntheticWorkload:
    """Requests drawn from the synthetic world according to a WorkloadSpec."""

    def __init__(self, spec: WorkloadSpec) -> None:
        self.spec = spec

    def requests(self) -> Iterator[pb.ScoreCandidatesRequest]:
        spec = self.spec
        world = World(spec.seed)
        # Decisions (task, repeat, sizes) on their own stream, so the world's
        # draws depend only on how many members and items were drawn.
        rng = random.Random(f"brew-loadtest-{spec.seed}")
        names, weights = list(spec.tasks), list(spec.tasks.values())
        sent: list[Persona] = []
        for index in itertools.count():
            repeat = bool(sent) and (len(sent) >= spec.members or rng.random() < spec.repeat_share)
            if repeat:
                persona = rng.choice(sent)
            else:
                persona = world.persona(history_length=spec.history)
                sent.append(persona)
            task = rng.choices(names, weights)[0]
            draw = ITEM_DRAWS[task]
            candidates = tuple(draw(world, persona) for _ in range(rng.randint(*spec.candidates)))
            yield request_to_proto(ScoreRequest(
                request_id=f"lt{spec.seed}-{index}",
                member=persona.member,
                tasks=(TaskRequest(task=task, candidates=candidates),),
            ))


class ReplayWorkload:
    """The requests of a JSONL file, in file order, cycling."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file_requests = read_requests_jsonl(path)
        if not self.file_requests:
            raise ValueError(f"{path}: no requests (one JSON request per line expected)")

    def requests(self) -> Iterator[pb.ScoreCandidatesRequest]:
        for replay in itertools.count():
            for original in self.file_requests:
                request = pb.ScoreCandidatesRequest()
                request.CopyFrom(original)
                if replay:
                    request.request_id = f"{original.request_id}~{replay}"
                yield request


def read_requests_jsonl(path: Path) -> list[pb.ScoreCandidatesRequest]:
    """One request per non-blank line, in the proto's JSON mapping."""
    requests = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                requests.append(parse_request_json(line))
            except InvalidRequestError as error:
                raise ValueError(f"{path}:{number}: {error}") from error
    return requests


def write_requests_jsonl(requests: Iterable[pb.ScoreCandidatesRequest], path: Path) -> int:
    """Write requests one per line (replayable by ReplayWorkload); returns the count."""
    written = 0
    with path.open("w", encoding="utf-8") as out:
        for request in requests:
            out.write(json_format.MessageToJson(request, indent=None) + "\n")
            written += 1
    return written


# The published workload of the GPU proof (docs/gpu.md): 10 candidates per
# request of about 18 tokens (feed posts of 10 tokens and member profiles of
# 26, half the requests each), a context of about 120 tokens (12-14
# interactions), every request from a new member (no prefix-cache hits):
# about 300 tokens a request, the shape SGLang's and LinkedIn's figures use.
PUBLISHED_WORKLOAD = WorkloadSpec(tasks={"feed_engagement": 1.0, "pymk_connect": 1.0}, candidates=(10, 10),
                                  history=(12, 14), members=1_000_000, repeat_share=0.0)
