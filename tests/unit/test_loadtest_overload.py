"""The overload sweep on fake replicas: one that sheds the excess and keeps
its goodput, one that collapses. Its table, its JSON and what its chart shows."""

from __future__ import annotations

import json

import pytest
from figures import assert_vertical_line, lines, series

from loadtest.cli import build_parser
from loadtest.overload import FORMAT, format_overload, parse_multiples, sweep_overload, write_overload_json
from loadtest.plots import plot_overload
from loadtest.records import RequestRecord
from loadtest.summary import RunInfo, Summary, summarize

CAPACITY = 10.0  # requests/s
WALL_S = 10.0


def records_at(rate: float, ok_per_s: float, refused_s: float | None) -> list[RequestRecord]:
    """WALL_S seconds offered at `rate`: `ok_per_s` of them answered OK in 0.1 s,
    the rest refused in `refused_s` (RESOURCE_EXHAUSTED), or, without it,
    DEADLINE_EXCEEDED at 2 s."""
    records = []
    total, ok = round(rate * WALL_S), round(ok_per_s * WALL_S)
    for index in range(total):
        start = index / rate
        if index < ok:
            records.append(RequestRecord(index, f"r{index}", 8, start, start, start + 0.1, "OK"))
        elif refused_s is not None:
            records.append(RequestRecord(index, f"r{index}", 8, start, start, start + refused_s,
                                         "RESOURCE_EXHAUSTED"))
        else:
            records.append(RequestRecord(index, f"r{index}", 8, start, start, start + 2.0,
                                         "DEADLINE_EXCEEDED"))
    return records


def summary_of(records: list[RequestRecord], rate: float) -> Summary:
    run = RunInfo(mode="open-loop", target="t", timeout_s=2.0, seed=0, rate=rate)
    return summarize(records, wall_s=WALL_S, slo_s=0.5, run=run, started_at="t")


async def shedding(rate: float) -> Summary:
    """Serves up to its capacity, refuses the rest in 2 ms."""
    return summary_of(records_at(rate, min(rate, CAPACITY), refused_s=0.002), rate)


def late_records(rate: float, ok_per_s: float, latency: float) -> list[RequestRecord]:
    """WALL_S seconds offered at `rate`: `ok_per_s` of them answered OK in
    `latency`, the rest refused in 2 ms."""
    records = []
    total, ok = round(rate * WALL_S), round(ok_per_s * WALL_S)
    for index in range(total):
        start = index / rate
        status, took = ("OK", latency) if index < ok else ("RESOURCE_EXHAUSTED", 0.002)
        records.append(RequestRecord(index, f"r{index}", 8, start, start, start + took, status))
    return records


async def late(rate: float) -> Summary:
    """Past capacity it keeps answering OK within the 2 s deadline, but after the 0.5 s SLO."""
    return summary_of(late_records(rate, min(rate, CAPACITY), 0.1 if rate <= CAPACITY else 1.5), rate)


async def collapsing(rate: float) -> Summary:
    """Past capacity it queues everything and serves a shrinking share in time."""
    ok = rate if rate <= CAPACITY else CAPACITY * CAPACITY / rate
    return summary_of(records_at(rate, ok, refused_s=None), rate)


@pytest.mark.asyncio
async def test_a_server_that_sheds_the_excess_holds_its_goodput():
    sweep = await sweep_overload(shedding, CAPACITY, [5, 0.5, 1, 2])
    assert [step.multiple for step in sweep.steps] == [0.5, 1, 2, 5]
    assert [step.rate for step in sweep.steps] == [5.0, 10.0, 20.0, 50.0]
    assert [step.ok_per_s for step in sweep.steps] == pytest.approx([5, 10, 10, 10])
    assert sweep.reference is not None and sweep.reference.multiple == 1
    assert sweep.holds is True
    assert sweep.steps[-1].errors_per_s() == pytest.approx({"RESOURCE_EXHAUSTED": 40.0})
    table = format_overload(sweep)
    assert "holds: OK within the SLO past capacity stays at or above 80%" in table
    assert "    5x" in table and "100%" in table


@pytest.mark.asyncio
async def test_a_server_that_collapses_does_not_hold():
    sweep = await sweep_overload(collapsing, CAPACITY, [1, 2, 5])
    assert sweep.share_of_capacity(sweep.steps[-1]) == pytest.approx(0.2)
    assert sweep.holds is False
    assert "does not hold" in format_overload(sweep)


