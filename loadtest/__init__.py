"""Load generator, workloads, reports and plots for a running Brew service.

It answers an operator's question: how many candidates/s does one replica
score while p99 stays under the SLO, and where does it break?

    schedule    seeded open-loop arrival schedules (fixed, Poisson, bursty gamma)
    workload    seeded synthetic requests from the demo world, or a JSONL replay
    runner      open-loop (on schedule, capped outstanding) and closed-loop runners
    records     per-request records and HdrHistogram latencies (CO-corrected)
    summary     throughput, percentiles, goodput, errors, the server's /metrics view
    plots       latency over time, percentile curves, the capacity and overload sweeps (PNG)
    capacity    rate sweep and doubling + bisection search for the SLO knee, each verdict confirmed
    saturation  closed-loop saturation throughput and the p99 at fixed fractions of it
    overload    goodput and errors by status against offered load, past capacity
    soak        a long steady run: errors, and the server's resident memory over time
    host_cost   CPU seconds per process (a server, its descendants, the load generator) from /proc
    experiment  one run from plan to files
    commands    the run, capacity, overload and soak commands, from parsed options to files
    cli         `brew loadtest run|capacity|overload|soak|sidebyside|scaling|cluster`
                (also `python -m loadtest`):
                argparse only, each command's work imported when it runs
    bench/      benchmarks: side-by-side against vLLM's endpoint, scaling curves, the cluster benchmark (see loadtest.bench)

Requests are built from domain types by brew.wire.request_to_proto.
"""
