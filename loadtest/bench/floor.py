"""Brew's server CPU per candidate taken apart: the floor's two fixed parts and Brew's own work, each alone.

Brew's server process (per-candidate vLLM path) spends its CPU in three
places: gRPC's Python server, handing candidates to vLLM's engine core and
reading its answers, and Brew's own work (decode, render, tokenize,
dispatch, assemble). This benchmark measures each without the others, at
the load of a host-cost run (the same synthetic workload, the same rate);
the first two are the floor:

- transport: a bare grpc.aio RankingService on uvloop, with the server's
  interceptors and health service, answering every request with canned
  scores at once (`canned-server`), driven by the load generator
  (`brew loadtest run --server-pid`): what gRPC's Python server costs per
  request before Brew scores anything;
- engine client: Brew's vLLM engine (one request per candidate) handed the
  prepared groups of the same requests on the load generator's schedule
  (the same Poisson arrivals, the same seed), in this process:
  what the client side of vLLM's engine core costs the server process per
  candidate (the engine core's own processes are not counted; nor is
  rendering: the groups are prepared before the clock starts).

Their sum is what no change to Brew's decoding, rendering, tokenizing or
dispatching can take away while it serves over grpc.aio and feeds vLLM one
request per candidate (one engine-core message per group). A third part
measures that work of Brew's itself, without transport or engine:

- Brew's own work: the same requests' bytes parsed, decoded, rendered and
  tokenized (the context cache warm, as in a host-cost run once every
  member has been seen), their canned engine results assembled into scores
  and the response serialized, back to back in this process.

What the server spends beyond the three is the joints between them (the
worker-thread hop, the dispatcher, admission, metrics). Each part is
repeated after a warm-up; the report gives min/median/max per candidate.

    python -m loadtest.bench.floor --rate 11.4 --duration 30 --repeats 3 --out runs/floor
    python -m loadtest.bench.floor --rate 11.4 --parts own-work   # one part alone (transport, engine-client, own-work)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from brew import defaults
from brew.engines import EngineKind
from brew.engines.base import ScoringEngine
from brew.types import ScoringGroup
from loadtest import flags
from loadtest.bench.logged_process import server_env
from loadtest.flags import add, resolve_defaults
from loadtest.schedule import poisson
from loadtest.workload import SyntheticWorkload, WorkloadSpec

PARTS = ("transport", "engine-client", "own-work")
CANDIDATES = 16
SEED = 7  # the host-cost runs' workload seed
WARMUP_SECONDS = 5.0


# --- the canned server ------------------------------------------------------------------

async def start_canned_server(port: int):  # type: ignore[no-untyped-def]
    """A started grpc.aio server answering every ScoreCandidates with canned
    scores, and its port (`port` 0: any free one)."""
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from prometheus_client import CollectorRegistry

    from brew.v1 import ranking_pb2 as pb
    from serving.grpc_metrics import GrpcServerMetricsInterceptor
    from serving.replica import ReplicaHeaderInterceptor
    from serving.servicer import SERVICE_NAME, tolerant_parser

    async def score(request: pb.ScoreCandidatesRequest, context: grpc.aio.ServicerContext
                    ) -> pb.ScoreCandidatesResponse:
        return pb.ScoreCandidatesResponse(request_id=request.request_id, results=[
            pb.TaskScores(task=task.task, scores=[
                pb.CandidateScore(item_id=c.item_id, score=0.5, label_probs=[0.5, 0.5], label_logprobs=[-0.7, -0.7])
                for c in task.candidates])
            for task in request.tasks])

    bound: list[int] = []  # the port, once bound: the replica's name
    server = grpc.aio.server(interceptors=[GrpcServerMetricsInterceptor(CollectorRegistry()),
                                           ReplicaHeaderInterceptor(lambda: f"canned:{bound[0]}")])
    handlers = {"ScoreCandidates": grpc.unary_unary_rpc_method_handler(
        score, request_deserializer=tolerant_parser(pb.ScoreCandidatesRequest),
        response_serializer=pb.ScoreCandidatesResponse.SerializeToString)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
    servicer = health.aio.HealthServicer()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    bound.append(server.add_insecure_port(f"127.0.0.1:{port}"))
    await server.start()
    return server, bound[0]


async def serve_canned(port: int) -> None:
    """The canned server until terminated; prints SERVING once it listens."""
    server, _ = await start_canned_server(port)
    gc.collect()  # as the real server does once warm (serving.server)
    gc.freeze()
    print("SERVING", flush=True)
    await server.wait_for_termination()


def measure_transport(port: int, rate: float, duration: float, repeats: int, out: Path) -> list[float]:
    """Canned server's CPU ms per candidate, one figure per repeat."""
    command = [sys.executable, "-m", "loadtest.bench.floor", "canned-server", "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=server_env())
    try:
        if server.stdout is None or server.stdout.readline().strip() != "SERVING":
            raise RuntimeError("the canned server did not start")
        figures = []
        for run in ["warmup", *(f"run-{i}" for i in range(repeats))]:
            load = [sys.executable, "-m", "brew.cli", "loadtest", "run", "--target", f"127.0.0.1:{port}",
                    "--rate", str(rate), "--duration", str(WARMUP_SECONDS if run == "warmup" else duration),
                    "--candidates", str(CANDIDATES), "--seed", str(SEED), "--server-pid", str(server.pid),
                    "--no-progress", "--no-plots", "--out", str(out / "transport" / run)]
            subprocess.run(load, check=True, capture_output=True)
            if run != "warmup":
                cost = json.loads((out / "transport" / run / "host_cost.json").read_text(encoding="utf-8"))
                figures.append(cost["cpu_s_per_candidate"]["server"] * 1e3)
        return figures
    finally:
        server.terminate()
        server.wait()


async def measure_engine_client(rate: float, duration: float, repeats: int) -> list[float]:
    """This process's CPU ms per candidate while Brew's vLLM engine scores
    prepared groups on the load generator's schedule (Poisson arrivals at
    `rate`, its seed), one figure per repeat."""
    from brew.context_cache import ContextCache
    from brew.runtime import build_ranker
    from brew.wire import request_from_proto

    ranker = await build_ranker(defaults.DEMO_MODEL_DIR, defaults.PROMPTS_DIR, EngineKind.VLLM,
                                context_cache=ContextCache())
    try:
        offsets = poisson(rate, duration=duration, seed=SEED)
        spec = WorkloadSpec(candidates=(CANDIDATES, CANDIDATES), seed=SEED)
        messages = itertools.islice(SyntheticWorkload(spec).requests(), len(offsets))
        groups = [[p.group for p in ranker.prepare(request_from_proto(message))] for message in messages]
        candidates = sum(group.num_candidates for request in groups for group in request)
        warmup = poisson(rate, duration=WARMUP_SECONDS, seed=SEED)
        await _paced(ranker.engine, groups[:len(warmup)], warmup)
        gc.collect()  # as the server does after its warm-up (serving.server): start-up objects
        gc.freeze()   # out of the collector, so a full collection does not land in one repeat
        figures = []
        for _ in range(repeats):
            started = time.process_time()
            await _paced(ranker.engine, groups, offsets)
            figures.append((time.process_time() - started) / candidates * 1e3)
        return figures
    finally:
        await ranker.engine.close()


def measure_own_work(rate: float, duration: float, repeats: int) -> list[float]:
    """This process's CPU ms per candidate for Brew's own work on the
    requests of the same schedule (see the module docstring), one figure
    per repeat, after one untimed pass that fills the context cache."""
    from brew.context_cache import ContextCache
    from brew.ranker import assemble_response
    from brew.types import CandidateLogprobs, GroupResult
    from brew.v1 import ranking_pb2 as pb
    from brew.wire import request_from_proto, response_to_proto
    from loadtest.bench.vllm_http import verbalizer_for

    verbalizer = verbalizer_for(defaults.DEMO_MODEL_DIR, defaults.PROMPTS_DIR, ContextCache())
    spec = WorkloadSpec(candidates=(CANDIDATES, CANDIDATES), seed=SEED)
    count = len(poisson(rate, duration=duration, seed=SEED))
    raw = [message.SerializeToString() for message in itertools.islice(SyntheticWorkload(spec).requests(), count)]

    def serve(data: bytes) -> int:
        request = request_from_proto(pb.ScoreCandidatesRequest.FromString(data))
        prepared = [verbalizer.prepare(request.member, task) for task in request.tasks]
        results = [GroupResult(tuple(CandidateLogprobs((-0.7,) * len(p.group.label_ids), 0, 0)
                                     for _ in p.group.suffix_ids)) for p in prepared]
        response = assemble_response(request.request_id, "canned", prepared, results)
        response_to_proto(response).SerializeToString()
        return sum(len(p.item_ids) for p in prepared)

    for data in raw:  # warm-up: every member seen, as in a host-cost run
        serve(data)
    gc.collect()  # as the server does once warm
    gc.freeze()
    try:
        figures = []
        for _ in range(repeats):
            started = time.process_time()
            candidates = sum(serve(data) for data in raw)
            figures.append((time.process_time() - started) / candidates * 1e3)
        return figures
    finally:
        gc.unfreeze()


async def _paced(engine: ScoringEngine, requests: Sequence[Sequence[ScoringGroup]],
                 offsets: Sequence[float]) -> None:
    """Score requests[i]'s groups `offsets[i]` seconds after the start, never
    waiting for earlier answers (the load generator's open loop, without its
    records: this process's CPU is what is measured)."""
    start = time.perf_counter()
    scoring = []
    for offset, groups in zip(offsets, requests, strict=True):
        await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
        scoring.append(asyncio.create_task(engine.score(groups)))
    await asyncio.gather(*scoring)


def spread(figures: Sequence[float]) -> dict[str, float]:
    return {"min": min(figures), "median": statistics.median(figures), "max": max(figures)}


def report(parts: dict[str, list[float]]) -> str:
    lines = [f"{'part':<16} {'min':>7} {'median':>7} {'max':>7}  ms CPU per candidate (server process)"]
    for name, figures in parts.items():
        s = spread(figures)
        lines.append(f"{name:<16} {s['min']:7.3f} {s['median']:7.3f} {s['max']:7.3f}")
    total = sum(spread(f)["median"] for f in parts.values())
    lines.append(f"{'sum of medians':<16} {total:23.3f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench.floor", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")
    canned = commands.add_parser("canned-server", help="run the canned RankingService (used by the benchmark)")
    flags.PORT.add(canned)
    flags.RATE.add(parser)  # required unless canned-server: checked in main
    add(parser, flags.DURATION, flags.REPEATS, flags.PORT, flags.OUT)
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts to measure (default: all of {', '.join(PARTS)})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = resolve_defaults(parser.parse_args(argv), "floor")
    if args.command is None and args.rate is None:
        parser.error(f"--rate is required: requests per second ({CANDIDATES} candidates each), "
                     "e.g. 11.4, the host-cost runs' rate")
    import uvloop

    if args.command == "canned-server":
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve_canned(args.port))
        return 0
    chosen = [name.strip() for name in args.parts.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(PARTS))
    if unknown or not chosen:
        parser.error(f"--parts: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(PARTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    parts: dict[str, list[float]] = {}
    if "transport" in chosen:
        parts["transport"] = measure_transport(args.port, args.rate, args.duration, args.repeats, args.out)
    if "engine-client" in chosen:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            parts["engine client"] = runner.run(measure_engine_client(args.rate, args.duration, args.repeats))
    if "own-work" in chosen:
        parts["Brew's own work"] = measure_own_work(args.rate, args.duration, args.repeats)
    (args.out / "floor.json").write_text(json.dumps(
        {"rate": args.rate, "duration": args.duration, "candidates_per_request": CANDIDATES,
         "ms_cpu_per_candidate": {name: {"runs": f, **spread(f)} for name, f in parts.items()}}, indent=2) + "\n",
        encoding="utf-8")
    print(report(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
