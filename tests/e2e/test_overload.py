"""Overload end to end on the torch engine, certain by construction: the
engine is held (its batches wait on a gate the test opens), the queue holds
two calls and one more fits in the engine, and a burst of many more calls
arrives. Every call beyond that room is refused with RESOURCE_EXHAUSTED while
the engine is still held, so a refusal never waits for engine work; once
the engine goes on, every admitted call is scored in full, no engine work
went to a refused call, and the server keeps serving.

Nothing here depends on the machine's speed: a busy machine makes the test
slower, not different. Refusals on time grounds (a deadline the queue makes
impossible) depend on the throughput measured; the dispatcher's unit tests
cover them with a fake engine.

Admission by the SLO, end to end: the engine is made slow on purpose (every
batch waits BATCH_DELAY_SECONDS more), so one batch alone nearly fills the
SLO whatever the machine; a burst with long deadlines is then refused past
the first calls under `admission_target = "slo"`, and admitted in full under
`"deadline"` (the same burst, the same server settings otherwise).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
import pytest
from live_server import client_for, running_server, scrape
from service_wire import job_request, scores
from waiting import eventually_async

from brew.engines.base import CallerOutcome
from brew.engines.torch_engine import PreparedBatch

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

CANDIDATES = 32  # per call: one call fills a batch
QUEUED_CALLS = 2
BATCHING = {"max_batch_candidates": CANDIDATES, "max_queue_candidates": QUEUED_CALLS * CANDIDATES,
            "max_inflight_batches": 1}
# Admitted while the engine is held: the queue's calls, and at most one more
# once the first batch has left the queue for the engine.
MAX_ADMITTED = QUEUED_CALLS + 1
BURST = 8 * MAX_ADMITTED
TIMEOUT_SECONDS = 120.0  # no deadline comes near: refusals are for room, not time


async def test_a_burst_over_capacity_is_refused_without_waiting_and_the_admitted_calls_are_served():
    async with running_server(engine="torch", batching=BATCHING,
                              limits={"max_candidates_per_request": CANDIDATES}) as server, \
            client_for(server) as client:
        engine = server.service.ranker.engine
        run_prepared, gate = engine.run_prepared, asyncio.Event()

        async def held(prepared: PreparedBatch) -> list[CallerOutcome]:
            await gate.wait()
            return await run_prepared(prepared)

        engine.run_prepared = held  # the dispatcher prepares a batch, then runs it here (score_batch too)
        before = scrape(server)

        def since_before(name: str, **labels: str) -> float:
            return scrape(server).value(name, **labels) - before.value(name, **labels)

        calls = [asyncio.ensure_future(client.score(job_request(CANDIDATES, f"burst-{n}"),
                                                    timeout=TIMEOUT_SECONDS))
                 for n in range(BURST)]

        def answered_or_admitted() -> float:  # an admitted call cannot finish while the engine is held
            return sum(call.done() for call in calls) + since_before("brew_admitted_requests_total")

        await eventually_async(answered_or_admitted, equals=BURST, timeout=60.0)
        refused = [call for call in calls if call.done()]
        admitted = [call for call in calls if not call.done()]
        assert QUEUED_CALLS <= len(admitted) <= MAX_ADMITTED
        for call in refused:
            error = call.exception()
            assert isinstance(error, grpc.aio.AioRpcError), error
            assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and "queue full" in error.details()

        gate.set()
        served = await asyncio.gather(*admitted)
        assert [len(scores(response)) for response in served] == [CANDIDATES] * len(admitted)
        assert since_before("brew_rejections_total", reason="queue_full") == len(refused)
        assert since_before("brew_requests_total", status="RESOURCE_EXHAUSTED") == len(refused)
        # No engine work for a refused call.
        assert since_before("brew_batch_candidates_sum") == CANDIDATES * len(admitted)

        # The server keeps serving.
        again = await client.score(job_request(CANDIDATES, "after"), timeout=TIMEOUT_SECONDS)
        assert len(scores(again)) == CANDIDATES


# The engine is slowed so that a batch takes BATCH_DELAY_SECONDS plus its own
# time e: a request alone (one batch) fits in the 60% of the SLO admission
# aims at (2.1 s) while e <= 0.9 s (a few candidates take far less), and a
# request behind a batch (two batches, more than 2.4 s) never does, however
# fast the machine.
SLO_MS = 3500.0
BATCH_DELAY_SECONDS = 1.2
SLO_CANDIDATES = 4  # per call, one call per batch
SLO_BATCHING = {"max_batch_candidates": SLO_CANDIDATES, "max_queue_candidates": 4096, "max_inflight_batches": 1}
SLO_BURST = 6
LONG_DEADLINE_SECONDS = 60.0  # the whole burst fits in it many times over


def slowed(run_prepared: Callable[[PreparedBatch], Awaitable[list[CallerOutcome]]]):
    async def slow(prepared: PreparedBatch) -> list[CallerOutcome]:
        await asyncio.sleep(BATCH_DELAY_SECONDS)
        return await run_prepared(prepared)
    return slow


async def burst_with_long_deadlines(admission_target: str) -> tuple[list[object], float]:
    """SLO_BURST calls at once after three calls alone (which measure the
    slowed engine); their outcomes (a response or the error), and the
    rejections counted as overloaded."""
    async with running_server(engine="torch", slo_ms=SLO_MS,
                              batching={**SLO_BATCHING, "admission_target": admission_target}) as server, \
            client_for(server) as client:
        engine = server.service.ranker.engine
        engine.run_prepared = slowed(engine.run_prepared)  # where the dispatcher runs its batches
        for n in range(3):
            await client.score(job_request(SLO_CANDIDATES, f"alone-{n}"), timeout=LONG_DEADLINE_SECONDS)
        before = scrape(server).value("brew_rejections_total", reason="overloaded")
        outcomes = await asyncio.gather(
            *(client.score(job_request(SLO_CANDIDATES, f"burst-{n}"), timeout=LONG_DEADLINE_SECONDS)
              for n in range(SLO_BURST)), return_exceptions=True)
        overloaded = scrape(server).value("brew_rejections_total", reason="overloaded") - before
        # The server keeps serving.
        again = await client.score(job_request(SLO_CANDIDATES, "after"), timeout=LONG_DEADLINE_SECONDS)
        assert len(scores(again)) == SLO_CANDIDATES
    return outcomes, overloaded


async def test_under_the_slo_target_a_burst_with_long_deadlines_is_refused_past_what_fits_in_the_slo():
    outcomes, overloaded = await burst_with_long_deadlines("slo")
    served = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    # Only the first of the burst: any later one would wait for a batch.
    assert len(served) == 1, outcomes
    assert all(len(scores(response)) == SLO_CANDIDATES for response in served)
    for error in refused:
        assert isinstance(error, grpc.aio.AioRpcError), error
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and "its SLO leaves" in error.details()
    assert overloaded == len(refused)


async def test_under_the_deadline_target_the_same_burst_is_admitted_in_full():
    outcomes, overloaded = await burst_with_long_deadlines("deadline")
    assert not [outcome for outcome in outcomes if isinstance(outcome, BaseException)], outcomes
    assert [len(scores(response)) for response in outcomes] == [SLO_CANDIDATES] * SLO_BURST
    assert overloaded == 0
