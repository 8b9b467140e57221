"""Host cost: the CPU seconds each process of a serving system spends, read from /proc.

A benchmark snapshots the processes it cares about before and after a run:
the server process and all its descendants (vLLM's engine core and worker,
each named by its command line, which is the process title vLLM sets), and
the load generator itself. The difference, divided by the candidates scored
OK in the run, is the CPU seconds per candidate of each process: what the
serving path costs the host beyond the model's arithmetic.

CPU time is utime + stime of /proc/<pid>/stat (fields 14 and 15, in clock
ticks of os.sysconf("SC_CLK_TCK"), usually 10 ms): the process's own time,
all its threads included, its children excluded (each child is read on its
own). A process started between the two snapshots counts all its time; one
that exited before the second is lost, since its time cannot be read any
more. The pid and the start time (field 22) identify a process, so a pid
reused in between is not mistaken for the old one.

Why /proc and not psutil: psutil is not one of Brew's dependencies (it comes
with vLLM, an optional extra), and the figures needed are three fields of one
line per process; reading them directly keeps the unit exact (clock ticks)
and the parsing tested on a sample line. Linux only: where there is no /proc
a snapshot is empty and the reports show no host cost.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
SERVER = "server"
LOAD_GENERATOR = "load generator"
NAME_CHARS = 60  # a child's label: its command line, cut to this length


@dataclass(frozen=True)
class ProcStat:
    """The fields of one /proc/<pid>/stat line that host cost needs."""

    pid: int
    comm: str  # the kernel's short name (15 characters at most)
    ppid: int
    cpu_ticks: int  # utime + stime: the process's own CPU time, every thread, no children
    start_ticks: int  # clock ticks after boot at which it started: with the pid, its identity


def parse_stat(line: str) -> ProcStat:
    """One /proc/<pid>/stat line. The command name (field 2) is in parentheses
    and may itself hold spaces and parentheses, so the fields after it are
    counted from the last ')'."""
    head, paren, tail = line.rpartition(")")
    pid_text, opened, comm = head.partition(" (")
    if not paren or not opened:
        raise ValueError(f"not a /proc/<pid>/stat line: {line[:80]!r}")
    fields = tail.split()  # fields[0] is proc(5)'s field 3 (state): field n is fields[n - 3]
    return ProcStat(pid=int(pid_text), comm=comm, ppid=int(fields[1]),
                    cpu_ticks=int(fields[11]) + int(fields[12]), start_ticks=int(fields[19]))


def clock_ticks_per_s() -> int:
    return os.sysconf("SC_CLK_TCK")


def read_stat(pid: int, proc: Path = PROC) -> ProcStat | None:
    """The process's stat, or None when it is gone (or there is no /proc)."""
    try:
        return parse_stat((proc / str(pid) / "stat").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) the process has spent so far, its children excluded."""
    stat = read_stat(pid)
    if stat is None:
        raise ProcessLookupError(f"no process {pid} in {PROC}")
    return stat.cpu_ticks / clock_ticks_per_s()


def all_stats(proc: Path = PROC) -> list[ProcStat]:
    """Every process's stat (those that exit while being read are left out)."""
    if not proc.is_dir():
        return []
    stats = (read_stat(int(entry.name), proc) for entry in proc.iterdir() if entry.name.isdigit())
    return [stat for stat in stats if stat is not None]


def descendants(pid: int, stats: Iterable[ProcStat]) -> list[int]:
    """`pid` and every process below it, parents before their children."""
    children: dict[int, list[int]] = {}
    for stat in stats:
        children.setdefault(stat.ppid, []).append(stat.pid)
    tree, index = [pid], 0
    while index < len(tree):
        tree += sorted(children.get(tree[index], ()))
        index += 1
    return tree


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants now, parents first."""
    return descendants(pid, all_stats())


def resident_bytes(pid: int, proc: Path = PROC) -> int:
    """Resident memory (VmRSS of /proc/<pid>/status) of the process and all
    its descendants, summed: pages two of them share count twice, so this is
    an upper bound of what the tree holds. 0 where /proc is not readable."""
    total = 0
    for member in descendants(pid, all_stats(proc)):
        try:
            status = (proc / str(member) / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024  # kB
    return total


def command_name(pid: int, fallback: str = "", proc: Path = PROC) -> str:
    """The process's command line (its title, where it set one), the
    interpreter's directory left out, cut to NAME_CHARS; `fallback` (the
    kernel's name) when it has none."""
    try:
        words = (proc / str(pid) / "cmdline").read_bytes().decode("utf-8", "replace").split("\0")
    except OSError:
        words = []
    words = [word for word in words if word]
    if not words:
        return fallback
    name = " ".join([os.path.basename(words[0]), *words[1:]])
    return name if len(name) <= NAME_CHARS else name[:NAME_CHARS - 1] + "…"


