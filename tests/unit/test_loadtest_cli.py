"""The loadtest command line: argument types, modes and the `brew loadtest`
forwarding. Nothing here sends a request."""

from __future__ import annotations

import argparse

import pytest

from brew.cli import build_parser as brew_parser
from loadtest.cli import _plan, build_parser, int_range, main, rate_list, task_weights
from loadtest.schedule import Arrivals


def test_argument_types():
    assert int_range("16") == (16, 16)
    assert int_range("8-32") == (8, 32)
    assert task_weights("job_apply=1,feed_engagement=2.5") == {"job_apply": 1.0, "feed_engagement": 2.5}
    assert task_weights("pymk_connect") == {"pymk_connect": 1.0}
    assert rate_list("5,10, 20") == [5.0, 10.0, 20.0]
    for call, text in ((int_range, "8-x"), (int_range, "9-3"), (task_weights, "a=b"), (rate_list, "5,-1")):
        with pytest.raises(argparse.ArgumentTypeError):
            call(text)


def test_a_run_is_open_loop_or_closed_loop_never_both(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--rate", "5", "--concurrency", "2"])
    with pytest.raises(SystemExit):
        main(["run"])
    assert "--rate" in capsys.readouterr().err


def test_the_plan_carries_the_options(tmp_path):
    args = build_parser().parse_args([
        "run", "--rate", "20", "--arrivals", "gamma", "--burstiness", "4", "--candidates", "8-16",
        "--tasks", "job_apply=1,feed_engagement=1", "--members", "50", "--repeat-share", "0.25",
        "--history", "3-5", "--timeout", "1.5", "--slo-ms", "250", "--seed", "7", "--out", str(tmp_path),
    ])
    plan = _plan(args, default_duration=30.0)
    assert (plan.rate, plan.concurrency, plan.arrivals, plan.burstiness) == (20.0, None, Arrivals.GAMMA, 4.0)
    assert (plan.duration_s, plan.max_requests, plan.timeout_s) == (30.0, None, 1.5)
    assert (plan.slo_s, plan.seed) == (0.25, 7)
    assert plan.workload.candidates == (8, 16) and plan.workload.history == (3, 5)
    assert plan.workload.tasks == {"job_apply": 1.0, "feed_engagement": 1.0}
    assert (plan.workload.members, plan.workload.repeat_share) == (50, 0.25)
    assert plan.out_dir == tmp_path
    # A request count alone bounds a run: no default duration then.
    counted = _plan(build_parser().parse_args(["run", "--concurrency", "4", "--max-requests", "9"]), 30.0)
    assert (counted.duration_s, counted.max_requests, counted.concurrency) == (None, 9, 4)


def test_an_invalid_workload_is_an_error_that_says_why(capsys, tmp_path):
    assert main(["run", "--rate", "5", "--tasks", "nope=1", "--out", str(tmp_path)]) == 2
    assert "has no synthetic candidates" in capsys.readouterr().err


def test_brew_loadtest_forwards_its_arguments():
    args = brew_parser().parse_args(["loadtest", "capacity", "--rates", "5,10", "--slo-ms", "300"])
    assert args.args == ["capacity", "--rates", "5,10", "--slo-ms", "300"]
