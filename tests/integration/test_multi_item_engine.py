"""The torch engine with multi-item scoring on: a whole engine batch (several
callers, several tasks and members each) packed into few forward passes, with
every caller's scores equal to plain forward passes (the naive engine) within
1e-4 in fp32; one caller abandoned inside a pack; the token budget splitting
packs; and the same scores as the per-group path through the service."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import pytest
import pytest_asyncio
from test_multi_item import max_gap
from tiny_model import VOCAB_SIZE, build_tiny_causal_lm

from brew import defaults
from brew.engines import EngineKind
from brew.engines.base import CallerWork
from brew.engines.multi_item_rule import GroupPath, MultiItemMode, PackingRule, row_tokens
from brew.engines.naive import last_position_label_logprobs
from brew.engines.options import TorchOptions
from brew.engines.packing import PackingStats, plan_passes
from brew.engines.torch_engine import TorchEngine
from brew.errors import EngineConfigError
from brew.runtime import build_ranker
from brew.types import ScoringGroup
from brew.wire import parse_request_json, request_from_proto
from serving.limits import RequestShape
from serving.service import local_service

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

PARITY_TOLERANCE = 1e-4
FIRST_REAL_ID = 3  # ids 0-2 are <s>, </s>, <pad>


def callers_work(seed: int = 0) -> list[list[ScoringGroup]]:
    """Three callers: several tasks (label sets) and members (prefixes) each;
    one candidate, 256 candidates, empty candidate blocks, lengths 1 to 60."""
    rng = random.Random(seed)

    def ids(length: int) -> tuple[int, ...]:
        return tuple(rng.randrange(FIRST_REAL_ID, VOCAB_SIZE) for _ in range(length))

    def labels(count: int) -> tuple[int, ...]:
        return tuple(rng.sample(range(FIRST_REAL_ID, VOCAB_SIZE), count))

    member_a, member_b = ids(150), ids(40)
    return [
        [ScoringGroup(member_a, (ids(60),), labels(2)),  # one candidate
         ScoringGroup(member_a, tuple(ids(rng.randint(1, 60)) for _ in range(12)), labels(4))],
        [ScoringGroup(member_b, tuple(ids(rng.randint(1, 8)) for _ in range(256)), labels(2))],  # 256
        [ScoringGroup(ids(25), ((), ids(3), (), ids(45)), labels(3)),  # empty candidate blocks
         ScoringGroup(ids(1), (ids(9), ids(1)), labels(2))],
    ]


CALLERS = callers_work()


def naive_scores(model, groups: Sequence[ScoringGroup]) -> list[list[tuple[float, ...]]]:
    return [[last_position_label_logprobs(model, g.prompt_ids(i), g.label_ids) for i in range(g.num_candidates)]
            for g in groups]


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    """A tiny Qwen3: 4 query heads over 2 key/value heads, a RoPE base unlike the default."""
    return build_tiny_causal_lm(tmp_path_factory.mktemp("qwen3"), "qwen3", attention_heads=4, kv_heads=2,
                                rope_parameters={"rope_type": "default", "rope_theta": 500_000.0})


@pytest.fixture(scope="module")
def expected(qwen3_dir):
    from brew.engines.loading import load_causal_lm

    model = load_causal_lm(qwen3_dir)
    return [naive_scores(model, groups) for groups in CALLERS]


async def start_packed(model_dir, mode: MultiItemMode = MultiItemMode.ON, packing: PackingRule | None = None,
                       **options) -> TorchEngine:
    """A multi-item torch engine that records its passes in `.passes` and its groups' paths in `.paths`."""
    engine = await TorchEngine.start(model_dir, options=TorchOptions(**options), multi_item=mode, packing=packing)
    engine.passes, engine.paths = [], []
    engine.on_forward = engine.passes.append
    engine.on_group_path = engine.paths.append
    return engine


