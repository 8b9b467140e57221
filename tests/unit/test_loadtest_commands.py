"""The load generator's commands: parsed options become the run's plan.
Nothing here sends a request."""

from __future__ import annotations

from loadtest.cli import build_parser
from loadtest.commands import plan_from_args
from loadtest.flags import RUN_SECONDS, resolve_defaults
from loadtest.schedule import Arrivals


def test_the_plan_carries_the_options(tmp_path):
    args = build_parser().parse_args([
        "run", "--rate", "20", "--arrivals", "gamma", "--burstiness", "4", "--candidates", "8-16",
        "--tasks", "job_apply=1,feed_engagement=1", "--members", "50", "--repeat-share", "0.25",
        "--history", "3-5", "--timeout", "1.5", "--slo-ms", "250", "--seed", "7", "--out", str(tmp_path),
    ])
    plan = plan_from_args(resolve_defaults(args, "run"))
    assert (plan.rate, plan.concurrency, plan.arrivals, plan.burstiness) == (20.0, None, Arrivals.GAMMA, 4.0)
    assert (plan.duration_s, plan.max_requests, plan.timeout_s) == (RUN_SECONDS["run"], None, 1.5)
    assert (plan.slo_s, plan.seed) == (0.25, 7)
    assert plan.workload.candidates == (8, 16) and plan.workload.history == (3, 5)
    assert plan.workload.tasks == {"job_apply": 1.0, "feed_engagement": 1.0}
    assert (plan.workload.members, plan.workload.repeat_share) == (50, 0.25)
    assert plan.out_dir == tmp_path
    # A request count alone bounds a run: no default duration then.
    counted = plan_from_args(resolve_defaults(
        build_parser().parse_args(["run", "--concurrency", "4", "--max-requests", "9"]), "run"))
    assert (counted.duration_s, counted.max_requests, counted.concurrency) == (None, 9, 4)
