"""Interleaved side-by-side: systems sharing a turn run one window each in
rotation, and no two loads are ever on at once (the load itself is a fake)."""

from __future__ import annotations

import asyncio
import os

import pytest

from sweep_samples import step_summary

from loadtest.bench.sidebyside import measure as sidebyside_measure
from loadtest.bench.sidebyside.measure import _Runs
from loadtest.capacity import search_capacity
from loadtest.experiment import RunPlan
from loadtest.runner import Target

pytestmark = pytest.mark.asyncio


def fake_load(events: list[tuple[str, str, float]], limits: dict[str, float]):
    """`execute` for systems that hold their SLO up to `limits[system]`
    requests/s; records each load's start and end."""

    async def execute(plan, scorer, around_load=None):
        system = plan.out_dir.parent.name
        plan.out_dir.mkdir(parents=True)  # as execute does
        with around_load:
            events.append(("start", system, plan.rate))
            await asyncio.sleep(0.001)  # the other systems' coroutines get to run meanwhile
            events.append(("end", system, plan.rate))
        return step_summary(plan.rate, 0.1 if plan.rate <= limits[system] else 0.9)

    return execute


def runs_for(tmp_path, names, turn: asyncio.Lock) -> dict[str, _Runs]:
    return {
        name: _Runs(name, RunPlan(target=Target("127.0.0.1:1"), out_dir=tmp_path / name, rate=1.0,
                                  duration_s=1.0), scorer=None, server_pid=os.getpid(), pause_s=0.0, turn=turn)
        for name in names
    }


async def test_systems_sharing_a_turn_search_in_rotation_one_load_at_a_time(tmp_path, monkeypatch):
    events: list[tuple[str, str, float]] = []
    monkeypatch.setattr(sidebyside_measure, "execute", fake_load(events, {"a": 24, "b": 24, "c": 24}))
    runs = runs_for(tmp_path, "abc", asyncio.Lock())

    sweeps = await asyncio.gather(*(search_capacity(r.window, 4.0) for r in runs.values()))

    assert [s.capacity.rate for s in sweeps] == [24, 24, 24]
    starts = [system for kind, system, _ in events if kind == "start"]
    assert starts == ["a", "b", "c"] * (len(starts) // 3)  # the same search each: strict rotation
    assert all(events[i][0] == "start" and events[i + 1] == ("end", *events[i][1:])
               for i in range(0, len(events), 2))  # every load ends before the next starts
    assert (tmp_path / "b" / "search-00-rate-4" / "host_cost.json").exists()


async def test_a_system_that_finishes_early_leaves_the_others_rotating(tmp_path, monkeypatch):
    events: list[tuple[str, str, float]] = []
    monkeypatch.setattr(sidebyside_measure, "execute", fake_load(events, {"a": 2, "b": 100}))
    runs = runs_for(tmp_path, "ab", asyncio.Lock())

    sweeps = await asyncio.gather(*(search_capacity(r.window, 4.0) for r in runs.values()))

    assert sweeps[0].capacity.rate == 2 and sweeps[1].capacity.rate == 96
    starts = [system for kind, system, _ in events if kind == "start"]
    a_windows = starts.count("a")
    assert starts[:2 * a_windows] == ["a", "b"] * a_windows  # in turn while both search
    assert set(starts[2 * a_windows:]) == {"b"}                # then b alone


async def test_without_a_shared_turn_the_loads_overlap(tmp_path, monkeypatch):
    """The contrast that shows the turn is what serializes them."""
    events: list[tuple[str, str, float]] = []
    monkeypatch.setattr(sidebyside_measure, "execute", fake_load(events, {"a": 8, "b": 8}))
    runs = {**runs_for(tmp_path, "a", asyncio.Lock()), **runs_for(tmp_path, "b", asyncio.Lock())}

    await asyncio.gather(*(search_capacity(r.window, 4.0) for r in runs.values()))

    assert events[:2] == [("start", "a", 4.0), ("start", "b", 4.0)]
