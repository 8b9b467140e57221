"""The three engines compute the same function, on a tiny random Llama.

The naive engine (one plain forward pass per prompt) is the reference. The
torch engine (prefix once, KV cache copied into right-padded batches) and the
vLLM engine (one request per candidate, prefix caching) must give the same
fp32 label logprobs within PARITY_TOLERANCE, on groups with prefixes and
suffixes of different lengths, more candidates than one batch holds, and
empty suffixes. The vLLM tests also check what serving relies on: repeated
prefixes are served from vLLM's cache, and a cancelled score aborts its
requests without harming the engine; for both of its modes, one request per
candidate and multi-item scoring (one request per group, chunked prefill
splitting candidates across engine steps).
"""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from parity_groups import GROUPS, PARITY_TOLERANCE, max_gap, random_groups
from tiny_model import build_tiny_llama
from waiting import eventually_async

from brew.engines import EngineKind, create_engine
from brew.engines.multi_item_rule import GroupPath, MultiItemMode, PackingRule, row_tokens
from brew.engines.options import TorchOptions, VllmOptions
from brew.engines.torch_engine import TorchEngine
from brew.types import GroupResult, ScoringGroup

pytestmark = pytest.mark.integration

TORCH_BATCH = 16  # smaller than the largest group, so it is split into several chunks


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def naive_engine(model_dir):
    engine = await create_engine(EngineKind.NAIVE, model_dir)
    yield engine
    await engine.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def reference(naive_engine) -> list[GroupResult]:
    return await naive_engine.score(GROUPS)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def torch_engine(model_dir):
    engine = await TorchEngine.start(model_dir, options=TorchOptions(max_forward_candidates=TORCH_BATCH))
    yield engine
    await engine.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vllm_engine(model_dir):
    engine = await create_engine(EngineKind.VLLM, model_dir)
    yield engine
    await engine.close()


# Engine steps of at most this many tokens: packed prompts are split across
# steps, often inside a candidate, as vLLM's chunked prefill does under load.
MULTI_ITEM_STEP_TOKENS = 96


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vllm_multi_item_engine(model_dir):
    engine = await create_engine(EngineKind.VLLM, model_dir, multi_item=MultiItemMode.ON,
                                 vllm=VllmOptions(max_num_batched_tokens=MULTI_ITEM_STEP_TOKENS))
    yield engine
    await engine.close()


@pytest.mark.asyncio(loop_scope="module")
async def test_reference_scores_vary_enough_for_parity_to_mean_something(reference):
    """A near-uniform model would pass any parity test; this one is far from it."""
    first_label = [c.label_logprobs[0] for c in reference[1].candidates]
    assert max(first_label) - min(first_label) > 1000 * PARITY_TOLERANCE


@pytest.mark.asyncio(loop_scope="module")
async def test_naive_engine_reports_whole_prompts_and_no_cache(reference):
    for group, result in zip(GROUPS, reference, strict=True):
        assert [c.prompt_tokens for c in result.candidates] == [
            len(group.prompt_ids(i)) for i in range(group.num_candidates)
        ]
        assert all(c.cached_tokens == 0 for c in result.candidates)
        assert all(len(c.label_logprobs) == len(group.label_ids) for c in result.candidates)


@pytest.mark.asyncio(loop_scope="module")
async def test_torch_engine_matches_plain_forward_passes(torch_engine, reference):
    results = await torch_engine.score(GROUPS)
    assert max_gap(results, reference) < PARITY_TOLERANCE


@pytest.mark.asyncio(loop_scope="module")
async def test_torch_engine_counts_the_prefix_as_cached_after_the_first_candidate(torch_engine):
    for group, result in zip(GROUPS, await torch_engine.score(GROUPS), strict=True):
        prefix_len = len(group.prefix_ids)
        assert [c.cached_tokens for c in result.candidates] == [0] + [prefix_len] * (group.num_candidates - 1)
        assert [c.prompt_tokens for c in result.candidates] == [prefix_len + len(s) for s in group.suffix_ids]


