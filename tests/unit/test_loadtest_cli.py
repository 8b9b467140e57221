"""The loadtest command line: argument types, modes, the benchmarks' options
and the `brew loadtest` forwarding. Nothing here sends a request."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from brew.cli import build_parser as brew_parser
from loadtest.bench.floor import build_parser as floor_parser
from loadtest.cli import build_parser, main, parse_caps
from loadtest.flags import RUN_SECONDS, even_count, fraction_list, int_range, rate_list, task_weights


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
    assert args.candidate_counts == (1, 4, 16, 64, 256)
    assert args.history_tokens == (64, 256, 1024, 4096)
    # every engine variant: multi-item off, on (-mis) and auto (-auto) where the engine can pack
    assert args.engines == ("vllm", "vllm-mis", "vllm-auto", "torch", "torch-mis", "torch-auto", "naive")
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


def test_every_workload_option_defaults_to_the_workloads_own_default(tmp_path):
    from loadtest.workload import WorkloadSpec

    spec = WorkloadSpec()
    parser = build_parser()
    for command in (["run", "--rate", "1"], ["capacity", "--start-rate", "1"], ["sidebyside"],
                    ["cluster", "--rate", "1"]):
        args = parser.parse_args([*command, "--out", str(tmp_path)])
        assert (args.tasks, args.candidates, args.history, args.members, args.repeat_share) == (
            spec.tasks, spec.candidates, spec.history, spec.members, spec.repeat_share), command


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every command's parser below `parser`, by its command path."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found[f"{parser.prog} {name}"] = child
                found.update(_subparsers(child))
    return found


def _flag_meaning(action: argparse.Action) -> tuple[object, ...]:
    return (type(action).__name__, action.type, repr(action.default), tuple(action.choices or ()), action.help,
            action.metavar)


def test_a_flag_means_the_same_in_every_loadtest_command():
    """Same name, same type, check, default, choices and help, in every
    loadtest command and in the floor benchmark's parser."""
    parsers = {"floor": floor_parser(), **_subparsers(build_parser()), **_subparsers(floor_parser())}
    meanings: dict[str, dict[tuple[object, ...], list[str]]] = {}
    for command, parser in parsers.items():
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    meanings.setdefault(option, {}).setdefault(_flag_meaning(action), []).append(command)
    assert len(meanings) > 40  # the walk found the commands' flags
    ambiguous = {option: list(by.values()) for option, by in meanings.items() if len(by) > 1}
    assert ambiguous == {}


def test_duration_and_out_follow_the_command_when_not_given(tmp_path):
    for command, extra in (("run", ["--rate", "1"]), ("soak", ["--rate", "1", "--server-pid", "1"])):
        parsed = build_parser().parse_args([command, *extra])
        assert parsed.duration is None and parsed.out is None
    from loadtest.flags import resolve_defaults

    run = resolve_defaults(build_parser().parse_args(["run", "--rate", "1"]), "run")
    assert run.duration == RUN_SECONDS["run"] and run.out.parent.as_posix() == "runs/loadtest"
    bounded = resolve_defaults(build_parser().parse_args(["run", "--rate", "1", "--max-requests", "9"]), "run")
    assert bounded.duration is None  # --max-requests bounds the run
    given = resolve_defaults(build_parser().parse_args(["run", "--rate", "1", "--duration", "3", "--out",
                                                        str(tmp_path)]), "run")
    assert (given.duration, given.out) == (3.0, tmp_path)


def test_scalings_packing_flags_are_the_packing_rules_own(capsys):
    """The [packing] settings of brew serve, from their one declaration; a bad value is refused at once."""
    from brew.engines.multi_item_rule import PackingRule
    from brew.settings import from_table, given_flags
    from loadtest.bench.scaling.points import PACKING_PREFIX

    args = build_parser().parse_args(["scaling", "--out", "x", "--max-row-tokens", "99", "--min-candidates", "4"])
    assert from_table(PackingRule, given_flags(args, PackingRule, PACKING_PREFIX)) == PackingRule(
        max_row_tokens=99, min_candidates=4)
    assert main(["scaling", "--out", "x", "--max-candidate-share", "2"]) == 2
    assert "max_candidate_share must be in 0..1, got 2.0" in capsys.readouterr().err
