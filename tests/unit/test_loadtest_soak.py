"""The soak verdict: VmRSS parsing, the process tree sampled from a fake
/proc, and memory growth judged after the warm-up."""

from __future__ import annotations

import asyncio

import pytest
from waiting import eventually_async

from loadtest.soak import MAX_GROWTH, MemorySample, MemorySampler, memory_growth, parse_vm_rss

STATUS = "Name:\tpython\nVmPeak:\t  900 kB\nVmRSS:\t  2048 kB\nThreads:\t4\n"


def test_vm_rss_is_read_in_bytes():
    assert parse_vm_rss(STATUS) == 2048 * 1024
    assert parse_vm_rss("Name:\tkthreadd\n") is None  # a kernel thread has no VmRSS
    with pytest.raises(ValueError, match="unit"):
        parse_vm_rss("VmRSS:\t 2 MB\n")


def fake_proc(root, processes):
    """processes: pid -> (ppid, comm, rss kB); a /proc with stat, status and cmdline files."""
    for pid, (ppid, comm, rss_kb) in processes.items():
        directory = root / str(pid)
        directory.mkdir()
        fields = ["S", str(ppid)] + ["0"] * 17 + ["100"]  # state, ppid ... starttime (field 22)
        (directory / "stat").write_text(f"{pid} ({comm}) {' '.join(fields)}\n")
        (directory / "status").write_text(f"Name:\t{comm}\nVmRSS:\t{rss_kb} kB\n")
        (directory / "cmdline").write_bytes(comm.encode() + b"\0")
    return root


def test_the_sampler_reads_the_server_and_every_process_below_it(tmp_path):
    proc = fake_proc(tmp_path, {10: (1, "brew", 1000), 11: (10, "EngineCore", 3000), 12: (11, "worker", 500),
                                20: (1, "other", 7000)})
    sampler = MemorySampler(10, interval_s=1.0, clock=lambda: 5.0, proc=proc)
    sample = sampler.sample(started=2.0)
    assert sample.elapsed_s == 3.0
    assert sample.rss == {"brew [10]": 1000 * 1024, "EngineCore [11]": 3000 * 1024, "worker [12]": 500 * 1024}


@pytest.mark.asyncio
async def test_the_sampler_runs_until_cancelled(tmp_path):
    proc = fake_proc(tmp_path, {10: (1, "brew", 1000)})
    sampler = MemorySampler(10, interval_s=0.01, proc=proc)
    task = asyncio.create_task(sampler.run())
    await eventually_async(lambda: len(sampler.samples) >= 2)  # it keeps sampling
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert all(sample.rss == {"brew [10]": 1000 * 1024} for sample in sampler.samples)


def samples(curve):
    """One sample per second: elapsed -> {label: MiB}."""
    return [MemorySample(float(t), {label: int(mib * 2**20) for label, mib in values.items()})
            for t, values in enumerate(curve)]


def test_growth_is_judged_from_the_first_window_after_warm_up_to_the_last():
    # Warm-up doubles the server's memory (caches filling), then it is flat;
    # the engine grows 10% after warm-up: a leak.
    curve = [{"server": 100 if t < 5 else 200, "engine": 1000 if t < 20 else 1100} for t in range(30)]
    growth = {g.label: g for g in memory_growth(samples(curve), settle_s=5, window_s=5)}
    assert growth["server"].growth == pytest.approx(0.0) and growth["server"].flat
    assert growth["engine"].growth == pytest.approx(0.1) and not growth["engine"].flat
    assert MAX_GROWTH == 0.05


def test_a_process_that_appears_or_exits_after_warm_up_is_not_flat():
    curve = [{"server": 100, **({"engine": 50} if t < 20 else {})} for t in range(30)]
    growth = {g.label: g for g in memory_growth(samples(curve), settle_s=5, window_s=5)}
    assert growth["server"].flat
    assert not growth["engine"].present_throughout and not growth["engine"].flat


def test_no_verdict_before_the_warm_up_ends():
    assert memory_growth(samples([{"server": 1}] * 3), settle_s=10, window_s=5) == []


def test_a_process_renamed_during_warm_up_is_judged_by_its_new_name_only():
    # vLLM's engine core starts as "python -c ...spawn..." and sets its title once loaded.
    curve = [{"server": 100, ("spawn [7]" if t < 3 else "EngineCore [7]"): 600} for t in range(30)]
    growth = {g.label: g for g in memory_growth(samples(curve), settle_s=5, window_s=5)}
    assert set(growth) == {"server", "EngineCore [7]"} and all(g.flat for g in growth.values())
