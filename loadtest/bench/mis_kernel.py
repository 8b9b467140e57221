"""Per-layer cost of the vLLM multi-item attention backend, part by part, before and after a change.

Times what `brew.engines.vllm_multi_item.attention` does in one attention
layer of one engine step, without starting vLLM: the KV write
(`do_kv_cache_update`), the gather of the request's context through its
block table, the attention itself (`kernel.attend`) and the whole layer
(`forward`: gather and attention), plus the per-step plan (made once per
step by the step's first layer and reused by the others: `kernel.plan_request`,
and on vLLM's CPU kernel the virtual requests, `cpu_kernel.CpuStepPlan.build`). The cache is a real vLLM per-layer view
(`create_kv_cache_views`, the layout the backend asks for, several layers in
one tensor) and the request's blocks are scattered through it, as after the
block pool has been used a while.

"Before" is the backend and kernel of a git revision (--before, loaded from
`git show`), "after" the working tree's; for a revision whose backend has
no `context` method (DEFAULT_BEFORE), the before gather is the indexing its
`forward` does inline (`baseline_context`). Both run
interleaved in the same process so they see the same machine; warm-up runs
are left out and each timing is min / median / max over the repeats, in ms.
Before timing, the two are checked to write the same cache bytes and gather
the same context, and the largest gap between their attention outputs is
printed.

    .venv/bin/python -m loadtest.bench.mis_kernel [--before REV] [--repeats 30] [--threads N]
"""

from __future__ import annotations

import argparse
import inspect
import random
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from brew.engines.vllm_multi_item import attention, cpu_kernel, kernel
from brew.engines.vllm_multi_item.layout import NONCE_TOKENS, layout_rows, pack, parse, trailer_len

REPO = Path(__file__).resolve().parents[2]
# The revision before the token-row KV write and gather and the 4-D prefix SDPA.
DEFAULT_BEFORE = "a40e3c8"
# The demo model (brew/demo/brew-demo/config.json) and the CPU engine's block size.
HEADS, HEAD_SIZE, LAYERS, BLOCK_SIZE = 2, 64, 4, 32


@dataclass(frozen=True)
class Scenario:
    prefix_len: int
    num_candidates: int
    candidate_len: int
    cached_prefix: bool  # the prefix's full blocks come from the cache (a repeat member)
    # candidates of candidate_len..candidate_len_max tokens, drawn uniformly (None: all candidate_len)
    candidate_len_max: int | None = None

    @property
    def name(self) -> str:
        lengths = (f"{self.candidate_len}-{self.candidate_len_max}" if self.candidate_len_max
                   else str(self.candidate_len))
        return (f"prefix {self.prefix_len} + {self.num_candidates} x {lengths}"
                + (", prefix cached" if self.cached_prefix else ""))

    def candidate_lengths(self, rng: random.Random) -> list[int]:
        top = self.candidate_len_max or self.candidate_len
        return [rng.randint(self.candidate_len, top) for _ in range(self.num_candidates)]


SCENARIOS = (
    Scenario(600, 16, 10, False),
    Scenario(600, 16, 10, True),
    Scenario(1500, 50, 10, False),
    Scenario(1500, 50, 10, True),
    # the long-history workload's shape: candidates of 20-45 tokens behind a 600-token prefix
    Scenario(600, 16, 20, False, 45),
    Scenario(600, 16, 20, True, 45),
)


