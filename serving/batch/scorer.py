"""A request through the scoring service, as a batch job's outcome.

The service is the server's (serving.service.ScoringService, built by
`local_service` on the job's ranker and settings): limits, decode and render
on a worker thread, the dispatcher's engine batches, assembly. Only the
transport is missing, so a row's scores are the server's for that request.

A job reads ahead of the engine by at most a window of candidates
(`CandidateWindow`): enough queued work that the dispatcher forms full
batches while the previous ones run, and no more, so memory stays flat. The
service's admission may still refuse a request when its adaptive queue
limit shrinks (serving.admission); a batch job has no deadline to meet, so
such a request waits for another to finish and asks again (the refusal
comes before any rendering, so the retry costs nothing).

A bad row (InvalidRequestError: bad JSON, an unknown task, a template field
the data lacks, a prompt over a token budget, a request over a limit) is a
Failed outcome and the job goes on. Anything else (the engine failed) stops
the job: the shards written so far stay, and a rerun resumes after them.
"""

from __future__ import annotations

import asyncio

from brew.errors import InvalidRequestError
from brew.ranker import Ranker
from brew.types import ScoreResponse
from brew.v1 import ranking_pb2 as pb
from brew.wire import request_from_proto
from serving.batch.columns import Failed, Outcome, Scored, candidate_rows
from serving.errors import QueueFullError
from serving.limits import RequestShape
from serving.service import Prepare, ScoringService
from serving.servicer import request_shape


class CandidateWindow:
    """At most `capacity` candidates taken at once; a request larger than the
    whole window is let in alone, so it never starves."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._used = 0
        self._changed = asyncio.Condition()

    @property
    def used(self) -> int:
        return self._used

    async def acquire(self, candidates: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._used or self._used + candidates <= self.capacity)
            self._used += candidates

    async def release(self, candidates: int) -> None:
        async with self._changed:
            self._used -= candidates
            self._changed.notify_all()


class BatchScorer:
    """Scores requests through one ScoringService, a window's worth at a time."""

    def __init__(self, service: ScoringService, window_candidates: int) -> None:
        self._service = service
        self.window = CandidateWindow(window_candidates)
        self._finished = 0  # requests the service answered, either way
        self._answered = asyncio.Condition()

    async def score(self, index: int, line: int | None, message: pb.ScoreCandidatesRequest,
                    prepare: Prepare = Ranker.prepare) -> Outcome:
        """One request, whose candidates the caller took from `window`
        (released here). `prepare` is the service's (Ranker.prepare unless
        the request was rendered ahead)."""
        shape = request_shape(message)
        try:
            response = await self._admitted(shape, message, prepare)
        except InvalidRequestError as error:
            return Failed(index, line, message.request_id, error.reason, str(error))
        finally:
            await self.window.release(shape.candidates)
        return Scored(index, candidate_rows(index, response))

    async def _admitted(self, shape: RequestShape, message: pb.ScoreCandidatesRequest,
                        prepare: Prepare) -> ScoreResponse:
        try:
            while True:
                seen = self._finished
                try:
                    return await self._service.score(shape, lambda: request_from_proto(message), None, prepare)
                except QueueFullError:
                    async with self._answered:
                        await self._answered.wait_for(lambda: self._finished != seen)
        finally:
            async with self._answered:
                self._finished += 1
                self._answered.notify_all()