async def score_all_callers(model_dir, mode: MultiItemMode = MultiItemMode.ON, packing: PackingRule | None = None,
                            **options) -> tuple[list, list[PackingStats]]:
    engine = await start_packed(model_dir, mode, packing, **options)
    try:
        return await engine.score_batch([CallerWork(groups) for groups in CALLERS]), engine.passes
    finally:
        await engine.close()


@pytest_asyncio.fixture
async def packed_engine(qwen3_dir):
    engine = await start_packed(qwen3_dir, max_batch_tokens=1024)
    yield engine
    await engine.close()


async def test_a_whole_batch_of_callers_scores_as_plain_forward_passes(packed_engine, expected):
    outcomes = await packed_engine.score_batch([CallerWork(groups) for groups in CALLERS])
    for outcome, caller_expected in zip(outcomes, expected, strict=True):
        assert not isinstance(outcome, BaseException)
        assert max_gap(outcome, caller_expected) < PARITY_TOLERANCE


async def test_the_token_budget_splits_the_pack(packed_engine, expected):
    await packed_engine.score_batch([CallerWork(groups) for groups in CALLERS])
    assert len(packed_engine.passes) > 1  # 3,000+ tokens under a 1,024-token budget
    assert all(p.padded_tokens <= 1024 for p in packed_engine.passes)
    total = sum(p.real_tokens for p in packed_engine.passes)
    # every prefix once per row it sits in, every candidate once
    assert total >= sum(len(g.prefix_ids) + sum(map(len, g.suffix_ids)) for c in CALLERS for g in c)


async def test_one_big_pass_scores_the_same(qwen3_dir, expected):
    outcomes, passes = await score_all_callers(qwen3_dir, max_batch_tokens=65536)
    assert len(passes) == 1  # one forward pass serves the whole engine batch
    for outcome, caller_expected in zip(outcomes, expected, strict=True):
        assert max_gap(outcome, caller_expected) < PARITY_TOLERANCE


async def test_an_abandoned_caller_inside_a_pack_leaves_the_others_exact(packed_engine, expected):
    works = [CallerWork(groups) for groups in CALLERS]
    delivered: dict[int, object] = {}
    for index, work in enumerate(works):
        work.on_delivered = lambda outcome, index=index: delivered.setdefault(index, outcome)
    run = asyncio.ensure_future(packed_engine.score_batch(works))
    await asyncio.sleep(0)  # the pack is being planned
    works[1].abandon()  # the 256-candidate caller leaves
    outcomes = await run
    assert isinstance(outcomes[1], asyncio.CancelledError)
    for index in (0, 2):
        assert max_gap(outcomes[index], expected[index]) < PARITY_TOLERANCE
        assert delivered[index] is outcomes[index]  # answered when its last pass was done
    # passes holding only the leaver's candidates were skipped
    planned = plan_passes([g for groups in CALLERS for g in groups], 1024).stats.passes
    assert len(packed_engine.passes) < planned


async def test_a_caller_with_an_empty_prompt_fails_alone(packed_engine, expected):
    empty = CallerWork([ScoringGroup((), ((),), (5, 6))])
    outcomes = await packed_engine.score_batch([empty, CallerWork(CALLERS[2])])
    assert isinstance(outcomes[0], ValueError) and "empty prompt" in str(outcomes[0])
    assert max_gap(outcomes[1], expected[2]) < PARITY_TOLERANCE


async def test_multi_item_is_refused_on_an_engine_without_it():
    with pytest.raises(EngineConfigError, match="engine naive has no multi-item scoring"):
        await build_ranker(defaults.DEMO_MODEL_DIR, defaults.PROMPTS_DIR, EngineKind.NAIVE,
                           multi_item=MultiItemMode.ON)