def baseline_context(kv_cache: torch.Tensor, blocks: torch.Tensor, seq_len: int, kv_heads: int,
                     head_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The gather as DEFAULT_BEFORE's `forward` does it inline: whole blocks of the logical
    view (advanced indexing), then a head-major copy."""
    context = kv_cache[blocks].transpose(0, 1).reshape(kv_heads, -1, 2 * head_size)[:, :seq_len]
    return context[..., :head_size], context[..., head_size:]


def load_at(revision: str) -> tuple[types.ModuleType, types.ModuleType, types.ModuleType | None]:
    """(attention, kernel, cpu_kernel or None) modules as they were at `revision`,
    each importing that revision's others."""
    def source(name: str) -> str | None:
        shown = subprocess.run(["git", "show", f"{revision}:brew/engines/vllm_multi_item/{name}.py"], cwd=REPO,
                               capture_output=True, text=True)
        return shown.stdout if shown.returncode == 0 else None

    def load(name: str, text: str) -> types.ModuleType:
        module = types.ModuleType(f"{__name__}.before_{name}")
        sys.modules[module.__name__] = module  # dataclasses look their module up
        exec(compile(text, f"{revision}:{name}.py", "exec"), module.__dict__)
        return module

    package = "brew.engines.vllm_multi_item"
    current = {name: sys.modules[f"{package}.{name}"] for name in ("kernel", "cpu_kernel")}
    old_kernel = load("kernel", source("kernel"))
    sys.modules[f"{package}.kernel"] = old_kernel
    try:
        cpu_source = source("cpu_kernel")
        old_cpu_kernel = load("cpu_kernel", cpu_source) if cpu_source is not None else None
        sys.modules[f"{package}.cpu_kernel"] = old_cpu_kernel or current["cpu_kernel"]
        old_attention = load("attention", source("attention"))
    finally:
        for name, module in current.items():
            sys.modules[f"{package}.{name}"] = module
    return old_attention, old_kernel, old_cpu_kernel


def kv_cache_views(num_blocks: int) -> list[torch.Tensor]:
    """One (blocks, heads, block_size, 2 * head) fp32 view per layer, laid out as vLLM does for this backend."""
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheTensor, create_kv_cache_views

    layout = attention.MultiItemAttentionBackend.supported_kv_cache_layouts()[0]
    spec = FullAttentionSpec(block_size=BLOCK_SIZE, num_kv_heads=HEADS, head_size=HEAD_SIZE, dtype=torch.float32)
    page = spec.page_size_bytes
    tensor = KVCacheTensor(size=page * num_blocks * LAYERS, layers=[f"layer{i}" for i in range(LAYERS)],
                           layer_stride=page * num_blocks, block_stride=page)
    raw = torch.zeros(tensor.size, dtype=torch.int8)
    return create_kv_cache_views(raw, spec, num_blocks, layout, tensor)


@dataclass
class Step:
    scenario: Scenario
    first: int  # logical index of the step's first token
    seq_len: int
    visible_prefix: torch.Tensor
    block_start: torch.Tensor
    block_table: torch.Tensor  # (1, blocks) int32, the request's blocks in order
    slot_mapping: torch.Tensor
    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    kv_cache: torch.Tensor

    @property
    def tokens(self) -> int:
        return self.seq_len - self.first

    @property
    def blocks(self) -> torch.Tensor:
        return self.block_table[0].long()


def make_step(scenario: Scenario, seed: int = 0) -> Step:
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    ids = pack([5 + rng.randrange(700) for _ in range(scenario.prefix_len)],
               [[5 + rng.randrange(700) for _ in range(length)] for length in scenario.candidate_lengths(rng)],
               rng)
    rows = layout_rows(parse(ids))
    seq_len = len(ids)
    first = scenario.prefix_len // BLOCK_SIZE * BLOCK_SIZE if scenario.cached_prefix else 0
    num_blocks = -(-seq_len // BLOCK_SIZE)
    pool = 4 * num_blocks
    blocks = torch.randperm(pool, generator=generator)[:num_blocks]
    kv_cache = kv_cache_views(pool)[1]
    kv_cache.copy_(torch.randn(kv_cache.shape, generator=generator))  # the cached context, and stale blocks
    logical = torch.arange(first, seq_len)
    slot_mapping = blocks[logical // BLOCK_SIZE] * BLOCK_SIZE + logical % BLOCK_SIZE
    tokens = seq_len - first
    return Step(scenario, first, seq_len, rows[1, first:], rows[2, first:], blocks[None].int(), slot_mapping,
                *(torch.randn(tokens, HEADS, HEAD_SIZE, generator=generator) for _ in range(3)), kv_cache)


def timings(parts: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """ms per call of each part, the parts interleaved (order alternating) so that all see the same noise."""
    names = list(parts)
    for _ in range(warmup):
        for name in names:
            parts[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else reversed(names):
            start = time.perf_counter()
            parts[name]()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def summary(values: list[float]) -> str:
    return f"{min(values):8.3f} {statistics.median(values):8.3f} {max(values):8.3f}"


@dataclass
class Version:
    """One version of the backend, set up for a step."""

    impl: object
    kernel: types.ModuleType
    metadata: object
    gather: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    cpu_kernel: types.ModuleType | None = None  # where the version has it (and vLLM's CPU build is here)

    @classmethod
    def of(cls, attention_module: types.ModuleType, kernel_module: types.ModuleType, step: Step,
           gather: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None,
           cpu_kernel_module: types.ModuleType | None = None) -> Version:
        impl = attention_module.MultiItemAttentionImpl(HEADS, HEAD_SIZE, HEAD_SIZE**-0.5, HEADS)
        metadata = attention_module.MultiItemAttentionMetadata(
            num_actual_tokens=step.tokens, query_start_loc=[0, step.tokens], seq_lens=[step.seq_len],
            block_table=step.block_table, slot_mapping=step.slot_mapping)
        metadata.plans.append(kernel_module.plan_request(step.first, step.visible_prefix, step.block_start))
        if gather is None:
            def gather() -> tuple[torch.Tensor, torch.Tensor]:
                return impl.context(step.kv_cache, step.blocks, step.seq_len)
        if cpu_kernel_module is not None and not cpu_kernel_module.cpu_kernel_available(step.query.device, HEAD_SIZE):
            cpu_kernel_module = None
        return cls(impl, kernel_module, metadata, gather, cpu_kernel_module)

    def write(self, step: Step, kv_cache: torch.Tensor) -> None:
        self.impl.do_kv_cache_update(None, step.key, step.value, kv_cache, step.slot_mapping)

    def attend(self, step: Step, context: tuple[torch.Tensor, torch.Tensor], out: torch.Tensor) -> None:
        self.kernel.attend(self.metadata.plans[0], step.query, *context, HEAD_SIZE**-0.5, out)

    def forward(self, step: Step, out: torch.Tensor) -> None:
        self.impl.forward(None, step.query, step.key, step.value, step.kv_cache, self.metadata, out)

    def plan(self, step: Step) -> None:
        """What the step's first layer plans, as the backend does it."""
        if self.cpu_kernel is None:
            self.kernel.plan_request(step.first, step.visible_prefix, step.block_start)
            return
        options = {"masks": False} if "masks" in inspect.signature(self.kernel.plan_request).parameters else {}
        plan = self.kernel.plan_request(step.first, step.visible_prefix, step.block_start, **options)
        self.cpu_kernel.CpuStepPlan.build([self.cpu_kernel.StepRequest(plan, 0, step.seq_len, step.blocks)],
                                          BLOCK_SIZE)


def check(step: Step, before: Version, after: Version) -> float:
    """Both write the same cache bytes and gather the same context; returns their outputs' largest gap."""
    reference, cache = step.kv_cache.clone(), step.kv_cache
    before.write(step, reference)
    after.write(step, cache)
    assert torch.equal(reference, cache), "the KV writes differ"
    assert all(torch.equal(a, b) for a, b in zip(before.gather(), after.gather())), "the gathered contexts differ"
    outputs = [torch.full_like(step.query, float("nan")) for _ in range(2)]
    before.forward(step, outputs[0])
    after.forward(step, outputs[1])
    assert not any(output.isnan().any() for output in outputs)
    return (outputs[0] - outputs[1]).abs().max().item()


def bench(step: Step, before: Version, after: Version, repeats: int, warmup: int) -> dict[str, list[float]]:
    out = torch.empty_like(step.query)
    contexts = {"before": before.gather(), "after": after.gather()}
    parts: dict[str, Callable[[], object]] = {}
    for part in ("write", "gather", "attend", "layer (forward)", "plan (per step)"):
        for name, version in (("before", before), ("after", after)):
            parts[f"{part} {name}"] = {
                "write": lambda version=version: version.write(step, step.kv_cache),
                "gather": version.gather,
                "attend": lambda version=version, name=name: version.attend(step, contexts[name], out),
                "layer (forward)": lambda version=version: version.forward(step, out),
                "plan (per step)": lambda version=version: version.plan(step),
            }[part]
    return timings(parts, repeats, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=DEFAULT_BEFORE, help="git revision timed as 'before'")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--scenario", type=int, action="append", help="only these scenarios (0-based; repeatable)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    old_attention, old_kernel, old_cpu_kernel = load_at(args.before)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {HEADS} heads x {HEAD_SIZE}, fp32, "
          f"block size {BLOCK_SIZE}; before: {args.before}, after: working tree; {args.repeats} repeats after "
          f"{args.warmup} warm-up, interleaved; ms per layer (plan: per step)")
    for index, scenario in enumerate(SCENARIOS):
        if args.scenario and index not in args.scenario:
            continue
        step = make_step(scenario)
        inline_gather = not hasattr(old_attention.MultiItemAttentionImpl, "context")
        before = Version.of(old_attention, old_kernel, step, (
            lambda: baseline_context(step.kv_cache, step.blocks, step.seq_len, HEADS, HEAD_SIZE)
        ) if inline_gather else None, old_cpu_kernel)
        after = Version.of(attention, kernel, step, cpu_kernel_module=cpu_kernel)
        gap = check(step, before, after)
        overhead = NONCE_TOKENS + trailer_len(scenario.num_candidates)
        print(f"\n[{index}] {scenario.name}: step of {step.tokens} tokens, context {step.seq_len} (nonce + trailer "
              f"{overhead} = {100 * overhead / step.tokens:.1f}% of the step); same cache bytes and context; "
              f"layer outputs differ by at most {gap:.1e}")
        print(f"  {'part':24} {'min':>8} {'median':>8} {'max':>8}")
        for name, values in bench(step, before, after, args.repeats, args.warmup).items():
            print(f"  {name:24} {summary(values)}")


if __name__ == "__main__":
    main()
