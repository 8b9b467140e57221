"""The loadtest command line: argument types, modes, the benchmarks' options
and the `brew loadtest` forwarding. Nothing here sends a request."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from brew.cli import build_parser as brew_parser
from loadtest.cli import (
    build_parser, even_count, fraction_list, int_range, main, parse_caps, rate_list, task_weights,
)


def test_argument_types():
    assert int_range("16") == (16, 16)
    assert int_range("8-32") == (8, 32)
    assert task_weights("job_apply=1,feed_engagement=2.5") == {"job_apply": 1.0, "feed_engagement": 2.5}
    assert task_weights("pymk_connect") == {"pymk_connect": 1.0}
    assert rate_list("5,10, 20") == [5.0, 10.0, 20.0]
    assert even_count("0") == 0 and even_count("2") == 2
    assert fraction_list("0.5, 0.9,1") == (0.5, 0.9, 1.0)
    for call, text in ((int_range, "8-x"), (int_range, "9-3"), (task_weights, "a=b"), (rate_list, "5,-1"),
                       (even_count, "1"), (even_count, "-2"), (even_count, "two"), (fraction_list, "0.5,1.2"),
                       (fraction_list, "0"), (fraction_list, ",")):
        with pytest.raises(argparse.ArgumentTypeError):
            call(text)


def test_a_run_is_open_loop_or_closed_loop_never_both(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--rate", "5", "--concurrency", "2"])
    with pytest.raises(SystemExit):
        main(["run"])
    assert "--rate" in capsys.readouterr().err


def test_an_invalid_workload_is_an_error_that_says_why(capsys, tmp_path):
    assert main(["run", "--rate", "5", "--tasks", "nope=1", "--out", str(tmp_path)]) == 2
    assert "has no synthetic candidates" in capsys.readouterr().err


def test_capacity_confirms_and_measures_the_saturation_by_default():
    args = build_parser().parse_args(["capacity", "--start-rate", "4"])
    assert (args.confirm, args.saturation_callers, args.fractions) == (2, None, (0.5, 0.7, 0.9))
    args = build_parser().parse_args(["capacity", "--rates", "4,8", "--confirm", "0", "--saturation-callers", "0"])
    assert (args.confirm, args.saturation_callers) == (0, 0)


def test_brew_loadtest_forwards_its_arguments():
    args = brew_parser().parse_args(["loadtest", "capacity", "--rates", "5,10", "--slo-ms", "300"])
    assert args.args == ["capacity", "--rates", "5,10", "--slo-ms", "300"]


def test_parse_caps():
    assert parse_caps("torch=5000") == {"naive": 40_000, "torch": 5000}
    assert parse_caps("naive=0") == {}
    with pytest.raises(argparse.ArgumentTypeError):
        parse_caps("gpt=5")


def test_parser_defaults_are_the_documented_sweeps():
    args = build_parser().parse_args(["scaling", "--out", "x"])
    assert args.candidates == (1, 4, 16, 64, 256)
    assert args.history_tokens == (64, 256, 1024, 4096)
    assert args.engines == ("vllm", "vllm-mis", "torch", "torch-mis", "naive")  # every engine variant
    with pytest.raises(SystemExit):
        build_parser().parse_args(["scaling", "--out", "x", "--engines", "tgi"])


def test_building_the_parsers_imports_none_of_the_work():
    # `brew --help` builds every parser, loadtest's included: it must not load
    # torch, plotting, gRPC or HTTP clients.
    heavy = ("torch", "transformers", "vllm", "matplotlib", "grpc", "httpx")
    code = ("import sys, brew.cli; brew.cli.build_parser(); "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "[]"


def test_every_history_option_defaults_to_the_workloads_own_default(tmp_path):
    from loadtest.workload import WorkloadSpec

    parser = build_parser()
    for command in (["run", "--rate", "1"], ["capacity", "--start-rate", "1"], ["sidebyside"], ["cluster"]):
        args = parser.parse_args([*command, "--out", str(tmp_path)])
        assert args.history == WorkloadSpec().history, command