@dataclass(frozen=True)
class ProcessCpu:
    """One process at one instant: who it is and the CPU it has spent, in
    clock ticks (whole numbers: differences and sums stay exact until the
    one division into seconds)."""

    pid: int
    start_ticks: int
    label: str  # a role ("server", "load generator") or a descendant's command line
    cpu_ticks: int


@dataclass(frozen=True)
class HostSnapshot:
    processes: tuple[ProcessCpu, ...]

    @classmethod
    def take(cls, trees: Mapping[str, int], processes: Mapping[str, int] | None = None) -> HostSnapshot:
        """The CPU seconds of each root in `trees` (labelled by its key) and of
        all its descendants (labelled by command line), and of each process in
        `processes` alone, without its children."""
        stats = all_stats()
        by_pid = {stat.pid: stat for stat in stats}
        taken: list[ProcessCpu] = []

        def add(pid: int, label: str) -> None:
            stat = by_pid.get(pid)
            if stat is not None:
                taken.append(ProcessCpu(pid, stat.start_ticks, label, stat.cpu_ticks))

        for label, root in trees.items():
            add(root, label)
            for pid in descendants(root, stats)[1:]:
                add(pid, command_name(pid, by_pid[pid].comm))
        for label, pid in (processes or {}).items():
            add(pid, label)
        return cls(tuple(taken))


def cpu_by_process(before: HostSnapshot, after: HostSnapshot) -> dict[str, float]:
    """CPU seconds spent between two snapshots, by label, in `after`'s order
    (processes sharing a label are summed). A process in both counts its
    increase; one started in between counts all its time."""
    earlier = {(p.pid, p.start_ticks): p.cpu_ticks for p in before.processes}
    spent: dict[str, int] = {}
    for process in after.processes:
        spent[process.label] = (spent.get(process.label, 0)
                                + process.cpu_ticks - earlier.get((process.pid, process.start_ticks), 0))
    ticks_per_s = clock_ticks_per_s()
    return {label: ticks / ticks_per_s for label, ticks in spent.items()}


def per_candidate(cpu_s: Mapping[str, float], candidates: int) -> dict[str, float]:
    """CPU seconds per candidate by label; empty when nothing was scored."""
    return {label: seconds / candidates for label, seconds in cpu_s.items()} if candidates > 0 else {}



class CpuMeter:
    """A context that snapshots the same processes on entering and on leaving;
    `spent` is then the CPU seconds by label in between (see cpu_by_process)."""

    def __init__(self, trees: Mapping[str, int], processes: Mapping[str, int] | None = None) -> None:
        self.trees = dict(trees)
        self.processes = dict(processes or {})
        self.spent: dict[str, float] = {}
        self._before: HostSnapshot | None = None

    def __enter__(self) -> CpuMeter:
        self._before = HostSnapshot.take(self.trees, self.processes)
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._before is not None
        self.spent = cpu_by_process(self._before, HostSnapshot.take(self.trees, self.processes))



def format_host_cost(cpu_s: Mapping[str, float], candidates: int) -> str:
    """CPU per candidate by process, as `brew loadtest run --server-pid` prints it."""
    lines = [f"host cost over the load ({candidates} candidates scored OK):"]
    for label, seconds in per_candidate(cpu_s, candidates).items():
        lines.append(f"  {label[:NAME_CHARS]:<{NAME_CHARS}} {seconds * 1000:8.3f} ms CPU per candidate")
    if candidates <= 0:
        lines.append("  nothing scored: no CPU per candidate")
    return "\n".join(lines)


def write_host_cost_json(cpu_s: Mapping[str, float], candidates: int, path: Path) -> None:
    """host_cost.json of one run: CPU seconds by process over the load, the
    candidates scored OK, and their quotient."""
    document = {"clock_ticks_per_s": clock_ticks_per_s(), "ok_candidates": candidates, "cpu_s": dict(cpu_s),
                "cpu_s_per_candidate": per_candidate(cpu_s, candidates)}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
