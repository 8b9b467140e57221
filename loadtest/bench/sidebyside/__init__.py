"""Side-by-side: the same model and workload through each serving system, on
the same machine, measured by the same load generator: one system after
another, or with `--interleave` all started at once and their runs taking
turns (loadtest.bench.sidebyside.measure), so that a machine that drifts
over the run slows every system alike.

    brew loadtest sidebyside --out runs/sidebyside [--systems brew-vllm,vllm-openai,...] [--interleave]

Systems (each started here as a subprocess, loaded, then stopped):

    brew-vllm     `brew serve --engine vllm`   (batched, shared prefixes, vLLM)
    brew-torch    `brew serve --engine torch`  (batched, prefix KV reused, transformers)
    vllm-openai   vLLM's own OpenAI server, POST /generative_scoring
                  (loadtest.bench.vllm_http: same token ids, one call per task)
    naive         `brew serve --engine naive`  (one transformers forward per candidate)

For each system: start it and wait until it is ready; a warm-up run at
saturation (closed-loop, WARMUP_CONCURRENCY callers) that is thrown away; a
capacity search (loadtest.capacity: double until p99 breaks the SLO, then
bisect; a bad window and the capacity found are confirmed by the majority
of up to 1 + `--confirm` windows); then `--repeats` runs at the capacity
rate found, `--repeats` of the saturation throughput (loadtest.saturation:
a closed-loop run, then open-loop runs at `--fractions` of it) and
`--repeats` at one fixed rate common to all systems, each with a fresh seed
(fresh members, so no repeat rides on the previous one's prefix cache).
Around each run's load the CPU time of the server process, each of its
descendants and the load generator is read from /proc (loadtest.host_cost).
The report gives every figure as the median and the range of its repeats,
the ratios against vllm-openai and the CPU per candidate of each process,
and is written as sidebyside.json, sidebyside.md and sweeps.png (every
system's sweep on one chart) under --out, next to every run's own files.
`--compare EARLIER_OUT` measures nothing: it compares two runs' capacities
(loadtest.bench.sidebyside.compare) and writes compare.md.

Modules:

    command   the command: every system measured, then the report files
    systems   the systems' names and how each server is started
    measure   one system, or all interleaved: warm-up, capacity search, repeats at capacity, of the
              saturation and at the fixed rate, each with its host cost; the compute limit
    results   SystemResult and ComputeLimit, shared by the measurement and the report
    report    the markdown tables: every figure as median (min-max), CPU per process
    compare   two runs' capacities set side by side (compare.md)
    plots     every system's sweep on one chart

vLLM's endpoint as a load-test target is loadtest.bench.vllm_http (the
floor benchmark uses it too).
"""
