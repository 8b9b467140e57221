"""The admission policy over a fake clock: refusals by time, the adaptive
limit, the throughput estimate. No asyncio, no engine."""

from __future__ import annotations

import pytest

from serving.admission import AdmissionPolicy
from serving.config import AdmissionTarget, BatchingConfig
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


def policy_on(clock: FakeClock, **config: object) -> AdmissionPolicy:
    settings = {"max_batch_candidates": BATCH, "max_queue_candidates": 1000,
                "target_queue_delay_ms": 100}
    return AdmissionPolicy(BatchingConfig(**{**settings, **config}), clock=clock)


def run_batch(policy: AdmissionPolicy, clock: FakeClock, candidates: int, seconds: float, *,
              head_wait: float = 0.0, queued_before: int = 0, saturated: bool = True,
              scored: int | None = None) -> None:
    policy.batch_dispatched(candidates, head_wait=head_wait, queued_before=queued_before)
    clock.advance(seconds)
    policy.batch_finished(candidates if scored is None else scored, candidates, saturated=saturated)


def test_throughput_is_candidates_per_busy_second(clock):
    policy = policy_on(clock)
    assert policy.throughput is None and policy.expected_wait(500, 100) == 0.0
    run_batch(policy, clock, 100, 0.5)
    assert policy.throughput == pytest.approx(200.0)
    clock.advance(10.0)  # idle time is not engine time
    run_batch(policy, clock, 100, 0.5)
    assert policy.throughput == pytest.approx(200.0)
    assert policy.expected_wait(queued=300, inflight=200) == pytest.approx((300 + 200) / 200)


def test_batches_in_flight_together_are_measured_over_the_time_between_finishes(clock):
    policy = policy_on(clock)
    for _ in range(30):  # two batches at a time, finishing 5 ms apart: 512 candidates per 1.005 s
        policy.batch_dispatched(256, head_wait=0.0, queued_before=512)
        policy.batch_dispatched(256, head_wait=0.0, queued_before=256)
        clock.advance(1.0)
        policy.batch_finished(256, 256, saturated=True)
        clock.advance(0.005)
        policy.batch_finished(256, 256, saturated=True)
        assert policy.throughput is not None
    assert policy.throughput == pytest.approx(512 / 1.005, rel=0.15)


def test_an_idle_engine_s_small_batches_never_make_it_look_slower(clock):
    policy = policy_on(clock)
    run_batch(policy, clock, 100, 0.5)  # 200/s when saturated
    for _ in range(5):
        clock.advance(1.0)
        run_batch(policy, clock, 2, 0.05, saturated=False)  # 40/s: fixed costs dominate a small batch
    assert policy.throughput == pytest.approx(200.0)
    run_batch(policy, clock, 100, 0.25, saturated=False)  # a faster one counts, saturated or not
    assert policy.throughput > 200.0


def test_a_batch_callers_left_counts_what_it_delivered_over_its_share_of_the_time(clock):
    policy = policy_on(clock)
    run_batch(policy, clock, 100, 0.5)  # 200/s
    run_batch(policy, clock, 100, 1.0, scored=50)  # half delivered in half of 1 s: 100/s
    assert policy.throughput == pytest.approx((0.85 * 100 + 50) / (0.85 * 0.5 + 0.5))
    before = policy.throughput
    for _ in range(10):
        run_batch(policy, clock, 100, 2.0, scored=0)  # every caller's deadline passed: no news of speed
    assert policy.throughput == before


def test_a_slowdown_refuses_under_load_but_never_locks_out_an_idle_engine(clock):
    policy = policy_on(clock)
    run_batch(policy, clock, 100, 0.5)  # 200/s at best
    for _ in range(40):
        run_batch(policy, clock, 100, 5.0)  # then 20/s, saturated
    assert policy.throughput == pytest.approx(20.0, rel=0.05)
    with pytest.raises(OverloadedError):
        policy.check(50, deadline=clock.now + 3.0, queued=50, inflight=0)
    policy.check(50, deadline=clock.now + 0.3, queued=0, inflight=0)  # idle: 50 at 200/s fits


def test_nothing_is_refused_on_time_before_a_first_measurement(clock):
    policy = policy_on(clock)
    policy.check(100, deadline=clock.now + 0.001, queued=800, inflight=200)


def test_a_deadline_shorter_than_the_request_s_own_work_is_deadline_exceeded(clock):
    policy = policy_on(clock)
    run_batch(policy, clock, 100, 0.5)  # 200/s
    with pytest.raises(DeadlineExceededError, match="scoring 50 candidates takes about 0.250s"):
        policy.check(50, deadline=clock.now + 0.2, queued=0, inflight=0)
    policy.check(50, deadline=clock.now + 0.35, queued=0, inflight=0)  # 0.25 s fits in 0.8 x 0.35 s


def test_a_queue_too_long_for_the_deadline_is_refused_fast_as_overloaded(clock):
    policy = policy_on(clock)
    run_batch(policy, clock, 100, 0.5)  # 200/s, batches of 100
    deadline = clock.now + 1.0
    # In flight 50, queued 50 + its own 20, its batch filled to 100: 150 candidates, 0.75 s,
    # within 80% of the deadline.
    policy.check(20, deadline, queued=50, inflight=50)
    with pytest.raises(OverloadedError, match=r"scored in about 1.250s, its deadline leaves 1.000s"):
        policy.check(20, deadline, queued=100, inflight=50)  # 50 + two batches
    assert clock.now == deadline - 1.0  # refused at once: no waiting involved


