"""Host cost from /proc: the stat line parsed, the process tree, CPU deltas by label."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from waiting import eventually

from loadtest.host_cost import (
    CpuMeter, HostSnapshot, ProcessCpu, ProcStat, clock_ticks_per_s, command_name, cpu_by_process, cpu_seconds,
    descendants, format_host_cost, parse_stat, per_candidate, process_tree,
)

linux_only = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")


def stat_line(pid: int, comm: str, ppid: int, utime: int, stime: int, start: int) -> str:
    # proc(5): pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    #          utime stime cutime cstime priority nice threads itrealvalue starttime vsize ...
    return (f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194304 99 0 0 0 {utime} {stime} 7 9 20 0 3 0 "
            f"{start} 3133440 358 18446744073709551615 0 0 0\n")


def test_parse_stat_with_spaces_and_parentheses_in_the_command():
    stat = parse_stat(stat_line(4321, "python3 (worker)", 17, utime=250, stime=30, start=490621))
    assert stat == ProcStat(pid=4321, comm="python3 (worker)", ppid=17, cpu_ticks=280, start_ticks=490621)
    assert parse_stat(stat_line(5, ") S 1 (", 1, 1, 2, 3)).comm == ") S 1 ("  # a name that mimics fields


def test_parse_stat_refuses_other_text():
    with pytest.raises(ValueError, match="not a /proc"):
        parse_stat("hello world")


def test_descendants_walk_the_whole_tree_parents_first():
    stats = [ProcStat(pid, "p", ppid, 0, 0) for pid, ppid in ((10, 1), (11, 10), (12, 10), (13, 11), (20, 1))]
    assert descendants(10, stats) == [10, 11, 12, 13]
    assert descendants(20, stats) == [20]


def snapshot(*processes: tuple[int, int, str, float]) -> HostSnapshot:
    """Processes given their CPU in seconds, held as this machine's clock ticks."""
    return HostSnapshot(tuple(ProcessCpu(pid, start, label, round(seconds * clock_ticks_per_s()))
                              for pid, start, label, seconds in processes))


def test_cpu_by_process_counts_increases_new_processes_and_sums_shared_labels():
    before = snapshot((1, 100, "server", 2.0), (2, 100, "VLLM::Worker", 5.0), (3, 100, "gone", 1.0),
                      (4, 100, "load generator", 1.0), (6, 100, "old", 9.0))
    after = snapshot((1, 100, "server", 2.5), (2, 100, "VLLM::Worker", 6.0), (5, 900, "VLLM::Worker", 0.5),
                     (6, 300, "pid reused", 0.25), (4, 100, "load generator", 1.5))
    spent = cpu_by_process(before, after)
    assert list(spent) == ["server", "VLLM::Worker", "pid reused", "load generator"]
    assert spent == pytest.approx({"server": 0.5, "VLLM::Worker": 1.5, "pid reused": 0.25,
                                   "load generator": 0.5})
    assert per_candidate(spent, 10)["VLLM::Worker"] == pytest.approx(0.15)
    assert per_candidate(spent, 0) == {}


@linux_only
def test_cpu_seconds_of_this_process_grow_after_burning_cpu():
    with CpuMeter({}, {"load generator": os.getpid()}) as meter:
        start = cpu_seconds(os.getpid())

        def burnt_enough() -> bool:
            sum(i * i for i in range(10_000))
            return cpu_seconds(os.getpid()) >= start + 0.05

        eventually(burnt_enough, timeout=5.0, interval=0)
    assert list(meter.spent) == ["load generator"] and meter.spent["load generator"] >= 0.05


@linux_only
def test_a_snapshot_names_each_child_by_its_command_line():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        eventually(lambda: "sleep(30)" in command_name(child.pid))  # the child has exec'd the interpreter
        assert child.pid in process_tree(os.getpid())
        taken = HostSnapshot.take({"server": os.getpid()}, {"load generator": os.getpid()})
        labels = {p.pid: p.label for p in taken.processes if p.label != "load generator"}
        assert labels[os.getpid()] == "server"
        assert labels[child.pid].endswith(" -c import time; time.sleep(30)")
        assert not labels[child.pid].startswith("/")  # the interpreter's directory is left out
        assert [p.pid for p in taken.processes if p.label == "load generator"] == [os.getpid()]
    finally:
        child.kill()
        child.wait()


def test_the_run_command_prints_cpu_per_candidate_by_process_in_milliseconds():
    text = format_host_cost({"server": 2.0, "VLLM::Worker": 5.0, "load generator": 0.1}, 1000)
    assert "1000 candidates" in text
    lines = text.splitlines()[1:]
    assert [line.split()[0] for line in lines] == ["server", "VLLM::Worker", "load"]
    assert [float(line.split()[-5]) for line in lines] == [2.0, 5.0, 0.1]
    assert "nothing scored" in format_host_cost({"server": 1.0}, 0)


@linux_only
def test_resident_bytes_sum_the_tree_and_a_child_holding_memory_adds_to_it():
    from loadtest.host_cost import resident_bytes

    alone = resident_bytes(os.getpid())
    assert alone > 10 << 20  # this interpreter holds well over 10 MiB
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; b = bytearray(64 << 20); "
                               "b[::4096] = b'x' * len(b[::4096]); print(1, flush=True); time.sleep(30)"],
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"1"  # its 64 MiB are touched, hence resident
        assert resident_bytes(os.getpid()) - alone > 64 << 20
    finally:
        holder.kill()
        holder.wait()
