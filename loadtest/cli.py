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
    python -m loadtest cluster --out runs/cluster [--engine vllm] [--replicas 1,2]   (brew cluster)

Only argparse lives here; each command's work is imported when it runs
(run, capacity, overload and soak: loadtest.commands; sidebyside, scaling and cluster:
loadtest.bench), so `brew --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from brew import defaults
from brew.engines.options import ATTENTION_KERNELS, DEFAULT_MAX_BATCH_TOKENS, DEFAULT_MAX_ROW_TOKENS
from loadtest.bench.scaling.points import DEFAULT_TOKEN_CAPS, SCALING_ENGINES, SUFFIX_TOKENS, ScalingSweeps
from loadtest.bench.sidebyside.systems import SYSTEMS
from loadtest.schedule import Arrivals


# Interactions per synthetic member; loadtest.workload.WorkloadSpec's default
# (not imported here: it loads the protos; a unit test keeps the two equal).
DEFAULT_HISTORY = (12, 24)
_HISTORY_TEXT = "%d-%d" % DEFAULT_HISTORY


# --- argument types: each says what it expected -------------------------------

def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _whole_number(text, 1)


def int_range(text: str) -> tuple[int, int]:
    """'16' -> (16, 16); '8-32' -> (8, 32)."""
    lo, _, hi = text.partition("-")
    try:
        bounds = (int(lo), int(hi or lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or LO-HI, got {text!r}") from None
    if not 0 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f"expected 0 <= LO <= HI, got {text!r}")
    return bounds


def task_weights(text: str) -> dict[str, float]:
    """'job_apply=1,feed_engagement=2' (a bare name weighs 1)."""
    weights = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        try:
            weights[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected TASK=WEIGHT, got {part!r}") from None
    if not weights:
        raise argparse.ArgumentTypeError("expected at least one task, e.g. job_apply=1")
    return weights


def rate_list(text: str) -> list[float]:
    """'5,10,20' -> [5.0, 10.0, 20.0]."""
    return [_positive_float(part) for part in text.split(",") if part.strip()]


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1], got {text!r}")
    return value


def _count(text: str) -> int:
    return _whole_number(text, 0)


def even_count(text: str) -> int:
    """Extra windows that confirm a capacity step: 0, 2, 4, ... (so the windows have a majority)."""
    value = _count(text)
    if value % 2:
        raise argparse.ArgumentTypeError(f"expected an even whole number >= 0 (0, 2, 4, ...), got {text!r}")
    return value


def fraction_list(text: str) -> tuple[float, ...]:
    """'0.5,0.7,0.9' -> (0.5, 0.7, 0.9): shares in (0, 1]."""
    values = tuple(_positive_float(part) for part in text.split(",") if part.strip())
    if not values or max(values) > 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions in (0, 1], got {text!r}")
    return values


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected whole numbers >= 1, got {text!r}")
    return values


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


# --- parser -----------------------------------------------------------------------

def _add_common(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("target")
    where.add_argument("--target", default="127.0.0.1:50051", help="host:port of the one server to load "
                       "(default: %(default)s)")
    where.add_argument("--metrics-url", action="append",
                       help="the server's /metrics URL, scraped before and after for its "
                       "view (batch size, queue time, cache hits, rejections), "
                       "e.g. http://127.0.0.1:9400/metrics; repeat it for each replica of a cluster "
                       "(their counters are summed)")
    where.add_argument("--no-member-header", action="store_true",
                       help="send no x-brew-member header: behind brew cluster, Envoy then balances by least "
                            "request instead of keeping each member on one replica")
    where.add_argument("--tls-root-cert", type=Path, help="PEM root certificate: connect with TLS")
    where.add_argument("--tls-server-name", help="server name to verify when it differs from --target's host")
    where.add_argument("--auth-token-env", metavar="VAR",
                       help="send 'authorization: Bearer <token>' with the token read from this variable")
    where.add_argument("--ready-timeout", type=float, default=60.0,
                       help="wait this long for health SERVING before starting; 0 skips "
                            "(default: %(default)s s)")

    load = parser.add_argument_group("load")
    load.add_argument("--arrivals", type=Arrivals, choices=list(Arrivals), default=Arrivals.POISSON,
                      help="open-loop arrival process (default: %(default)s)")
    load.add_argument("--burstiness", type=_positive_float, default=4.0,
                      help="gamma arrivals: CV^2 of the gaps; 1 is Poisson (default: %(default)s)")
    load.add_argument("--duration", type=_positive_float,
                      help="seconds of load per run (default: 30 for run, 20 per capacity step; "
                           "none with --max-requests)")
    load.add_argument("--max-requests", type=_positive_int, help="at most this many requests per run")
    load.add_argument("--timeout", type=_positive_float, default=2.0,
                      help="per-request deadline in seconds (default: %(default)s)")
    load.add_argument("--max-outstanding", type=_positive_int, default=1000,
                      help="open-loop cap on unanswered requests; over it a request is recorded as "
                           "CLIENT_REJECTED (default: %(default)s)")

    shape = parser.add_argument_group("workload (synthetic unless --replay)")
    shape.add_argument("--candidates", type=int_range, default=(16, 16), metavar="N|LO-HI",
                       help="candidates per request (default: 16)")
    shape.add_argument("--tasks", type=task_weights, default={"job_apply": 1.0}, metavar="TASK=W,...",
                       help="task mix by weight, one task per request (default: job_apply=1)")
    shape.add_argument("--members", type=_positive_int, default=100,
                       help="distinct members at most (default: %(default)s)")
    shape.add_argument("--repeat-share", type=_share, default=0.5,
                       help="share of requests reusing a member already sent: prefix-cache hits "
                            "(default: %(default)s)")
    shape.add_argument("--history", type=int_range, default=DEFAULT_HISTORY, metavar="N|LO-HI",
                       help=f"history length of each member (default: {_HISTORY_TEXT})")
    shape.add_argument("--replay", type=Path, metavar="FILE.jsonl",
                       help="send these requests (one per line, proto JSON mapping) instead, cycling")

    report = parser.add_argument_group("report")
    report.add_argument("--slo-ms", type=_positive_float, default=500.0,
                        help="p99 latency objective in ms (default: %(default)s)")
    report.add_argument("--seed", type=int, default=0,
                        help="seeds the schedule and the workload (default: %(default)s)")
    report.add_argument("--out", type=Path,
                        help="output directory (default: runs/loadtest/<UTC time>, git-ignored)")
    report.add_argument("--no-progress", action="store_true", help="no progress bar")
    report.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m loadtest",
        description="Load-test one Brew replica: how many candidates/s it scores while p99 stays under "
                    "the SLO, and where it breaks. Writes summary.json, requests.jsonl and PNG plots. "
                    "sidebyside and scaling benchmark Brew's engines against other systems and as the "
                    "work grows; cluster measures member affinity and replicas behind Envoy.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="one run: open-loop at --rate, or closed-loop with --concurrency")
    mode = run.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", type=_positive_float, help="open-loop: requests per second")
    mode.add_argument("--concurrency", type=_positive_int,
                      help="closed-loop: this many callers, each sending when its last answer arrives")
    run.add_argument("--server-pid", type=_positive_int, metavar="PID",
                     help="read the CPU time of this process and its descendants (vLLM's engine core and "
                          "workers) and of the load generator from /proc around the load: CPU per candidate "
                          "by process, printed and written to host_cost.json")
    _add_common(run)
    run.set_defaults(handler=_run)

    capacity = commands.add_parser("capacity", help="open-loop sweep: the highest rate within the SLO")
    rates = capacity.add_mutually_exclusive_group(required=True)
    rates.add_argument("--rates", type=rate_list, metavar="R1,R2,...", help="measure exactly these rates")
    rates.add_argument("--start-rate", type=_positive_float,
                       help="search: double from here until p99 > SLO or errors, then bisect")
    _add_sweep_options(capacity)
    _add_saturation_options(capacity)
    _add_common(capacity)
    capacity.set_defaults(handler=_capacity)

    overload = commands.add_parser(
        "overload", help="open-loop sweep past capacity: goodput and errors by status against offered load",
        description="Offer multiples of a replica's capacity, open-loop, and measure what it still scores: "
                    "goodput (OK answers/s, each within its deadline), errors by status and how fast they "
                    "come back. Writes overload.json and overload.png.")
    known = overload.add_mutually_exclusive_group(required=True)
    known.add_argument("--capacity", type=_positive_float, metavar="RATE",
                       help="the replica's capacity in requests/s (e.g. from `capacity`)")
    known.add_argument("--start-rate", type=_positive_float,
                       help="search the capacity first (as `capacity --start-rate` does, into capacity/)")
    overload.add_argument("--multiples", type=rate_list, default=[0.5, 1.0, 1.5, 2.0, 3.0, 5.0],
                          metavar="M1,M2,...", help="offered load in multiples of capacity "
                          "(default: 0.5,1,1.5,2,3,5)")
    _add_sweep_options(overload)
    _add_common(overload)
    overload.set_defaults(handler=_overload)
    soak = commands.add_parser(
        "soak", help="long steady load: no errors, and the server's memory flat",
        description="One open-loop run at a steady rate (e.g. 80%% of capacity) for --duration (default "
                    "30 min), sampling the resident memory of the server process and of every process "
                    "below it. Writes soak.json and soak.png (memory over time); exits 1 when a request "
                    "failed or a process's memory grew by 5%% or more after the warm-up.")
    soak.add_argument("--rate", type=_positive_float, required=True, help="requests/s, open-loop")
    soak.add_argument("--server-pid", type=_positive_int, required=True,
                      help="the server's pid (brew serve): its memory and that of every process below it "
                           "are sampled")
    soak.add_argument("--settle", type=float, default=300.0,
                      help="seconds of warm-up before the memory baseline (default: %(default)s)")
    soak.add_argument("--window", type=_positive_float, default=120.0,
                      help="seconds of samples whose median is the baseline, and the final value "
                           "(default: %(default)s)")
    soak.add_argument("--sample-interval", type=_positive_float, default=5.0,
                      help="seconds between memory samples (default: %(default)s)")
    _add_common(soak)
    soak.set_defaults(handler=_soak)
    _add_sidebyside(commands)
    _add_scaling(commands)
    _add_cluster(commands)
    return parser


def _add_sweep_options(parser: argparse.ArgumentParser) -> None:
    """The options of a sweep of open-loop runs (capacity, overload)."""
    parser.add_argument("--bisect-steps", type=int, default=3,
                        help="capacity search: bisection steps (default: %(default)s)")
    parser.add_argument("--max-brackets", type=_positive_int, default=10,
                        help="capacity search: at most this many doubling/halving steps "
                             "(default: %(default)s)")
    _add_confirm_option(parser)
    parser.add_argument("--pause", type=float, default=2.0,
                        help="seconds between steps, for the server to drain (default: %(default)s)")
    parser.add_argument("--warmup", type=float, default=15.0,
                        help="seconds of closed-loop load at saturation before the sweep, not reported: "
                             "the first loaded step would otherwise pay for batch shapes not seen yet; "
                             "0 skips (default: %(default)s)")


def _add_confirm_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--confirm", type=even_count, default=2,
                        help="extra windows that confirm a bad search step, and the capacity found; a rate "
                             "is judged on the majority of its windows; 0: one window decides "
                             "(default: %(default)s)")


def _add_saturation_options(parser: argparse.ArgumentParser) -> None:
    """The saturation run after a capacity search (capacity, sidebyside)."""
    parser.add_argument("--saturation-callers", type=_count, metavar="N",
                        help="closed-loop callers of the saturation run (default: twice the requests a "
                             "Brew server keeps in flight, 64 at 16 candidates, but at most capacity x "
                             "--timeout / 2); 0 skips it")
    parser.add_argument("--fractions", type=fraction_list, default=(0.5, 0.7, 0.9), metavar="F1,F2,...",
                        help="open-loop runs at these fractions of the saturation requests/s "
                             "(default: 0.5,0.7,0.9)")


def _add_sidebyside(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "sidebyside",
        help="benchmark: Brew's engines, vLLM's own endpoint and a naive baseline, one workload",
        description="Side-by-side: the same model and workload through each serving system on the same "
                    "machine, measured by the same load generator: one after another, or interleaved.")
    parser.add_argument("--out", type=Path,
                        default=Path("runs/sidebyside") / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated, from {', '.join(SYSTEMS)}")
    parser.add_argument("--model", type=Path, default=defaults.DEMO_MODEL_DIR)
    parser.add_argument("--prompts", type=Path, default=defaults.PROMPTS_DIR)
    parser.add_argument("--task", default="job_apply", help="the task of every request")
    parser.add_argument("--candidates", type=int, default=16, help="candidates per request")
    parser.add_argument("--history", type=int_range, default=DEFAULT_HISTORY, metavar="N|LO-HI",
                        help=f"interactions in each member's history (default: {_HISTORY_TEXT}); what the prompt "
                             "shows of them is capped by the task's history budget in --prompts")
    parser.add_argument("--slo-ms", type=float, default=500.0)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per run")
    parser.add_argument("--start-rate", type=float, default=4.0,
                        help="requests/s where the capacity search starts")
    parser.add_argument("--fixed-rate", type=float, default=2.0,
                        help="requests/s of the common fixed-rate runs")
    parser.add_argument("--repeats", type=int, default=3,
                        help="repeats at the capacity, of the saturation and at the fixed rate")
    _add_confirm_option(parser)
    _add_saturation_options(parser)
    parser.add_argument("--timeout", type=float, default=5.0, help="per-request deadline, seconds")
    parser.add_argument("--pause", type=float, default=8.0,
                        help="seconds between runs, for the server to drain")
    parser.add_argument("--interleave", action="store_true",
                        help="start every system at once and let their runs take turns, one window each "
                             "in rotation, so that a machine whose speed drifts slows all alike (all "
                             "servers must fit in memory together; default: one system after another)")
    parser.add_argument("--report", action="store_true",
                        help="measure nothing: rewrite sidebyside.md from --out's sidebyside.json")
    parser.add_argument("--compare", type=Path, metavar="EARLIER_OUT",
                        help="measure nothing: compare --out's run with this earlier run of the same systems "
                             "(compare.md); exit 1 if a capacity moved more than --tolerance")
    parser.add_argument("--tolerance", type=float, default=0.2,
                        help="with --compare: the largest capacity gap that counts as reproduced "
                             "(larger / smaller - 1; default: 0.2)")
    parser.set_defaults(handler=_sidebyside)


def _add_scaling(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "scaling", help="benchmark: cost per candidate as candidates and history grow, engines in-process",
        description="Scaling curves: cost per candidate as candidates and history grow.")
    parser.add_argument("--out", type=Path, required=True, help="directory for scaling.json and the plots")
    parser.add_argument("--engines", type=_engines, default=SCALING_ENGINES, help="comma-separated (default: all)")
    parser.add_argument("--repeats", type=_positive_int, default=5,
                        help="timed calls per point, after one warm-up")
    parser.add_argument("--candidates", type=_int_list, default=ScalingSweeps.candidates,
                        help="candidates sweep")
    parser.add_argument("--history-tokens", type=_int_list, default=ScalingSweeps.history,
                        help="history sweep")
    parser.add_argument("--fixed-history", type=int, default=ScalingSweeps.fixed_history,
                        help="history tokens of the candidates sweep")
    parser.add_argument("--fixed-candidates", type=int, default=ScalingSweeps.fixed_candidates,
                        help="candidates of the history sweep")
    parser.add_argument("--suffix-tokens", type=_positive_int, default=SUFFIX_TOKENS,
                        help="tokens per candidate suffix")
    parser.add_argument("--max-prompt-tokens", type=parse_caps, default=dict(DEFAULT_TOKEN_CAPS),
                        metavar="ENGINE=N,...", help="skip points with more prompt tokens than this "
                        "(candidates x (history + suffix)); 0 lifts a cap (default: naive=40000)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--device", default="cpu",
                        help="where the torch engines run: cpu (default) or cuda[:N] (vLLM picks its own)")
    parser.add_argument("--max-row-tokens", type=_positive_int, default=DEFAULT_MAX_ROW_TOKENS,
                        help="torch-mis: a group longer than this takes the per-group path "
                             "(TorchOptions.max_row_tokens, default %(default)s)")
    parser.add_argument("--max-batch-tokens", type=_positive_int, default=DEFAULT_MAX_BATCH_TOKENS,
                        help="torch-mis: tokens of one packed pass, pads included (default %(default)s)")
    parser.add_argument("--attention", choices=ATTENTION_KERNELS, default=None,
                        help="the torch engines' attention kernel (TorchOptions.attention; default: sdpa)")
    parser.add_argument("--model-shape", type=_model_shape, default=None, metavar="demo|hidden=N,layers=N,...",
                        help="the random model's size: demo (default) or hidden=,layers=,heads=,intermediate="
                             "[,head_dim=]; e.g. hidden=2048,layers=16,heads=32,intermediate=8192 (~1 B)")
    parser.add_argument("--seed", type=int, default=0)
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
                    "share summed over the replicas, and their ratios.")
    parser.add_argument("--out", type=Path,
                        default=Path("runs/cluster") / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    parser.add_argument("--engine", choices=["vllm", "torch"], default="vllm",
                        help="the replicas' engine; the prefix cache affinity is for is vLLM's "
                             "(default: %(default)s)")
    parser.add_argument("--config", type=Path, help="the replicas' TOML configuration (e.g. [vllm] kv_cache_gib)")
    parser.add_argument("--model", type=Path, help="checkpoint directory (default: the demo model)")
    parser.add_argument("--replicas", type=_int_list, default=(1, 2),
                        help="replica counts; 2 and more also run without affinity (default: 1,2)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", type=_positive_int, default=16,
                      help="closed-loop callers: saturation, so candidates/s is the capacity (default: 16)")
    mode.add_argument("--rate", type=_positive_float, help="open-loop requests/s instead")
    parser.add_argument("--duration", type=_positive_float, default=60.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds of warm-up per cluster, other members")
    parser.add_argument("--repeats", type=_positive_int, default=1, help="runs per arm, medians reported")
    parser.add_argument("--members", type=_positive_int, default=200, help="distinct members (default: 200)")
    parser.add_argument("--repeat-share", type=_share, default=0.9,
                        help="share of requests from a member seen before (default: %(default)s)")
    parser.add_argument("--candidates", type=int_range, default=(16, 16), metavar="N|LO-HI")
    parser.add_argument("--history", type=int_range, default=DEFAULT_HISTORY, metavar="N|LO-HI")
    parser.add_argument("--tasks", type=task_weights, default={"job_apply": 1.0}, metavar="TASK=W,...")
    parser.add_argument("--timeout", type=_positive_float, default=5.0, help="per-request deadline, seconds")
    parser.add_argument("--slo-ms", type=_positive_float, default=500.0)
    parser.add_argument("--seed", type=int, default=0)
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
    # The command sees only its own options (sidebyside saves them with its results).
    options = argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in ("command", "handler")})
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