def test_a_request_that_need_not_wait_for_a_slot_is_not_counted_a_full_batch(clock):
    policy = policy_on(clock, max_inflight_batches=2)
    run_batch(policy, clock, 100, 0.5)  # 200/s, batches of 100
    policy.check(20, clock.now + 0.15, queued=0, inflight=0)  # alone: 0.1 s
    policy.batch_dispatched(100, head_wait=0.0, queued_before=100)
    policy.check(20, clock.now + 0.8, queued=0, inflight=100)  # a free slot: next to the batch in flight
    policy.batch_dispatched(100, head_wait=0.0, queued_before=100)
    with pytest.raises(OverloadedError):  # no free slot: it waits, and its batch fills up
        policy.check(20, clock.now + 1.05, queued=0, inflight=200)
    policy.check(20, clock.now + 1.9, queued=0, inflight=200)


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


def test_requests_still_being_rendered_ahead_count_one_after_another(clock):
    policy = policy_on(clock)
    run_batch(policy, clock, 100, 0.5)  # 200/s
    policy.prepared(0.05)
    deadline = clock.now + 1.0
    # 4 rendered ahead and itself: 0.25 s, then 60 queued + 20 in a batch of 100: 0.5 s.
    policy.check(20, deadline, queued=60, inflight=0, preparing=4)
    with pytest.raises(OverloadedError):
        policy.check(20, deadline, queued=60, inflight=0, preparing=6)


def test_time_needed_at_dispatch_follows_the_throughput(clock):
    policy = policy_on(clock)
    assert policy.time_needed(100) == 0.0
    run_batch(policy, clock, 100, 0.5)
    assert policy.time_needed(100) == pytest.approx(0.5)
    assert policy.time_needed(100, inflight=100) == pytest.approx(0.75)  # the batch in flight is half done


def test_forget_drops_what_a_warm_up_taught(clock):
    policy = policy_on(clock)
    run_batch(policy, clock, 7, 3.0, head_wait=1.0)  # lazy initialisation: 2.3 candidates/s
    policy.forget()
    assert policy.throughput is None and policy.limit == 1000
    policy.check(100, deadline=clock.now + 0.5, queued=0, inflight=0)


def test_under_the_slo_target_what_would_answer_past_the_slo_is_refused_though_the_deadline_allows_it(clock):
    policy = policy_on(clock)  # admission_target "slo", the default
    run_batch(policy, clock, 100, 0.5)  # 200/s, batches of 100
    deadline, slo = clock.now + 2.0, clock.now + 0.5
    # 50 in flight + 20 queued + its own 20, batch filled to 100: 150 candidates, 0.75 s: within the
    # deadline's 80%, past the SLO's 60% (0.3 s).
    with pytest.raises(OverloadedError, match=r"scored in about 0.750s, its SLO leaves 0.500s"):
        policy.check(20, deadline, queued=20, inflight=50, slo=slo)
    policy.check(20, deadline, queued=0, inflight=30, slo=slo)  # 30 + 20 alone: 0.25 s, within the SLO's 60%
    with pytest.raises(OverloadedError, match="its SLO leaves"):  # 50 + 20: 0.35 s, within 80% but not 60%
        policy.check(20, deadline, queued=0, inflight=50, slo=slo)
    policy.check(20, None, queued=0, inflight=30, slo=slo)  # no deadline: the SLO alone
    with pytest.raises(OverloadedError, match="its SLO leaves"):
        policy.check(20, None, queued=20, inflight=50, slo=slo)


def test_under_the_deadline_target_the_slo_is_not_a_reason_to_refuse(clock):
    policy = policy_on(clock, admission_target=AdmissionTarget.DEADLINE)
    run_batch(policy, clock, 100, 0.5)
    policy.check(20, clock.now + 2.0, queued=20, inflight=50, slo=clock.now + 0.5)


def test_the_earlier_of_deadline_and_slo_is_the_one_that_counts(clock):
    policy = policy_on(clock)
    run_batch(policy, clock, 100, 0.5)
    with pytest.raises(OverloadedError, match="its deadline leaves 0.300s"):
        policy.check(20, clock.now + 0.3, queued=0, inflight=50, slo=clock.now + 0.5)


def test_a_request_too_large_for_the_slo_alone_is_judged_by_its_deadline(clock):
    policy = policy_on(clock)
    run_batch(policy, clock, 100, 0.5)  # 200/s
    # 400 candidates take 2 s alone: no queue brings them within a 0.5 s SLO, so the deadline decides.
    policy.check(400, clock.now + 5.0, queued=100, inflight=100, slo=clock.now + 0.5)
    with pytest.raises(OverloadedError, match="its deadline leaves"):
        policy.check(400, clock.now + 3.0, queued=100, inflight=100, slo=clock.now + 0.5)


def test_under_the_slo_target_the_queue_delay_target_is_at_most_half_the_slo(clock):
    assert policy_on(clock, target_queue_delay_ms=400).target_queue_delay == pytest.approx(0.4)
    slo_bound = AdmissionPolicy(BatchingConfig(target_queue_delay_ms=400), clock=clock, slo_seconds=0.5)
    assert slo_bound.target_queue_delay == pytest.approx(0.25)
    by_deadline = AdmissionPolicy(BatchingConfig(target_queue_delay_ms=400, admission_target=AdmissionTarget.DEADLINE),
                                  clock=clock, slo_seconds=0.5)
    assert by_deadline.target_queue_delay == pytest.approx(0.4)
    # The bound is the one the limit follows: a head that waited 0.3 s shrinks it.
    run_batch(slo_bound, clock, BATCH, 0.5, head_wait=0.3, queued_before=slo_bound.limit)
    assert slo_bound.limit < 4096
