"""The synthetic world: reproducible from its seed, with proper probabilities."""

from __future__ import annotations

import math

import pytest

from brew.demo.world import (
    DEMO_TASKS,
    JOB_OUTCOMES,
    TITLE_FAMILY,
    World,
    connect_prob,
    engage_prob,
    job_outcome_probs,
    labeled_candidates,
    softmax,
)

TASK_ENTITY = {"job_apply": ("job", 4), "feed_engagement": ("post", 2), "pymk_connect": ("member", 2)}


def draw(seed: int):
    world = World(seed)
    persona = world.persona()
    return persona, {task: labeled_candidates(world, persona, task, 5) for task in DEMO_TASKS}


def test_the_same_seed_gives_the_same_world():
    assert draw(7) == draw(7)


def test_another_seed_gives_another_world():
    assert draw(7) != draw(8)


def test_demo_tasks_are_the_shipped_tasks_but_rerank(shipped_tasks):
    """rerank serves POST /v1/rerank; the demo model was not trained for it."""
    assert sorted(DEMO_TASKS) == sorted(set(shipped_tasks) - {"rerank"})
    assert tuple(f" {o}" for o in JOB_OUTCOMES) == shipped_tasks["job_apply"].labels


@pytest.mark.parametrize("task", DEMO_TASKS)
def test_labeled_candidates_come_in_the_asked_count_and_kind(task):
    world = World(3)
    persona = world.persona()
    entity, labels = TASK_ENTITY[task]
    candidates = labeled_candidates(world, persona, task, 7)
    assert len(candidates) == 7
    assert len({c.item.item_id for c in candidates}) == 7
    for candidate in candidates:
        assert candidate.item.entity_type == entity
        assert len(candidate.true_probs) == labels
        assert all(0.0 <= p <= 1.0 for p in candidate.true_probs)
        assert math.fsum(candidate.true_probs) == pytest.approx(1.0, abs=1e-12)
        assert 0 <= candidate.outcome < labels
    assert labeled_candidates(world, persona, task, 0) == []


def test_ground_truth_probabilities_are_probabilities():
    world = World(11)
    for _ in range(20):
        persona = world.persona()
        for _ in range(10):
            outcome = job_outcome_probs(persona, world.job(persona))
            assert len(outcome) == 4 and all(0.0 < p < 1.0 for p in outcome)
            assert math.fsum(outcome) == pytest.approx(1.0, abs=1e-12)
            assert 0.0 < engage_prob(persona, world.post(persona)) < 1.0
            assert 0.0 < connect_prob(persona, world.profile_item(persona)) < 1.0


def test_a_job_in_the_members_interest_is_likelier_to_be_applied_to():
    world = World(5)
    persona = next(p for p in (world.persona() for _ in range(50)) if p.interest != p.family)
    in_interest, elsewhere = [], []
    for job in (world.job() for _ in range(400)):
        family = TITLE_FAMILY[job.fields["title"]]
        p_applied = job_outcome_probs(persona, job)[0]
        if family == persona.interest:
            in_interest.append(p_applied)
        elif family != persona.family:
            elsewhere.append(p_applied)
    assert sum(in_interest) / len(in_interest) > 2 * sum(elsewhere) / len(elsewhere)


def test_histories_are_in_time_order_with_known_actions():
    world = World(2)
    for _ in range(10):
        member = world.persona().member
        times = [i.timestamp for i in member.history]
        assert times == sorted(times)
        assert len(member.history) >= 12
        assert {i.action for i in member.history} <= {"applied", "viewed", "dismissed", "impression", "liked",
                                                       "connected"}
        assert set(member.profile) == {"title", "seniority", "location", "skills", "company", "school"}


def test_softmax_is_stable():
    assert softmax((1000.0, 1000.0)) == (0.5, 0.5)
    assert softmax((0.0, math.log(3.0))) == pytest.approx((0.25, 0.75), abs=1e-12)
