"""Benchmarks that compare serving systems and engines, apart from the load generator.

Side by side: the same workload through Brew's engines, vLLM's own
/generative_scoring endpoint and a naive baseline, one after another.

    sidebyside          the command: every system measured, then the report files
    sidebyside_systems  the systems' names and how each server is started
    sidebyside_measure  one system: warm-up, capacity search, repeats at capacity, of the saturation and
                        at the fixed rate, each with its host cost; the compute limit
    sidebyside_results  SystemResult and ComputeLimit, shared by the measurement and the report
    sidebyside_report   the markdown tables: every figure as median (min-max), CPU per process
    sidebyside_plots    every system's sweep on one chart
    vllm_http           vLLM's /generative_scoring as a load-test target (Brew's token ids)

Scaling: cost per candidate as candidates and history grow, engines in-process.

    scaling             the command: every engine measured, then the report files
    scaling_points      the sweeps' points, the settings, the group scored per call
    scaling_measure     one engine over every point, CPU included; the threads vLLM computes on
    scaling_results     ScalingResult, shared by the measurement, the report and the plots
    scaling_checkpoint  the random-weight checkpoint with room for the longest prompt
    scaling_report      the markdown tables and scaling.json
    scaling_plots       cost per candidate against candidates and against history

    flops               FLOPs a scoring group needs, and the machine's measured matmul FLOP/s
"""
