"""Benchmarks that compare serving systems and engines, apart from the load generator.

    sidebyside  the same workload through Brew's engines, vLLM's own
                /generative_scoring endpoint and a naive baseline, one after another
    vllm_http   vLLM's /generative_scoring as a load-test target (the same token ids as Brew)
    scaling     cost per candidate as candidates and history grow, engines in-process
    flops       FLOPs a scoring group needs, and the machine's measured matmul FLOP/s
"""
