"""Benchmarks that compare serving systems and engines, apart from the load generator.

One subpackage per benchmark, each with a `command` module that
`brew loadtest <name>` runs (loadtest.cli imports it only then):

    sidebyside  the same workload through Brew's engines, vLLM's own /generative_scoring
                endpoint and a naive baseline, one after another or interleaved
    scaling     cost per candidate as candidates and history grow, engines in-process
    cluster     member affinity against least request, and 1 against N replicas, through Envoy

    floor       Brew's server CPU per candidate taken apart (`python -m loadtest.bench.floor`)

Shared by them:

    flops           FLOPs a scoring group needs, and the machine's measured matmul FLOP/s
    vllm_http       vLLM's /generative_scoring as a load-test target (Brew's token ids)
    logged_process  a subprocess whose output goes to a log file (the servers, the cluster)
    cells           markdown table cells of the reports
"""