@pytest.mark.asyncio(loop_scope="module")
async def test_torch_engines_pass_their_health_check_and_fail_it_once_closed(model_dir):
    for kind in (EngineKind.TORCH, EngineKind.NAIVE):
        engine = await create_engine(kind, model_dir)
        await engine.check_health()
        await engine.close()
        with pytest.raises(RuntimeError, match="shutdown"):  # the worker thread is gone
            await engine.check_health()


@pytest.mark.asyncio(loop_scope="module")
async def test_create_engine_rejects_an_unknown_kind(model_dir):
    with pytest.raises(ValueError, match="not a valid EngineKind"):
        await create_engine("tensorrt", model_dir)


@pytest.mark.vllm
@pytest.mark.asyncio(loop_scope="module")
async def test_vllm_engine_matches_plain_forward_passes(vllm_engine, reference):
    results = await vllm_engine.score(GROUPS)
    assert max_gap(results, reference) < PARITY_TOLERANCE
    for group, result in zip(GROUPS, results, strict=True):
        assert [c.prompt_tokens for c in result.candidates] == [
            len(group.prompt_ids(i)) for i in range(group.num_candidates)
        ]


@pytest.mark.vllm
@pytest.mark.asyncio(loop_scope="module")
async def test_vllm_serves_repeated_prefixes_from_its_cache(vllm_engine, reference):
    # vLLM caches whole KV blocks (32 tokens on CPU as Brew sets it, 16 on
    # GPU): of the 200-token prefix, the whole blocks it holds. Within one
    # call, the candidates after the first find them already computed.
    shared = len(GROUPS[1].prefix_ids) // vllm_engine.kv_block_size * vllm_engine.kv_block_size
    first = await vllm_engine.score(GROUPS)
    assert all(c.cached_tokens >= shared for c in first[1].candidates[1:])
    # A repeated call reuses at least as much, never the whole prompt (vLLM
    # computes the last position to produce the logprobs).
    again = await vllm_engine.score(GROUPS)
    assert all(shared <= c.cached_tokens < c.prompt_tokens for c in again[1].candidates)
    assert max_gap(again, reference) < PARITY_TOLERANCE


async def assert_a_cancelled_score_aborts_and_the_engine_keeps_working(engine, reference, seed: int) -> None:
    task = asyncio.create_task(engine.score(random_groups(seed) * 4))  # fresh prefixes: no cache hits
    await eventually_async(lambda: engine.num_unfinished_requests > 0, timeout=30.0, interval=0.005)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.num_unfinished_requests == 0
    assert max_gap(await engine.score(GROUPS), reference) < PARITY_TOLERANCE


@pytest.mark.vllm
@pytest.mark.asyncio(loop_scope="module")
async def test_cancelled_score_aborts_its_requests_and_the_engine_keeps_working(vllm_engine, reference):
    await assert_a_cancelled_score_aborts_and_the_engine_keeps_working(vllm_engine, reference, seed=1)


@pytest.mark.vllm
@pytest.mark.asyncio(loop_scope="module")
async def test_vllm_multi_item_matches_plain_forward_passes_and_the_per_candidate_path(
        vllm_multi_item_engine, vllm_engine, reference):
    scheduler = vllm_multi_item_engine._llm.vllm_config.scheduler_config
    assert scheduler.enable_chunked_prefill and scheduler.max_num_batched_tokens == MULTI_ITEM_STEP_TOKENS
    results = await vllm_multi_item_engine.score(GROUPS)
    assert max_gap(results, reference) < PARITY_TOLERANCE
    assert max_gap(results, await vllm_engine.score(GROUPS)) < PARITY_TOLERANCE
    for group, result in zip(GROUPS, results, strict=True):
        assert [c.prompt_tokens for c in result.candidates] == [
            len(group.prompt_ids(i)) for i in range(group.num_candidates)
        ]


