"""The batch pipeline on Ray Data: the same stages, spread over a cluster.

    chunks (the driver's plan)   one block per chunk of the unfinished shards
    read + prepare (CPU tasks)   read the chunk, parse each row, render and
                                 tokenize its tasks (brew.verbalize, as the
                                 service would): token ids, or a Failed outcome
    score (actor pool)           one engine per actor, behind the service
                                 (serving.batch.scorer), `--actors N` of them,
                                 `num_gpus` each on GPU machines
    outcomes -> the driver       the job's sink writes the Parquet shards

Ray Data streams blocks between the stages and holds back the reading
when the actors fall behind, so memory stays flat. The driver writes the
shards itself (serving.batch.shards): one writer keeps the manifest exact,
so a killed Ray job resumes like a local one; the output is a few numbers
per candidate, small next to the work of scoring them.

Rendering happens in the CPU tasks, before the engine's length limit is
known (an engine may accept fewer tokens than its checkpoint: vLLM keeps
one for the generated token). The tasks check against the checkpoint's
limit; the actor checks each group again against its engine's
(Verbalizer.check_lengths) and scores the token ids it was given through
the service's `prepare` hook. Everything else (limits, batching, assembly)
is the service's, as in a local job.

Without an address (`RAY_ADDRESS`), Ray starts on this machine, so the same
command runs on a laptop and, unchanged, on a cluster. Workers import this
project: on a local Ray from the directory it runs from; on a cluster it
must be installed on every node, as any Ray application's code is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import pickle
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from brew.context_cache import ContextCache
from brew.errors import InvalidRequestError, TaskConfigError
from brew.model_limits import max_model_len
from brew.ranker import Ranker
from brew.runtime import build_ranker
from brew.tasks import load_tasks
from brew.tokenization import PromptTokenizer
from brew.types import ScoreRequest, ScoringGroup
from brew.v1 import ranking_pb2 as pb
from brew.verbalize import PreparedTask, RenderedContext, Verbalizer, task_label_ids
from brew.wire import request_from_proto
from serving.batch.columns import Failed, Outcome
from serving.batch.inputs import Chunk, InputFormat, InputPlan, ShardPlan, read_chunk
from serving.batch.local import freeze_startup_objects, parse_rows
from serving.batch.scorer import BatchScorer
from serving.batch.settings import BatchSettings
from serving.config import Limits, ServerConfig
from serving.limits import check_limits
from serving.service import Prepare, local_service
from serving.servicer import request_shape

# A task rendered in a CPU task: (name, template version, item ids, prefix ids, suffix ids).
RenderedTask = tuple[str, str, tuple[str, ...], tuple[int, ...], tuple[tuple[int, ...], ...]]


def score_on_ray(plan: InputPlan, shards: Sequence[ShardPlan], config: ServerConfig, batch: BatchSettings,
                 sink: Callable[[Outcome], None]) -> None:
    """Run the pipeline on Ray (the cluster at RAY_ADDRESS, else a local
    one started here and stopped after) and hand every outcome to `sink`."""
    import ray

    started_here = not ray.is_initialized()
    if started_here and os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False, runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    elif started_here:  # a local Ray: its workers import this project from where it runs
        project = str(Path(__file__).resolve().parents[2])
        ray.init(num_cpus=batch.ray_cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": project, "TOKENIZERS_PARALLELISM": "false"}})
    # Workers start in directories of their own: every path they open is absolute.
    plan = dataclasses.replace(plan, path=plan.path.resolve())
    config = dataclasses.replace(config, model=config.model.resolve(), prompts=config.prompts.resolve())
    try:
        for outcome in _outcomes(plan, shards, config, batch):
            sink(outcome)
    finally:
        if started_here:
            ray.shutdown()


def _outcomes(plan: InputPlan, shards: Sequence[ShardPlan], config: ServerConfig,
              batch: BatchSettings) -> Iterable[Outcome]:
    import ray
    import ray.data

    chunks = [dataclasses.asdict(chunk) for shard in shards for chunk in shard.chunks]
    if not chunks:
        return
    ray.data.DataContext.get_current().enable_progress_bars = False  # the job's own bar reports
    gpus = batch.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    dataset = ray.data.from_items(chunks, override_num_blocks=len(chunks)).map_batches(
        prepare_chunks, batch_size=1, num_cpus=1, ray_remote_args_fn=_spread,
        fn_kwargs={"path": str(plan.path), "kind": plan.format.value, "renderer": Renderer.of(config)},
    ).map_batches(
        ScoringActor, batch_size=batch.actor_batch_requests, num_cpus=batch.cpus_per_actor, num_gpus=gpus,
        compute=ray.data.ActorPoolStrategy(size=batch.actors, max_concurrent_calls_per_actor=2,
                                           enable_true_multi_threading=True),
        fn_constructor_kwargs={"config": config, "window_candidates": batch.window_candidates},
    )
    for block in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for blob in block["outcome"]:
            yield pickle.loads(blob)


def _spread() -> dict[str, Any]:
    """The read-and-render tasks' placement: spread over the cluster's nodes.
    Given as a function, it also keeps Ray Data from fusing these tasks into
    the scoring actors when both ask for the same resources (one CPU, no
    GPU): fused, an actor would render between its engine's batches."""
    return {"scheduling_strategy": "SPREAD"}


@dataclasses.dataclass(frozen=True)
class Renderer:
    """What a CPU task needs to render as the actors' verbalizer does."""

    model: Path
    prompts: Path
    max_model_len: int
    context_cache_entries: int
    limits: Limits

    @classmethod
    def of(cls, config: ServerConfig) -> Renderer:
        return cls(config.model, config.prompts, max_model_len(config.model), config.context_cache_entries,
                   config.limits)

    def verbalizer(self) -> Verbalizer:
        return _verbalizer(self)


