"""How `brew batch` runs a job: its own settings, declared once (brew.settings).

The engine's settings (engine, model, multi_item, [vllm], [torch], ...) and
the service's ([batching], [limits]) are `brew serve`'s, read from the same
flags and --config file, so a batch job scores with the server's engine.
These are the job's alone; they decide how it runs, never a score.
"""

from __future__ import annotations

from dataclasses import dataclass

from brew.settings import Settings, setting


@dataclass(frozen=True)
class BatchSettings(Settings):
    """A batch job's own settings (flags of `brew batch`)."""

    shard_requests: int = setting(10_000, ge=1, help="input rows per output shard: what a rerun resumes by")
    chunk_requests: int = setting(1_000, ge=1, help="JSONL lines read at once, within a shard, and per Ray "
                                                    "read task (memory stays flat however big the input)")
    max_errors: int | None = setting(None, ge=0, help="stop the job once more rows than this have failed "
                                                      "(not set: never stop for bad rows)")
    window_candidates: int | None = setting(
        None, ge=1, help="candidates read and in flight ahead of the engine (not set: [batching] "
                         "max_queue_candidates, the server's own queue)")
    progress: bool = setting(True, help="a progress bar on stderr (requests, candidates/s, ETA)")
    ray: bool = setting(False, help="run the pipeline on Ray Data (also when RAY_ADDRESS is set): a local Ray "
                                    "without an address, the cluster's with one")
    ray_cpus: int | None = setting(None, ge=1, help="Ray started here (no RAY_ADDRESS): the CPUs it may use "
                                                    "(not set: all of this machine's)")
    actors: int = setting(1, ge=1, help="Ray: scoring actors, one engine each")
    gpus_per_actor: float | None = setting(None, ge=0, help="Ray: GPUs per scoring actor (not set: 1 when the "
                                                            "cluster has GPUs, else 0)")
    cpus_per_actor: float = setting(1.0, ge=0, help="Ray: CPUs reserved per scoring actor")
    actor_batch_requests: int = setting(64, ge=1, help="Ray: requests handed to a scoring actor at once")