@pytest.mark.vllm
@pytest.mark.asyncio(loop_scope="module")
async def test_vllm_packs_the_groups_that_fit_a_row_and_sends_the_rest_per_candidate(
        vllm_multi_item_engine, reference):
    """multi_item on: a packed request for each group that fits the rule's
    row, one plain pooling request per candidate for a longer one; the same scores."""
    rule = PackingRule(max_row_tokens=300)
    engine = vllm_multi_item_engine.viewed_as(MultiItemMode.ON, rule)
    paths = []
    engine.on_group_path = paths.append
    results = await engine.score(GROUPS)
    assert paths == [GroupPath.PACKED if row_tokens(g) <= 300 else GroupPath.PER_CANDIDATE for g in GROUPS]
    assert set(paths) == {GroupPath.PACKED, GroupPath.PER_CANDIDATE}
    assert max_gap(results, reference) < PARITY_TOLERANCE
    assert engine.num_unfinished_requests == 0


@pytest.mark.vllm
@pytest.mark.asyncio(loop_scope="module")
async def test_vllm_auto_chooses_per_group_on_one_engine_with_the_same_scores(
        vllm_multi_item_engine, naive_engine, reference):
    """multi_item auto: the packing rule's path for each group, packed or one
    plain pooling request per candidate, on the one pooling engine; a plain
    prompt whose ids happen to spell a packed layout still scores as itself."""
    from brew.engines.vllm_multi_item.layout import pack

    rule = PackingRule(min_candidates=5)
    engine = vllm_multi_item_engine.viewed_as(MultiItemMode.AUTO, rule)
    paths = []
    engine.on_group_path = paths.append
    results = await engine.score(GROUPS)
    assert paths == [rule.path(MultiItemMode.AUTO, g, dense_attention=False) for g in GROUPS]
    assert set(paths) == {GroupPath.PACKED, GroupPath.PER_CANDIDATE}
    assert max_gap(results, reference) < PARITY_TOLERANCE
    for group, result in zip(GROUPS, results, strict=True):
        assert [c.prompt_tokens for c in result.candidates] == [
            len(group.prompt_ids(i)) for i in range(group.num_candidates)]
    # a plain prompt that reads as a packed one: ids that are a packed prompt
    spelled = pack(GROUPS[2].prefix_ids, GROUPS[2].suffix_ids[:2])
    lookalike = ScoringGroup(tuple(spelled[:40]), (tuple(spelled[40:]),), GROUPS[2].label_ids)
    assert max_gap(await engine.score([lookalike]), await naive_engine.score([lookalike])) < PARITY_TOLERANCE
    assert engine.num_unfinished_requests == 0


@pytest.mark.vllm
@pytest.mark.asyncio(loop_scope="module")
async def test_vllm_multi_item_sends_one_request_per_group_unless_it_outgrows_the_model(vllm_multi_item_engine):
    from brew.engines.vllm_multi_item.requests import split_candidates

    limit = vllm_multi_item_engine._llm.model_config.max_model_len
    runs = [split_candidates(group, limit) for group in GROUPS]
    assert [len(r) for r in runs[:1] + runs[2:]] == [1, 1, 1]
    assert len(runs[1]) > 1  # 70 candidates behind a 200-token prefix do not fit 512 tokens
    assert [i for run in runs[1] for i in run] == list(range(GROUPS[1].num_candidates))


@pytest.mark.vllm
@pytest.mark.asyncio(loop_scope="module")
async def test_vllm_multi_item_serves_a_repeat_members_context_from_the_cache(vllm_multi_item_engine, reference):
    shared = len(GROUPS[1].prefix_ids) // vllm_multi_item_engine.kv_block_size * vllm_multi_item_engine.kv_block_size
    first = await vllm_multi_item_engine.score(GROUPS)
    # The first run of a group computes the context; the later runs of the
    # same call, and every run of a repeat call, find its blocks cached.
    again = await vllm_multi_item_engine.score(GROUPS)
    assert all(c.cached_tokens >= shared for c in again[1].candidates)
    assert max_gap(first, again) < PARITY_TOLERANCE and max_gap(again, reference) < PARITY_TOLERANCE


@pytest.mark.vllm
@pytest.mark.asyncio(loop_scope="module")
async def test_cancelled_multi_item_score_aborts_its_requests_and_the_engine_keeps_working(
        vllm_multi_item_engine, reference):
    await assert_a_cancelled_score_aborts_and_the_engine_keeps_working(vllm_multi_item_engine, reference, seed=2)
