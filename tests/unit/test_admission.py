"""The admission policy over a fake clock: refusals by time, the adaptive
limit, the throughput estimate. No asyncio, no engine."""

from __future__ import annotations

import pytest

from serving.admission import AdmissionPolicy
from serving.config import BatchingConfig
from serving.errors import DeadlineExceededError, OverloadedError, QueueFullError

BATCH = 100


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def policy_on(clock: FakeClock, **config: float) -> AdmissionPolicy:
    settings = {"max_batch_candidates": BATCH, "max_queue_candidates": 1000,
                "target_queue_delay_seconds": 0.1}
    return AdmissionPolicy(BatchingConfig(**{**settings, **config}), clock=clock)


def run_batch(policy: AdmissionPolicy, clock: FakeClock, candidates: int, seconds: float, *,
              head_wait: float = 0.0, queued_before: int = 0, saturated: bool = True) -> None:
    policy.batch_dispatched(candidates, head_wait=head_wait, queued_before=queued_before)
    clock.advance(seconds)
    policy.batch_finished(candidates, saturated=saturated)


def test_throughput_is_candidates_per_busy_second(clock):
    policy = policy_on(clock)
    assert policy.throughput is None and policy.expected_wait(500, 100) == 0.0
    run_batch(policy, clock, 100, 0.5)
    assert policy.throughput == pytest.approx(200.0)
    clock.advance(10.0)  # idle time is not engine time
    run_batch(policy, clock, 100, 0.5)
    assert policy.throughput == pytest.approx(200.0)
    assert policy.expected_wait(queued=300, inflight=200) == pytest.approx((300 + 100) / 200)


def test_overlapping_batches_are_measured_by_the_time_between_finishes(clock):
    policy = policy_on(clock)
    policy.batch_dispatched(100, head_wait=0.0, queued_before=200)
    policy.batch_dispatched(100, head_wait=0.0, queued_before=100)
    clock.advance(0.5)
    policy.batch_finished(100, saturated=True)
    clock.advance(0.5)
    policy.batch_finished(100, saturated=True)
    assert policy.throughput == pytest.approx(200.0)


def test_an_idle_engine_s_small_batches_never_make_it_look_slower(clock):
    policy = policy_on(clock)
    run_batch(policy, clock, 100, 0.5)  # 200/s when saturated
    for _ in range(5):
        clock.advance(1.0)
        run_batch(policy, clock, 2, 0.05, saturated=False)  # 40/s: fixed costs dominate a small batch
    assert policy.throughput == pytest.approx(200.0)
    run_batch(policy, clock, 100, 0.25, saturated=False)  # a faster sample counts, saturated or not
    assert policy.throughput > 200.0


def test_nothing_is_refused_on_time_before_a_first_measurement(clock):
    policy = policy_on(clock)
    policy.check(100, deadline=clock.now + 0.001, queued=800, inflight=200)


def test_a_deadline_shorter_than_the_request_s_own_work_is_deadline_exceeded(clock):
    policy = policy_on(clock)
    run_batch(policy, clock, 100, 0.5)  # 200/s
    with pytest.raises(DeadlineExceededError, match="scoring 50 candidates takes about 0.250s"):
        policy.check(50, deadline=clock.now + 0.2, queued=0, inflight=0)
    policy.check(50, deadline=clock.now + 0.3, queued=0, inflight=0)


def test_a_queue_too_long_for_the_deadline_is_refused_fast_as_overloaded(clock):
    policy = policy_on(clock)
    run_batch(policy, clock, 100, 0.5)  # 200/s
    deadline = clock.now + 1.0
    policy.check(20, deadline, queued=100, inflight=100)  # 0.75 s of work ahead + 0.1 s its own
    with pytest.raises(OverloadedError, match="the queue needs about 1.250s"):
        policy.check(20, deadline, queued=200, inflight=100)
    assert clock.now == deadline - 1.0  # refused at once: no waiting involved


def test_the_hard_cap_is_queue_full(clock):
    policy = policy_on(clock)
    with pytest.raises(QueueFullError, match="queue full: 950 of 1000"):
        policy.check(100, None, queued=950, inflight=0)
    with pytest.raises(QueueFullError, match="at most 1000"):
        policy.check(1001, None, queued=0, inflight=0)


def test_the_limit_shrinks_while_queue_delay_exceeds_the_target(clock):
    policy = policy_on(clock)
    assert policy.limit == 1000
    limits = []
    for _ in range(20):
        run_batch(policy, clock, BATCH, 0.5, head_wait=0.3, queued_before=policy.limit)
        limits.append(policy.limit)
    assert limits[0] == 800 and limits == sorted(limits, reverse=True)
    assert policy.limit == BATCH  # never below one batch: batches stay full
    with pytest.raises(QueueFullError, match="over the adaptive limit of 100"):
        policy.check(20, None, queued=90, inflight=0)
    policy.check(500, None, queued=0, inflight=0)  # an empty queue lets anything in: no starvation


def test_the_limit_grows_back_under_good_queue_delay_while_the_queue_is_in_use(clock):
    policy = policy_on(clock)
    for _ in range(20):
        run_batch(policy, clock, BATCH, 0.5, head_wait=0.3, queued_before=policy.limit)
    assert policy.limit == BATCH
    run_batch(policy, clock, BATCH, 0.5, head_wait=0.01, queued_before=10)  # the queue barely used: no growth
    assert policy.limit == BATCH
    for _ in range(4):
        run_batch(policy, clock, BATCH, 0.5, head_wait=0.01, queued_before=policy.limit)
    assert policy.limit == BATCH + 4 * 25
    for _ in range(100):
        run_batch(policy, clock, BATCH, 0.5, head_wait=0.01, queued_before=policy.limit)
    assert policy.limit == 1000  # capped by max_queue_candidates


def test_time_needed_at_dispatch_follows_the_throughput(clock):
    policy = policy_on(clock)
    assert policy.time_needed(100) == 0.0
    run_batch(policy, clock, 100, 0.5)
    assert policy.time_needed(100) == pytest.approx(0.5)


def test_forget_drops_what_a_warm_up_taught(clock):
    policy = policy_on(clock)
    run_batch(policy, clock, 7, 3.0, head_wait=1.0)  # lazy initialisation: 2.3 candidates/s
    policy.forget()
    assert policy.throughput is None and policy.limit == 1000
    policy.check(100, deadline=clock.now + 0.5, queued=0, inflight=0)
