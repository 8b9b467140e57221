"""`brew loadtest` (also `python -m loadtest`): load one replica, find its capacity, or benchmark.

    python -m loadtest run --target 127.0.0.1:50051 --metrics-url http://127.0.0.1:9400/metrics \\
        --rate 20 --arrivals poisson --duration 30 --candidates 16 --slo-ms 500 --out results/run1
    python -m loadtest run --concurrency 8 --max-requests 500 ...        (closed-loop)
    python -m loadtest capacity --start-rate 5 --duration 20 ...          (double, then bisect)
    python -m loadtest capacity --rates 5,10,20,40 ...                    (a given sweep)
    python -m loadtest overload --capacity 20 [--multiples 0.5,1,2,5] ... (goodput past capacity)
    python -m loadtest overload --start-rate 5 ...                        (capacity searched first)
    python -m loadtest soak --rate 16 --server-pid PID [--duration 1800]  (no errors, memory flat)
    python -m loadtest sidebyside --out runs/sidebyside [--systems brew-vllm,vllm-openai,...]
    python -m loadtest scaling --out runs/scaling [--engines vllm,torch,naive]
    python -m loadtest cluster --out runs/cluster --concurrency 16 [--engine vllm] [--replicas 1,2]

Only argparse lives here; each command's work is imported when it runs
(run, capacity, overload and soak: loadtest.commands; sidebyside, scaling and
cluster: loadtest.bench.<name>.command), so `brew --help` stays fast. A
flag that several commands take is declared once, in loadtest.flags, and
means the same in each; the flags only one command takes are declared with
it here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from brew import defaults
from brew.engines.multi_item_rule import PackingRule
from brew.engines.options import ATTENTION_KERNELS, DEFAULT_MAX_BATCH_TOKENS
from brew.settings import add_flags
from loadtest import flags
from loadtest.bench.scaling.points import (
    DEFAULT_TOKEN_CAPS, PACKING_PREFIX, SCALING_ENGINES, SUFFIX_TOKENS, ScalingSweeps,
)
from loadtest.bench.sidebyside.systems import CHOICES, SYSTEMS
from loadtest.flags import (
    add, int_list, non_negative_float, positive_float, positive_int, rate_list, resolve_defaults,
)

# --- scaling's argument types -------------------------------------------------------


def _engines(text: str) -> tuple[str, ...]:
    engines = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = set(engines) - set(SCALING_ENGINES)
    if not engines or unknown:
        raise argparse.ArgumentTypeError(f"expected engines from {', '.join(SCALING_ENGINES)}, got {text!r}")
    return engines


def _model_shape(text: str) -> object:
    from loadtest.bench.scaling.checkpoint import parse_model_shape

    try:
        return parse_model_shape(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_caps(text: str) -> dict[str, int]:
    """`naive=40000,torch=0`: prompt-token caps per engine; 0 means no cap."""
    caps = dict(DEFAULT_TOKEN_CAPS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        engine, _, value = part.partition("=")
        if engine not in SCALING_ENGINES or not value.isdigit():
            raise argparse.ArgumentTypeError(f"expected ENGINE=TOKENS with ENGINE in {', '.join(SCALING_ENGINES)}, "
                                             f"got {part!r}")
        caps[engine] = int(value)
    return {engine: cap for engine, cap in caps.items() if cap > 0}


# --- the flags several commands share, in groups --------------------------------------

def _add_load_generator_options(parser: argparse.ArgumentParser) -> None:
    """What run, capacity, overload and soak share: the target, the load,
    the workload and the report."""
    add(parser.add_argument_group("target"), flags.TARGET, flags.PROTOCOL, flags.METRICS_URL,
        flags.NO_MEMBER_HEADER,
        flags.TLS_ROOT_CERT, flags.TLS_SERVER_NAME, flags.AUTH_TOKEN_ENV, flags.READY_TIMEOUT)
    add(parser.add_argument_group("load"), flags.ARRIVALS, flags.BURSTINESS, flags.DURATION, flags.MAX_REQUESTS,
        flags.TIMEOUT, flags.MAX_OUTSTANDING)
    workload = parser.add_argument_group("workload (synthetic unless --replay)")
    _add_workload(workload)
    flags.REPLAY.add(workload)
    add(parser.add_argument_group("report"), flags.SLO_MS, flags.SEED, flags.OUT, flags.NO_PROGRESS,
        flags.NO_PLOTS)


def _add_workload(parser: argparse._ActionsContainer) -> None:
    """The synthetic workload's shape (WorkloadSpec)."""
    add(parser, flags.TASKS, flags.CANDIDATES, flags.HISTORY, flags.MEMBERS, flags.REPEAT_SHARE)