@pytest.mark.asyncio
async def test_a_server_that_answers_ok_but_past_the_slo_does_not_hold():
    sweep = await sweep_overload(late, CAPACITY, [1, 2, 5])
    assert [sweep.share_of_capacity(step) for step in sweep.steps] == pytest.approx([1, 1, 1])
    assert [sweep.slo_share_of_capacity(step) for step in sweep.steps] == pytest.approx([1, 0, 0])
    assert [step.within_slo_per_s for step in sweep.steps] == pytest.approx([10, 0, 0])
    assert sweep.holds is False
    table = format_overload(sweep)
    assert "does not hold: OK within the SLO past capacity falls below 80%" in table
    assert "SLO 500 ms" in table
    ok_p99_ms = [float(line.split()[6]) for line in table.splitlines()[2:5]]
    assert ok_p99_ms == pytest.approx([100, 1500, 1500], rel=0.01)


@pytest.mark.asyncio
async def test_json_and_chart(tmp_path, saved_figures):
    sweep = await sweep_overload(shedding, CAPACITY, [0.5, 1, 2, 5], capacity_source="searched")
    write_overload_json(sweep, tmp_path / "overload.json")
    document = json.loads((tmp_path / "overload.json").read_text())
    assert document["format"] == FORMAT and document["holds"] is True
    assert document["capacity"] == {"rate": CAPACITY, "source": "searched"}
    last = document["steps"][-1]
    assert last["multiple"] == 5 and last["goodput_vs_capacity"] == pytest.approx(1.0)
    assert last["within_slo_per_s"] == pytest.approx(10.0) and last["within_slo_vs_capacity"] == pytest.approx(1.0)
    assert last["errors"] == {"RESOURCE_EXHAUSTED": 400}
    assert last["refused_ms"]["p99"] == pytest.approx(2.0, rel=0.01)
    assert last["summary"]["format"] == "brew.loadtest.summary/1"
    path = plot_overload(sweep, tmp_path / "overload.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    [figure] = saved_figures
    answers, errors = figure.axes
    multiples = [0.5, 1.0, 2.0, 5.0]
    assert answers.get_title() == "Goodput against offered load (capacity 10 requests/s)"
    assert errors.get_title() == "Errors by status against offered load"
    assert (answers.get_ylabel(), errors.get_ylabel()) == ("requests/s", "errors/s")
    # offered 5 to 50 requests/s; the shedding server answers up to 10 in time, refuses the rest
    assert lines(answers) == {"offered": series(multiples, [5, 10, 20, 50]),
                              "OK (within deadline)": series(multiples, [5, 10, 10, 10]),
                              "OK within SLO": series(multiples, [5, 10, 10, 10]),
                              "capacity": ([1.0, 1.0], [0.0, 1.0])}
    assert lines(errors) == {"RESOURCE_EXHAUSTED": series(multiples, [0, 0, 10, 40]),
                             "capacity": ([1.0, 1.0], [0.0, 1.0])}
    for axes in (answers, errors):
        assert axes.get_xlabel() == "offered load (x capacity)"
        assert [label.get_text() for label in axes.get_xticklabels()] == ["0.5x", "1x", "2x", "5x"]
        assert_vertical_line(axes, "capacity", 1.0)


@pytest.mark.asyncio
async def test_no_verdict_without_a_step_at_or_below_capacity():
    sweep = await sweep_overload(shedding, CAPACITY, [2, 5])
    assert sweep.reference is None and sweep.holds is None


def test_multiples_must_be_positive():
    assert parse_multiples([2, 1, 2]) == (1, 2)
    with pytest.raises(ValueError, match="positive"):
        parse_multiples([0, 1])


def test_the_command_takes_a_capacity_or_searches_one():
    args = build_parser().parse_args(["overload", "--capacity", "12", "--multiples", "1,2,5",
                                      "--duration", "5"])
    assert (args.capacity, args.multiples, args.duration) == (12.0, [1.0, 2.0, 5.0], 5.0)
    with pytest.raises(SystemExit):  # a capacity given, or one searched: not both
        build_parser().parse_args(["overload", "--capacity", "12", "--start-rate", "4"])
    args = build_parser().parse_args(["overload", "--start-rate", "4"])
    assert (args.capacity, args.start_rate, args.multiples) == (None, 4.0, [0.5, 1.0, 1.5, 2.0, 3.0, 5.0])
    assert args.warmup == 15.0 and args.pause == 8.0
