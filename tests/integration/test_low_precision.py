"""bf16 and fp16 weights with an fp32 head, on the bundled demo model.

The reference is the torch engine in fp32 (itself within 1e-4 of the naive
engine, test_engine_parity). With `dtype` bfloat16 or float16 the body of
the model runs in that dtype and the head (`Fp32Head`) and log-softmax in
fp32, on every torch engine and path.

The bound, and why it is what it is. The head and the log-softmax are fp32,
so the whole gap comes from the hidden state the body hands the head. bf16
keeps 8 significant bits: every stored activation and weight carries a
relative rounding error of up to u = 2^-8 (0.0039). The demo model's
hidden state passes some 30 such roundings (4 layers of norm, q/k/v,
attention, output projection, norm, gate/up, down, residual adds), which
random-walk to a relative error of a few u (sqrt(30) u, about 0.02); the
label logits are inner products of that state with fp32 head rows, and
their spread on the demo model is about +-8, so their error is of order
0.02 x a logit's typical magnitude (2-4): 0.04-0.08, and the log-softmax's
normaliser moves by the same order. Measured on the held-out groups below:
at most 0.061 (bf16) and 0.008 (fp16, 11 significant bits: 8x finer).
The bound is BF16_LOGPROB_BOUND = 0.125 = 32u: twice the measured worst
case, and under the estimate's upper end x 1.5; FP16 gets the same bound
scaled by its 8x finer rounding. Scores (the label softmax, what callers
read) are bounded at a quarter of that: a probability moves at most
d(log p)/4 near 1/2, where a binary softmax is steepest.

The AUC of every task within 0.002 of fp32 is measured with `brew eval`
(BENCHMARKS.md, section 3, "bf16 and fp16 weights").
"""

from __future__ import annotations

import pytest
import pytest_asyncio
import torch
from safetensors.torch import load_file

from brew import defaults
from brew.demo.evaluate import heldout_groups
from brew.demo.world import DEMO_TASKS
from brew.engines import EngineKind, create_engine
from brew.engines.loading import Fp32Head, load_causal_lm
from brew.engines.options import TorchOptions
from brew.runtime import build_ranker
from brew.scoring import label_probabilities
from brew.types import GroupResult, ScoringGroup

pytestmark = pytest.mark.integration

BF16_UNIT_ROUNDOFF = 2.0 ** -8
BF16_LOGPROB_BOUND = 32 * BF16_UNIT_ROUNDOFF  # 0.125, see the module docstring
FP16_LOGPROB_BOUND = BF16_LOGPROB_BOUND / 8  # 3 more significant bits
MEMBERS_PER_TASK = 30  # x 10 candidates x 3 tasks: 900 candidates


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def heldout() -> list[ScoringGroup]:
    ranker = await build_ranker(defaults.DEMO_MODEL_DIR, defaults.PROMPTS_DIR, EngineKind.NAIVE)
    await ranker.engine.close()
    return [g.prepared.group for task in DEMO_TASKS
            for g in heldout_groups(ranker.verbalizer, task, MEMBERS_PER_TASK, 10)]


async def score(groups: list[ScoringGroup], dtype: str, kind: EngineKind = EngineKind.TORCH,
                **options) -> list[GroupResult]:
    engine = await create_engine(kind, defaults.DEMO_MODEL_DIR, dtype=dtype, **options)
    try:
        return await engine.score(groups)
    finally:
        await engine.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fp32_reference(heldout) -> list[GroupResult]:
    return await score(heldout, "float32")


def gaps(left: list[GroupResult], right: list[GroupResult]) -> tuple[float, float]:
    """The largest label log-probability gap and the largest score (label softmax) gap."""
    logprob, prob = 0.0, 0.0
    for group_left, group_right in zip(left, right, strict=True):
        for a, b in zip(group_left.candidates, group_right.candidates, strict=True):
            pairs = list(zip(a.label_logprobs, b.label_logprobs, strict=True))
            logprob = max(logprob, *(abs(x - y) for x, y in pairs))
            left, right = label_probabilities(a.label_logprobs), label_probabilities(b.label_logprobs)
            prob = max(prob, *(abs(x - y) for x, y in zip(left, right, strict=True)))
    return logprob, prob


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("multi_item", ["off", "on"], ids=["per-group", "multi-item"])
async def test_bf16_weights_stay_within_the_bound_of_fp32(heldout, fp32_reference, multi_item):
    results = await score(heldout, "bfloat16", multi_item=multi_item,
                          torch=TorchOptions(max_forward_candidates=16, max_batch_tokens=4096))
    logprob, prob = gaps(results, fp32_reference)
    assert logprob < BF16_LOGPROB_BOUND
    assert prob < BF16_LOGPROB_BOUND / 4
    assert logprob > 0  # the body really ran in bf16


@pytest.mark.asyncio(loop_scope="module")
async def test_the_naive_engine_in_bf16_is_as_close(heldout, fp32_reference):
    results = await score(heldout[:12], "bfloat16", EngineKind.NAIVE)
    logprob, _ = gaps(results, fp32_reference[:12])
    assert 0 < logprob < BF16_LOGPROB_BOUND


@pytest.mark.asyncio(loop_scope="module")
async def test_fp16_weights_stay_within_their_finer_bound(heldout, fp32_reference):
    results = await score(heldout[:60], "float16", multi_item="on")
    logprob, _ = gaps(results, fp32_reference[:60])
    assert 0 < logprob < FP16_LOGPROB_BOUND


def test_the_head_is_the_checkpoints_fp32_weights_and_the_body_is_bf16():
    model = load_causal_lm(defaults.DEMO_MODEL_DIR, "bfloat16")
    head = model.get_output_embeddings()
    assert isinstance(head, Fp32Head)
    stored = load_file(str(defaults.DEMO_MODEL_DIR / "model.safetensors"))
    tied = stored.get("lm_head.weight", stored["model.embed_tokens.weight"])
    assert torch.equal(head.weight, tied.float())  # not rounded through bf16
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32  # buffers as a direct bf16 load keeps them
    logits = model(input_ids=torch.tensor([[3, 4, 5]])).logits
    assert logits.dtype == torch.float32