def _add_sweep_options(parser: argparse.ArgumentParser) -> None:
    """The options of a sweep of open-loop runs (capacity, overload)."""
    add(parser, flags.BISECT_STEPS, flags.MAX_BRACKETS, flags.CONFIRM, flags.PAUSE, flags.WARMUP)


def _add_saturation_options(parser: argparse.ArgumentParser) -> None:
    """The saturation run after a capacity search (capacity, sidebyside)."""
    add(parser, flags.SATURATION_CALLERS, flags.FRACTIONS)


# --- the commands -------------------------------------------------------------------------

def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m loadtest",
        description="Load-test one Brew replica: how many candidates/s it scores while p99 stays under "
                    "the SLO, and where it breaks. Writes summary.json, requests.jsonl and PNG plots. "
                    "sidebyside and scaling benchmark Brew's engines against other systems and as the "
                    "work grows; cluster measures member affinity and replicas behind Envoy.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for add_command in (_add_run, _add_capacity, _add_overload, _add_soak, _add_sidebyside, _add_scaling,
                        _add_cluster):
        add_command(commands)
    return parser


def _add_run(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("run", help="one run: open-loop at --rate, or closed-loop with --concurrency")
    mode = parser.add_mutually_exclusive_group(required=True)
    add(mode, flags.RATE, flags.CONCURRENCY)
    flags.SERVER_PID.add(parser)
    _add_load_generator_options(parser)
    parser.set_defaults(handler=_run)


def _add_capacity(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("capacity", help="open-loop sweep: the highest rate within the SLO")
    rates = parser.add_mutually_exclusive_group()
    rates.add_argument("--rates", type=rate_list, metavar="R1,R2,...",
                       help="measure exactly these rates instead of searching from --start-rate")
    flags.START_RATE.add(rates)
    _add_sweep_options(parser)
    _add_saturation_options(parser)
    _add_load_generator_options(parser)
    parser.set_defaults(handler=_capacity)


def _add_overload(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "overload", help="open-loop sweep past capacity: goodput and errors by status against offered load",
        description="Offer multiples of a replica's capacity, open-loop, and measure what it still scores: "
                    "goodput (OK answers/s, each within its deadline), errors by status and how fast they "
                    "come back. Writes overload.json and overload.png.")
    known = parser.add_mutually_exclusive_group()
    known.add_argument("--capacity", type=positive_float, metavar="RATE",
                       help="the replica's capacity in requests/s (e.g. from `capacity`); without it the "
                            "capacity is searched first from --start-rate, as `capacity` does, into capacity/")
    flags.START_RATE.add(known)
    parser.add_argument("--multiples", type=rate_list, default=[0.5, 1.0, 1.5, 2.0, 3.0, 5.0],
                        metavar="M1,M2,...", help="offered load in multiples of capacity "
                        "(default: 0.5,1,1.5,2,3,5)")
    _add_sweep_options(parser)
    _add_load_generator_options(parser)
    parser.set_defaults(handler=_overload)


def _add_soak(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "soak", help="long steady load: no errors, and the server's memory flat",
        description="One open-loop run at a steady rate (e.g. 80%% of capacity) for --duration (default "
                    "30 min), sampling the resident memory of the server process and of every process "
                    "below it. Writes soak.json and soak.png (memory over time); exits 1 when a request "
                    "failed or a process's memory grew by 5%% or more after the warm-up.")
    flags.RATE.add(parser, required=True)
    flags.SERVER_PID.add(parser, required=True)
    parser.add_argument("--settle", type=non_negative_float, default=300.0,
                        help="seconds of warm-up before the memory baseline (default: %(default)s)")
    parser.add_argument("--window", type=positive_float, default=120.0,
                        help="seconds of samples whose median is the baseline, and the final value "
                             "(default: %(default)s)")
    parser.add_argument("--sample-interval", type=positive_float, default=5.0,
                        help="seconds between memory samples (default: %(default)s)")
    _add_load_generator_options(parser)
    parser.set_defaults(handler=_soak)


def _add_sidebyside(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "sidebyside",
        help="benchmark: Brew's engines, vLLM's own endpoint and a naive baseline, one workload",
        description="Side-by-side: the same model and workload through each serving system on the same "
                    "machine, measured by the same load generator: one after another, or interleaved.")
    flags.OUT.add(parser)
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated, from {', '.join(CHOICES)} (default: {', '.join(SYSTEMS)}; "
                             "a -http system is its brew system served and loaded over the HTTP API; a "
                             "SYSTEM+SCHEME one serves a quantized model)")
    flags.MODEL.add(parser)
    parser.add_argument("--quantized-model", type=Path, metavar="DIR",
                        help="the brew quantize checkpoint the SYSTEM+int8-w8a8 systems serve (e.g. "
                             "brew-vllm+int8-w8a8 beside brew-vllm on --model; docs/quantization.md)")
    parser.add_argument("--prompts", type=Path, default=defaults.PROMPTS_DIR,
                        help="the prompts directory every system renders with (default: the bundled one)")
    _add_workload(parser)
    add(parser, flags.SLO_MS, flags.DURATION, flags.START_RATE)
    parser.add_argument("--fixed-rate", type=positive_float, default=2.0,
                        help="requests/s of the fixed-rate runs common to every system (default: %(default)s)")
    add(parser, flags.REPEATS, flags.CONFIRM)
    _add_saturation_options(parser)
    add(parser, flags.TIMEOUT, flags.PAUSE)
    parser.add_argument("--interleave", action="store_true",
                        help="start every system at once and let their runs take turns, one window each "
                             "in rotation, so that a machine whose speed drifts slows all alike (all "
                             "servers must fit in memory together; default: one system after another)")
    parser.add_argument("--report", action="store_true",
                        help="measure nothing: rewrite sidebyside.md from --out's sidebyside.json")
    parser.add_argument("--compare", type=Path, metavar="EARLIER_OUT",
                        help="measure nothing: compare --out's run with this earlier run of the same systems "
                             "(compare.md); exit 1 if a capacity moved more than --tolerance")
    parser.add_argument("--tolerance", type=non_negative_float, default=0.2,
                        help="with --compare: the largest capacity gap that counts as reproduced "
                             "(larger / smaller - 1; default: %(default)s)")
    parser.set_defaults(handler=_sidebyside)


def _add_scaling(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "scaling", help="benchmark: cost per candidate as candidates and history grow, engines in-process",
        description="Scaling curves: cost per candidate as candidates and history grow. Each point is "
                    "scored --repeats times after one untimed warm-up call.")
    flags.OUT.add(parser)
    parser.add_argument("--engines", type=_engines, default=SCALING_ENGINES, help="comma-separated (default: all)")
    flags.REPEATS.add(parser)
    parser.add_argument("--candidate-counts", type=int_list, default=ScalingSweeps.candidates, metavar="N1,N2,...",
                        help="the candidates sweep: candidates per group at each point "
                             "(default: %s)" % ",".join(map(str, ScalingSweeps.candidates)))
    parser.add_argument("--history-tokens", type=int_list, default=ScalingSweeps.history, metavar="T1,T2,...",
                        help="the history sweep: history tokens at each point "
                             "(default: %s)" % ",".join(map(str, ScalingSweeps.history)))
    parser.add_argument("--fixed-history", type=positive_int, default=ScalingSweeps.fixed_history,
                        help="history tokens of the candidates sweep (default: %(default)s)")
    parser.add_argument("--fixed-candidates", type=positive_int, default=ScalingSweeps.fixed_candidates,
                        help="candidates of the history sweep (default: %(default)s)")
    parser.add_argument("--suffix-tokens", type=positive_int, default=SUFFIX_TOKENS,
                        help="tokens per candidate suffix (default: %(default)s)")
    parser.add_argument("--max-prompt-tokens", type=parse_caps, default=dict(DEFAULT_TOKEN_CAPS),
                        metavar="ENGINE=N,...", help="skip points with more prompt tokens than this "
                        "(candidates x (history + suffix)); 0 lifts a cap (default: naive=40000)")
    parser.add_argument("--threads", type=positive_int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--device", default="cpu",
                        help="where the torch engines run: cpu (default) or cuda[:N] (vLLM picks its own)")
    # The rule of the -mis and -auto engines: the flags of brew serve's [packing], from its one declaration.
    add_flags(parser, PackingRule, title="[packing]: which groups the -mis and -auto engines pack",
              prefix=PACKING_PREFIX)
    parser.add_argument("--max-batch-tokens", type=positive_int, default=DEFAULT_MAX_BATCH_TOKENS,
                        help="torch-mis: tokens of one packed pass, pads included (default %(default)s)")
    parser.add_argument("--attention", choices=ATTENTION_KERNELS, default=None,
                        help="the torch engines' attention kernel (TorchOptions.attention; default: sdpa)")
    parser.add_argument("--model-shape", type=_model_shape, default=None, metavar="demo|hidden=N,layers=N,...",
                        help="the random model's size: demo (default) or hidden=,layers=,heads=,intermediate="
                             "[,head_dim=]; e.g. hidden=2048,layers=16,heads=32,intermediate=8192 (~1 B)")
    flags.SEED.add(parser)
    parser.add_argument("--checkpoint-dir", type=Path,
                        help="where to write the random checkpoint (default: a temporary directory)")
    parser.set_defaults(handler=_scaling)


def _add_cluster(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "cluster", help="benchmark: member affinity against least request, and 1 against N replicas, "
                        "through Envoy (brew cluster)",
        description="Runs the same workload, whose members come back, through brew cluster: one replica, "
                    "then N replicas with member affinity (x-brew-member) and with least request. Every run "
                    "on a freshly started cluster. Reports candidates/s, latency and the prefix-cache hit "
                    "share summed over the replicas, and their ratios. Members that come back often make "
                    "the difference show, e.g. --members 200 --repeat-share 0.9.")
    flags.OUT.add(parser)
    parser.add_argument("--engine", choices=["vllm", "torch"], default="vllm",
                        help="the replicas' engine; the prefix cache affinity is for is vLLM's "
                             "(default: %(default)s)")
    parser.add_argument("--config", type=Path, help="the replicas' TOML configuration (e.g. [vllm] kv_cache_gib)")
    flags.MODEL.add(parser)
    parser.add_argument("--replicas", type=int_list, default=(1, 2),
                        help="replica counts; 2 and more also run without affinity (default: 1,2)")
    mode = parser.add_mutually_exclusive_group(required=True)
    add(mode, flags.CONCURRENCY, flags.RATE)
    add(parser, flags.DURATION, flags.WARMUP, flags.REPEATS)
    _add_workload(parser)
    add(parser, flags.TIMEOUT, flags.SLO_MS, flags.SEED)
    parser.set_defaults(handler=_cluster)


# --- dispatch: each command's work is imported only when it runs ------------------

def _run(args: argparse.Namespace) -> int:
    from loadtest.commands import run_command

    return run_command(args)


def _capacity(args: argparse.Namespace) -> int:
    from loadtest.commands import capacity_command

    return capacity_command(args)


def _overload(args: argparse.Namespace) -> int:
    from loadtest.commands import overload_command

    return overload_command(args)


def _soak(args: argparse.Namespace) -> int:
    from loadtest.commands import soak_command

    return soak_command(args)


def _sidebyside(args: argparse.Namespace) -> int:
    from loadtest.bench.sidebyside.command import sidebyside_command

    return sidebyside_command(args)


def _scaling(args: argparse.Namespace) -> int:
    from loadtest.bench.scaling.command import scaling_command

    return scaling_command(args)


def _cluster(args: argparse.Namespace) -> int:
    from loadtest.bench.cluster.command import cluster_command

    return cluster_command(args)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    # The command sees only its own options (sidebyside saves them with its results),
    # with its own --out and --duration where none was given.
    options = resolve_defaults(
        argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in ("command", "handler")}),
        args.command)
    try:
        return int(args.handler(options))
    except ValueError as error:  # a plan or workload that cannot run: the message says why
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (TimeoutError, OSError) as error:  # server not SERVING, /metrics unreachable
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
