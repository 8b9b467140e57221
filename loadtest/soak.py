"""The soak run: hours-long steady load, and whether the server stays healthy.

A replica that scores well for a minute can still leak: a cache that never
evicts, a record kept per request, a task that never ends. The soak runs one
open-loop load at a steady rate (e.g. 80% of capacity) for a long time, while
it samples the resident memory (VmRSS) of the server process and of every
process below it (vLLM's engine core, its workers). The verdict:

- no errors: every request answered OK;
- memory flat: for every process, the median RSS of the last `window_s`
  seconds is within MAX_GROWTH of the median of the first `window_s` seconds
  after `settle_s` (the warm-up: lazy buffers, caches filling up to their
  limits, allocator pools). A process that appears or exits mid-run is
  reported and fails the verdict (a restart is not a flat run); one that
  exits, or sets its process title, during the warm-up is not judged.

RSS is read from /proc/<pid>/status (VmRSS, in kB), the processes found
anew at each sample (loadtest.host_cost.process_tree). Linux only.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.host_cost import PROC, all_stats, command_name, descendants
from loadtest.summary import Summary

MAX_GROWTH = 0.05  # RSS after warm-up may grow by at most this share


def parse_vm_rss(status_text: str) -> int | None:
    """Resident bytes from the text of /proc/<pid>/status (None if absent:
    a kernel thread, or a process exiting)."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"unexpected VmRSS unit in {line!r}")
            return int(value) * 1024
    return None


def rss_bytes(pid: int, proc: Path = PROC) -> int | None:
    try:
        return parse_vm_rss((proc / str(pid) / "status").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None


@dataclass(frozen=True)
class MemorySample:
    elapsed_s: float  # since the sampler started
    rss: Mapping[str, int]  # process label -> resident bytes


def label_processes(pid: int, proc: Path = PROC) -> dict[int, str]:
    """The server `pid` and its descendants, each labelled by its command
    line (the process title vLLM sets) and its pid, so two workers with the
    same title stay apart."""
    stats = {stat.pid: stat for stat in all_stats(proc)}
    return {child: f"{command_name(child, stats[child].comm if child in stats else '', proc)} [{child}]"
            for child in descendants(pid, stats.values())}


class MemorySampler:
    """Samples the RSS of a process tree every `interval_s` seconds while
    `run` is awaited (cancel it to stop)."""

    def __init__(self, pid: int, interval_s: float, clock: Callable[[], float] = time.monotonic,
                 proc: Path = PROC) -> None:
        self._pid = pid
        self._interval = interval_s
        self._clock = clock
        self._proc = proc
        self.samples: list[MemorySample] = []

    def sample(self, started: float) -> MemorySample:
        rss = {label: value for pid, label in label_processes(self._pid, self._proc).items()
               if (value := rss_bytes(pid, self._proc)) is not None}
        taken = MemorySample(elapsed_s=self._clock() - started, rss=rss)
        self.samples.append(taken)
        return taken

    async def run(self) -> None:
        started = self._clock()
        while True:
            self.sample(started)
            await asyncio.sleep(self._interval)


@dataclass(frozen=True)
class ProcessGrowth:
    label: str
    baseline_bytes: float | None  # median RSS of the first window after the settle time
    final_bytes: float | None  # median RSS of the last window
    present_throughout: bool  # in every sample after the settle time

    @property
    def growth(self) -> float | None:
        if not self.baseline_bytes or self.final_bytes is None:
            return None
        return self.final_bytes / self.baseline_bytes - 1.0

    @property
    def flat(self) -> bool:
        growth = self.growth
        return self.present_throughout and growth is not None and growth < MAX_GROWTH


def memory_growth(samples: Sequence[MemorySample], settle_s: float, window_s: float) -> list[ProcessGrowth]:
    """Each process's RSS growth from the first window after `settle_s` to the last window."""
    settled = [s for s in samples if s.elapsed_s >= settle_s]
    if not settled:
        return []
    end = settled[-1].elapsed_s
    first = [s for s in settled if s.elapsed_s < settled[0].elapsed_s + window_s]
    last = [s for s in settled if s.elapsed_s > end - window_s]
    # Judged: the processes alive after the warm-up. One seen only before it
    # exited during the warm-up, or was renamed then (vLLM's engine core
    # starts as a multiprocessing child and sets its title once loaded).
    labels = sorted({label for s in settled for label in s.rss})

    def median(window: Sequence[MemorySample], label: str) -> float | None:
        values = [s.rss[label] for s in window if label in s.rss]
        return statistics.median(values) if values else None

    return [ProcessGrowth(label=label, baseline_bytes=median(first, label), final_bytes=median(last, label),
                          present_throughout=all(label in s.rss for s in settled))
            for label in labels]


@dataclass(frozen=True)
class SoakResult:
    rate: float  # requests/s offered
    duration_s: float
    settle_s: float
    window_s: float
    summary: Summary
    samples: list[MemorySample] = field(default_factory=list)

    @property
    def processes(self) -> list[ProcessGrowth]:
        return memory_growth(self.samples, self.settle_s, self.window_s)

    @property
    def errors(self) -> int:
        return sum(self.summary.errors.values())

    @property
    def passed(self) -> bool:
        processes = self.processes
        return self.errors == 0 and bool(processes) and all(p.flat for p in processes)

    def to_json(self) -> dict[str, object]:
        return {
            "rate": self.rate, "duration_s": self.duration_s, "settle_s": self.settle_s,
            "window_s": self.window_s, "max_growth": MAX_GROWTH, "passed": self.passed,
            "requests": self.summary.total, "ok": self.summary.ok, "errors": dict(self.summary.errors),
            "p99_ms": self.summary.p99_ms, "candidates_per_s": self.summary.candidates_per_s,
            "processes": [{"process": p.label, "baseline_mib": _mib(p.baseline_bytes),
                           "final_mib": _mib(p.final_bytes), "growth": p.growth,
                           "present_throughout": p.present_throughout, "flat": p.flat}
                          for p in self.processes],
            "samples": [{"elapsed_s": s.elapsed_s, "rss_mib": {k: _mib(v) for k, v in s.rss.items()}}
                        for s in self.samples],
        }


def _mib(value: float | None) -> float | None:
    return None if value is None else value / 2**20


def write_soak_json(result: SoakResult, path: Path) -> None:
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")


def format_soak(result: SoakResult) -> str:
    summary = result.summary
    lines = [f"soak: {result.duration_s:g} s at {result.rate:g} requests/s: {summary.ok} of {summary.total} OK, "
             f"{result.errors} errors, p99 {summary.p99_ms if summary.p99_ms is not None else '-'} ms",
             f"resident memory, median of the first {result.window_s:g} s after {result.settle_s:g} s "
             f"against the last {result.window_s:g} s (flat: growth < {MAX_GROWTH:.0%}):"]
    for p in result.processes:
        growth = "-" if p.growth is None else f"{p.growth:+.1%}"
        missing = "" if p.present_throughout else "  (not present throughout)"
        lines.append(f"  {_mib(p.baseline_bytes) or 0:9.1f} -> {_mib(p.final_bytes) or 0:9.1f} MiB  "
                     f"{growth:>7}  {'flat' if p.flat else 'NOT FLAT'}  {p.label}{missing}")
    lines.append("PASSED: no errors, memory flat" if result.passed else "FAILED")
    return "\n".join(lines)
