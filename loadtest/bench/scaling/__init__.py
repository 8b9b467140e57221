"""Scaling curves: cost per candidate as candidates and history grow.

`brew loadtest scaling --out DIR` scores synthetic groups straight
through each engine (no server, no templates) and measures two sweeps:

- candidates per group (default 1 to 256) at a fixed history (512 tokens),
- history tokens (default 64 to 4,096) at a fixed candidate count (32).

What a sharing engine saves shows as per-candidate cost falling with more
candidates (the prefix is paid once per group) and rising slowly with history
(each candidate only attends over it), against the naive engine that runs
every full prompt. Each point also reports the share of the machine's compute
limit reached: the FLOPs the group needs with prefix sharing (loadtest.bench.flops)
divided by the wall time and by the measured fp32 matmul FLOP/s.

Groups are random token ids (seeded), each candidate a random suffix of a
fixed length, two fixed single-token labels; the weights are random too (a
checkpoint with the demo's architecture, saved with room for the longest
history), since cost does not depend on them. One group is scored per call;
the first call at each point is a warm-up and is not timed; the reported time
is the median of the timed calls.

Honest prefix caching: every call, the warm-up included, gets a fresh random
prefix, so vLLM's prefix cache can never serve a measured call from an
earlier call (or another point) -- only the candidates within one call share
their prefix, which is exactly the saving being measured. The share of prompt
tokens each engine reports as cached is recorded, so what vLLM really reused
is visible rather than assumed. vLLM caches whole KV blocks (32 tokens on
CPU here), so a history that is not a multiple of the block size leaves its
last partial block to be recomputed by every candidate: that is the
engine's real cost, and the cached share shows it.

A per-engine cap on the prompt tokens of a point (candidates x (history +
suffix)) skips points that would run for minutes (the naive engine at long
histories and many candidates); they show as "skipped" in the table.

By default a CPU benchmark (engines are started on CPU). `--device cuda`
starts the torch engines (naive, torch, torch-mis) on the GPU instead, their
share taken against the GPU's fp32 matmul FLOP/s (TF32 off, as Brew scores);
vLLM chooses its own device (its GPU build runs on the GPU), so it is not
measured this way. `--model-shape` sizes the random model (a GPU needs a
model of its size: see loadtest.bench.scaling.checkpoint); `--max-row-tokens`
and `--max-batch-tokens` set torch-mis's packing budgets and `--attention`
the torch engines' kernel (TorchOptions), to find where packing stops
paying on a machine. `--threads` sets
torch's threads for the torch engines. vLLM's CPU worker binds its own
threads: by default every allowed core but one, which it reserves for its
scheduler (on 2 cores: one thread). Each engine's share is taken against the
matmul FLOP/s measured on its own thread count, so vLLM is not judged
against cores it does not compute on.

Modules:

    command     the command: every engine measured, then the report files
    points      the sweeps' points, the settings, the group scored per call
    measure     one engine over every point, CPU included; the threads vLLM computes on
    results     ScalingResult, shared by the measurement, the report and the plots
    checkpoint  the random-weight checkpoint with room for the longest prompt
    report      the markdown tables and scaling.json
    plots       cost per candidate against candidates and against history

FLOPs and the machine's matmul FLOP/s are loadtest.bench.flops (the
side-by-side benchmark's compute limit uses them too).
"""
