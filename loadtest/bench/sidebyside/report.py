"""The side-by-side report: markdown tables, every figure with its run-to-run
spread, "median (min–max)" over the repeats.

- capacity and saturation, one row per system: the capacity rate the search
  found and how many of its windows were good; candidates/s and p99 at it,
  its ratio to vLLM's endpoint and the share of the machine's matmul peak
  the work amounts to; the saturation throughput and its p99;
- p99 at fixed load, one row per system: at each fraction of the saturation
  throughput, and at the rate common to all systems, with its errors;
- host cost, one row per process of each system (the server, each of its
  descendants, the load generator, and all of them): CPU milliseconds per
  candidate at the capacity rate and at the common rate.
"""

from __future__ import annotations

from collections.abc import Sequence

from loadtest.bench.cells import number_cell
from loadtest.bench.sidebyside.results import ComputeLimit, CpuByProcess, Spread, SystemResult
from loadtest.bench.sidebyside.systems import BASELINE
from loadtest.host_cost import LOAD_GENERATOR, SERVER

ALL_PROCESSES = "all processes"


def spread_cell(values: Sequence[float | None], digits: int = 1) -> str:
    """'median (min–max)' of the values present; just the value when they agree or there is one."""
    spread = Spread.of(values)
    if spread is None:
        return "-"
    median = f"{spread.median:.{digits}f}"
    low, high = f"{spread.low:.{digits}f}", f"{spread.high:.{digits}f}"
    return median if low == high else f"{median} ({low}–{high})"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def capacity_table(results: Sequence[SystemResult], limit: ComputeLimit | None = None) -> str:
    baseline = next((r for r in results if r.system == BASELINE), None)
    base_cps = SystemResult.median(baseline.capacity_candidates_per_s) if baseline else None
    lines = [
        _row(["system", "capacity (req/s)", "windows good", "candidates/s at capacity",
              "p99 at capacity (ms)", f"× {BASELINE}", "% of matmul peak", "saturation candidates/s",
              "p99 at saturation (ms)"]),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cps = SystemResult.median(r.capacity_candidates_per_s)
        per_s = limit.flops_per_candidate / limit.matmul_flops_per_s if limit else None
        shares = [100 * c * per_s for c in r.capacity_candidates_per_s] if per_s else []
        lines.append(_row([
            r.system, number_cell(r.capacity_rate, 2),
            f"{r.capacity_good_windows} of {r.capacity_windows}" if r.capacity_windows else "-",
            spread_cell(r.capacity_candidates_per_s), spread_cell(r.capacity_p99_ms),
            f"{cps / base_cps:.2f}" if cps and base_cps else "-", spread_cell(shares, 2),
            spread_cell(r.saturation_candidates_per_s), spread_cell(r.saturation_p99_ms),
        ]))
    return "\n".join(lines)


def load_table(results: Sequence[SystemResult]) -> str:
    fractions = results[0].fractions
    fixed_rate = results[0].fixed_rate
    lines = [
        _row(["system", *(f"p99 at {f:.0%} of saturation (ms)" for f in fractions),
              f"p99 at {fixed_rate:g} req/s (ms)", f"errors at {fixed_rate:g} req/s"]),
        "|---" * (len(fractions) + 3) + "|",
    ]
    for r in results:
        by_fraction = dict(zip(r.fractions, r.fraction_p99_ms))
        lines.append(_row([r.system, *(spread_cell(by_fraction.get(f, [])) for f in fractions),
                           spread_cell(r.fixed_p99_ms), str(sum(sum(e.values()) for e in r.fixed_errors))]))
    return "\n".join(lines)


def _processes(repeats: Sequence[CpuByProcess]) -> list[str]:
    """Every process label seen, the server first, the load generator last."""
    seen = list(dict.fromkeys(label for repeat in repeats for label in repeat))
    middle = [label for label in seen if label not in (SERVER, LOAD_GENERATOR)]
    return [label for label in (SERVER, *middle, LOAD_GENERATOR) if label in seen]


def _ms_per_candidate(repeats: Sequence[CpuByProcess], label: str) -> list[float | None]:
    """One value per repeat in ms; a process absent from a repeat spent nothing
    in it; a repeat that scored nothing has no value."""
    if label == ALL_PROCESSES:
        return [1000 * sum(repeat.values()) if repeat else None for repeat in repeats]
    return [1000 * repeat.get(label, 0.0) if repeat else None for repeat in repeats]


def host_cost_table(results: Sequence[SystemResult]) -> str:
    fixed_rate = results[0].fixed_rate
    lines = [
        _row(["system", "process", "CPU ms per candidate at capacity", f"at {fixed_rate:g} req/s"]),
        "|---|---|---|---|",
    ]
    for r in results:
        repeats = [*r.capacity_cpu_s_per_candidate, *r.fixed_cpu_s_per_candidate]
        for label in [*_processes(repeats), ALL_PROCESSES] if repeats else []:
            name = label if label in (SERVER, LOAD_GENERATOR, ALL_PROCESSES) else f"server's child `{label}`"
            at_capacity = _ms_per_candidate(r.capacity_cpu_s_per_candidate, label)
            at_fixed = _ms_per_candidate(r.fixed_cpu_s_per_candidate, label)
            lines.append(_row([r.system, name, spread_cell(at_capacity, 3), spread_cell(at_fixed, 3)]))
    return "\n".join(lines)


def memory_table(results: Sequence[SystemResult]) -> str:
    lines = [_row(["system", "resident memory after warm-up (MiB)"]), "|---|---|"]
    lines += [_row([r.system, number_cell(r.resident_mib, 0)]) for r in results]
    return "\n".join(lines)


def markdown_table(results: Sequence[SystemResult], candidates: tuple[int, int],
                   limit: ComputeLimit | None = None) -> str:
    """The report's tables and the notes that read them; `candidates` per
    request, lowest and highest. With `limit`, the share of the machine's
    matmul FLOP/s that the needed work at the capacity rate amounts to."""
    repeats = max((len(r.fixed_p99_ms) for r in results), default=0)
    by_system = {r.system: r.saturation_callers for r in results if r.saturation_callers}
    counts = set(by_system.values())
    callers = (None if not counts else f"{counts.pop()} closed-loop callers" if len(counts) == 1
               else "closed-loop callers " + ", ".join(f"{n} for {system}" for system, n in by_system.items()))
    tables = [capacity_table(results, limit), load_table(results)]
    host_cost = any(r.capacity_cpu_s_per_candidate or r.fixed_cpu_s_per_candidate for r in results)
    if host_cost:
        tables.append(host_cost_table(results))
    memory = any(r.resident_mib for r in results)
    if memory:
        tables.append(memory_table(results))
    low, high = candidates
    notes = (f"{low if low == high else f'{low}–{high}'} candidates per request. Each figure: median (min–max) over the "
             f"{repeats} repeats; × {BASELINE}: the ratio of the medians. The capacity is the rate one "
             f"search found, judged on the majority of its windows there.")
    if callers:
        notes += (f" Saturation: {callers}; each repeat's fractions are of its own "
                  f"saturation requests/s, offered open-loop.")
    if host_cost:
        notes += (" CPU: user + system time from /proc over each run's load, per candidate scored OK; the "
                  "server's descendants are named by their command line (vLLM's process titles).")
    if memory:
        notes += (" Memory: VmRSS of the server and its descendants summed (pages they share count "
                  "twice), read once after the warm-up.")
    if limit:
        notes += (f" Work per candidate {limit.flops_per_candidate / 1e6:.2f} MFLOP with the prefix shared "
                  f"({limit.naive_flops_per_candidate / 1e6:.2f} MFLOP from scratch); matmul peak "
                  f"{limit.matmul_flops_per_s / 1e9:.1f} GFLOP/s fp32 on {limit.threads} threads.")
    return "\n\n".join(tables) + "\n\n" + notes + "\n"