async def test_the_example_request_scores_the_same_with_and_without_multi_item():
    request = request_from_proto(parse_request_json(defaults.EXAMPLE_REQUEST.read_text(encoding="utf-8")))
    responses = []
    for multi_item in (MultiItemMode.OFF, MultiItemMode.ON):
        ranker = await build_ranker(defaults.DEMO_MODEL_DIR, defaults.PROMPTS_DIR, EngineKind.TORCH,
                                    multi_item=multi_item)
        try:
            async with local_service(ranker) as service:
                responses.append(await service.score(RequestShape.of(request), lambda: request, deadline=None))
        finally:
            await ranker.engine.close()
    per_group, packed = responses
    for left, right in zip(per_group.results, packed.results, strict=True):
        assert [c.item_id for c in left.candidates] == [c.item_id for c in right.candidates]
        for a, b in zip(left.candidates, right.candidates, strict=True):
            assert max(abs(x - y) for x, y in zip(a.label_logprobs, b.label_logprobs, strict=True)) < PARITY_TOLERANCE
        assert (left.prompt_tokens, left.cached_prompt_tokens) == (right.prompt_tokens, right.cached_prompt_tokens)


async def test_groups_longer_than_a_row_take_the_per_group_path_with_the_same_scores(qwen3_dir, expected):
    outcomes, passes = await score_all_callers(qwen3_dir, packing=PackingRule(max_row_tokens=500))
    # the 256-candidate group (about 1,200 tokens) was not packed: no pass holds that many tokens
    assert passes and max(p.real_tokens for p in passes) < 1000
    for outcome, caller_expected in zip(outcomes, expected, strict=True):
        assert max_gap(outcome, caller_expected) < PARITY_TOLERANCE


async def test_auto_packs_by_each_groups_shape_and_scores_the_same(qwen3_dir, expected):
    """auto with the default rule: one candidate, and candidates that outweigh
    their prefix, go per group; the rest are packed; the scores are exact."""
    outcomes, passes = await score_all_callers(qwen3_dir, MultiItemMode.AUTO)
    engine = await start_packed(qwen3_dir, MultiItemMode.AUTO)
    try:
        await engine.score_batch([CallerWork(groups) for groups in CALLERS])
        packed, per = GroupPath.PACKED, GroupPath.PER_CANDIDATE
        # 150-token prefix: 1 candidate; 12 candidates (prefix ~30% of the row) |
        # 256 short candidates behind 40 tokens | 4 behind 25 tokens; 2 behind 1 token
        assert engine.paths == [per, packed, per, packed, per]
        packed_groups = [CALLERS[0][1], CALLERS[2][0]]
        assert sum(p.real_tokens for p in engine.passes) == sum(row_tokens(g) for g in packed_groups)
    finally:
        await engine.close()
    assert passes
    for outcome, caller_expected in zip(outcomes, expected, strict=True):
        assert max_gap(outcome, caller_expected) < PARITY_TOLERANCE


async def test_off_packs_nothing(qwen3_dir, expected):
    engine = await start_packed(qwen3_dir, MultiItemMode.OFF)
    try:
        outcomes = await engine.score_batch([CallerWork(groups) for groups in CALLERS])
    finally:
        await engine.close()
    assert engine.passes == [] and engine.paths == []  # the per-group path, no rule asked
    for outcome, caller_expected in zip(outcomes, expected, strict=True):
        assert max_gap(outcome, caller_expected) < PARITY_TOLERANCE


async def test_the_attention_option_picks_the_kernel_and_scores_the_same(qwen3_dir, expected):
    outcomes, _ = await score_all_callers(qwen3_dir, attention="eager")
    for outcome, caller_expected in zip(outcomes, expected, strict=True):
        assert max_gap(outcome, caller_expected) < PARITY_TOLERANCE
    engine = await start_packed(qwen3_dir, attention="eager")
    try:
        assert engine._model.config._attn_implementation == "eager"
    finally:
        await engine.close()


async def test_flex_attention_is_refused_on_cpu_at_start(qwen3_dir):
    with pytest.raises(EngineConfigError, match="flex_attention is refused on CPU"):
        await TorchEngine.start(qwen3_dir, options=TorchOptions(attention="flex_attention"),
                                multi_item=MultiItemMode.ON)