@functools.cache
def _verbalizer(renderer: Renderer) -> Verbalizer:
    """One per worker process: a Ray worker runs many read tasks, and loading
    the tokenizer and templates per chunk would cost more than rendering it."""
    tasks = load_tasks(renderer.prompts)
    tokenizer = PromptTokenizer.from_pretrained(renderer.model)
    cache = ContextCache(renderer.context_cache_entries) if renderer.context_cache_entries else None
    return Verbalizer(tasks, tokenizer, renderer.max_model_len, task_label_ids(tasks, tokenizer), cache)


def prepare_chunks(chunks: dict[str, Any], path: str, kind: str, renderer: Renderer) -> dict[str, list[Any]]:
    """Read + prepare, a CPU task: each row of the chunks as the request's
    bytes and its rendered tasks, or as its Failed outcome."""
    verbalizer = renderer.verbalizer()
    render = functools.partial(_prepared, verbalizer, renderer.limits)
    indexes: list[int] = []
    lines: list[int] = []
    payloads: list[bytes] = []
    for number in range(len(chunks["shard"])):
        chunk = Chunk(**{name: int(values[number]) for name, values in chunks.items()})
        for row, message in parse_rows(read_chunk(Path(path), InputFormat(kind), chunk)):
            indexes.append(row.index)
            lines.append(row.line or 0)
            payloads.append(pickle.dumps(render(row.index, row.line, message)))
    return {"request_index": indexes, "line": lines, "payload": payloads}


def _prepared(verbalizer: Verbalizer, limits: Limits, index: int, line: int | None,
              message: pb.ScoreCandidatesRequest | Failed) -> Failed | tuple[bytes, list[RenderedTask]]:
    """A row's rendering, or its Failed outcome: the service's checks in the
    service's order (limits, then decode, then each task)."""
    if isinstance(message, Failed):
        return message
    try:
        check_limits(request_shape(message), limits)
        request = request_from_proto(message)
        rendered = [verbalizer.prepare(request.member, task, number) for number, task in enumerate(request.tasks)]
    except InvalidRequestError as error:
        return Failed(index, line, message.request_id, error.reason, str(error))
    return message.SerializeToString(), [
        (p.task.name, p.task.version, p.item_ids, p.group.prefix_ids, p.group.suffix_ids) for p in rendered]


def rendered_tasks(tasks: Sequence[RenderedTask]) -> Prepare:
    """The service's `prepare` for tasks rendered in a CPU task: the groups
    as given, with this engine's label ids, checked against its length limit."""

    def prepare(ranker: Ranker, request: ScoreRequest) -> list[PreparedTask]:
        verbalizer = ranker.verbalizer
        prepared = []
        for index, (name, version, item_ids, prefix_ids, suffix_ids) in enumerate(tasks):
            task = verbalizer.tasks[name]
            if task.version != version:
                raise TaskConfigError(f"task {name}: rendered with template version {version}, scored where it is "
                                      f"{task.version}; give every Ray node the same prompts")
            group = ScoringGroup(prefix_ids, suffix_ids, verbalizer.label_ids(name))
            one = PreparedTask(task, item_ids, group, RenderedContext("", ()), ())  # the texts stayed in the task
            verbalizer.check_lengths(one, index)
            prepared.append(one)
        return prepared

    return prepare


class ScoringActor:
    """One engine behind the service in a Ray actor; scores the rendered
    requests of each batch Ray Data hands it. The service runs on an event
    loop of its own thread, so two batches in flight (two concurrent calls)
    share its dispatcher and the engine never waits between them."""

    def __init__(self, config: ServerConfig, window_candidates: int | None) -> None:
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="brew-batch-actor", daemon=True).start()
        self._stack = AsyncExitStack()
        self._scorer = self._run(self._start(config, window_candidates or config.batching.max_queue_candidates))

    def _run(self, coroutine):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _start(self, config: ServerConfig, window_candidates: int) -> BatchScorer:
        cache = ContextCache(config.context_cache_entries) if config.context_cache_entries else None
        ranker = await build_ranker(config.model, config.prompts, config.engine, **config.engine_options(),
                                    context_cache=cache)
        self._stack.push_async_callback(ranker.engine.close)
        service = await self._stack.enter_async_context(local_service(ranker, config))
        freeze_startup_objects()
        return BatchScorer(service, window_candidates)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        outcomes = self._run(self._score(batch["request_index"], batch["line"], batch["payload"]))
        return {"request_index": [o.request_index for o in outcomes],
                "outcome": [pickle.dumps(o) for o in outcomes]}

    async def _score(self, indexes: Sequence[int], lines: Sequence[int], payloads: Sequence[bytes]) -> list[Outcome]:
        scoring: list[asyncio.Task[Outcome] | Failed] = []
        for index, line, payload in zip(indexes, lines, payloads):
            prepared = pickle.loads(payload)
            if isinstance(prepared, Failed):
                scoring.append(prepared)
                continue
            message = pb.ScoreCandidatesRequest.FromString(prepared[0])
            await self._scorer.window.acquire(request_shape(message).candidates)
            scoring.append(asyncio.create_task(
                self._scorer.score(int(index), int(line) or None, message, rendered_tasks(prepared[1]))))
        return [item if isinstance(item, Failed) else await item for item in scoring]

    def __del__(self) -> None:
        """Close the service and the engine when Ray Data lets the actor go."""
        if self._loop.is_running():
            try:
                self._run(self._stack.aclose())
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)

