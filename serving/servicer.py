"""The RankingService servicer: translate, delegate, map errors. Nothing else.

proto -> the request's shape (O(tasks)) and a decode step (brew.wire, run off
the event loop by the service) -> serving.service -> domain -> proto. Every
failure is mapped by the status table (serving.status); unexpected ones are
logged with their traceback and answered INTERNAL.
"""

from __future__ import annotations

import logging
import time

import grpc

from brew.types import ScoreRequest
from brew.v1 import ranking_pb2 as pb
from brew.v1 import ranking_pb2_grpc
from brew.wire import list_tasks_response, request_from_proto, response_to_proto
from serving.limits import RequestShape, check_message_size
from serving.service import ScoringService
from serving.status import code_for

log = logging.getLogger(__name__)


def request_shape(request: pb.ScoreCandidatesRequest) -> RequestShape:
    """What the service checks before decoding: O(tasks), no copies."""
    return RequestShape(request.request_id, tuple((t.task, len(t.candidates)) for t in request.tasks),
                        len(request.member.history))


class RankingServicer(ranking_pb2_grpc.RankingServiceServicer):
    def __init__(self, service: ScoringService, max_message_bytes: int) -> None:
        self._service = service
        self._max_message_bytes = max_message_bytes

    def _decoder(self, request: pb.ScoreCandidatesRequest):  # type: ignore[no-untyped-def]
        def decode() -> ScoreRequest:
            check_message_size(request.ByteSize(), self._max_message_bytes)
            return request_from_proto(request)

        return decode

    async def ScoreCandidates(
        self, request: pb.ScoreCandidatesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreCandidatesResponse:
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        try:
            response = await self._service.score(request_shape(request), self._decoder(request), deadline)
        except Exception as error:  # mapped to a status below; nothing is swallowed
            await self._abort(context, error, f"ScoreCandidates failed (request_id={request.request_id})")
        return response_to_proto(response)

    async def ListTasks(self, request: pb.ListTasksRequest, context: grpc.aio.ServicerContext) -> pb.ListTasksResponse:
        try:
            tasks, model = self._service.tasks()
        except Exception as error:
            await self._abort(context, error, "ListTasks failed")
        return list_tasks_response(tasks, model)

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext, error: Exception, what: str) -> None:
        code = code_for(error)
        if code is grpc.StatusCode.INTERNAL:
            log.exception(what)
        await context.abort(code, str(error))
