"""The RankingService servicer: translate, delegate, map errors. Nothing else.

proto -> the request's shape (O(tasks)) and a decode step (brew.wire, run off
the event loop by the service) -> serving.service -> domain -> proto. Every
failure is mapped by the status table (serving.status); unexpected ones are
logged with their traceback and answered INTERNAL.

`add_ranking_service` registers the service as the generated
`add_RankingServiceServicer_to_server` does, with one difference: bytes that
do not parse as the request message reach the servicer as `Undecodable`
and are answered INVALID_ARGUMENT naming the problem. gRPC answers a
deserializer that raises with UNKNOWN ("Unexpected DecodeError"), which
tells the caller nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError, Message

from brew.errors import InvalidRequestError
from brew.types import ScoreRequest
from brew.v1 import ranking_pb2 as pb
from brew.v1 import ranking_pb2_grpc
from brew.wire import list_tasks_response, request_from_proto, response_to_proto
from serving.limits import RequestShape, check_message_size
from serving.service import ScoringService
from serving.status import code_for

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RankingService"].full_name


@dataclass(frozen=True)
class Undecodable:
    """A request whose bytes did not parse as `message`."""

    message: str  # the full name of the message type expected
    problem: str

    def error(self) -> InvalidRequestError:
        return InvalidRequestError(f"the request is not a valid {self.message} ({self.problem}); "
                                   f"send it serialized from proto/brew/v1/ranking.proto")


def tolerant_parser(message: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    """`message.FromString` that returns Undecodable instead of raising."""

    def parse(raw: bytes) -> Message | Undecodable:
        try:
            return message.FromString(raw)
        except DecodeError as error:
            return Undecodable(message.DESCRIPTOR.full_name, str(error))

    return parse


def add_ranking_service(servicer: RankingServicer, server: grpc.aio.Server) -> None:
    """RankingService on `server`, with requests parsed by `tolerant_parser`."""
    handlers = {
        "ScoreCandidates": grpc.unary_unary_rpc_method_handler(
            servicer.ScoreCandidates, request_deserializer=tolerant_parser(pb.ScoreCandidatesRequest),
            response_serializer=pb.ScoreCandidatesResponse.SerializeToString,
        ),
        "ListTasks": grpc.unary_unary_rpc_method_handler(
            servicer.ListTasks, request_deserializer=tolerant_parser(pb.ListTasksRequest),
            response_serializer=pb.ListTasksResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


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
        self, request: pb.ScoreCandidatesRequest | Undecodable, context: grpc.aio.ServicerContext
    ) -> pb.ScoreCandidatesResponse:
        if isinstance(request, Undecodable):
            error = request.error()
            self._service.refused(error)
            await self._abort(context, error, "ScoreCandidates failed")
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        try:
            response = await self._service.score(request_shape(request), self._decoder(request), deadline)
        except Exception as error:  # mapped to a status below; nothing is swallowed
            await self._abort(context, error, f"ScoreCandidates failed (request_id={request.request_id})")
        return response_to_proto(response)

    async def ListTasks(self, request: pb.ListTasksRequest | Undecodable,
                        context: grpc.aio.ServicerContext) -> pb.ListTasksResponse:
        try:
            if isinstance(request, Undecodable):
                raise request.error()
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
