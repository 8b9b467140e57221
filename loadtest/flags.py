"""The flags that several loadtest commands take, each declared once.

A flag means one thing wherever it appears: `--timeout` is the per-request
deadline with the same type, check, default and help in `run`, `capacity`,
`sidebyside` and `cluster` alike. The command parsers (loadtest.cli, and
loadtest.bench.floor's own) add these declarations instead of declaring
their own, and a unit test walks every parser and fails when a flag name
has two meanings. Where two commands need different things they take
differently named flags (scaling's `--candidate-counts` is a sweep,
everyone else's `--candidates` is the count per request).

The length of a run is the one default that follows the command, because
a soak is long and a step of a sweep short: `--duration` defaults to
None, each command reads its own length from RUN_SECONDS, and the flag's
help lists them all.

Also here: the argument types, each of which says what it expected.
Nothing here imports more than argparse and loadtest.schedule, so `brew
--help` stays fast.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from loadtest.schedule import Arrivals

# Seconds of load per run when --duration is not given, by command (for a
# sweep: per step; for the benchmarks: per run of each system or arm).
RUN_SECONDS: Mapping[str, float] = MappingProxyType({
    "run": 30.0, "capacity": 20.0, "overload": 20.0, "soak": 1800.0, "sidebyside": 15.0, "cluster": 60.0,
    "floor": 30.0})

# Where each command writes when --out is not given: a new directory below
# this one, named after the UTC time.
OUT_ROOTS: Mapping[str, str] = MappingProxyType({
    "run": "runs/loadtest", "capacity": "runs/loadtest", "overload": "runs/loadtest", "soak": "runs/loadtest",
    "sidebyside": "runs/sidebyside", "scaling": "runs/scaling", "cluster": "runs/cluster", "floor": "runs/floor"})


def default_out(command: str) -> Path:
    """A new output directory for `command`: its root, then the UTC time."""
    return Path(OUT_ROOTS[command]) / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def resolve_defaults(args: argparse.Namespace, command: str) -> argparse.Namespace:
    """`args` with the command's own defaults filled in: --out (OUT_ROOTS)
    and --duration (RUN_SECONDS; none when --max-requests bounds the run)."""
    given = vars(args)
    resolved = dict(given)
    if "out" in given and given["out"] is None:
        resolved["out"] = default_out(command)
    if "duration" in given and given["duration"] is None and given.get("max_requests") is None:
        resolved["duration"] = RUN_SECONDS[command]
    return argparse.Namespace(**resolved)


# --- argument types: each says what it expected -------------------------------

def _number(text: str, holds: Callable[[float], bool], expected: str, unparsed: str = "a number") -> float:
    """`text` as a float for which `holds` is true; else an error saying what was expected."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {unparsed}, got {text!r}") from None
    if not holds(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    return _number(text, lambda value: value > 0, "a positive number")


def non_negative_float(text: str) -> float:
    """A number >= 0 (a length of time of 0 skips what it times)."""
    return _number(text, lambda value: value >= 0, "a number >= 0")


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _whole_number(text, 1)


def count(text: str) -> int:
    """A whole number >= 0."""
    return _whole_number(text, 0)


def port(text: str) -> int:
    value = count(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 0-65535, got {text!r}")
    return value


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


def int_list(text: str) -> tuple[int, ...]:
    """'1,16,64' -> (1, 16, 64): whole numbers >= 1."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected whole numbers >= 1, got {text!r}")
    return values


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
    return [positive_float(part) for part in text.split(",") if part.strip()]


def share(text: str) -> float:
    return _number(text, lambda value: 0.0 <= value <= 1.0, "a share in [0, 1]", unparsed="a share in [0, 1]")


def even_count(text: str) -> int:
    """Extra windows that confirm a capacity step: 0, 2, 4, ... (so the windows have a majority)."""
    value = count(text)
    if value % 2:
        raise argparse.ArgumentTypeError(f"expected an even whole number >= 0 (0, 2, 4, ...), got {text!r}")
    return value


def fraction_list(text: str) -> tuple[float, ...]:
    """'0.5,0.7,0.9' -> (0.5, 0.7, 0.9): shares in (0, 1]."""
    values = tuple(positive_float(part) for part in text.split(",") if part.strip())
    if not values or max(values) > 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions in (0, 1], got {text!r}")
    return values


# --- declarations ----------------------------------------------------------------------

@dataclass(frozen=True)
class Flag:
    """One flag: its name, type (which also checks it), default and help."""

    name: str
    help: str
    type: Callable[[str], object] | None = None
    default: object = None  # a string is parsed by `type`, so every parse gets its own value
    metavar: str | None = None
    choices: Sequence[object] | None = None
    action: str | None = None  # "store_true" or "append"; None stores one value

    def add(self, parser: argparse._ActionsContainer, *, required: bool = False) -> argparse.Action:
        """Add the flag to a parser, an argument group or a mutually exclusive group."""
        if self.action == "store_true":
            return parser.add_argument(self.name, action="store_true", help=self.help)
        options: dict[str, object] = {"help": self.help, "default": self.default}
        for key in ("type", "metavar", "choices", "action"):
            if getattr(self, key) is not None:
                options[key] = getattr(self, key)
        if required:
            options["required"] = True
        return parser.add_argument(self.name, **options)  # type: ignore[arg-type]


def add(parser: argparse._ActionsContainer, *flags: Flag) -> None:
    for flag in flags:
        flag.add(parser)


def _durations() -> str:
    by_seconds: dict[float, list[str]] = {}
    for command, value in RUN_SECONDS.items():
        by_seconds.setdefault(value, []).append(command)
    return ", ".join(f"{' and '.join(commands)} {value:g}" for value, commands in by_seconds.items())


# the server, and how to reach it
TARGET = Flag("--target", default="127.0.0.1:50051",
              help="host:port of the one server to load (default: %(default)s)")
METRICS_URL = Flag("--metrics-url", action="append",
                   help="the server's /metrics URL, scraped before and after for its view (batch size, queue "
                        "time, cache hits, rejections), e.g. http://127.0.0.1:9400/metrics; repeat it for each "
                        "replica of a cluster (their counters are summed)")
PROTOCOL = Flag("--protocol", type=str, choices=("grpc", "http"), default="grpc",
                help="grpc: RankingService/ScoreCandidates on --target; http: POST /v1/brew/score on the HTTP "
                     "port at --target (brew serve --http-port), the same requests (default: %(default)s)")
NO_MEMBER_HEADER = Flag("--no-member-header", action="store_true",
                        help="send no x-brew-member header: behind brew cluster, Envoy then balances by least "
                             "request instead of keeping each member on one replica")
TLS_ROOT_CERT = Flag("--tls-root-cert", type=Path, help="PEM root certificate: connect with TLS")
TLS_SERVER_NAME = Flag("--tls-server-name", help="server name to verify when it differs from --target's host")
AUTH_TOKEN_ENV = Flag("--auth-token-env", metavar="VAR",
                      help="send 'authorization: Bearer <token>' with the token read from this variable")
READY_TIMEOUT = Flag("--ready-timeout", type=non_negative_float, default=60.0,
                     help="wait this long for health SERVING before starting; 0 skips (default: %(default)s s)")
SERVER_PID = Flag("--server-pid", type=positive_int, metavar="PID",
                  help="the server's process (brew serve): around the load, run reads the CPU time of it and "
                       "of every process below it (vLLM's engine core and workers) and of the load generator "
                       "from /proc (host_cost.json); soak samples their memory")

# the load
RATE = Flag("--rate", type=positive_float, help="open-loop: requests per second")
CONCURRENCY = Flag("--concurrency", type=positive_int,
                   help="closed-loop: this many callers, each sending when its last answer arrives")
ARRIVALS = Flag("--arrivals", type=Arrivals, choices=list(Arrivals), default=Arrivals.POISSON,
                help="open-loop arrival process (default: %(default)s)")
BURSTINESS = Flag("--burstiness", type=positive_float, default=4.0,
                  help="gamma arrivals: CV^2 of the gaps; 1 is Poisson (default: %(default)s)")
DURATION = Flag("--duration", type=positive_float,
                help=f"seconds of load per run, each step of a sweep and each repeat (default: {_durations()}; "
                     "none with --max-requests)")
MAX_REQUESTS = Flag("--max-requests", type=positive_int, help="at most this many requests per run")
TIMEOUT = Flag("--timeout", type=positive_float, default=5.0,
               help="per-request deadline in seconds (default: %(default)s)")
MAX_OUTSTANDING = Flag("--max-outstanding", type=positive_int, default=1000,
                       help="open-loop cap on unanswered requests; over it a request is recorded as "
                            "CLIENT_REJECTED (default: %(default)s)")
WARMUP = Flag("--warmup", type=non_negative_float, default=15.0,
              help="seconds of closed-loop load before the measured runs, not reported: the first loaded run "
                   "would otherwise pay for batch shapes not seen yet; 0 skips (default: %(default)s)")
PAUSE = Flag("--pause", type=non_negative_float, default=8.0,
             help="seconds between runs, for the server to drain what an overloaded run left "
                  "(default: %(default)s)")
REPEATS = Flag("--repeats", type=positive_int, default=3,
               help="repeats of each measurement, reported as their median and range (default: %(default)s)")

# the capacity search and the saturation after it
START_RATE = Flag("--start-rate", type=positive_float, default=4.0,
                  help="requests/s where the capacity search starts: it doubles from there until p99 > SLO "
                       "or errors, then bisects (default: %(default)s)")
BISECT_STEPS = Flag("--bisect-steps", type=count, default=3,
                    help="capacity search: bisection steps (default: %(default)s)")
MAX_BRACKETS = Flag("--max-brackets", type=positive_int, default=10,
                    help="capacity search: at most this many doubling/halving steps (default: %(default)s)")
CONFIRM = Flag("--confirm", type=even_count, default=2,
               help="extra windows that confirm a bad search step, and the capacity found; a rate is judged "
                    "on the majority of its windows; 0: one window decides (default: %(default)s)")
SATURATION_CALLERS = Flag("--saturation-callers", type=count, metavar="N",
                          help="closed-loop callers of the saturation run (default: twice the requests a Brew "
                               "server keeps in flight, 64 at 16 candidates, but at most capacity x --timeout "
                               "/ 2); 0 skips it")
FRACTIONS = Flag("--fractions", type=fraction_list, default=(0.5, 0.7, 0.9), metavar="F1,F2,...",
                 help="open-loop runs at these fractions of the saturation requests/s (default: 0.5,0.7,0.9)")

# the synthetic workload; the defaults are WorkloadSpec's (not imported here:
# it loads the protos; a unit test keeps them equal)
TASKS = Flag("--tasks", type=task_weights, default="job_apply=1", metavar="TASK=W,...",
             help="task mix by weight, one task per request (default: %(default)s)")
CANDIDATES = Flag("--candidates", type=int_range, default="16", metavar="N|LO-HI",
                  help="candidates per request: N, or from LO to HI (default: %(default)s)")
HISTORY = Flag("--history", type=int_range, default="12-24", metavar="N|LO-HI",
               help="interactions in each member's history (default: %(default)s); what a prompt shows of them "
                    "is capped by its task's history budget")
MEMBERS = Flag("--members", type=positive_int, default=100, help="distinct members at most (default: %(default)s)")
REPEAT_SHARE = Flag("--repeat-share", type=share, default=0.5,
                    help="share of requests from a member already sent: prefix-cache hits (default: %(default)s)")
REPLAY = Flag("--replay", type=Path, metavar="FILE.jsonl",
              help="send these requests (one per line, proto JSON mapping) instead, cycling")
SEED = Flag("--seed", type=int, default=0,
            help="seeds every random draw: the schedule and the workload, or scaling's weights and token ids "
                 "(default: %(default)s)")

# what is measured with, and where the results go
MODEL = Flag("--model", type=Path, help="checkpoint directory (default: the demo model)")
SLO_MS = Flag("--slo-ms", type=positive_float, default=500.0,
              help="p99 latency objective in ms (default: %(default)s)")
OUT = Flag("--out", type=Path,
           help="output directory (default: a new one named after the UTC time, under runs/loadtest for run, "
                "capacity, overload and soak, under runs/<command> for the benchmarks; git-ignored)")
NO_PROGRESS = Flag("--no-progress", action="store_true", help="no progress bar")
NO_PLOTS = Flag("--no-plots", action="store_true", help="skip the PNG plots")
PORT = Flag("--port", type=port, default=50081, help="the canned server's port (default: %(default)s)")
